"""Edit bodies for Bedrock's image families (an ImageRequest with input images).

Amazon (Titan Image Generator v2, Nova Canvas) share one envelope with a task type per edit:

=============  ===================  ======================================================================
mode           taskType             parameters
=============  ===================  ======================================================================
inpaint        INPAINTING           ``inPaintingParams``: image, text, maskImage (black = change) or
                                    maskPrompt (``extras.mask_prompt``)
outpaint       OUTPAINTING          ``outPaintingParams``: image, text, maskImage (black = keep: the rest
                                    is regenerated), ``outPaintingMode`` DEFAULT | PRECISE
                                    (``extras.outpainting_mode``)
variation      IMAGE_VARIATION      ``imageVariationParams``: images (1-5), text, similarityStrength
                                    (0.2-1.0; ours is ``1 - strength``: strength says how far to move)
(task)         BACKGROUND_REMOVAL   ``backgroundRemovalParams``: image (``extras.task =
                                    "background_removal"``; no prompt is sent, no config)
=============  ===================  ======================================================================

Masks arrive in the gateway's convention (white or alpha 0 = repaint) and are converted here: for
inpainting the repaint area becomes black; for outpainting the repaint area (what to extend) stays white
and the kept subject is black. Stability SD3.5 Large does image-to-image: ``mode: image-to-image`` with
``image`` and ``strength`` (the card's ``fixed`` text-to-image mode is replaced for edits).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidBackendRequest
from ..inputs import repaint_mask_png
from .base import BackendCall

if TYPE_CHECKING:
    from ._bedrock_bodies import BodyFamily, Limits

PROVIDER = "bedrock"
AMAZON_TASKS = {"inpaint": "INPAINTING", "outpaint": "OUTPAINTING", "variation": "IMAGE_VARIATION"}
OUTPAINTING_MODES = ("DEFAULT", "PRECISE")


def _bad(message: str) -> InvalidBackendRequest:
    return InvalidBackendRequest(message, provider=PROVIDER)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _config(call: BackendCall, lim: Limits, *, sized: bool) -> dict[str, Any]:
    from ._bedrock_bodies import fold_seed

    r = call.request
    config: dict[str, Any] = {"numberOfImages": r.n, "quality": str(r.extras.get("quality", "standard"))}
    if sized and r.width is not None and r.height is not None:
        config.update(width=r.width, height=r.height)
    if r.seed is not None:
        config["seed"] = fold_seed(r.seed, lim)
    if r.guidance_scale is not None:
        config["cfgScale"] = r.guidance_scale
    if config["quality"] not in ("standard", "premium"):
        raise _bad(f"{call.model} quality must be 'standard' or 'premium', not {config['quality']!r}")
    return config


def _text(params: dict[str, Any], call: BackendCall) -> dict[str, Any]:
    r = call.request
    params["text"] = r.prompt
    if r.negative_prompt:
        params["negativeText"] = r.negative_prompt
    return params


def _mask(params: dict[str, Any], call: BackendCall, *, repaint_white: bool) -> dict[str, Any]:
    r = call.request
    if r.mask is not None:
        params["maskImage"] = _b64(repaint_mask_png(r.mask, repaint_white=repaint_white))
    elif r.extras.get("mask_prompt"):
        params["maskPrompt"] = str(r.extras["mask_prompt"])
    else:
        raise _bad(f"{call.model} {r.mode} needs a mask image or extras.mask_prompt")
    return params


def build_amazon_edit(call: BackendCall, lim: Limits) -> dict[str, Any]:
    r = call.request
    if r.extras.get("task") == "background_removal":
        if len(r.images) != 1:
            raise _bad("background removal takes exactly one input image")
        return {"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": _b64(r.images[0])}}
    task = AMAZON_TASKS.get(str(r.mode))
    if task is None:
        raise _bad(f"{call.model} edits by {', '.join(AMAZON_TASKS)}, not {r.mode!r}")
    if task == "IMAGE_VARIATION":
        params: dict[str, Any] = _text({"images": [_b64(d) for d in r.images]}, call)
        if r.strength is not None:
            params["similarityStrength"] = round(min(1.0, max(0.2, 1.0 - r.strength)), 4)
        return {"taskType": task, "imageVariationParams": params,
                "imageGenerationConfig": _config(call, lim, sized=True)}  # fmt: skip
    if len(r.images) != 1:
        raise _bad(f"{call.model} {r.mode} takes one input image, {len(r.images)} given")
    if task == "INPAINTING":
        params = _mask(_text({"image": _b64(r.images[0])}, call), call, repaint_white=False)
        return {"taskType": task, "inPaintingParams": params,
                "imageGenerationConfig": _config(call, lim, sized=False)}  # fmt: skip
    mode = str(r.extras.get("outpainting_mode", "DEFAULT")).upper()
    if mode not in OUTPAINTING_MODES:
        raise _bad(f"outpainting_mode must be one of {OUTPAINTING_MODES}, not {mode!r}")
    params = _mask(_text({"image": _b64(r.images[0])}, call), call, repaint_white=True)
    params["outPaintingMode"] = mode
    return {"taskType": task, "outPaintingParams": params,
            "imageGenerationConfig": _config(call, lim, sized=False)}  # fmt: skip


def build_stability_edit(call: BackendCall, lim: Limits) -> dict[str, Any]:
    from ._bedrock_bodies import fold_seed

    r = call.request
    if r.mode != "img2img" or len(r.images) != 1:
        raise _bad(f"{call.model} edits by img2img with one input image")
    body: dict[str, Any] = {
        "prompt": r.prompt,
        "mode": "image-to-image",
        "image": _b64(r.images[0]),
        "strength": 0.8 if r.strength is None else r.strength,
        "output_format": "png",
    }
    if r.negative_prompt:
        body["negative_prompt"] = r.negative_prompt
    if r.seed is not None:
        body["seed"] = fold_seed(r.seed, lim)
    return body


EDIT_BUILDERS: Mapping[str, Callable[[BackendCall, Limits], dict[str, Any]]] = {
    "titan-image": build_amazon_edit,
    "nova-canvas": build_amazon_edit,
    "stability-image": build_stability_edit,
}


def build_edit(family: BodyFamily, call: BackendCall) -> dict[str, Any]:
    """The body of an edit on ``family``; the card's ``fixed`` fields apply except an edit's own mode."""
    builder = EDIT_BUILDERS.get(family.name)
    if builder is None:
        raise _bad(f"Bedrock body family {family.name!r} has no edit body")
    body = builder(call, family.limits)
    body.update({k: v for k, v in family.fixed.items() if k not in body})
    return body


__all__ = ["AMAZON_TASKS", "EDIT_BUILDERS", "build_edit"]
