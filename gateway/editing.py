"""What a model can edit (card data) and the routing rule that drops routes that cannot serve an edit.

A provider card declares edits under ``capabilities.edit``::

    edit:
      modes: [inpaint, outpaint, variation]   # what the model does with input images
      formats: [png, jpeg]                    # input formats it accepts
      max_inputs: 5                           # input images per call (variation takes several)
      min_side: 320
      max_side: 4096
      max_pixels: 4194304
      strength: true                          # takes a strength (how far to move from the input)
      input_image_tokens: 1290                # token-priced cards: reserve per input per started MP
      pricing: {...}                          # optional: what an edit costs, when it differs

A card without ``edit`` does not edit: routing drops it for any request with input images, with a
reason, exactly like a size it cannot draw. Pure (reads only the request's bytes already in memory).
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from .types import EditMode

if TYPE_CHECKING:
    from .catalog import Pricing, Route
    from .routing import RoutingInput
    from .types import ImageRequest

InputFormat = Literal["png", "jpeg", "webp"]
_MIME_FORMAT = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


class EditCapabilities(BaseModel):
    """The edit half of a card's capabilities (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    modes: tuple[EditMode, ...] = Field(min_length=1)
    formats: tuple[InputFormat, ...] = ("png", "jpeg")
    max_inputs: int = Field(default=1, ge=1)
    min_side: int = Field(default=1, ge=1)
    max_side: int = Field(default=4096, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    strength: bool = Field(default=True, description="Takes a strength (how far to move from the input).")
    tasks: tuple[str, ...] = Field(default=(), description="Named tasks (extras.task): background_removal.")
    pricing: Pricing | None = Field(default=None, description="What an edit costs, if not the card's price.")
    input_image_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Token-priced cards: input tokens one input image may cost per started megapixel "
        "(the estimate reserves them; the settle uses the provider's count).",
    )


@lru_cache(maxsize=256)
def input_header(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from an image header without decoding pixels; None if unreadable."""
    from PIL import Image

    from .inputs import sniff_input

    mime = sniff_input(data)
    if mime is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _MIME_FORMAT[mime], img.width, img.height
    except (OSError, ValueError, SyntaxError):
        return None


def edit_eligibility(x: RoutingInput) -> str | None:
    """Routing rule: a request with input images needs a card that can do its mode with its inputs."""
    r = x.request
    if not r.images:
        return None
    cap = x.route.card.capabilities.edit
    if cap is None:
        return "does not edit images (no capabilities.edit on its card)"
    task = r.extras.get("task")
    if task is not None and task not in cap.tasks:
        return f"edit task {task!r} not supported (has {list(cap.tasks) or 'none'})"
    if task is None and r.mode not in cap.modes:
        return f"edit mode {r.mode!r} not supported (has {list(cap.modes)})"
    if len(r.images) > cap.max_inputs:
        return f"takes at most {cap.max_inputs} input image(s), {len(r.images)} given"
    if r.strength is not None and not cap.strength:
        return "does not accept strength"
    for i, data in enumerate(r.images):
        head = input_header(data)
        if head is None:
            return f"input {i} is not a readable image"
        fmt, w, h = head
        if fmt not in cap.formats:
            return f"input {i} is {fmt}; takes {list(cap.formats)}"
        if not (cap.min_side <= w <= cap.max_side and cap.min_side <= h <= cap.max_side):
            return f"input {i} is {w}x{h}, outside {cap.min_side}..{cap.max_side} per side"
        if cap.max_pixels is not None and w * h > cap.max_pixels:
            return f"input {i} is {w}x{h}, above {cap.max_pixels} pixels"
    return None


def expected_input_tokens(route: Route, request: ImageRequest) -> int:
    """Input image tokens to reserve for one call of an edit: the card's figure per started megapixel
    of each input (an upper bound: providers tile or scale inputs below it). 0 for a generation."""
    cap = route.card.capabilities.edit
    if not request.images or cap is None or not cap.input_image_tokens:
        return 0
    total = 0
    for data in request.images:
        head = input_header(data)
        megapixels = 1 if head is None else max(1, math.ceil(head[1] * head[2] / (1024 * 1024)))
        total += cap.input_image_tokens * megapixels
    return total


_EDIT_ROUTES: dict[int, Route] = {}


def priced_route(route: Route, request: ImageRequest) -> Route:
    """``route`` itself, or for an edit on a card with edit pricing, a view of it priced per edit."""
    from .catalog import Route as RouteClass

    cap = route.card.capabilities.edit
    if not request.images or cap is None or cap.pricing is None:
        return route
    got = _EDIT_ROUTES.get(id(route))
    if got is None or got.card.pricing is not cap.pricing:
        got = RouteClass(route.provider, route.card.model_copy(update={"pricing": cap.pricing}))
        _EDIT_ROUTES[id(route)] = got
    return got


__all__ = ["EditCapabilities", "edit_eligibility", "expected_input_tokens", "input_header", "priced_route"]
