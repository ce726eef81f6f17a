"""Re-synchronisation for watermark v2: find the tile lattice, then resample onto the canonical grid.

The mark is one tile repeated, so its autocorrelation is a lattice of peaks, and any rotation,
resize, aspect change or shear of the image moves those peaks the same way. We

1. take a high-passed, locally normalised luma residual (the picture is mostly removed, the mark is
   not) at a working size, whiten its power spectrum (the periodic mark is a line spectrum, the
   picture a smooth one, so dividing by a smoothed spectrum leaves the mark's lines) and transform
   back: the autocorrelation then shows sharp peaks at the lattice vectors;
2. pick pairs of strong peaks as lattice bases, reduce them (Lagrange-Gauss), score each basis by the
   autocorrelation summed over its lattice points, and refine the best ones by least squares over
   sub-pixel peak positions;
3. resample the image so one tile period is exactly ``TILE * CANON`` pixels on both axes and fold the
   residual modulo the tile: every surviving tile adds into one ``48 x 48`` array.

What is left is a flip or a quarter turn (a square lattice looks the same under the eight symmetries
of the square) and the crop offset; the keyed sync cells resolve both in :mod:`.watermark_v2_detect`.
Everything here is key-independent, so it runs once per image whatever the key ring holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .watermark_v2 import CANON, PEAKS, TILE

WORK_SHORT = 320  # the autocorrelation runs with the short side at this many pixels
PERIOD = TILE * CANON  # canonical tile period in pixels (48)
_F_LO, _F_HI = 0.03, 0.4  # sync-peak frequencies searched at the working size (cycles per pixel)
_PEAKS = 12
MIN_PERIOD_PX = 0.75 * TILE  # shortest tile period (source pixels) worth resampling
MAX_CANON_PIXELS = 8_000_000  # largest canonical resampling the fold will do


@dataclass(frozen=True)
class Lattice:
    """Two lattice vectors in source-image pixels as (dx, dy) columns of ``basis`` and their score."""

    basis: NDArray[np.float64]  # 2x2: basis[:, 0] and basis[:, 1]
    score: float


def residual(y: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """Luma minus its blur, divided by its local RMS: the picture mostly gone, the mark kept.

    Clipped at 3 (a hard edge, e.g. the border a rotation leaves, must not outweigh the mark), and
    zero where the image is dead flat (padding, saturated areas: nothing can be read there).
    """
    import cv2

    hp = y - cv2.GaussianBlur(y, (0, 0), sigma)
    rms = np.sqrt(np.maximum(smooth_blur(hp * hp, 4 * sigma), 0.0))
    dead = rms <= 0.2
    rms += 0.5
    np.divide(hp, rms, out=hp)
    np.clip(hp, -3.0, 3.0, out=hp)
    hp[dead] = 0.0
    return np.asarray(hp, dtype=np.float32)


def smooth_blur(a: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """A wide Gaussian blur computed on a shrunk copy (its output is smooth, so nothing is lost).

    A blur of sigma 6-40 px is the dominant cost of the residual and of the perceptual mask at
    megapixel sizes; area-shrinking by ~sigma/2 first, blurring there and resizing back gives the
    same smooth field (within a few per cent) at a small fraction of the CPU time.
    """
    import cv2

    h, w = a.shape
    k = int(sigma / 2)
    if k < 2 or min(h, w) < 8 * k:
        return np.asarray(cv2.GaussianBlur(a, (0, 0), sigma), dtype=np.float32)
    ph, pw = -h % k, -w % k  # whole blocks: OpenCV's integer-factor area resize is the fast one
    src = cv2.copyMakeBorder(a, 0, ph, 0, pw, cv2.BORDER_REFLECT) if ph or pw else a
    small = cv2.resize(src, ((w + pw) // k, (h + ph) // k), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), float(np.sqrt(max(sigma**2 / k**2 - 0.25, 0.25))))
    # block i covers source pixels [ik, ik + k): its centre is at ik + (k - 1) / 2
    big = cv2.resize(small, (w + pw, h + ph), interpolation=cv2.INTER_LINEAR)
    return np.asarray(big[:h, :w], dtype=np.float32)


def _spectrum(r: NDArray[np.float32]) -> NDArray[np.float64]:
    """Whitened power spectrum (Hann window, fft-shifted): the picture's smooth spectrum divided out."""
    import cv2

    h, w = r.shape
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    spec = np.fft.fftshift(np.fft.fft2((r - r.mean()) * win))
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    smooth = cv2.blur(power, (15, 15)) + 1e-9 * float(power.mean()) + 1e-12
    return np.asarray(power / smooth, dtype=np.float64)


