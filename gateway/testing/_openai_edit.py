"""The edit half of :class:`~gateway.testing.openai.FakeOpenAI`: ``POST /images/edits`` multipart forms,
read with the standard library's MIME parser and checked the way the API documents them.

* one input is the ``image`` part, several are repeated ``image[]`` parts (never both, 1-16 files);
  each file must declare a real image type (``image/png``, ``image/jpeg``, ``image/webp``) that its
  bytes confirm: bare bytes arrive as ``application/octet-stream`` and are refused, as the API does;
* ``mask`` (optional) must be a PNG with an alpha channel and the first image's size: its fully
  transparent pixels mark what to edit;
* scalar fields arrive as strings (``n`` is parsed as an integer); GPT-image edits refuse
  ``response_format``, ``style`` and ``moderation``.

Tests read what was sent with ``fake.requests_of("edit")[i].form()``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from ..backends._wire import sniff_mime
from ._http import FormPart

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_IMAGES = 16
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024
INT_FIELDS = ("n", "output_compression", "partial_images")
REFUSED_IN_EDITS = ("response_format", "style", "moderation")
# Input image tokens per 1024x1024 input at high fidelity (gpt-image-2 always uses it), scaled by pixels.
INPUT_TOKENS_1MP = 3050


class FormError(ValueError):
    """A form the API would refuse with 400: ``(message, code, param)``."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


@dataclass(frozen=True, slots=True)
class InputFile:
    name: str
    content_type: str
    size: tuple[int, int]
    mode: str


def _file(part: FormPart, limit: int) -> InputFile:
    from PIL import Image

    declared = (part.content_type or "").split(";")[0].strip().lower()
    if part.filename is None:
        raise FormError(f"'{part.name}' must be a file upload", "invalid_value", part.name)
    if declared not in IMAGE_TYPES:
        raise FormError(
            f"Invalid file '{part.name}': unsupported mimetype ('{declared or 'none'}'). Supported file "
            "formats are 'image/jpeg', 'image/png', and 'image/webp'.",
            "unsupported_file_mimetype",
            part.name,
        )
    if sniff_mime(part.data) != declared:
        raise FormError(
            f"Invalid image file '{part.name}': not a {declared} image", "invalid_image", part.name
        )
    if len(part.data) > limit:
        raise FormError(f"'{part.name}' is larger than {limit} bytes", "image_too_large", part.name)
    try:
        with Image.open(io.BytesIO(part.data)) as img:
            img.load()
            return InputFile(part.name, declared, img.size, img.mode)
    except OSError:
        raise FormError(
            f"Invalid image file '{part.name}': cannot be decoded", "invalid_image", part.name
        ) from None


def read_edit_form(parts: list[FormPart]) -> tuple[dict[str, Any], list[InputFile], InputFile | None]:
    """(scalar fields, input images, mask) of an edit form; raises FormError as the API would answer."""
    names = [p.name for p in parts]
    if "image" in names and "image[]" in names:
        raise FormError("Send either 'image' or 'image[]', not both", "invalid_value", "image")
    images = [p for p in parts if p.name in ("image", "image[]")]
    if not images:
        raise FormError("image is required", "missing_required_parameter", "image")
    if names.count("image") > 1:
        raise FormError("Several images must be sent as 'image[]'", "invalid_value", "image")
    if len(images) > MAX_IMAGES:
        raise FormError(f"At most {MAX_IMAGES} images", "invalid_value", "image")
    inputs = [_file(p, MAX_IMAGE_BYTES) for p in images]
    masks = [p for p in parts if p.name == "mask"]
    mask = _file(masks[0], MAX_MASK_BYTES) if masks else None
    if mask is not None:
        if mask.content_type != "image/png" or mask.mode not in ("RGBA", "LA", "PA"):
            raise FormError("Invalid mask image format - mask must be a PNG with an alpha channel",
                            "invalid_mask_image_format", "mask")  # fmt: skip
        if mask.size != inputs[0].size:
            raise FormError("Invalid mask image format - mask size does not match image size",
                            "invalid_mask_image_format", "mask")  # fmt: skip
    body: dict[str, Any] = {}
    for p in parts:
        if p.filename is not None or p.name in ("image", "image[]", "mask"):
            continue
        if p.name in REFUSED_IN_EDITS:
            raise FormError(f"Unknown parameter: '{p.name}'.", "unknown_parameter", p.name)
        value: Any = p.text
        if p.name in INT_FIELDS:
            try:
                value = int(value)
            except ValueError:
                raise FormError(f"Invalid {p.name}: {value!r}", "invalid_value", p.name) from None
        body[p.name] = value
    return body, inputs, mask


def input_tokens(inputs: list[InputFile]) -> int:
    return sum(round(INPUT_TOKENS_1MP * w * h / (1024 * 1024)) for w, h in (i.size for i in inputs))


__all__ = ["FormError", "InputFile", "input_tokens", "read_edit_form"]
