"""Lossless PNG through libpng (OpenCV's encoder), with the source's ICC profile, EXIF and DPI kept.

Why not Pillow: Pillow tries all five PNG row filters on every row and keeps the best, which is
about half of its encode time. libpng told to use the Paeth filter alone, with zlib's run-length
strategy, writes a marked 1024x1024 photo in 77 ms of CPU against Pillow's 129 ms with the same
strategy, for files within 0.5% of Pillow's (1531 against 1525 kB, mean of three photos; Avg or Up
alone are faster still but 2-6% larger). On flat graphics Paeth leaves zeros that the run-length
coder packs as well. Every remote image's stamp pays this on the request's critical path.

OpenCV writes pixels only, so the metadata chunks Pillow would have written (``iCCP``, ``pHYs``,
``eXIf``) are spliced in right after ``IHDR``, where the PNG specification wants them (before any
``IDAT``).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = len(_SIGNATURE) + 8 + 13 + 4  # length + type, the 13-byte header, its CRC
_EXIF_PREFIX = b"Exif\x00\x00"


def _chunk(name: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))


def _metadata_chunks(info: dict[str, Any]) -> bytes:
    """The chunks Pillow writes for ``icc_profile``, ``dpi`` and ``exif``, in that order."""
    out = []
    icc = info.get("icc_profile")
    if icc:
        out.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    dpi = info.get("dpi")
    if dpi:
        ppm = [int(float(d) / 0.0254 + 0.5) for d in dpi]
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    exif = info.get("exif")
    if exif:
        out.append(_chunk(b"eXIf", exif.removeprefix(_EXIF_PREFIX)))
    return b"".join(out)


def encode(pixels: NDArray[np.uint8], mode: str, info: dict[str, Any], strategy: int) -> bytes | None:
    """PNG bytes, or None where OpenCV is missing or cannot write the mode (grey + alpha): use Pillow."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - OpenCV comes with the provenance extra
        return None

    order = {"L": None, "RGB": cv2.COLOR_RGB2BGR, "RGBA": cv2.COLOR_RGBA2BGRA}
    if mode not in order or (pixels.ndim == 2) != (mode == "L"):
        return None
    conv = order[mode]
    src = cv2.cvtColor(pixels, conv) if conv is not None else pixels
    params = [
        cv2.IMWRITE_PNG_COMPRESSION, 1,
        cv2.IMWRITE_PNG_STRATEGY, strategy,
        cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH,
    ]  # fmt: skip
    ok, buf = cv2.imencode(".png", src, params)
    if not ok:  # pragma: no cover - libpng refuses only what the mode check above excludes
        return None
    data = buf.tobytes()
    return data[:_IHDR_END] + _metadata_chunks(info) + data[_IHDR_END:]
