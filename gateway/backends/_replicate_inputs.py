"""How Replicate model families name their inputs: data, not code branches.

Every Replicate model declares its own input schema. A family says which input carries the negative
prompt, the image count, the seed, the step count, the guidance and the scheduler, and whether size is
given as ``width``/``height`` or as an ``aspect_ratio``. A provider card picks a family with
``options.family`` and may override any field with ``options.inputs``, so a new model is a YAML edit.
Building the input is pure and raises :class:`InvalidBackendRequest`, which is what ``check()`` reports.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InvalidBackendRequest
from ._wire import aspect_ratio_for
from .base import BackendCall

PROVIDER = "replicate"
_FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


@dataclass(frozen=True, slots=True)
class InputFamily:
    """Input names of one family (None: the model has no such input) and the ranges it accepts."""

    prompt: str = "prompt"
    negative_prompt: str | None = None
    count: str | None = "num_outputs"
    max_count: int = 1
    seed: str | None = "seed"
    steps: str | None = None
    steps_range: tuple[int, int] = (1, 500)
    guidance: str | None = None
    guidance_range: tuple[float, float] = (0.0, 50.0)
    scheduler: str | None = None
    schedulers: Mapping[str, str] = field(default_factory=dict)  # gateway name -> model's name
    size: Literal["width_height", "aspect_ratio", "none"] = "width_height"
    width: str = "width"
    height: str = "height"
    aspect_ratio: str = "aspect_ratio"
    aspect_ratios: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)  # always sent (e.g. output_format=png)


FAMILIES: Mapping[str, InputFamily] = {
    # black-forest-labs/flux-schnell: 1-4 steps, no guidance, no negative prompt, sizes by ratio.
    "flux-schnell": InputFamily(
        max_count=4, steps="num_inference_steps", steps_range=(1, 4), size="aspect_ratio",
        aspect_ratios=_FLUX_RATIOS, fixed={"output_format": "png"},
    ),
    # black-forest-labs/flux-dev: guidance 0-10, up to 50 steps.
    "flux-dev": InputFamily(
        max_count=4, steps="num_inference_steps", steps_range=(1, 50), guidance="guidance",
        guidance_range=(0.0, 10.0), size="aspect_ratio", aspect_ratios=_FLUX_RATIOS,
        fixed={"output_format": "png"},
    ),
    # stability-ai/sdxl (community model, pinned by version): classic diffusers-style inputs.
    "sdxl": InputFamily(
        negative_prompt="negative_prompt", max_count=4, steps="num_inference_steps", steps_range=(1, 500),
        guidance="guidance_scale", guidance_range=(1.0, 50.0), scheduler="scheduler",
        schedulers={"ddim": "DDIM", "dpm++": "DPMSolverMultistep", "euler": "K_EULER",
                    "euler-ancestral": "K_EULER_ANCESTRAL"},
    ),
    # Anything else that follows the common cog conventions.
    "generic": InputFamily(
        negative_prompt="negative_prompt", max_count=4, steps="num_inference_steps",
        guidance="guidance_scale",
    ),
}  # fmt: skip

_REF = re.compile(r"^(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+)(?::(?P<version>[A-Za-z0-9]+))?$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``owner/name`` (an official model, billed per output) or ``owner/name:version`` (billed by time)."""

    owner: str
    name: str
    version: str | None

    @property
    def model(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def billing(self) -> str:
        return "time" if self.version else "image"


def parse_ref(model: str) -> ModelRef:
    m = _REF.match(model)
    if m is None:
        raise InvalidBackendRequest(
            f"Replicate model id {model!r} is not 'owner/name' or 'owner/name:version'", provider=PROVIDER
        )
    return ModelRef(m["owner"], m["name"], m["version"])


def resolve_family(options: Mapping[str, Any]) -> InputFamily:
    """The card's ``family`` with its ``inputs`` overrides applied (a bad card: InvalidBackendRequest,
    so ``check()`` drops the route while planning and names the card option to fix)."""
    name = str(options.get("family", "generic"))
    base = FAMILIES.get(name)
    if base is None:
        names = ", ".join(sorted(FAMILIES))
        raise _bad(f"unknown Replicate input family {name!r} (card options.family); known: {names}")
    overrides = options.get("inputs") or {}
    if not overrides:
        return base
    known = {f.name for f in dataclasses.fields(InputFamily)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise _bad(
            f"unknown Replicate input override(s) {unknown} (card options.inputs); known: {sorted(known)}"
        )
    fixed: dict[str, Any] = {str(k): tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(base, **fixed)


def _bad(message: str) -> InvalidBackendRequest:
    return InvalidBackendRequest(message, provider=PROVIDER)


def build_input(call: BackendCall) -> dict[str, Any]:
    """The prediction ``input`` for ``call`` under its card's family. Pure; raises InvalidBackendRequest."""
    fam = resolve_family(call.options)
    r = call.request
    inp: dict[str, Any] = {fam.prompt: r.prompt}
    if r.negative_prompt:
        if fam.negative_prompt is None:
            raise _bad(f"{call.model} takes no negative prompt")
        inp[fam.negative_prompt] = r.negative_prompt
    if r.width is not None and r.height is not None and fam.size != "none":
        if fam.size == "aspect_ratio":
            ratio = aspect_ratio_for(r.width, r.height, fam.aspect_ratios)
            if ratio is None:
                raise _bad(
                    f"{call.model} takes aspect ratios {', '.join(fam.aspect_ratios)}; "
                    f"{r.width}x{r.height} is none of them"
                )
            inp[fam.aspect_ratio] = ratio
        else:
            inp[fam.width], inp[fam.height] = r.width, r.height
    if r.n > 1 and (fam.count is None or r.n > fam.max_count):
        raise _bad(
            f"{call.model} makes at most {fam.max_count if fam.count else 1} image(s) per call, {r.n} asked"
        )
    if fam.count is not None:
        inp[fam.count] = r.n
    if r.seed is not None and fam.seed is not None:
        inp[fam.seed] = r.seed
    if r.steps is not None:
        lo, hi = fam.steps_range
        if fam.steps is None or not lo <= r.steps <= hi:
            what = f"{lo}-{hi} steps, {r.steps} asked" if fam.steps else "no steps input"
            raise _bad(f"{call.model} takes {what}")
        inp[fam.steps] = r.steps
    if r.guidance_scale is not None:
        glo, ghi = fam.guidance_range
        if fam.guidance is None or not glo <= r.guidance_scale <= ghi:
            what = f"guidance {glo}-{ghi}, {r.guidance_scale} asked" if fam.guidance else "no guidance input"
            raise _bad(f"{call.model} takes {what}")
        inp[fam.guidance] = r.guidance_scale
    if r.scheduler is not None:
        mapped = fam.schedulers.get(r.scheduler)
        if fam.scheduler is None or mapped is None:
            raise _bad(
                f"{call.model} has no scheduler {r.scheduler!r} (has {sorted(fam.schedulers) or 'none'})"
            )
        inp[fam.scheduler] = mapped
    if r.images:  # an edit: image, mask and strength inputs (see _replicate_edit.py)
        from ._replicate_edit import edit_inputs

        inp.update(edit_inputs(call))
    inp.update(fam.fixed)
    extra = r.extras.get("replicate")
    if isinstance(extra, Mapping):
        inp.update(extra)  # the caller's explicit model inputs win
    return inp


__all__ = ["FAMILIES", "InputFamily", "ModelRef", "build_input", "parse_ref", "resolve_family"]
