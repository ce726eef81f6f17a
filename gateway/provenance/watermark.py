"""Our keyed invisible watermark: DWT-DCT-SVD quantisation on the luma plane, 128-bit keyed payload.

Why this transform, written here rather than imported
    invisible-watermark's ``dwtDctSvd`` marks a chroma plane, which flat generated images (the
    tiny-digits outputs are grey) barely have, so JPEG q75 erases it; the same transform on luma kept
    the mark (FACTS.md). The package also imports torch and onnxruntime at import time (4.2 s measured
    here), so the transform is re-implemented with numpy alone:

    * one-level Haar DWT of Y, keep LL (``(a+b+c+d)/2`` per 2x2 pixels: the Haar LL, no pywt needed);
    * 4x4 blocks of LL (8x8 pixels, aligned with JPEG's blocks);
    * DCT of the block, SVD, quantise the largest singular value ``s0`` (QIM with step ``STEP``).
      The 4x4 DCT is orthogonal, so ``s0(DCT(B)) == s0(B)`` and the modified block is the same whether
      the DCT is applied or not: the DCT is skipped and ``s0`` is read from ``B`` directly (a test pins
      the identity against OpenCV's DCT).

Payload (128 bits, see docs/provenance.md)
    ``key_id`` (16) | ``nonce`` (32) | ``tag`` (80), where ``nonce = HMAC(K, request_id, index)[:32 bits]``
    binds the image to the request and ``tag = HMAC(K, key_id, nonce)[:80 bits]`` proves the key
    holder made it. A verifier reads ``key_id`` and ``nonce`` from the image and recomputes the tag;
    it needs the key, not the request.

Detection threshold
    The tag bits of a candidate are HMAC outputs, so against any image not marked with that key the
    number of agreeing bits is Binomial(80, 1/2) whatever the image looks like. We allow at most
    ``max_tag_errors(candidates)`` disagreements, the largest number for which ``candidates x
    P(Binomial(80, 1/2) >= 80 - e)`` stays under 1e-6, where ``candidates`` counts every (key, nonce,
    geometry) guess the search may try. The arithmetic is in the docs and pinned by a test.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import product
from math import comb

import numpy as np
from numpy.typing import NDArray

from ._image import apply_luma_delta, luma_of

# ----------------------------------------------------------------------------- format constants (v1)

KEY_ID_BITS, NONCE_BITS, TAG_BITS = 16, 32, 80
PAYLOAD_BITS = KEY_ID_BITS + NONCE_BITS + TAG_BITS  # 128
TILE_ROWS, TILE_COLS = 8, 16  # blocks per layout tile: 8x16 blocks = 64x128 pixels, one copy of each bit
BLOCK = 4  # LL coefficients per block side (8 pixels)
STEP = 48.0  # QIM step on s0: ~42-43 dB PSNR, survives JPEG q50 (docs/provenance.md)
S0_MAX = 2 * 255 * BLOCK  # s0 of an all-white block: LL = 510 everywhere, ||510 * ones(4,4)||_2 = 2040
MIN_SIDE = 256  # smallest side we embed into (enough copies of every bit to survive JPEG)
FP_TARGET = 1e-6

MAX_KEYS = 16  # a keyring may hold the current key and up to 15 retired ones
NONCE_FLIPS = 4  # the 4 least reliable nonce bits are tried both ways: 16 nonce candidates
GAINS = (1.0, 0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2, 1.25)  # brightness (s0 scales exactly with gain)
_TILE = TILE_ROWS * TILE_COLS
DEFAULT_HYPOTHESES = len(GAINS) + _TILE - 1  # gains at the origin + tile shifts at gain 1 = 137
THOROUGH_HYPOTHESES = DEFAULT_HYPOTHESES + 63 * _TILE  # + every 8x8 pixel offset x tile shift = 8201

_DOMAIN = b"diffusion-gateway/watermark/v1/"


def false_positive_bound(candidates: int, max_errors: int, bits: int = TAG_BITS) -> float:
    """Union bound on P(any of ``candidates`` random tags is within ``max_errors`` of what we read)."""
    tail: float = sum(comb(bits, k) for k in range(max_errors + 1)) / 2**bits
    return candidates * tail


def max_tag_errors(candidates: int, target: float = FP_TARGET, bits: int = TAG_BITS) -> int:
    """The most tag-bit errors we may forgive while keeping the false-positive bound under ``target``."""
    e = -1
    while false_positive_bound(candidates, e + 1, bits) <= target:
        e += 1
    if e < 0:
        raise ValueError(f"{candidates} candidates cannot reach a false-positive rate of {target}")
    return e


CANDIDATES_DEFAULT = MAX_KEYS * 2**NONCE_FLIPS * DEFAULT_HYPOTHESES
CANDIDATES_THOROUGH = MAX_KEYS * 2**NONCE_FLIPS * THOROUGH_HYPOTHESES
MAX_TAG_ERRORS_DEFAULT = max_tag_errors(CANDIDATES_DEFAULT)  # 11 of 80
MAX_TAG_ERRORS_THOROUGH = max_tag_errors(CANDIDATES_THOROUGH)  # 9 of 80


# ----------------------------------------------------------------------------- keys and payloads


@dataclass(frozen=True, repr=False)
class WatermarkKey:
    """A 32-byte HMAC key. ``repr`` shows the key id only: the secret never reaches logs."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("a watermark key needs at least 16 bytes")

    @cached_property
    def key_id(self) -> int:
        """16-bit public identifier, derived from the secret so it cannot disagree with it."""
        return int.from_bytes(hashlib.sha256(_DOMAIN + b"key-id\0" + self.secret).digest()[:2], "big")

    @property
    def key_id_hex(self) -> str:
        return f"{self.key_id:04x}"

    def mac(self, domain: bytes, label: bytes, message: bytes) -> bytes:
        """HMAC-SHA256 under this key, separated by format (``domain``) and purpose (``label``)."""
        return hmac.digest(self.secret, domain + label + b"\0" + message, "sha256")

    def _mac(self, label: bytes, message: bytes) -> bytes:
        return self.mac(_DOMAIN, label, message)

    def nonce(self, request_id: str, index: int = 0) -> int:
        """32 bits bound to (request id, image index): recomputable from the audit record, not forgeable."""
        msg = request_id.encode() + b"\0" + str(index).encode()
        return int.from_bytes(self._mac(b"nonce", msg)[:4], "big")

    def tag(self, nonce: int) -> bytes:
        """80 bits that only the key holder can compute for (key id, nonce)."""
        msg = self.key_id.to_bytes(2, "big") + nonce.to_bytes(4, "big")
        return self._mac(b"tag", msg)[: TAG_BITS // 8]

    def commit(self, label: str, value: str) -> str:
        """A keyed commitment (128-bit hex): lets the key holder prove ``value`` without publishing it."""
        return self._mac(b"commit/" + label.encode(), value.encode())[:16].hex()

    def payload(self, request_id: str, index: int = 0) -> Payload:
        nonce = self.nonce(request_id, index)
        return Payload(self.key_id, nonce, self.tag(nonce))

    def __repr__(self) -> str:
        return f"WatermarkKey(key_id={self.key_id_hex})"


@dataclass(frozen=True)
class Payload:
    """What the mark carries: public key id and nonce, and the keyed tag over both."""

    key_id: int
    nonce: int
    tag: bytes

    def to_bytes(self) -> bytes:
        return self.key_id.to_bytes(2, "big") + self.nonce.to_bytes(4, "big") + self.tag

    @property
    def bits(self) -> NDArray[np.uint8]:
        return np.unpackbits(np.frombuffer(self.to_bytes(), dtype=np.uint8))

    @classmethod
    def from_bits(cls, bits: NDArray[np.uint8]) -> Payload:
        raw = np.packbits(bits.astype(np.uint8)).tobytes()
        return cls(int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:6], "big"), raw[6:])


