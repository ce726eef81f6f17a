"""Few-step models on the local backend: the distilled ``tiny-digits-lcm`` and users' LCM/TCD/Turbo/
Lightning checkpoints or LCM-LoRA adapters for SD-family pipelines.

Why a separate module: a distilled model is only good at the step counts it was trained for, with the
scheduler it was trained for. Asked for 3 steps, or for DPM++, an LCM checkpoint still returns an image
(a bad one) and still bills the time, so the gateway refuses such requests before any work is done,
naming the step counts the model is made for. The rules live here, in one place, and
``gateway/backends/local.py`` calls :func:`check` (at routing time) and :func:`apply` (in the generic
diffusers runner); the embedded student has its own runner, :func:`tiny_digits_lcm_runner`.

A card declares a few-step model in its ``options``::

    options:
      path: /models/sd15
      few_step: {scheduler: lcm, steps: [2, 4, 8], lora: /models/lcm-lora-sdv1-5}

``scheduler`` is one of :data:`FEW_STEP_SCHEDULERS`; ``lora`` (optional) is an LCM-LoRA / TCD-LoRA /
Lightning-LoRA file or folder, loaded with diffusers' ``load_lora_weights`` and fused into the UNet.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InvalidBackendRequest, UsageError
from .base import BackendCall

# name -> (diffusers class, config overrides). "trailing" spacing puts the first step at t=999, which
# is what Turbo/Lightning-style checkpoints are trained for (leading spacing starts at a lower noise
# level and leaves visible noise at 1-4 steps).
FEW_STEP_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "ddim-trailing": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    "euler-trailing": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}

LCM_CLASS = "TinyDigitsLCMPipeline"
SPEC_FILE = "few_step.json"  # written next to a distilled model by its training script


class FewStepSpec(BaseModel):
    """What a few-step model is made for: one scheduler family and a set of step counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scheduler: str = Field(description="One of lcm, tcd, ddim-trailing, euler-trailing.")
    steps: tuple[int, ...] = Field(min_length=1, description="The step counts the model is made for.")
    lora: str | None = Field(default=None, description="An LCM/TCD/Lightning LoRA file or folder to fuse.")

    def refusal(self, model: str, steps: int | None, scheduler: str | None) -> str | None:
        """Why a request cannot run on this model as asked (None = fine)."""
        if scheduler is not None and scheduler != self.scheduler:
            return (f"{model} is a few-step model made for the {self.scheduler!r} scheduler; "
                    f"{scheduler!r} was asked")  # fmt: skip
        if steps not in self.steps:
            made = ", ".join(map(str, self.steps))
            asked = "no step count was" if steps is None else f"{steps}"
            return f"{model} is made for {made} step(s) with {self.scheduler!r}; {asked} asked"
        return None


def parse_spec(raw: Any, where: str) -> FewStepSpec:
    try:
        spec = FewStepSpec.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(f"{where}: bad few_step settings: {exc.errors()[0]['msg']}") from None
    if spec.scheduler not in FEW_STEP_SCHEDULERS:
        names = ", ".join(FEW_STEP_SCHEDULERS)
        raise UsageError(f"{where}: few_step scheduler {spec.scheduler!r} is not one of {names}")
    return spec


def spec_for(options: dict[str, Any], path: Path | None) -> FewStepSpec | None:
    """The card's ``few_step`` option, else the model folder's own ``few_step.json``, else None."""
    if options.get("few_step") is not None:
        return parse_spec(options["few_step"], "card option few_step")
    if path is not None and (path / SPEC_FILE).is_file():
        return parse_spec(json.loads((path / SPEC_FILE).read_text()), str(path / SPEC_FILE))
    return None


def check(call: BackendCall, path: Path | None) -> str | None:
    """Routing-time refusal (before any money or CPU is spent) for few-step models."""
    try:
        spec = spec_for(dict(call.options), path)
    except UsageError as exc:
        return str(exc)
    if spec is None:
        return None
    r = call.request
    return spec.refusal(call.model, r.steps, r.scheduler)


def make_few_step_scheduler(name: str, config: Any) -> Any:
    import diffusers

    cls_name, overrides = FEW_STEP_SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(config, **overrides)


# ------------------------------------------------------------------ users' SD-family pipelines

_lora_lock = threading.Lock()