def _peaks(pw: NDArray[np.float64], lo: float, hi: float) -> list[tuple[float, float, float]]:
    """Strongest local maxima (fx, fy, value) in cycles per pixel, upper half plane, lo <= |f| <= hi."""
    import cv2

    h, w = pw.shape
    a = pw.astype(np.float32)
    local = a >= cv2.dilate(a, np.ones((5, 5), np.uint8))
    ky, kx = np.mgrid[0:h, 0:w]
    fy, fx = (ky - h // 2) / h, (kx - w // 2) / w
    rad = np.hypot(fx, fy)
    ok = local & (rad >= lo) & (rad <= hi) & ((fy > 0) | ((fy == 0) & (fx > 0)))
    idx = np.flatnonzero(ok)
    top = idx[np.argsort(a.ravel()[idx])[::-1][:_PEAKS]]
    return [(float(fx.ravel()[i]), float(fy.ravel()[i]), float(a.ravel()[i])) for i in top]


def _refine_peak(r: NDArray[np.float32], fx: float, fy: float) -> tuple[float, float]:
    """The frequency of a spectral line to a small fraction of a bin: a local DTFT on a fine grid."""
    h, w = r.shape
    steps = np.linspace(-0.7, 0.7, 15)
    gx, gy = fx + steps / w, fy + steps / h
    ex = np.exp(-2j * np.pi * np.outer(np.arange(w), gx)).astype(np.complex64)  # W x n
    ey = np.exp(-2j * np.pi * np.outer(gy, np.arange(h))).astype(np.complex64)  # n x H
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    z = np.abs((ey @ ((r - r.mean()) * win).astype(np.complex64)) @ ex) ** 2  # (fy, fx) grid
    iy, ix = np.unravel_index(int(np.argmax(z)), z.shape)
    ox = _parabola(*z[iy, ix - 1 : ix + 2]) if 0 < ix < len(steps) - 1 else 0.0
    oy = _parabola(*z[iy - 1 : iy + 2, ix]) if 0 < iy < len(steps) - 1 else 0.0
    d = steps[1] - steps[0]
    return fx + (steps[ix] + ox * d) / w, fy + (steps[iy] + oy * d) / h


def _parabola(a: float, b: float, c: float) -> float:
    den = a - 2 * b + c
    return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


_K_INV = np.linalg.inv(np.array(PEAKS, dtype=np.float64).T)  # columns k1, k2 (cycles per tile)


def find_lattices(y: NDArray[np.floating[Any]], count: int) -> list[Lattice]:
    """Up to ``count`` tile lattices for luma ``y``, best first, in source pixels.

    Two spectral lines about 90 degrees apart and of similar length are taken as the two sync peaks;
    each pair gives two lattices (the image may be mirrored, which swaps the peaks' handedness).
    """
    import cv2

    h, w = y.shape
    scale = WORK_SHORT / min(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    work = np.asarray(cv2.resize(y.astype(np.float32), size, interpolation=interp), dtype=np.float32)
    r = residual(work, 2.0)
    peaks = _peaks(_spectrum(r), _F_LO, _F_HI)
    found: list[tuple[float, NDArray[np.float64]]] = []
    for a, b in combinations(peaks, 2):
        g1, g2 = np.array(a[:2]), np.array(b[:2])
        l1, l2 = float(np.hypot(*g1)), float(np.hypot(*g2))
        cos = abs(float(g1 @ g2)) / (l1 * l2)
        if cos > 0.5 or max(l1, l2) > 1.45 * min(l1, l2):
            continue
        found.append((a[2] + b[2], np.array([a[:2], b[:2]])))
    found.sort(key=lambda t: -t[0])
    out: list[Lattice] = []
    refined: dict[tuple[float, float], tuple[float, float]] = {}
    for score, pair in found[: max(1, count // 2)]:
        gs = []
        for fx, fy in pair:
            if (fx, fy) not in refined:
                refined[(fx, fy)] = _refine_peak(r, fx, fy)
            gs.append(refined[(fx, fy)])
        g1, g2 = np.array(gs[0]), np.array(gs[1])
        for sign in (1.0, -1.0):
            binv_t = np.stack([g1, sign * g2], axis=1) @ _K_INV
            basis = np.linalg.inv(binv_t).T / scale  # columns: tile vectors in source pixels
            if min(np.hypot(*basis[:, 0]), np.hypot(*basis[:, 1])) < MIN_PERIOD_PX:
                continue  # cells under 0.75 px hold nothing readable (and would blow up the fold)
            out.append(Lattice(basis, score))
    return out[:count]


def fold(y: NDArray[np.floating[Any]], basis: NDArray[np.float64]) -> NDArray[np.float64]:
    """Resample ``y`` so the lattice ``basis`` becomes ``PERIOD`` pixels on each axis, fold modulo it.

    Returns the mean residual per canonical position (PERIOD x PERIOD). Images whose cells are much
    larger than the canonical size are first shrunk with area averaging, so the warp never aliases.
    """
    import cv2

    src = y.astype(np.float32)
    cell = float(min(np.hypot(*basis[:, 0]), np.hypot(*basis[:, 1]))) / TILE
    pre = 1.0
    if cell > 2.0 * CANON:
        k = int(np.ceil(cell / (1.5 * CANON)))  # an integer factor (fast area resize): 2.25-4.5 px/cell
        hh, ww = src.shape[0] // k * k, src.shape[1] // k * k
        if min(hh, ww) >= 8 * k:
            pre = 1.0 / k
            src = np.asarray(
                cv2.resize(src[:hh, :ww], (ww // k, hh // k), interpolation=cv2.INTER_AREA), dtype=np.float32
            )
    m = basis * pre / PERIOD  # canonical pixel -> source pixel (linear part)
    h, w = src.shape
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64).T
    canon = np.linalg.solve(m, corners)
    lo, hi = canon.min(axis=1), canon.max(axis=1)
    out_w, out_h = int(np.ceil(hi[0] - lo[0])) + 1, int(np.ceil(hi[1] - lo[1])) + 1
    if out_w * out_h > MAX_CANON_PIXELS:  # a spurious, very fine lattice: not worth 100s of MB
        return np.zeros((PERIOD, PERIOD))
    offset = m @ lo
    affine = np.hstack([m, offset[:, None]]).astype(np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = np.asarray(
        cv2.warpAffine(src, affine, (out_w, out_h), flags=flags, borderMode=cv2.BORDER_REFLECT),
        dtype=np.float32,
    )
    # canonical pixels whose source point lies inside the image (a polygon, not a second warp)
    inside = np.linalg.solve(m, np.array([[0, w - 1, w - 1, 0], [0, 0, h - 1, h - 1]], float)) - lo[:, None]
    poly = np.rint(inside.T * 16).astype(np.int32)  # 4 fractional bits
    poly_mask = np.zeros((out_h, out_w), np.uint8)
    cv2.fillConvexPoly(poly_mask, poly, 1, lineType=cv2.LINE_8, shift=4)
    inner = cv2.erode(poly_mask, np.ones((3, 3), np.uint8))  # edge pixels interpolate across the border
    r = residual(warped, 0.5 * CANON)
    valid = ((inner > 0) & (r != 0)).astype(np.float32)
    r *= valid
    return _fold_sum(r) / np.maximum(_fold_sum(valid), 1.0)


def _fold_sum(a: NDArray[np.float32]) -> NDArray[np.float64]:
    """Sum of ``a`` modulo ``PERIOD`` on both axes: zero-pad to whole periods, reshape, add."""
    h, w = a.shape
    ph, pw = -h % PERIOD, -w % PERIOD
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)))
    hh, ww = a.shape
    out = a.reshape(hh // PERIOD, PERIOD, ww // PERIOD, PERIOD).sum(axis=(0, 2), dtype=np.float64)
    return np.asarray(out, dtype=np.float64)