# ----------------------------------------------------------------------------- transform


@lru_cache(maxsize=1)
def _layout() -> NDArray[np.intp]:
    """Tile position -> payload bit. A fixed public shuffle so a lost edge costs scattered bits."""
    order = sorted(range(_TILE), key=lambda p: hashlib.sha256(_DOMAIN + b"layout" + bytes([p])).digest())
    return np.array(order, dtype=np.intp)


@lru_cache(maxsize=512)
def bit_index_grid(rows: int, cols: int, shift: tuple[int, int] = (0, 0)) -> NDArray[np.intp]:
    """Payload bit carried by each block; ``shift`` re-aligns the tile after a crop of whole blocks.

    Cached (the search asks for the same grids over and over), hence read-only.
    """
    i = (np.arange(rows)[:, None] + shift[0]) % TILE_ROWS
    j = (np.arange(cols)[None, :] + shift[1]) % TILE_COLS
    grid = np.asarray(_layout()[i * TILE_COLS + j], dtype=np.intp)
    grid.setflags(write=False)
    return grid


@lru_cache(maxsize=512)
def _bit_counts(rows: int, cols: int, shift: tuple[int, int]) -> NDArray[np.float64]:
    counts = np.bincount(bit_index_grid(rows, cols, shift).ravel(), minlength=PAYLOAD_BITS)
    return np.maximum(counts, 1).astype(np.float64)


