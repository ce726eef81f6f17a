"""Watermark v2 detection: lattice -> canonical fold -> keyed sync (symmetry, offset) -> soft bits -> tag.

For each lattice candidate the folded residual (one canonical tile, every surviving tile averaged
in) is turned by each of the eight symmetries of the square and correlated with the key's sync
template over all cyclic offsets by FFT. At the best offsets the data cells are read as soft
values (pooled over every tile by the fold), the nonce is taken as read plus flips of its least
reliable bits, and the keyed tag is recomputed and compared with the 64 read tag bits. The first
candidate within ``MAX_TAG_ERRORS`` wins; the union bound over all of them is in watermark_v2.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import watermark_v2 as V
from ._wm2_sync import PERIOD, find_lattices, fold
from .watermark import WatermarkKey


@dataclass(frozen=True)
class Detection:
    """The best candidate found and whether it clears the threshold (same fields as v1's)."""

    found: bool
    key_id: int | None
    nonce: int | None
    tag_errors: int | None
    bit_accuracy: float | None  # agreeing tag bits of the best candidate / 64
    max_tag_errors: int
    hypothesis: str | None
    hypotheses_tried: int
    sync_z: float | None = None

    @property
    def payload_hex(self) -> str | None:
        if self.key_id is None or self.nonce is None:
            return None
        return f"{self.key_id:04x}{self.nonce:016x}"


def _symmetries(a: NDArray[np.float64]) -> Iterator[tuple[str, NDArray[np.float64]]]:
    for k in range(4):
        r = np.rot90(a, k)
        yield f"rot{90 * k}", r
        yield f"rot{90 * k}+flip", r[:, ::-1]


def _templates(key: WatermarkKey) -> tuple[NDArray[np.complex128], NDArray[np.float64], NDArray[np.intp]]:
    lay = V.layout(key)
    sync = V.render(lay.sync, PERIOD, PERIOD, float(V.CANON))
    return np.conj(np.fft.rfft2(sync)), lay.chips, lay.bit_of


_KERNEL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0


def _sine_free(folded: NDArray[np.float64]) -> NDArray[np.float64]:
    """The fold without the Fourier sync peaks (in any of the 8 symmetries): they are not cells."""
    spec = np.fft.fft2(folded)
    for a, b in V.PEAKS:
        for u, v in ((a, b), (b, a)):
            for su in (1, -1):
                for sv in (1, -1):
                    spec[(sv * v) % PERIOD, (su * u) % PERIOD] = 0
    return np.asarray(np.fft.ifft2(spec).real, dtype=np.float64)


def cell_values(folded: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cell values of a fold already aligned to the tile (what informed embedding aims at)."""
    return _cells(_sine_free(folded))


def _cells(aligned: NDArray[np.float64]) -> NDArray[np.float64]:
    """Soft value of every cell: a small weighted sum around the cell centre of the aligned fold."""
    c = V.CANON
    blocks = aligned.reshape(V.TILE, c, V.TILE, c).swapaxes(1, 2)
    return np.asarray(np.einsum("ijab,ab->ij", blocks, _KERNEL), dtype=np.float64)


def _soft(cells: NDArray[np.float64], chips: NDArray[np.float64], bit_of: NDArray[np.intp]) -> NDArray[np.float64]:
    mask = bit_of >= 0
    out = np.bincount(bit_of[mask], weights=(cells * chips)[mask], minlength=V.PAYLOAD_BITS)
    return np.asarray(out, dtype=np.float64)


def soft_bits(cells: NDArray[np.float64], lay: V.Layout) -> NDArray[np.float64]:
    """Soft payload bits (sum of chip x cell value over each bit's cells) of aligned cell values."""
    return _soft(cells, lay.chips, lay.bit_of)


def _nonce_candidates(soft: NDArray[np.float64]) -> list[int]:
    hard = 0
    for s in soft:
        hard = hard << 1 | int(s > 0)
    weakest = np.argsort(np.abs(soft))[: V.NONCE_FLIPS]
    out = []
    for combo in range(2**V.NONCE_FLIPS):
        flip = 0
        for n, pos in enumerate(weakest):
            if combo >> n & 1:
                flip |= 1 << (V.NONCE_BITS - 1 - int(pos))
        out.append(hard ^ flip)
    return out


def detect(y: NDArray[np.float64], keys: Sequence[WatermarkKey]) -> Detection:
    """Search lattices x symmetries x offsets x keys x nonce flips; stop at the first verified tag."""
    if len(keys) > V.MAX_KEYS:
        raise ValueError(f"at most {V.MAX_KEYS} watermark keys may be tried (the FP bound assumes it)")
    limit = V.MAX_TAG_ERRORS
    best: tuple[int, int, int, str, float] | None = None
    tried = 0
    if not keys:
        return Detection(False, None, None, None, None, limit, None, 0)
    templates = [(k, *_templates(k)) for k in keys]
    for li, lat in enumerate(find_lattices(y, V.LATTICES)):
        folded = _sine_free(fold(y, lat.basis))
        for name, sym in _symmetries(folded):
            spec = np.fft.rfft2(sym)
            for key, sync_conj, chips, bit_of in templates:
                corr = np.fft.irfft2(spec * sync_conj, s=sym.shape)
                flat = corr.ravel()
                sd = float(flat.std()) or 1.0
                for pos in np.argsort(flat)[::-1][: V.SHIFTS]:
                    tried += 1
                    ty, tx = divmod(int(pos), PERIOD)
                    z = (float(flat[pos]) - float(flat.mean())) / sd
                    cells = _cells(np.roll(sym, (-ty, -tx), axis=(0, 1)))
                    soft = _soft(cells, chips, bit_of)
                    read_tag = 0
                    for s in soft[V.NONCE_BITS :]:
                        read_tag = read_tag << 1 | int(s > 0)
                    for n in _nonce_candidates(soft[: V.NONCE_BITS]):
                        errors = (V.tag(key, n) ^ read_tag).bit_count()
                        label = f"lattice{li} {name} offset=({ty},{tx})"
                        cand = (errors, key.key_id, n, label, z)
                        if best is None or cand[0] < best[0]:
                            best = cand
                    if best is not None and best[0] <= limit:
                        return _result(best, limit, tried)
    if best is None:
        return Detection(False, None, None, None, None, limit, None, tried)
    return _result(best, limit, tried)


def _result(best: tuple[int, int, int, str, float], limit: int, tried: int) -> Detection:
    errors, key_id, n, label, z = best
    found = errors <= limit
    return Detection(
        found=found,
        key_id=key_id if found else None,
        nonce=n if found else None,
        tag_errors=errors,
        bit_accuracy=(V.TAG_BITS - errors) / V.TAG_BITS,
        max_tag_errors=limit,
        hypothesis=label if found else None,
        hypotheses_tried=tried,
        sync_z=round(z, 2),
    )
