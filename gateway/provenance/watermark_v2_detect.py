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
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import watermark_v2 as wm2
from ._wm2_sync import PERIOD, Lattice, find_lattices, fold
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
    lay = wm2.layout(key)
    sync = wm2.render(lay.sync, PERIOD, PERIOD, float(wm2.CANON))
    return np.conj(np.fft.rfft2(sync)), lay.chips, lay.bit_of


_KERNEL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0


def _sine_free(folded: NDArray[np.float64]) -> NDArray[np.float64]:
    """The fold without the Fourier sync peaks (in any of the 8 symmetries): they are not cells."""
    spec = np.fft.fft2(folded)
    for a, b in wm2.PEAKS:
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
    c = wm2.CANON
    blocks = aligned.reshape(wm2.TILE, c, wm2.TILE, c).swapaxes(1, 2)
    return np.asarray(np.einsum("ijab,ab->ij", blocks, _KERNEL), dtype=np.float64)


def _soft(
    cells: NDArray[np.float64], chips: NDArray[np.float64], bit_of: NDArray[np.intp]
) -> NDArray[np.float64]:
    mask = bit_of >= 0
    out = np.bincount(bit_of[mask], weights=(cells * chips)[mask], minlength=wm2.PAYLOAD_BITS)
    return np.asarray(out, dtype=np.float64)


def soft_bits(cells: NDArray[np.float64], lay: wm2.Layout) -> NDArray[np.float64]:
    """Soft payload bits (sum of chip x cell value over each bit's cells) of aligned cell values."""
    return _soft(cells, lay.chips, lay.bit_of)


def _nonce_candidates(soft: NDArray[np.float64]) -> list[int]:
    """The nonce as read, then with every 1 to ``NONCE_MAX_FLIPS`` of its least reliable bits flipped."""
    hard = 0
    for s in soft:
        hard = hard << 1 | int(s > 0)
    masks = [1 << (wm2.NONCE_BITS - 1 - int(p)) for p in np.argsort(np.abs(soft))[: wm2.NONCE_WEAKEST]]
    out = [hard]
    for k in range(1, wm2.NONCE_MAX_FLIPS + 1):
        for combo in combinations(masks, k):
            flip = 0
            for m in combo:
                flip |= m
            out.append(hard ^ flip)
    return out


_PHASE_WEIGHT = 2.0  # offsets are ranked by sync-cell z-score + 2 x sinusoid phase agreement (max 2)
_T = np.arange(PERIOD, dtype=np.float64) - 0.5


def _phase_agreement(spec: NDArray[np.complex128]) -> NDArray[np.float64]:
    """For every offset t, how well the two sync sinusoids' phases in the fold agree with t.

    In the aligned tile the sinusoids are ``cos(2 pi k.(x + 0.5) / 48)``, so a fold offset by t shows
    phase ``-2 pi k.(t - 0.5) / 48`` at bin k. The sum of the two cosines of the phase errors is 2 at
    the true offset and averages 0 elsewhere; added to the sync cells' z-score it lifts the true
    offset above the noise peaks of 2,304 candidates (the sinusoids are far stronger than 64 cells).
    """
    out = np.zeros((PERIOD, PERIOD))
    for kx, ky in wm2.PEAKS:
        # X[-k] = conj(X[k]) for a real fold
        phi = float(np.angle(spec[ky % PERIOD, kx])) if kx >= 0 else -float(np.angle(spec[-ky % PERIOD, -kx]))
        pred = -2 * np.pi * (ky * _T[:, None] + kx * _T[None, :]) / PERIOD
        out += np.cos(phi - pred)
    return out


def _strength(spec: NDArray[np.complex128]) -> float:
    """Magnitude of the fold at the two sync-sinusoid bins (large only in the right handedness)."""
    total = 0.0
    for kx, ky in wm2.PEAKS:
        total += float(abs(spec[ky % PERIOD, kx] if kx >= 0 else spec[(-ky) % PERIOD, -kx]))
    return total