def _blocks(y: NDArray[np.float64], offset: tuple[int, int] = (0, 0)) -> NDArray[np.float64]:
    """Haar LL of ``y`` (from ``offset``), cut into 4x4 blocks: shape (rows, cols, 4, 4)."""
    z = y[offset[0] :, offset[1] :]
    h, w = (z.shape[0] // 8) * 8, (z.shape[1] // 8) * 8
    z = z[:h, :w]
    ll = (z[0::2, 0::2] + z[0::2, 1::2] + z[1::2, 0::2] + z[1::2, 1::2]) / 2.0
    return ll.reshape(h // 8, BLOCK, w // 8, BLOCK).swapaxes(1, 2)


def block_s0(y: NDArray[np.float64], offset: tuple[int, int] = (0, 0)) -> NDArray[np.float64]:
    """Largest singular value of every block (via the top eigenvalue of BᵀB: half the cost of SVD)."""
    b = _blocks(y, offset)
    gram = b.swapaxes(-1, -2) @ b
    top = np.linalg.eigvalsh(gram)[..., -1]
    return np.asarray(np.sqrt(np.maximum(top, 0.0)), dtype=np.float64)


def embed_delta(y: NDArray[np.float64], bits: NDArray[np.uint8]) -> NDArray[np.float64]:
    """The luma change that moves every block's s0 onto the QIM lattice of its payload bit.

    Bit b sits at ``(k + 0.25 + 0.5 b) * STEP``; the nearest such point is chosen (distortion at
    most STEP/2) within ``[0, S0_MAX]`` so saturated blocks are not pushed past white. The change
    ``(t - s0) u0 v0ᵀ`` touches only the top singular component, and a Haar LL change ``d`` moves each
    of its four pixels by ``d/2``.
    """
    b = _blocks(y)
    rows, cols = b.shape[:2]
    gram = b.swapaxes(-1, -2) @ b
    w, vecs = np.linalg.eigh(gram)
    s0 = np.sqrt(np.maximum(w[..., -1], 0.0))
    v0 = vecs[..., :, -1]
    flat = s0 < 1e-6  # all-zero block: any direction is "top"; use the DC one so the change is uniform
    safe = np.where(flat, 1.0, s0)
    u0 = (b @ v0[..., None])[..., 0] / safe[..., None]
    u0[flat] = 0.5
    v0 = np.where(flat[..., None], 0.5, v0)
    off = 0.25 + 0.5 * bits[bit_index_grid(rows, cols)].astype(np.float64)
    k = np.clip(np.rint(s0 / STEP - off), 0.0, np.floor(S0_MAX / STEP - off))
    target = (k + off) * STEP
    d = (target - s0)[..., None, None] * u0[..., :, None] * v0[..., None, :]
    dll = d.swapaxes(1, 2).reshape(rows * BLOCK, cols * BLOCK)
    out = np.zeros_like(y)
    out[: rows * 8, : cols * 8] = np.repeat(np.repeat(dll, 2, axis=0), 2, axis=1) / 2.0
    return out


def soft_votes(s0: NDArray[np.float64], gain: float = 1.0) -> NDArray[np.float64]:
    """Per-block vote in [-1, 1]: +1 at the bit-1 lattice point, -1 at the bit-0 point, 0 between."""
    phase = (s0 / (gain * STEP)) % 1.0
    return np.asarray(-np.sin(2.0 * np.pi * phase), dtype=np.float64)


def aggregate(votes: NDArray[np.float64], shift: tuple[int, int] = (0, 0)) -> NDArray[np.float64]:
    """Mean vote per payload bit (0 for a bit no block carries)."""
    rows, cols = votes.shape
    sums = np.bincount(
        bit_index_grid(rows, cols, shift).ravel(), weights=votes.ravel(), minlength=PAYLOAD_BITS
    )
    return np.asarray(sums / _bit_counts(rows, cols, shift), dtype=np.float64)


def read_bits(
    y: NDArray[np.float64], gain: float = 1.0, shift: tuple[int, int] = (0, 0)
) -> NDArray[np.uint8]:
    """Hard payload bits at the origin geometry (what the benchmark scores bit accuracy on)."""
    return (aggregate(soft_votes(block_s0(y), gain), shift) > 0).astype(np.uint8)


def can_embed(width: int, height: int) -> bool:
    return width >= MIN_SIDE and height >= MIN_SIDE


def can_detect(width: int, height: int) -> bool:
    """Detection needs one full layout tile (64x128 pixels); the FP bound holds at any size."""
    return height >= TILE_ROWS * 8 and width >= TILE_COLS * 8


@dataclass(frozen=True)
class Embedded:
    """Marked pixels and the evidence that the mark reads back before the image leaves the gateway."""

    pixels: NDArray[np.uint8]
    psnr_db: float
    bit_errors: int  # payload bits read back wrong from the rounded, clipped 8-bit result (expect 0)


def embed_pixels(pixels: NDArray[np.uint8], mode: str, payload: Payload, max_passes: int = 3) -> Embedded:
    """Embed ``payload`` into 8-bit pixels and read it back.

    Rounding to 8 bits and clipping at 0/255 undo part of the change in near-black and near-white
    blocks; while more than 1% of blocks sit closer to the decision boundary than to their lattice
    point, another pass re-quantises the rounded result (one pass is enough on most images).
    """
    bits = payload.bits
    out = pixels
    y = luma_of(out, mode)
    s0 = np.zeros((0, 0))
    for _ in range(max_passes):
        out = apply_luma_delta(out, mode, embed_delta(y, bits))
        y = luma_of(out, mode)
        s0 = block_s0(y)
        want = 2.0 * bits[bit_index_grid(*s0.shape)].astype(np.float64) - 1.0
        if np.mean(soft_votes(s0) * want < 0.5) <= 0.01:
            break
    errors = int(np.count_nonzero((aggregate(soft_votes(s0)) > 0).astype(np.uint8) != bits))
    mse = float(np.mean((out.astype(np.float64) - pixels.astype(np.float64)) ** 2))
    psnr = float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))
    return Embedded(out, psnr, errors)


