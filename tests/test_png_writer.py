"""The libpng writer keeps what Pillow's kept: pixels, mode, ICC profile, EXIF and DPI."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from provenance_support import photo

from gateway.provenance import _image
from gateway.provenance._image import decode, encode_png

pytest.importorskip("cv2")


def _source(mode: str) -> bytes:
    rng = np.random.default_rng(3)
    shape = {"L": (40, 56), "LA": (40, 56, 2), "RGB": (40, 56, 3), "RGBA": (40, 56, 4)}[mode]
    img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    exif = Image.Exif()
    exif[0x010F] = "Example Camera"  # Make
    buf = io.BytesIO()
    img.save(buf, "PNG", icc_profile=b"not a real profile but bytes", exif=exif.tobytes(), dpi=(300, 150))
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_libpng_and_pillow_write_the_same_image(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src = decode(_source(mode))
    fast = encode_png(src.pixels, src.mode, src.info)
    monkeypatch.setattr(_image, "PNG_LIBPNG", False)
    slow = encode_png(src.pixels, src.mode, src.info)
    a, b = decode(fast), decode(slow)
    assert a.mode == b.mode == mode
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.pixels, src.pixels)
    assert a.info["icc_profile"] == b.info["icc_profile"] == src.info["icc_profile"]
    assert a.info["exif"] == b.info["exif"]
    exif = Image.Exif()
    exif.load(a.info["exif"])
    assert exif[0x010F] == "Example Camera"
    assert tuple(round(d) for d in a.info["dpi"]) == (300, 150)
    with Image.open(io.BytesIO(fast)) as im:
        im.verify()  # every chunk's CRC


def test_no_metadata_no_chunks() -> None:
    px = np.zeros((8, 8, 3), dtype=np.uint8)
    out = encode_png(px, "RGB", {})
    assert b"iCCP" not in out and b"eXIf" not in out and b"pHYs" not in out
    assert np.array_equal(decode(out).pixels, px)


def test_a_photo_costs_no_more_bytes_than_pillow() -> None:
    """One fixed filter must not buy speed with size: within 2% of Pillow's adaptive choice."""
    px = np.asarray(photo(1, size=320))
    fast = encode_png(px, "RGB", {})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_image, "PNG_LIBPNG", False)
        slow = encode_png(px, "RGB", {})
    assert len(fast) <= 1.02 * len(slow)
