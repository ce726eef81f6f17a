"""Watermark v2: a keyed periodic tile on a canonical grid, re-synchronised before decoding.

Why a periodic tile (and not v1's block QIM)
    v1 reads bits from fixed 8x8 blocks, so any resize that is not undone, any rotation or flip, and
    any crop off the 8-pixel grid moves every block and the mark is gone. v2 adds one small pattern,
    a tile of ``TILE x TILE`` cells, repeated over the whole image. Repetition makes the mark's
    autocorrelation a lattice of peaks whatever the picture is, and that lattice tells the detector
    the rotation, scale, aspect change and shear the image went through (:mod:`._wm2_sync`). Flip
    and 90-degree turns keep a square lattice, so the detector tries the eight symmetries of the
    square; the keyed sync cells of the tile then give the crop offset by one FFT correlation per
    symmetry. Every tile carries the whole payload, so votes pool over all tiles that survived.

Canonical grid
    The cell size is the short side divided by a cell count (96, or 128 or 192 where the picture's own
    texture leaves 96 coarse cells too little margin), so a 256-pixel and a 2048-pixel output carry
    the same number of cells and the mark scales with the image: a later resize changes the pixel
    size of a cell, never what a cell holds. The detector does not need the count: it measures the
    lattice and resamples to a canonical grid of ``CANON`` pixels per cell before decoding.

Tile layout (keyed)
    Half of the ``TILE**2`` cells are sync cells with a keyed +-1 chip; each of the other half carries
    one payload bit times a keyed chip, through a keyed permutation. Without the key the template and
    the layout are unknown, so a reader cannot subtract or forge the mark from one image.

Payload: 128 bits = nonce (64) | tag (64)
    ``nonce = HMAC(K, request_id, index)[:64 bits]`` identifies the output (64 bits, so deployments
    with billions of outputs do not collide) and is the key the content-credential index uses;
    ``tag = HMAC(K, nonce)[:64 bits]`` is the error-detecting, keyed check. The key id is not
    embedded: every key of the ring (at most 16) is tried and counted in the bound.

False positives
    Against an image not marked with key K the expected tag of any candidate is an HMAC output,
    independent of the pixels: its agreement with the 64 read tag bits is Binomial(64, 1/2). With
    ``CANDIDATES`` = keys x geometry hypotheses x nonce candidates, at most ``MAX_TAG_ERRORS``
    disagreements keep ``CANDIDATES x P(Bin(64, 1/2) <= e)`` under 1e-6 (docs/provenance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import watermark as _v1
from .watermark import WatermarkKey

ALGORITHM = "io.github.diffusion-gateway.watermark.v2"  # the C2PA soft-binding algorithm name
NONCE_BITS, TAG_BITS = 64, 64
PAYLOAD_BITS = NONCE_BITS + TAG_BITS
TILE = 16  # cells per tile side: 256 cells = 64 sync + 192 data (nonce bits twice, tag bits once)
SYNC_CELLS = 64
# cells along the short side, coarser first (survives JPEG, blur and resizing better); the finest
# lets busy photos carry v2 (astronaut and immunohistochemistry in the benchmark: at 96 and 128
# cells the self-check's full search does not find them, at 192 it does)
CELLS_CHOICES = (96, 128, 192)
CANON = 3  # canonical pixels per cell in the detector
MIN_SIDE = 256
MIN_DETECT_SIDE = 64  # a quarter of the smallest marked side: crops and 0.3x resizes still try
FP_TARGET = 1e-6
MAX_KEYS = 16
# nonce candidates (Chase list decoding): as read, and with any 1 to 3 of its 13 least reliable bits
# flipped. A bit error in the nonce is fatal unless the list holds it, while the tag forgives some:
# on the benchmark's codecs and noise, 3 of 13 (378 candidates, 6 tag errors forgiven) decodes more
# images than 2 of 6 (22 candidates, 7 forgiven), e.g. JPEG q30 on 10 of 10 digits instead of 5.
NONCE_WEAKEST, NONCE_MAX_FLIPS = 13, 3
NONCE_CANDIDATES = sum(comb(NONCE_WEAKEST, k) for k in range(NONCE_MAX_FLIPS + 1))  # 378
LATTICES = 4  # lattice (rotation/scale) candidates from the two strongest pairs of spectral lines
# (symmetry, crop offset) pairs decoded per lattice, best first: of 302 marks found after the
# benchmark's attacks, 293 were the first pair, 7 the second, 2 the third or fourth, none later, so
# the bound's budget goes to the nonce list instead of pairs 5-8
DECODES = 4
PEAKS = ((6, 2), (-2, 6))  # Fourier sync peaks, in cycles per tile along (x, y): 90 degrees apart
PEAK_SHARE = 0.25  # share of the mark's energy in the two sinusoids (the rest in the cells)
TARGET_PSNR = 42.3  # before 8-bit rounding (adds ~0.08 to the MSE) and clipping: lands >= 42 dB
READBACK_MAX_NONCE_ERRORS, READBACK_MAX_TAG_ERRORS = 1, 3  # self-check at the known geometry
_DOMAIN = b"diffusion-gateway/watermark/v2/"


def false_positive_bound(candidates: int, max_errors: int, bits: int = TAG_BITS) -> float:
    """Union bound on P(any of ``candidates`` random tags is within ``max_errors`` of what we read)."""
    return _v1.false_positive_bound(candidates, max_errors, bits)


def max_tag_errors(candidates: int, target: float = FP_TARGET, bits: int = TAG_BITS) -> int:
    """The most tag-bit errors we may forgive while the false-positive bound stays under ``target``."""
    return _v1.max_tag_errors(candidates, target, bits)


HYPOTHESES = LATTICES * DECODES
CANDIDATES = MAX_KEYS * HYPOTHESES * NONCE_CANDIDATES
MAX_TAG_ERRORS = max_tag_errors(CANDIDATES)


# ----------------------------------------------------------------------------- keyed material


def _mac(key: WatermarkKey, label: bytes, message: bytes) -> bytes:
    return key.mac(_DOMAIN, label, message)


def nonce(key: WatermarkKey, request_id: str, index: int = 0) -> int:
    """64 bits bound to (request id, image index): the soft-binding value the index is keyed by."""
    return int.from_bytes(_mac(key, b"nonce", request_id.encode() + b"\0" + str(index).encode())[:8], "big")


def tag(key: WatermarkKey, nonce_value: int) -> int:
    return int.from_bytes(_mac(key, b"tag", nonce_value.to_bytes(8, "big"))[:8], "big")


def payload_bits(key: WatermarkKey, nonce_value: int) -> NDArray[np.float64]:
    """The 128 payload bits as +-1 (nonce first, most significant bit first)."""
    word = nonce_value << TAG_BITS | tag(key, nonce_value)
    bits = np.array([(word >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.float64)
    return 2.0 * bits - 1.0


def soft_binding(key: WatermarkKey, nonce_value: int) -> bytes:
    """What the C2PA soft-binding assertion carries: key id (2 bytes) | nonce (8) | tag (8)."""
    return (
        key.key_id.to_bytes(2, "big")
        + nonce_value.to_bytes(8, "big")
        + tag(key, nonce_value).to_bytes(8, "big")
    )


@dataclass(frozen=True)
class Layout:
    """One key's tile: sync chips (0 on data cells), data chips, and which bit each data cell holds."""

    sync: NDArray[np.float64]  # TILE x TILE, +-1 on sync cells, 0 elsewhere
    chips: NDArray[np.float64]  # TILE x TILE, +-1 on data cells, 0 elsewhere
    bit_of: NDArray[np.intp]  # TILE x TILE, payload bit of each data cell, -1 on sync cells

    def tile(self, bits_pm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Cell values of the tile carrying ``bits_pm`` (+-1 per payload bit)."""
        data = np.where(self.bit_of >= 0, bits_pm[np.maximum(self.bit_of, 0)], 0.0) * self.chips
        return np.asarray(self.sync + data, dtype=np.float64)


@lru_cache(maxsize=MAX_KEYS * 2)
def layout(key: WatermarkKey) -> Layout:
    seed = int.from_bytes(_mac(key, b"layout", b"")[:16], "big")
    rng = np.random.default_rng(seed)
    cells = TILE * TILE
    order = rng.permutation(cells)
    sync_cells, data_cells = order[:SYNC_CELLS], order[SYNC_CELLS:]
    sync = np.zeros(cells)
    sync[sync_cells] = rng.choice([-1.0, 1.0], size=sync_cells.size)
    chips = np.zeros(cells)
    chips[data_cells] = rng.choice([-1.0, 1.0], size=data_cells.size)
    bit_of = np.full(cells, -1, dtype=np.intp)
    bit_of[data_cells] = np.arange(data_cells.size) % PAYLOAD_BITS  # the first 64 bits (nonce) twice
    shape = (TILE, TILE)
    return Layout(sync.reshape(shape), chips.reshape(shape), bit_of.reshape(shape))


# ----------------------------------------------------------------------------- rendering


def _cubic_weights(n: int, cell_px: float) -> NDArray[np.float32]:
    """``n x TILE`` matrix: periodic cubic interpolation (Keys, a = -0.75, as OpenCV's INTER_CUBIC)."""
    a = -0.75
    s = (np.arange(n, dtype=np.float64) + 0.5) / cell_px - 0.5
    i0 = np.floor(s)
    x = s - i0
    w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + 1
    w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    w3 = 1 - w0 - w1 - w2
    out = np.zeros((n, TILE), dtype=np.float64)
    rows = np.arange(n)
    for k, wk in enumerate((w0, w1, w2, w3)):
        out[rows, (i0.astype(np.intp) - 1 + k) % TILE] += wk
    return out.astype(np.float32)


def render(cells: NDArray[np.float64], height: int, width: int, cell_px: float) -> NDArray[np.float32]:
    """The periodic tile ``cells`` drawn over ``height x width`` pixels, ``cell_px`` pixels per cell.

    Cubic interpolation between cell centres keeps the pattern smooth (its energy stays below the
    cell frequency, where resizing, blur and JPEG leave it alone). Cell (i, j) is centred on pixel
    ``((i + 0.5) * cell_px - 0.5, (j + 0.5) * cell_px - 0.5)``. Cubic interpolation is separable,
    so the whole pattern is two small matrix products (``H x 16 @ 16 x 16 @ 16 x W``).
    """
    wy = _cubic_weights(height, cell_px)
    wx = _cubic_weights(width, cell_px)
    return np.asarray((wy @ cells.astype(np.float32)) @ wx.T, dtype=np.float32)


def peaks_pattern(height: int, width: int, cell_px: float, amplitude: float = 1.0) -> NDArray[np.float32]:
    """The public Fourier sync: two sinusoids on the tile's reciprocal lattice, ``amplitude**2`` power.

    They are periodic with the tile, so their spectral lines give the tile lattice directly; the
    detector finds them as the two strongest lines 90 degrees apart (see _wm2_sync).
    """
    period = TILE * cell_px
    ys = 2 * np.pi * (np.arange(height, dtype=np.float64) + 0.5) / period
    xs = 2 * np.pi * (np.arange(width, dtype=np.float64) + 0.5) / period
    # cos(ax + by) = cos(ax) cos(by) - sin(ax) sin(by): two outer products per sinusoid (separable)
    cols = np.concatenate([np.stack([np.cos(b * ys), -np.sin(b * ys)], axis=1) for a, b in PEAKS], axis=1)
    rows = np.concatenate([np.stack([np.cos(a * xs), np.sin(a * xs)]) for a, b in PEAKS])
    rows *= amplitude / np.sqrt(len(PEAKS) / 2)  # scale the small factor, not the full-size product
    return np.asarray(cols.astype(np.float32) @ rows.astype(np.float32), dtype=np.float32)


MASK_C2 = (0.03 * 255.0) ** 2  # SSIM's contrast constant for 8-bit images
MASK_EXPONENT = 0.35  # strength ~ (2 var + C2) ** this: 0.5 equalises SSIM loss, 0 is uniform
MASK_RANGE = 6.0  # strength stays within 1/6x .. 6x of its median
MASK_EASE_LEVELS = 12.0  # strength ramps from 0 at black (and white) to full 12 levels away
MASK_EASE_FLOOR = 0.05


def perceptual_mask(y: NDArray[np.floating[Any]], cell_px: float) -> NDArray[np.float32]:
    """Relative strength per pixel, shaped by what SSIM (the binding invisibility target) penalises.

    SSIM loses about ``var_mark / (2 var_local + C2)`` per window, so a mark of uniform strength
    costs most where the picture is flat and nearly nothing in texture. Strength follows
    ``(2 var_local + C2) ** MASK_EXPONENT`` (local variance at cell scale, at least 3 px), between
    1/``MASK_RANGE`` and ``MASK_RANGE`` times its median: 0.35 rather than the SSIM-equalising 0.5
    because the detector's locally normalised residual reads flat areas best, and more texture
    bias leaves busy photos too little margin to carry the mark. Near black and white the mark
    would be clipped to one side (a mean shift SSIM's luminance term punishes, and little the
    detector can read), so strength ramps down to ``MASK_EASE_FLOOR`` within ``MASK_EASE_LEVELS``.
    """

    import cv2

    y32 = np.asarray(y, dtype=np.float32)
    h, w = y32.shape
    s = max(cell_px, 3.0)
    # everything here is smooth at cell scale: work on a copy area-shrunk by k (as smooth_blur does)
    # and resize the result back once, so the power and the blurs cost a fraction of a full-size pass
    k = int(s / 2)
    if k < 2 or min(h, w) < 8 * k:
        k = 1
    ph, pw = -h % k, -w % k
    src = cv2.copyMakeBorder(y32, 0, ph, 0, pw, cv2.BORDER_REFLECT) if ph or pw else y32
    size = ((w + pw) // k, (h + ph) // k)
    small = cv2.resize(src, size, interpolation=cv2.INTER_AREA) if k > 1 else src
    small2 = cv2.resize(src * src, size, interpolation=cv2.INTER_AREA) if k > 1 else src * src
    sigma = float(np.sqrt(max(s**2 / k**2 - 0.25, 0.25))) if k > 1 else s
    mu = cv2.GaussianBlur(small, (0, 0), sigma)
    var = cv2.GaussianBlur(small2, (0, 0), sigma) - mu * mu
    np.maximum(var, 0.0, out=var)
    m = np.power(2.0 * var + np.float32(MASK_C2), np.float32(MASK_EXPONENT), dtype=np.float32)
    m /= np.float32(np.median(m))
    np.clip(m, 1.0 / MASK_RANGE, MASK_RANGE, out=m)
    ease = np.clip(np.minimum(mu, 255.0 - mu) / np.float32(MASK_EASE_LEVELS), MASK_EASE_FLOOR, 1.0)
    m *= cv2.GaussianBlur(ease.astype(np.float32), (0, 0), sigma)
    if k > 1:
        m = cv2.resize(m, (w + pw, h + ph), interpolation=cv2.INTER_LINEAR)[:h, :w]
    return np.ascontiguousarray(m, dtype=np.float32)


def cell_size(height: int, width: int, cells_short: int = CELLS_CHOICES[0]) -> float:
    return min(height, width) / cells_short


def embed_delta(
    y: NDArray[np.floating[Any]],
    key: WatermarkKey,
    nonce_value: int,
    target_psnr: float = TARGET_PSNR,
    cells_short: int = CELLS_CHOICES[0],
    mask: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """The luma change carrying (key, nonce), scaled to ``target_psnr``.

    Informed embedding: the detector's cell values are linear in the residual, so we measure what
    the picture alone contributes to every cell of the folded tile (``host``) and what a unit mark
    contributes (``gain``), and give each cell the amplitude that lands the fold on its target sign
    with the host's part cancelled (improved spread spectrum, Malvar & Florencio 2003). Without it
    the picture's own texture, folded onto the tile, outweighs a mark this faint.
    """
    from ._wm2_sync import fold
    from .watermark_v2_detect import cell_values

    h, w = y.shape
    y = np.asarray(y, dtype=np.float32)  # every full-size array below is float32 (half the memory traffic)
    c = cell_size(h, w, cells_short)
    target = layout(key).tile(payload_bits(key, nonce_value))
    if mask is None:  # callers trying several cell sizes pass one mask (it is smooth at any of them)
        mask = perceptual_mask(y, c)
    basis = np.eye(2) * TILE * c
    budget = 255.0**2 / 10 ** (target_psnr / 10)
    unit = render(target, h, w, c)
    unit *= mask
    n = unit.size
    scale = np.sqrt(budget) / max(float(np.sqrt(_dot(unit, unit) / n)), 1e-9)
    unit *= scale  # RMS sqrt(budget), cell values +-1
    host = cell_values(fold(y, basis))
    on = target != 0
    gain = float(np.median((cell_values(fold(y + unit, basis)) - host)[on] * target[on]))
    cancel = np.where(on, host / gain, 0.0) if gain > 0 else np.zeros_like(target)
    q = render(cancel, h, w, c)
    q *= mask
    q *= np.float32(scale)
    cells_budget = (1 - PEAK_SHARE) * budget
    bq, qq = _dot(unit, q) / n, _dot(q, q) / n
    lam = min(1.0, float(np.sqrt(0.7 * cells_budget / qq))) if qq > 0 else 0.0
    disc = (lam * bq) ** 2 - budget * (lam * lam * qq - cells_budget)
    t = (lam * bq + np.sqrt(max(disc, 0.0))) / budget
    unit *= np.float32(t)
    q *= np.float32(lam)
    unit -= q  # the cells' part
    peaks = peaks_pattern(h, w, c, 1.0)
    # the sync sinusoids follow the mask's square root: less energy in flat areas, where SSIM pays
    # most, while the mask stays too smooth to blur their spectral lines
    peaks *= np.sqrt(mask)
    peaks *= np.float32(np.sqrt(PEAK_SHARE * budget / max(_dot(peaks, peaks) / n, 1e-12)))
    unit += peaks
    return unit


def _dot(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Sum of ``a * b`` without a full-size temporary (float32 BLAS, ~1e-6 relative error: ample for
    the scale factors it feeds)."""
    return float(np.dot(a.reshape(-1), b.reshape(-1)))


def can_embed(width: int, height: int) -> bool:
    return min(width, height) >= MIN_SIDE


@dataclass(frozen=True)
class Embedded:
    """Marked pixels and the evidence that the mark reads back before the image leaves the gateway."""

    pixels: NDArray[np.uint8]
    psnr_db: float
    readback_tag_errors: int | None  # tag errors the detector saw on the 8-bit result (None: not found)


def readback(
    y: NDArray[np.floating[Any]], key: WatermarkKey, nonce_value: int, cells_short: int
) -> int | None:
    """Tag errors read at the known geometry (None if the nonce reads wrong): the cheap self-check."""
    from ._wm2_sync import fold
    from .watermark_v2_detect import cell_values, soft_bits

    h, w = y.shape
    soft = soft_bits(cell_values(fold(y, np.eye(2) * TILE * cell_size(h, w, cells_short))), layout(key))
    bits = payload_bits(key, nonce_value)
    if np.count_nonzero(np.sign(soft[:NONCE_BITS]) != bits[:NONCE_BITS]) > READBACK_MAX_NONCE_ERRORS:
        return None
    return int(np.count_nonzero(np.sign(soft[NONCE_BITS:]) != bits[NONCE_BITS:]))


def embed_pixels(pixels: NDArray[np.uint8], mode: str, key: WatermarkKey, nonce_value: int) -> Embedded:
    """Embed into 8-bit pixels (luma only, as v1), coarse cells first, and read the result back.

    Coarse cells (96 per short side) hold up better to JPEG, blur and noise; on busy pictures the
    texture folded onto the tile can leave them too little margin, then 128 and 192 finer cells are
    tried.
    The mark is accepted when the rounded result reads back at the known geometry with at most one
    nonce bit and ``READBACK_MAX_TAG_ERRORS`` tag bits wrong (well inside what the detector forgives)
    and the full detector, geometry search included, finds it; else the caller falls back to v1.
    """
    from ._image import apply_luma_delta, luma32_of
    from ._wm2_sync import find_lattices
    from .watermark_v2_detect import near, search

    y = luma32_of(pixels, mode)  # float32 throughout: the fold and the mask narrow to it anyway
    mask = perceptual_mask(y, cell_size(y.shape[0], y.shape[1], CELLS_CHOICES[0]))
    best: tuple[int, NDArray[np.uint8]] | None = None
    for cells in CELLS_CHOICES:
        out = apply_luma_delta(pixels, mode, embed_delta(y, key, nonce_value, cells_short=cells, mask=mask))
        y_out = luma32_of(out, mode)
        errors = readback(y_out, key, nonce_value, cells)
        if errors is None or errors > READBACK_MAX_TAG_ERRORS:
            continue
        # the real search too: sync must lock on this picture (lattices far from the one we drew
        # cannot decode our tag, so only those near it are decoded)
        true_basis = np.eye(2) * TILE * cell_size(y.shape[0], y.shape[1], cells)
        lattices = [(i, lat) for i, lat in enumerate(find_lattices(y_out, LATTICES)) if near(lat, true_basis)]
        found = search(y_out, [key], lattices)
        if found.found and found.nonce == nonce_value:
            best = (errors, out)
            break
    if best is None:
        return Embedded(pixels, float("inf"), None)
    import cv2

    errors, out = best
    mse = float(cv2.norm(out, pixels, cv2.NORM_L2SQR)) / out.size
    psnr = float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))
    return Embedded(out, psnr, errors)


__all__ = [
    "ALGORITHM",
    "CANDIDATES",
    "MAX_TAG_ERRORS",
    "Embedded",
    "Layout",
    "can_embed",
    "embed_delta",
    "embed_pixels",
    "false_positive_bound",
    "layout",
    "max_tag_errors",
    "nonce",
    "payload_bits",
    "soft_binding",
    "tag",
]