# ----------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detection:
    """The best candidate the search found, and whether it clears the threshold."""

    found: bool
    key_id: int | None
    nonce: int | None
    tag_errors: int | None  # disagreeing tag bits of the best candidate (lower is better)
    bit_accuracy: float | None  # agreeing tag bits of the best candidate / 80 (~0.5-0.7 when unmarked)
    max_tag_errors: int
    hypothesis: str | None
    hypotheses_tried: int

    @property
    def payload_hex(self) -> str | None:
        if self.key_id is None or self.nonce is None:
            return None
        return f"{self.key_id:04x}{self.nonce:08x}"


def _hypotheses(y: NDArray[np.float64], thorough: bool) -> Iterator[tuple[str, NDArray[np.float64]]]:
    """(label, mean vote per bit) for each geometry guess, most likely first."""
    s0 = block_s0(y)
    for gain in GAINS:
        yield (f"gain={gain:g}" if gain != 1.0 else "aligned"), aggregate(soft_votes(s0, gain))
    votes = soft_votes(s0)
    for si, sj in product(range(TILE_ROWS), range(TILE_COLS)):
        if (si, sj) != (0, 0):
            yield f"tile-shift=({si},{sj})", aggregate(votes, (si, sj))
    if not thorough:
        return
    for oy, ox in product(range(8), range(8)):
        if (oy, ox) == (0, 0) or y.shape[0] - oy < TILE_ROWS * 8 or y.shape[1] - ox < TILE_COLS * 8:
            continue
        v = soft_votes(block_s0(y, (oy, ox)))
        for si, sj in product(range(TILE_ROWS), range(TILE_COLS)):
            yield f"offset=({oy},{ox}) tile-shift=({si},{sj})", aggregate(v, (si, sj))


