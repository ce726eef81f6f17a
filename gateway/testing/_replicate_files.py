"""File inputs of :class:`~gateway.testing.replicate.FakeReplicate` predictions (edits).

Replicate takes a file input as an HTTP(S) URL or a ``data:`` URI. The fake accepts ``data:`` URIs only
(a loopback test has no file host to fetch from) and checks each one the way a model's input validation
would: a real image MIME type, valid base64, bytes that decode as that image. Answers are 422
``Input validation failed`` problems naming the input.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping
from typing import Any

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.S)
_IMAGE_MIMES = ("image/png", "image/jpeg", "image/webp")


def _decode(value: str) -> tuple[str, bytes] | str:
    m = _DATA_URI.match(value)
    if m is None:
        return "not a base64 data URI"
    if m["mime"] not in _IMAGE_MIMES:
        return f"unsupported file type {m['mime']}"
    try:
        return m["mime"], base64.b64decode(m["data"], validate=True)
    except (binascii.Error, ValueError):
        return "invalid base64"


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.size
    except OSError:
        return None


def check_file_inputs(inp: Mapping[str, Any]) -> str | None:
    """A 422 detail for the first bad file input, or None."""
    for key, value in inp.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str) or not v.startswith(("data:", "http://", "https://")):
                continue
            if not v.startswith("data:"):
                return f"- input.{key}: this fake accepts data: URIs only"
            got = _decode(v)
            if isinstance(got, str):
                return f"- input.{key}: {got}"
            if _image_size(got[1]) is None:
                return f"- input.{key}: the file does not decode as {got[0]}"
    return None


def input_image_size(inp: Mapping[str, Any]) -> tuple[int, int] | None:
    """The size of the prediction's first image input (``image``, ``redux_image`` or a list), if any."""
    for key in ("image", "redux_image", "input_image", "images"):
        value = inp.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, str) and value.startswith("data:"):
            got = _decode(value)
            if not isinstance(got, str):
                return _image_size(got[1])
    return None
