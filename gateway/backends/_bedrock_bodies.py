"""Request and response bodies of Bedrock's image model families, as data plus two small codecs.

* ``titan-image`` and ``nova-canvas`` share Amazon's envelope: ``taskType TEXT_IMAGE``,
  ``textToImageParams`` and ``imageGenerationConfig``; the answer is ``{"images": [...], "error": ...}``
  where ``error`` is set when moderation blocked the output.
* ``stability-image`` (SD3.5 Large, Stable Image Ultra/Core): ``prompt``, ``aspect_ratio``, ``seed``,
  ``output_format``; the answer carries ``seeds`` and ``finish_reasons`` (a ``Filter reason`` means
  moderation).

Limits (prompt length, seed range, images per call, guidance range) are family defaults that a card
can override with ``options.limits``; ``options.fixed`` adds constant body fields (``mode`` for SD3.5).
Building is pure and raises :class:`InvalidBackendRequest`, which is also what ``check()`` reports.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadResponse, ContentFiltered, InvalidBackendRequest
from ._wire import aspect_ratio_for, redact, validate_image
from .base import BackendCall

PROVIDER = "bedrock"
FILTER_PATTERN = re.compile(r"content filters?|blocked by our|responsible ai|filter reason", re.I)
STABILITY_RATIOS = ("1:1", "16:9", "9:16", "21:9", "9:21", "3:2", "2:3", "4:5", "5:4")


@dataclass(frozen=True, slots=True)
class Limits:
    max_prompt: int
    max_negative: int
    max_seed: int
    max_images: int
    guidance_range: tuple[float, float] | None = None  # None: the model takes no guidance
    aspect_ratios: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()  # request.extras keys passed through (quality, style)


@dataclass(frozen=True, slots=True)
class Parsed:
    images: tuple[bytes, ...]
    seed: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def fold_seed(seed: int, lim: Limits) -> int:
    """The seed actually sent: requests carry any uint32, these models take a narrower range.

    Folding (``seed mod (max_seed + 1)``) keeps a seed reproducible on the same model instead of
    making a random seed drop the route; the backend reports the folded value as the result's seed
    and the original under ``metadata["requested_seed"]``.
    """
    return seed % (lim.max_seed + 1)


def _bad(message: str) -> InvalidBackendRequest:
    return InvalidBackendRequest(message, provider=PROVIDER)


def _common(call: BackendCall, lim: Limits) -> None:
    r, model = call.request, call.model
    if len(r.prompt) > lim.max_prompt:
        raise _bad(f"{model} takes prompts up to {lim.max_prompt} characters, this one has {len(r.prompt)}")
    if r.negative_prompt and len(r.negative_prompt) > lim.max_negative:
        raise _bad(f"{model} takes negative prompts up to {lim.max_negative} characters")
    if r.n > lim.max_images:
        raise _bad(f"{model} makes at most {lim.max_images} image(s) per call, {r.n} asked")
    if r.steps is not None:
        raise _bad(f"{model} takes no step count")
    if r.scheduler is not None:
        raise _bad(f"{model} takes no scheduler")
    if r.guidance_scale is not None:
        g = lim.guidance_range
        if g is None or not g[0] <= r.guidance_scale <= g[1]:
            raise _bad(f"{model} takes guidance {g[0]}-{g[1]}" if g else f"{model} takes no guidance scale")


def decode_images(items: Any, *, what: str) -> tuple[bytes, ...]:
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise BadResponse(f"Bedrock {what} answer has no images", provider=PROVIDER)
    out = []
    for item in items:
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise BadResponse(f"Bedrock {what} image is not valid base64", provider=PROVIDER) from None
        validate_image(data, provider=PROVIDER)
        out.append(data)
    return tuple(out)


# ----------------------------------------------------------------------------- Amazon (Titan, Nova)


def build_amazon(call: BackendCall, lim: Limits) -> dict[str, Any]:
    r = call.request
    params: dict[str, Any] = {"text": r.prompt}
    if r.negative_prompt:
        params["negativeText"] = r.negative_prompt
    config: dict[str, Any] = {"numberOfImages": r.n, "quality": "standard"}
    if r.width is not None and r.height is not None:
        config.update(width=r.width, height=r.height)
    if r.seed is not None:
        config["seed"] = fold_seed(r.seed, lim)
    if r.guidance_scale is not None:
        config["cfgScale"] = r.guidance_scale
    for key in lim.extras:
        if key in r.extras:
            (config if key == "quality" else params)[key] = r.extras[key]
    if r.quality is not None and r.quality != "auto":  # the card's word (gateway.quality maps it)
        config["quality"] = r.quality
    if config["quality"] not in ("standard", "premium"):
        raise _bad(f"{call.model} quality must be 'standard' or 'premium', not {config['quality']!r}")
    return {"taskType": "TEXT_IMAGE", "textToImageParams": params, "imageGenerationConfig": config}


def parse_amazon(payload: Mapping[str, Any]) -> Parsed:
    error = payload.get("error")
    if error:
        text = redact(str(error))
        cls = ContentFiltered if FILTER_PATTERN.search(text) else BadResponse
        raise cls(f"Bedrock returned no image: {text}", provider=PROVIDER)
    return Parsed(decode_images(payload.get("images"), what="Amazon image"))


# ----------------------------------------------------------------------------- Stability


def build_stability(call: BackendCall, lim: Limits) -> dict[str, Any]:
    r = call.request
    body: dict[str, Any] = {"prompt": r.prompt, "output_format": "png"}
    if r.negative_prompt:
        body["negative_prompt"] = r.negative_prompt
    if r.width is not None and r.height is not None:
        ratio = aspect_ratio_for(r.width, r.height, lim.aspect_ratios)
        if ratio is None:
            raise _bad(
                f"{call.model} takes aspect ratios {', '.join(lim.aspect_ratios)}; "
                f"{r.width}x{r.height} is none of them"
            )
        body["aspect_ratio"] = ratio
    if r.seed is not None:
        body["seed"] = fold_seed(r.seed, lim)
    return body


def parse_stability(payload: Mapping[str, Any]) -> Parsed:
    reasons = payload.get("finish_reasons") or []
    for reason in reasons if isinstance(reasons, list) else [reasons]:
        if reason:
            text = redact(str(reason))
            cls = ContentFiltered if FILTER_PATTERN.search(text) else BadResponse
            raise cls(f"Bedrock Stability model stopped: {text}", provider=PROVIDER)
    seeds = payload.get("seeds")
    seed = seeds[0] if isinstance(seeds, list) and seeds and isinstance(seeds[0], int) else None
    return Parsed(decode_images(payload.get("images"), what="Stability"), seed, {"finish_reasons": reasons})


# ----------------------------------------------------------------------------- families


@dataclass(frozen=True, slots=True)
class BodyFamily:
    name: str
    limits: Limits
    builder: Callable[[BackendCall, Limits], dict[str, Any]]
    parser: Callable[[Mapping[str, Any]], Parsed]
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def build(self, call: BackendCall) -> dict[str, Any]:
        _common(call, self.limits)
        if call.request.images:  # an edit: task bodies live in _bedrock_edit.py
            from ._bedrock_edit import build_edit

            return build_edit(self, call)
        body = self.builder(call, self.limits)
        body.update(self.fixed)
        return body

    def parse(self, payload: Mapping[str, Any]) -> Parsed:
        return self.parser(payload)


FAMILIES: Mapping[str, BodyFamily] = {
    "titan-image": BodyFamily(
        "titan-image", Limits(max_prompt=512, max_negative=512, max_seed=2_147_483_646, max_images=5,
                              guidance_range=(1.1, 10.0), extras=("quality",)),
        build_amazon, parse_amazon,
    ),
    "nova-canvas": BodyFamily(
        "nova-canvas", Limits(max_prompt=1024, max_negative=1024, max_seed=858_993_459, max_images=5,
                              guidance_range=(1.1, 10.0), extras=("quality", "style")),
        build_amazon, parse_amazon,
    ),
    "stability-image": BodyFamily(
        "stability-image", Limits(max_prompt=10_000, max_negative=10_000, max_seed=4_294_967_294,
                                  max_images=1, aspect_ratios=STABILITY_RATIOS),
        build_stability, parse_stability,
    ),
}  # fmt: skip


def resolve_family(options: Mapping[str, Any]) -> BodyFamily:
    """The card's ``family`` with ``limits`` and ``fixed`` overrides applied."""
    name = str(options.get("family") or "")
    base = FAMILIES.get(name)
    if base is None:
        raise _bad(
            f"unknown Bedrock body family {name!r} (card options.family); "
            f"known: {', '.join(sorted(FAMILIES))}"
        )
    overrides = options.get("limits") or {}
    fixed = options.get("fixed") or {}
    if not overrides and not fixed:
        return base
    known = {f.name for f in dataclasses.fields(Limits)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise _bad(f"unknown Bedrock limit override(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {str(k): tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(
        base, limits=dataclasses.replace(base.limits, **values), fixed={**base.fixed, **fixed}
    )
