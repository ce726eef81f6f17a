"""Marks that other parties put into images: we detect and report them, we never remove them.

SDXL (diffusers' ``StableDiffusionXLWatermarker`` and Stability's reference code) embeds the fixed
48-bit message ``0xB3EC907BB19E`` with invisible-watermark's ``dwtDct`` method: Haar LL of the U plane
of YUV, 4x4 blocks, the largest-magnitude non-DC coefficient of each block quantised with step 36,
bit ``num % 48`` in row-major block order. Both callers run the encoder on *float* pixels, where
OpenCV's U offset is 0.5; a decoder reading 8-bit pixels sees an offset of 128, which shifts negative
coefficients onto the other bit. We decode under both offsets and keep the better reading, so this
module needs numpy only (no OpenCV, no torch: invisible-watermark imports torch at import time).

The message is fixed and public, so "detected" is a bit-agreement threshold: 41 of 48 bits, chosen so
that 2 readings x P(Binomial(48, 1/2) >= 41) < 1e-6. That bound assumes the bits read from an unmarked
image are fair coins, which holds for natural images and was measured on the same 1,000 unmarked
images as our own mark (docs/provenance.md); it is a detector, not a proof. The mark is fragile by
design (dwtDct fell to chance at JPEG q90 in FACTS.md), so its absence proves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
from numpy.typing import NDArray

SDXL_MESSAGE = 0xB3EC907BB19E
SDXL_BITS = np.array([int(b) for b in f"{SDXL_MESSAGE:048b}"], dtype=np.uint8)
_SCALE = 36.0
_OFFSETS = (0.5, 128.0)  # OpenCV's U offset for float input (diffusers) and for 8-bit input
SDXL_THRESHOLD = next(
    t for t in range(49) if len(_OFFSETS) * sum(comb(48, k) for k in range(t, 49)) / 2**48 < 1e-6
)


@dataclass(frozen=True)
class ThirdPartyMark:
    """One known third-party mark and how well it read."""

    name: str
    detected: bool
    bit_accuracy: float
    threshold: float
    method: str

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "detected": self.detected,
            "bit_accuracy": round(self.bit_accuracy, 4),
            "threshold": round(self.threshold, 4),
            "method": self.method,
        }


def _ll_u(rgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    """The Haar LL band of the U plane (YUV's U without its offset), from 2x2 sums of the pixels.

    The reference decoder converts the whole image to U, then averages 2x2 blocks; both steps are
    linear, so summing the 8-bit pixels first (exact, in uint16) and converting the quarter-size sums
    reads the same bits at a quarter of the float work. Each offset the detector tries adds
    ``2 * offset`` to this band (four U values per sum, halved).
    """
    h, w = (rgb.shape[0] // 4) * 4, (rgb.shape[1] // 4) * 4
    z = rgb[:h, :w, :3].astype(np.uint16)
    s = (z[0::2, 0::2] + z[0::2, 1::2] + z[1::2, 0::2] + z[1::2, 1::2]).astype(np.float64)
    y = s @ np.array([0.299, 0.587, 0.114])
    return np.asarray(0.492 * (s[..., 2] - y) / 2.0, dtype=np.float64)


def _dwtdct_bits(ll: NDArray[np.float64], length: int) -> NDArray[np.uint8]:
    """invisible-watermark's ``EmbedMaxDct.decode`` for one plane's LL band, vectorised."""
    rows, cols = ll.shape[0] // 4, ll.shape[1] // 4
    blocks = ll[: rows * 4, : cols * 4].reshape(rows, 4, cols, 4).swapaxes(1, 2).reshape(rows * cols, 16)
    ac = np.abs(blocks[:, 1:])
    val = ac[np.arange(ac.shape[0]), np.argmax(ac, axis=1)]
    votes = ((val % _SCALE) > 0.5 * _SCALE).astype(np.float64)
    idx = np.arange(votes.size) % length
    means = np.bincount(idx, weights=votes, minlength=length) / np.maximum(
        np.bincount(idx, minlength=length), 1
    )
    return (means * 255 > 127).astype(np.uint8)


def detect_sdxl(pixels: NDArray[np.uint8], mode: str) -> ThirdPartyMark:
    """Read SDXL's mark. Greyscale images carry no U plane, so they read at chance by construction."""
    if mode in ("L", "LA") or pixels.ndim == 2 or min(pixels.shape[:2]) < 256:
        accuracy = 0.0
    else:
        ll = _ll_u(pixels)
        accuracy = max(float(np.mean(_dwtdct_bits(ll + 2 * o, 48) == SDXL_BITS)) for o in _OFFSETS)
    threshold = SDXL_THRESHOLD / 48
    return ThirdPartyMark(
        name="sdxl",
        detected=accuracy >= threshold,
        bit_accuracy=accuracy,
        threshold=threshold,
        method="invisible-watermark dwtDct, 48 bits 0xB3EC907BB19E",
    )


def detect_all(pixels: NDArray[np.uint8], mode: str) -> tuple[ThirdPartyMark, ...]:
    """Every known third-party detector (a tuple so more marks are added as data, not branches)."""
    return tuple(fn(pixels, mode) for fn in DETECTORS)


DETECTORS = (detect_sdxl,)