def apply(pipe: Any, call: BackendCall, path: Path) -> dict[str, Any] | None:
    """Set ``pipe`` up for a few-step card: fuse its LoRA (once), swap in the matching scheduler.

    Returns metadata for the result, or None when the card is not a few-step one (nothing changed).
    Raises :class:`InvalidBackendRequest` for a step count or scheduler the model is not made for.
    """
    spec = spec_for(dict(call.options), path)
    fused = getattr(pipe, "_gateway_fused_lora", None)
    want = None if spec is None else spec.lora
    if want != fused:
        with _lora_lock:
            if fused is not None:  # another card shares this pipeline folder with a different adapter
                pipe.unfuse_lora()
                pipe.unload_lora_weights()
                pipe._gateway_fused_lora = None
            if want is not None:
                lora = Path(want).expanduser()
                if not lora.exists():
                    raise UsageError(f"{call.model}: few_step lora {str(lora)!r} does not exist")
                pipe.load_lora_weights(str(lora), adapter_name="few_step")
                pipe.fuse_lora()
                pipe._gateway_fused_lora = want
    if spec is None:
        if getattr(pipe, "_gateway_few_step_scheduler", None) is pipe.scheduler:
            pipe.scheduler = pipe._gateway_base_scheduler  # a plain card after a few-step one
        return None
    r = call.request
    why = spec.refusal(call.model, r.steps, r.scheduler)
    if why:
        raise InvalidBackendRequest(why, provider="local")
    if not hasattr(pipe, "_gateway_base_scheduler"):
        pipe._gateway_base_scheduler = pipe.scheduler
        pipe._gateway_base_scheduler_config = pipe.scheduler.config
    pipe.scheduler = make_few_step_scheduler(spec.scheduler, pipe._gateway_base_scheduler_config)
    pipe._gateway_few_step_scheduler = pipe.scheduler
    # Step accounting for the record: the timesteps this call will run (the pipeline sets the same).
    probe = make_few_step_scheduler(spec.scheduler, pipe._gateway_base_scheduler_config)
    probe.set_timesteps(r.steps)
    return {
        "few_step": {
            "scheduler": spec.scheduler,
            "scheduler_class": type(pipe.scheduler).__name__,
            "steps": r.steps,
            "timesteps": [round(float(t)) for t in probe.timesteps],
            "lora": want is not None,
        }
    }


# ------------------------------------------------------------------ the embedded student

Runner = Callable[[BackendCall], tuple[list[bytes], dict[str, Any]]]


def tiny_digits_lcm_runner(path: Path, device: str, dtype: str) -> Runner:
    """The distilled digits student: guidance baked in, x0-prediction, one UNet call per LCM step."""
    import torch
    from diffusers import LCMScheduler

    from .local import digit_from_prompt, guard_step, load_digits_unet, upscaled_pngs

    unet, _ = load_digits_unet(path, device, dtype)
    base_sched = LCMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
    native = int(unet.config.sample_size)
    own = spec_for({}, path)
    training = json.loads((path / "training.json").read_text()) if (path / "training.json").is_file() else {}

    def run(call: BackendCall) -> tuple[list[bytes], dict[str, Any]]:
        r = call.request
        spec = spec_for(dict(call.options), None) or own
        steps = r.steps or (spec.steps[0] if spec else 2)
        if spec is not None and (why := spec.refusal(call.model, steps, r.scheduler)):
            raise InvalidBackendRequest(why, provider="local")
        digit = digit_from_prompt(r.prompt)
        sched = copy.deepcopy(base_sched)  # per call: set_timesteps and step() keep state
        sched.set_timesteps(steps)
        gen = torch.Generator(device="cpu").manual_seed(int(r.seed or 0))
        x = torch.randn((r.n, 1, native, native), generator=gen).to(device=device, dtype=unet.dtype)
        labels = torch.full((r.n,), digit, dtype=torch.long, device=device)
        with torch.inference_mode():
            for i, t in enumerate(sched.timesteps):
                if i:
                    guard_step()  # stop before a step the reservation does not pay for
                x0 = unet(x, t, class_labels=labels).sample
                x = sched.step(x0, t, x, generator=gen).prev_sample
        out, size = upscaled_pngs(x, r, native)
        meta = {
            "digit": digit,
            **size,
            "scheduler": "lcm",
            "steps": steps,
            "unet_calls": len(sched.timesteps),
            "guidance_baked_in": training.get("guidance_baked_in"),
        }
        return out, meta

    return run


RUNNERS: dict[str, Callable[[Path, str, str], Runner]] = {LCM_CLASS: tiny_digits_lcm_runner}
EMBEDDED_MODELS: dict[str, str] = {"tiny-digits-lcm": "tiny_digits_lcm"}
