"""Edit inputs for Replicate models that take an image (img2img, inpainting, variations).

Which input carries the image, the mask and the strength differs per model, so it is data: a family
here, picked by the card's ``options.edit_family`` (or its ``options.family``), with single names
overridable by ``options.edit_inputs``. Files are sent as ``data:`` URIs with the image's real MIME type,
which is what the ``replicate`` client itself produces for a file input with its ``base64`` strategy:
the bytes travel inside the prediction request to the API, so no upload to a file host happens and the
token never goes anywhere but the API.

Masks arrive in the gateway's convention (white or alpha 0 = repaint) and are re-encoded as a plain
black-and-white PNG with the model's own polarity (``mask_white_repaints``).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidBackendRequest
from ..inputs import repaint_mask_png, sniff_input
from .base import BackendCall

PROVIDER = "replicate"


@dataclass(frozen=True, slots=True)
class EditInputs:
    image: str | None = "image"  # the input image (first one)
    images: str | None = None  # a list input taking every input image (variation models)
    mask: str | None = "mask"
    mask_white_repaints: bool = True
    strength: str | None = None  # a 0..1 input where 1 redraws everything (prompt_strength)
    invert_strength: bool = False  # the model's input means "how much to keep" instead


EDIT_FAMILIES: Mapping[str, EditInputs] = {
    # black-forest-labs/flux-fill-pro / flux-fill-dev: image + mask (white = fill).
    "flux-fill": EditInputs(image="image", mask="mask"),
    # black-forest-labs/flux-redux-*: one image, variations of it.
    "flux-redux": EditInputs(image="redux_image", mask=None),
    # stability-ai/sdxl: image (+ mask: white = inpaint), prompt_strength 0..1.
    "sdxl": EditInputs(image="image", mask="mask", strength="prompt_strength"),
    "generic": EditInputs(image="image", mask="mask", strength="prompt_strength"),
}


def _bad(message: str) -> InvalidBackendRequest:
    return InvalidBackendRequest(message, provider=PROVIDER)


def data_uri(data: bytes) -> str:
    mime = sniff_input(data) or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def resolve(options: Mapping[str, Any]) -> EditInputs:
    name = str(options.get("edit_family") or options.get("family") or "generic")
    base = EDIT_FAMILIES.get(name)
    if base is None:
        names = ", ".join(sorted(EDIT_FAMILIES))
        raise _bad(f"Replicate family {name!r} takes no input images (known: {names})")
    overrides: dict[str, Any] = {str(k): v for k, v in dict(options.get("edit_inputs") or {}).items()}
    known = {f.name for f in dataclasses.fields(EditInputs)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise _bad(f"unknown Replicate edit input override(s) {unknown} (card options.edit_inputs)")
    return dataclasses.replace(base, **overrides) if overrides else base


def edit_inputs(call: BackendCall) -> dict[str, Any]:
    """The prediction inputs an edit adds (pure; raises InvalidBackendRequest)."""
    r, fam = call.request, resolve(call.options)
    out: dict[str, Any] = {}
    if fam.images is not None:
        out[fam.images] = [data_uri(d) for d in r.images]
    elif len(r.images) != 1:
        raise _bad(f"{call.model} takes one input image, {len(r.images)} given")
    elif fam.image is not None:
        out[fam.image] = data_uri(r.images[0])
    if r.mask is not None:
        if fam.mask is None:
            raise _bad(f"{call.model} takes no mask")
        out[fam.mask] = data_uri(repaint_mask_png(r.mask, repaint_white=fam.mask_white_repaints))
    elif r.mode in ("inpaint", "outpaint"):
        raise _bad(f"{call.model} {r.mode} needs a mask image")
    if r.strength is not None:
        if fam.strength is None:
            raise _bad(f"{call.model} takes no strength")
        out[fam.strength] = round(1.0 - r.strength, 6) if fam.invert_strength else r.strength
    return out


__all__ = ["EDIT_FAMILIES", "EditInputs", "data_uri", "edit_inputs"]
