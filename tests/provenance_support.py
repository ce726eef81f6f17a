"""Images for the provenance tests: real pixels (scikit-learn's digits and sample photos), no stubs."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str = "PNG", **kw: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@cache
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().images)


@cache
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(p) for p in load_sample_images().images)


def digit_image(index: int = 3, size: int = 256) -> Image.Image:
    """What the tiny-digits model returns: a grey 8x8-class digit upscaled bicubically, mostly black."""
    g = Image.fromarray((_digits()[index] / 16 * 255).astype(np.uint8))
    return g.resize((16, 16), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BICUBIC)


def photo(index: int = 0, size: int = 256, top: int = 40, left: int = 60) -> Image.Image:
    p = _photos()[index]
    return Image.fromarray(p[top : top + size, left : left + size])


def jpeg_copy(data: bytes, quality: int) -> bytes:
    img = Image.open(io.BytesIO(data))
    return encode(img.convert("RGB") if img.mode not in ("L", "RGB") else img, "JPEG", quality=quality)


def png_chunk_offset(data: bytes, name: bytes) -> int:
    """Offset of the first byte of the data of the first PNG chunk called ``name``."""
    pos = 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == name:
            return pos + 8
        pos += 12 + length
    raise AssertionError(f"no {name!r} chunk")


def flip_byte(data: bytes, offset: int) -> bytes:
    b = bytearray(data)
    b[offset] ^= 0x01
    return bytes(b)