def detect(y: NDArray[np.float64], keys: Sequence[WatermarkKey]) -> Detection:
    """Search lattices x (symmetry, offset) x keys x nonce flips; stop at the first verified tag.

    Per lattice and key, the ``HYPOTHESES / LATTICES`` best (symmetry, offset) pairs are decoded,
    ranked across all symmetries by sync-cell z-score plus sinusoid phase agreement; symmetries of
    the wrong handedness (weak sinusoid bins) are skipped. The number decoded never exceeds what
    the false-positive bound counts.
    """
    if len(keys) > wm2.MAX_KEYS:
        raise ValueError(f"at most {wm2.MAX_KEYS} watermark keys may be tried (the FP bound assumes it)")
    return search(y, keys, list(enumerate(find_lattices(y, wm2.LATTICES))))


def near(lat: Lattice, basis: NDArray[np.float64], tol: float = 0.03) -> bool:
    """Whether ``lat`` is ``basis`` up to the square's symmetries (column order and signs), within ``tol``."""
    scale = float(np.linalg.norm(basis))
    for cols in ((0, 1), (1, 0)):
        for sx in (1.0, -1.0):
            for sy in (1.0, -1.0):
                cand = basis[:, cols] * np.array([sx, sy])
                if float(np.linalg.norm(lat.basis - cand)) <= tol * scale:
                    return True
    return False


def search(
    y: NDArray[np.floating[Any]], keys: Sequence[WatermarkKey], lattices: Sequence[tuple[int, Lattice]]
) -> Detection:
    """The decode half of :func:`detect`, over the given (index, lattice) candidates only.

    The embedder's self-check passes the lattices :func:`find_lattices` found near the geometry it
    used: a lattice far from it cannot decode the right tag (that would be a false positive), so the
    outcome is the full detector's, and a picture where sync does not lock costs no folds.
    """
    limit = wm2.MAX_TAG_ERRORS
    best: tuple[int, int, int, str, float] | None = None
    tried = 0
    if not keys:
        return Detection(False, None, None, None, None, limit, None, 0)
    templates = [(k, *_templates(k)) for k in keys]
    per_lattice = wm2.DECODES
    for li, lat in lattices:
        raw = fold(y, lat.basis)
        views = []  # (name, sine-free fold, phase agreement, sinusoid strength)
        for (name, sym_raw), (_, sym) in zip(_symmetries(raw), _symmetries(_sine_free(raw)), strict=True):
            raw_spec = np.fft.rfft2(sym_raw)
            views.append(
                (name, sym, np.fft.rfft2(sym), _phase_agreement(raw_spec).ravel(), _strength(raw_spec))
            )
        strongest = max(v[4] for v in views)
        for key, sync_conj, chips, bit_of in templates:
            ranked: list[tuple[float, float, int, int]] = []  # (score, z, view, position)
            for vi, (_, sym, spec, phase, strength) in enumerate(views):
                if strength < 0.5 * strongest:  # the sinusoids are not where this symmetry puts them
                    continue
                flat = np.fft.irfft2(spec * sync_conj, s=sym.shape).ravel()
                zs = (flat - flat.mean()) / (float(flat.std()) or 1.0)
                score = zs + _PHASE_WEIGHT * phase
                for pos in np.argsort(score)[::-1][:per_lattice]:
                    ranked.append((float(score[pos]), float(zs[pos]), vi, int(pos)))
            ranked.sort(reverse=True)
            for _, z, vi, pos in ranked[:per_lattice]:
                tried += 1
                name, sym = views[vi][0], views[vi][1]
                ty, tx = divmod(pos, PERIOD)
                cells = _cells(np.roll(sym, (-ty, -tx), axis=(0, 1)))
                soft = _soft(cells, chips, bit_of)
                read_tag = 0
                for s in soft[wm2.NONCE_BITS :]:
                    read_tag = read_tag << 1 | int(s > 0)
                for n in _nonce_candidates(soft[: wm2.NONCE_BITS]):
                    errors = (wm2.tag(key, n) ^ read_tag).bit_count()
                    cand = (errors, key.key_id, n, f"lattice{li} {name} offset=({ty},{tx})", z)
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
        bit_accuracy=(wm2.TAG_BITS - errors) / wm2.TAG_BITS,
        max_tag_errors=limit,
        hypothesis=label if found else None,
        hypotheses_tried=tried,
        sync_z=round(z, 2),
    )