def _nonce_candidates(nonce_soft: NDArray[np.float64]) -> list[int]:
    """The nonce as read, and every flip of its ``NONCE_FLIPS`` least reliable bits."""
    hard = int.from_bytes(np.packbits(nonce_soft > 0).tobytes(), "big")
    masks = [1 << (NONCE_BITS - 1 - int(p)) for p in np.argsort(np.abs(nonce_soft))[:NONCE_FLIPS]]
    out = []
    for combo in range(2**NONCE_FLIPS):
        flip = 0
        for n, mask in enumerate(masks):
            if combo >> n & 1:
                flip |= mask
        out.append(hard ^ flip)
    return out


def detect(y: NDArray[np.float64], keys: Sequence[WatermarkKey], *, thorough: bool = False) -> Detection:
    """Search geometry guesses x keys x nonce candidates for a tag within the threshold; stop at the first."""
    if len(keys) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} watermark keys may be tried (the FP bound assumes it)")
    limit = MAX_TAG_ERRORS_THOROUGH if thorough else MAX_TAG_ERRORS_DEFAULT
    best: tuple[int, int, int, str] | None = None  # (tag errors, key id, nonce, label)
    tried = 0
    for label, soft in _hypotheses(y, thorough):
        tried += 1
        read_tag = int.from_bytes(np.packbits(soft[-TAG_BITS:] > 0).tobytes(), "big")
        for nonce in _nonce_candidates(soft[KEY_ID_BITS : KEY_ID_BITS + NONCE_BITS]):
            for key in keys:
                tag_errors = (int.from_bytes(key.tag(nonce), "big") ^ read_tag).bit_count()
                cand = (tag_errors, key.key_id, nonce, label)
                if best is None or cand < best:
                    best = cand
        if best is not None and best[0] <= limit:
            break
    if best is None:
        return Detection(False, None, None, None, None, limit, None, tried)
    errors, key_id, nonce, label = best
    found = errors <= limit
    return Detection(
        found=found,
        key_id=key_id if found else None,
        nonce=nonce if found else None,
        tag_errors=errors,
        bit_accuracy=(TAG_BITS - errors) / TAG_BITS,
        max_tag_errors=limit,
        hypothesis=label if found else None,
        hypotheses_tried=tried,
    )
