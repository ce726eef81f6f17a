"""The edit half of :class:`~gateway.testing.bedrock.FakeBedrock`: Titan/Nova task types and Stability
image-to-image, validated the way Bedrock documents them (images base64 PNG/JPEG, a mask of the
image's size given as ``maskImage`` or ``maskPrompt`` but not both, 1-5 variation images,
``similarityStrength`` 0.2-1.0, ``outPaintingMode`` DEFAULT|PRECISE, Stability ``strength`` 0-1).

Outputs have the input's size (inpainting, outpainting, background removal, image-to-image) or the
config's size (variation); background removal answers an RGBA PNG. Tests read what was sent from
``fake.requests[i].json()`` (e.g. that the mask arrived black where the user's was white).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from ._http import Fault, png_bytes

AMAZON_EDIT_TASKS = {
    "INPAINTING": "inPaintingParams",
    "OUTPAINTING": "outPaintingParams",
    "IMAGE_VARIATION": "imageVariationParams",
    "BACKGROUND_REMOVAL": "backgroundRemovalParams",
}


class EditError(ValueError):
    """A request Bedrock would refuse with a ValidationException (message is Bedrock-like)."""


def _image(value: Any, name: str) -> tuple[int, int]:
    from PIL import Image

    if not isinstance(value, str) or not value:
        raise EditError(f"{name}: expected a base64-encoded image")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EditError(f"{name}: invalid base64") from None
    if not (data.startswith(b"\x89PNG") or data.startswith(b"\xff\xd8\xff")):
        raise EditError(f"{name}: only PNG and JPEG images are supported")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.size
    except OSError:
        raise EditError(f"{name}: the image could not be decoded") from None


def _rgba_png(size: tuple[int, int]) -> bytes:
    from PIL import Image

    img = Image.new("RGBA", size, (40, 120, 200, 0))
    img.paste((40, 120, 200, 255), (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _masked(params: dict[str, Any], size: tuple[int, int], task: str) -> None:
    has_image, has_prompt = "maskImage" in params, "maskPrompt" in params
    if has_image == has_prompt:
        raise EditError(f"{task}: exactly one of maskImage and maskPrompt is required")
    if has_image and _image(params["maskImage"], "maskImage") != size:
        raise EditError(f"{task}: maskImage must have the same dimensions as image")


def amazon_edit(body: dict[str, Any], task: str, seed: int) -> list[bytes]:
    """Validate one Titan/Nova edit body; return the output PNGs (raises EditError)."""
    field = AMAZON_EDIT_TASKS[task]
    params = body.get(field)
    if not isinstance(params, dict):
        raise EditError(f"taskType {task} needs {field}")
    cfg = body.get("imageGenerationConfig") or {}
    n = int(cfg.get("numberOfImages", 1))
    if task == "BACKGROUND_REMOVAL":
        return [_rgba_png(_image(params.get("image"), "image"))]
    if not 1 <= n <= 5:
        raise EditError("numberOfImages must be 1-5")
    if task == "IMAGE_VARIATION":
        images = params.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= 5:
            raise EditError("imageVariationParams.images must hold 1-5 images")
        for i, img in enumerate(images):
            _image(img, f"images[{i}]")
        sim = params.get("similarityStrength", 0.7)
        if not isinstance(sim, int | float) or not 0.2 <= sim <= 1.0:
            raise EditError("similarityStrength must be between 0.2 and 1.0")
        size = (int(cfg.get("width", 1024)), int(cfg.get("height", 1024)))
    else:
        size = _image(params.get("image"), "image")
        _masked(params, size, task)
        if task == "OUTPAINTING" and params.get("outPaintingMode", "DEFAULT") not in ("DEFAULT", "PRECISE"):
            raise EditError("outPaintingMode must be DEFAULT or PRECISE")
    text = params.get("text")
    if text is not None and (not isinstance(text, str) or len(text) > 1024):
        raise EditError("text must be a string of at most 1024 characters")
    return [png_bytes(*size, seed + i) for i in range(n)]


def stability_edit(body: dict[str, Any], fault: Fault | None) -> bytes:
    """Validate an SD3.5 ``image-to-image`` body; return the output PNG (raises EditError)."""
    size = _image(body.get("image"), "image")
    strength = body.get("strength")
    if not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
        raise EditError("strength: required for image-to-image, between 0 and 1")
    if "aspect_ratio" in body:
        raise EditError("aspect_ratio is not accepted in image-to-image mode")
    return png_bytes(*size, int(body.get("seed", 0)) or 1234)


def edit_reply_images(images: list[bytes]) -> list[str]:
    return [base64.b64encode(d).decode() for d in images]


__all__ = ["AMAZON_EDIT_TASKS", "EditError", "amazon_edit", "edit_reply_images", "stability_edit"]
