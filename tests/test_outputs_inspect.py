"""``inspect_image``: the cheap integrity check every output passes before it leaves the gateway."""

from __future__ import annotations

import io
import zlib

import pytest
from PIL import Image

from gateway.errors import BadResponse
from gateway.outputs import MAX_PIXELS, inspect_image
from gateway.testing import png_bytes


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((w, h)).convert("RGB").save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def test_whole_png_and_jpeg_report_type_and_size() -> None:
    assert inspect_image(png_bytes(512, 384, 3)) == ("image/png", 512, 384)
    assert inspect_image(_jpeg(64, 32)) == ("image/jpeg", 64, 32)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_png_is_refused(keep: float) -> None:
    data = png_bytes(256, 256, 1)
    with pytest.raises(BadResponse, match="does not decode"):
        inspect_image(data[: int(len(data) * keep)], "bedrock")


def test_a_flipped_byte_inside_the_pixel_data_is_caught_by_the_chunk_crc() -> None:
    data = bytearray(png_bytes(256, 256, 1))
    idat = data.index(b"IDAT")
    data[idat + 20] ^= 0x40
    with pytest.raises(BadResponse, match="does not decode"):
        inspect_image(bytes(data), "bedrock")


def test_truncated_jpeg_is_refused() -> None:
    data = _jpeg(256, 256)
    with pytest.raises(BadResponse):
        inspect_image(data[: len(data) // 2])


def test_size_is_refused_from_the_header_before_any_pixel_is_decoded() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b""))
        + _chunk(b"IEND", b"")
    )
    with pytest.raises(BadResponse, match="too large"):
        inspect_image(bomb)


def test_not_an_image_is_refused() -> None:
    with pytest.raises(BadResponse, match="not a PNG"):
        inspect_image(b"<html>error</html>")
