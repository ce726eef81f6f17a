"""Decode image bytes into a luma plane, and write a changed luma plane back without losing anything else.

Backends hand us PNG, JPEG or WebP bytes in whatever mode the model produced (the tiny-digits model
returns 8-bit greyscale, hosted models RGB). The watermark lives in luma only, so the colour planes,
alpha, ICC profile and EXIF must come back unchanged: a luma change ``dY`` is added to R, G and B
alike, which changes Y by exactly ``dY`` because the BT.601 weights sum to one. Re-encoding is always
lossless PNG so our own encoder never weakens the mark it just embedded.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# See encode_png; module constants so benchmarks can rerun the previous release's setting.
PNG_STRATEGY = zlib.Z_RLE
PNG_LIBPNG = True
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # BT.601, the Y of JPEG's YCbCr
_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}
_KEEP_MODES = ("L", "LA", "RGB", "RGBA")


class ImageDecodeError(ValueError):
    """The bytes are not an image Pillow can decode (message is safe to show: no image content)."""


@dataclass(frozen=True)
class Decoded:
    """A decoded image: the pixel array in a mode we can write back, and what must survive re-encoding."""

    pixels: NDArray[np.uint8]  # HxW (L), HxWx2 (LA), HxWx3 (RGB) or HxWx4 (RGBA)
    mode: str
    mime: str
    width: int
    height: int
    frames: int
    info: dict[str, Any]

    @property
    def luma(self) -> NDArray[np.float64]:
        """The Y plane as float64 (for L/LA the grey values themselves)."""
        return luma_of(self.pixels, self.mode)


def sniff_mime(data: bytes) -> str | None:
    """The MIME type from magic bytes, without decoding (cheap, used before handing bytes to C2PA)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def open_image(data: bytes) -> PILImage:
    """Open and fully load ``data`` with Pillow, turning every decoder failure into ImageDecodeError."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image ({type(exc).__name__})") from None
    return img


def salvage_png(data: bytes) -> bytes | None:
    """The PNG's image chunks with fresh CRCs, or None if ``data`` is not a chunk-parsable PNG.

    A verifier wants to read the watermark of a file someone tampered with; Pillow refuses a PNG with
    one bad chunk CRC (a flipped byte in the C2PA chunk, say). Only the chunks that define pixels are
    kept, so nothing a tamperer wrote elsewhere is interpreted.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out = [data[:8]]
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        name = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            return None
        if name in (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"):
            crc = zlib.crc32(name + body).to_bytes(4, "big")
            out.append(data[pos : pos + 4] + name + body + crc)
        pos += 12 + length
        if name == b"IEND":
            return b"".join(out)
    return None


def decode(data: bytes, *, lenient: bool = False) -> Decoded:
    """Decode to an 8-bit array in L, LA, RGB or RGBA (other modes are converted to the nearest one).

    ``lenient`` (verification only): if Pillow refuses a PNG, retry on its salvaged image chunks.
    """
    try:
        img = open_image(data)
    except ImageDecodeError:
        salvaged = salvage_png(data) if lenient else None
        if salvaged is None:
            raise
        img = open_image(salvaged)
    fmt = (img.format or "").upper()
    frames = int(getattr(img, "n_frames", 1) or 1)
    mode = img.mode
    if mode not in _KEEP_MODES:
        has_alpha = "A" in mode or "transparency" in img.info
        mode = "RGBA" if has_alpha else ("L" if mode in ("1", "I", "I;16", "F") else "RGB")
        img = img.convert(mode)
    info: dict[str, Any] = {k: img.info[k] for k in ("icc_profile", "exif", "dpi") if k in img.info}
    return Decoded(
        pixels=np.asarray(img, dtype=np.uint8),
        mode=mode,
        mime=_MIME.get(fmt) or sniff_mime(data) or "application/octet-stream",
        width=img.width,
        height=img.height,
        frames=frames,
        info=info,
    )


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


class _OneThread:
    """``with one_compute_thread():`` runs the block with numpy's BLAS and OpenCV's pool on one thread.

    Stamping's matrix products are small (a 1024x1024 tile render is 1.3 ms), but one threaded call
    wakes OpenBLAS's idle workers, which then busy-wait for the next ~100 ms, through the PNG codec
    and the signing that follow: on 2 cores a remote image's stamp cost 536 ms of CPU with threaded
    BLAS and 354 ms with one thread, for a shorter wall time. OpenCV's pool (blur, resize, warp on
    1 MP planes) shows the same pattern at a smaller scale.

    Neither OpenBLAS nor OpenCV has a per-thread thread count, so the limit is process-wide. The
    first block in saves the counts and sets 1; the last one out restores them. Without the count,
    two overlapping stamps would each save what they found, and the later one would "restore" the
    limit of 1 for good, leaving the application's own numpy and OpenCV work single-threaded.
    """

    def __init__(self) -> None:
        self._reset()
        # a child forked mid-stamp (dataset workers) would inherit a held lock and a stale count
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._blas: Any = None  # threadpoolctl's limiter while the limit holds
        self._cv_threads = 0
        self._ctl: Any = None
        self._ctl_modules = -1  # len(sys.modules) when self._ctl was made

    def _controller(self) -> Any:
        """threadpoolctl's view of the loaded BLAS libraries, made again when modules were imported
        since (torch or scipy may load their own BLAS after the first stamp); making one takes ~1 ms."""
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # the provenance extra is not installed: threaded BLAS costs CPU only
            return None
        if self._ctl_modules != len(sys.modules):
            self._ctl, self._ctl_modules = ThreadpoolController(), len(sys.modules)
        return self._ctl

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                ctl, cv2 = self._controller(), _cv2()
                self._blas = ctl.limit(limits=1, user_api="blas") if ctl is not None else None
                if cv2 is not None:
                    self._cv_threads = cv2.getNumThreads()
                    cv2.setNumThreads(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    if self._blas is not None:
                        self._blas.restore_original_limits()
                        self._blas = None
                    cv2 = _cv2()
                    if cv2 is not None:
                        cv2.setNumThreads(self._cv_threads)


one_compute_thread = _OneThread()


def luma_of(pixels: NDArray[np.uint8], mode: str) -> NDArray[np.float64]:
    """The luma plane of an L/LA/RGB/RGBA array as float64."""
    return np.asarray(luma32_of(pixels, mode), dtype=np.float64)


def luma32_of(pixels: NDArray[np.uint8], mode: str) -> NDArray[np.float32]:
    """The luma plane as float32: what :func:`luma_of` returns before widening (the embedder's input).

    float32 products are ~4x faster than float64 with an error < 1e-4 of a level, and the embedder
    works in float32 anyway, so it skips the widening and narrowing copies.
    """
    if mode in ("L", "LA"):
        grey = pixels if pixels.ndim == 2 else pixels[..., 0]
        return grey.astype(np.float32)
    return np.asarray(pixels[..., :3].astype(np.float32) @ _LUMA32, dtype=np.float32)


_LUMA32 = LUMA_WEIGHTS.astype(np.float32)


def apply_luma_delta(
    pixels: NDArray[np.uint8], mode: str, delta: NDArray[np.floating[Any]]
) -> NDArray[np.uint8]:
    """Add ``delta`` (HxW) to the luma of ``pixels``: to the grey plane, or equally to R, G and B.

    Pixels are integers, so ``rint(p + d) == p + rint(d)`` (up to ties): round the delta once. The
    add is OpenCV's saturating one (exact: whole numbers in float32, clipped to 0..255), which is
    2x faster than widening every channel to int16 and back; alpha gets a zero step.
    """
    import cv2

    step = np.rint(delta).astype(np.float32)
    src = np.ascontiguousarray(pixels)
    if pixels.ndim == 2:
        steps = step
    else:
        zero = np.zeros_like(step)
        lit = 1 if mode == "LA" else 3  # the grey plane, or R, G and B; never alpha
        steps = cv2.merge([step if c < lit else zero for c in range(pixels.shape[2])])
    return np.asarray(cv2.add(src, steps, dtype=cv2.CV_8U), dtype=np.uint8).reshape(pixels.shape)


def encode_png(pixels: NDArray[np.uint8], mode: str, info: dict[str, Any]) -> bytes:
    """Lossless PNG in the same mode, keeping the ICC profile, EXIF and DPI of the source.

    zlib level 1 with the run-length strategy (``Z_RLE``): on a marked 1024x1024 photo Pillow
    encodes it in 121-134 ms of CPU against 156 ms for plain level 1 and 658 ms for level 6, and the
    file is the smallest of the three (1.53 MB against 1.77 and 1.55 MB); flat graphics shrink too
    (4 kB against 16 kB). After PNG's row filters a marked image is mostly short runs and small
    residuals, which Huffman codes well; the LZ77 match search that level 1 pays for finds little.
    libpng with one fixed filter (:mod:`._png`) writes a file within 0.5% of that size in 60% of
    Pillow's time, so it is used wherever OpenCV is installed and takes the mode.
    """
    if PNG_LIBPNG:
        from ._png import encode

        data = encode(pixels, mode, info, PNG_STRATEGY)
        if data is not None:
            return data
    from PIL import Image

    img = Image.fromarray(pixels)  # HxW -> L, x2 -> LA, x3 -> RGB, x4 -> RGBA
    if img.mode != mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1, compress_type=PNG_STRATEGY, **info)
    return buf.getvalue()
