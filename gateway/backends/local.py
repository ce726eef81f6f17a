"""Local backend: any diffusers pipeline directory on disk, offline, plus the embedded ``tiny-digits``.

torch and diffusers are imported when the first image is generated, never at ``import gateway``. The
async path runs torch in a bounded thread pool (one worker per backend by default): torch releases the
GIL in its kernels, so the event loop stays free, and the bound stops a burst of requests from
oversubscribing the CPU or GPU.

Pipelines are chosen by ``model_index.json``'s ``_class_name`` from a small runner registry: the
embedded class-conditional digits model has its own runner; every other class goes through
``DiffusionPipeline.from_pretrained(path, local_files_only=True)``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, cast

from ..errors import BackendError, InvalidBackendRequest, ReservationExhausted, UsageError
from . import few_step
from .base import Backend, BackendCall, BackendResult, Usage

# Scheduler names (the public vocabulary of ImageRequest.scheduler) -> diffusers class names.
SCHEDULER_CLASSES: dict[str, str] = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "lcm": "LCMScheduler",
}

EMBEDDED_MODELS: dict[str, str] = {"tiny-digits": "tiny_digits"}

# tiny-digits defaults, chosen by measurement (model card): DPM-Solver++ at 10 steps with guidance 2.0
# reads as the digit asked for 96-100% of the time, twice as fast as DDIM at 20 steps (93%).
DEFAULT_SCHEDULER = "dpm++"
DEFAULT_STEPS = 10
DEFAULT_GUIDANCE = 2.0

_DIGIT_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TOKEN = re.compile(r"[a-z]+|\d+")


def digit_from_prompt(prompt: str) -> int:
    """The one digit a prompt names ("a handwritten 7", "seven", "digit 7"); raise if none or several."""
    found: set[int] = set()
    for tok in _TOKEN.findall(prompt.lower()):
        if tok.isdigit():
            if len(tok) == 1:
                found.add(int(tok))
            else:
                raise InvalidBackendRequest(
                    f"tiny-digits draws one digit 0-9; the prompt names the number {tok}", provider="local"
                )
        elif tok in _DIGIT_WORDS:
            found.add(_DIGIT_WORDS[tok])
    if len(found) != 1:
        what = "no digit" if not found else f"several digits ({', '.join(map(str, sorted(found)))})"
        raise InvalidBackendRequest(
            f"tiny-digits draws exactly one digit 0-9, but the prompt names {what}; "
            "try 'a handwritten 7' or 'seven'",
            provider="local",
        )
    return found.pop()


def resolve_model_dir(model: str, options: dict[str, Any] | None = None) -> Path:
    """An embedded model name, or a path (from the card's ``path`` option or the model id itself)."""
    if model in EMBEDDED_MODELS:
        return Path(str(resources.files("gateway.models").joinpath(EMBEDDED_MODELS[model])))
    path = Path(str((options or {}).get("path") or model)).expanduser()
    if not (path / "model_index.json").is_file():
        raise UsageError(f"local model {model!r}: no diffusers pipeline (model_index.json) at {path}")
    return path


# The deadline check of the run in progress on this thread: runners call ``guard_step()`` between
# denoising steps (a contextvar keeps the runner signature unchanged for every registered runner).
STEP_GUARD: ContextVar[Callable[[], None] | None] = ContextVar("gateway_local_step_guard", default=None)


def step_guard(call: BackendCall, clock: Callable[[], float], started: float) -> Callable[[], None] | None:
    """Stop before a step that would run past ``call.max_billed_s`` (what the reservation pays for).

    Called before every step after the first: if the time used so far plus the last step's duration
    would pass the limit, the run stops there with :class:`ReservationExhausted` (the ledger keeps the
    reservation as spent: the device time was used).
    """
    limit = call.max_billed_s
    if limit is None:
        return None
    last = [started]

    def guard() -> None:
        now = clock()
        step, last[0] = now - last[0], now
        if now - started + step > limit:
            raise ReservationExhausted(
                f"local run stopped after {now - started:.3f}s: the next step would pass the {limit:.3f}s"
                " of device time its reservation pays for",
                provider="local",
            )

    return guard


def guard_step() -> None:
    guard = STEP_GUARD.get()
    if guard is not None:
        guard()


@dataclass
class _Loaded:
    runner: Callable[..., tuple[list[bytes], dict[str, Any]]]
    lock: threading.Lock


class LocalBackend(Backend):
    """Runs diffusers pipelines in-process on ``device`` ("cpu", "cuda", "mps") with ``dtype``."""

    name = "local"

    def __init__(
        self,
        device: str = "cpu",
        dtype: str = "float32",
        max_workers: int = 1,
        clock: Callable[[], float] = time.perf_counter,
        **_: Any,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self._clock = clock  # injected so tests can give each denoising step any duration
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gateway-local")
        self._loaded: dict[Any, _Loaded] = {}
        self._load_lock = threading.Lock()

    def check(self, call: BackendCall) -> str | None:
        if (few := _few_step_check(call)) is not None:
            return few
        if _class_name(call) in ("TinyDigitsPipeline", few_step.LCM_CLASS):
            try:
                digit_from_prompt(call.request.prompt)
            except InvalidBackendRequest as exc:
                return str(exc)
        return None

    def generate(self, call: BackendCall) -> BackendResult:
        """Run the pipeline. Billed time (``predict_time_s``) starts once the model is loaded: loading
        happens once per process and is not the request's work; ``elapsed_s`` includes it."""
        started = self._clock()
        loaded = self._load(
            resolve_model_dir(call.model, dict(call.options)),
            _adapter_options(call),
            edit=call.request.is_edit,
        )
        with loaded.lock:  # a pipeline object is not safe to share between threads
            run_started = self._clock()
            token = STEP_GUARD.set(step_guard(call, self._clock, run_started))
            try:
                images, meta = loaded.runner(call)
            except BackendError:
                raise
            except (RuntimeError, ValueError) as exc:
                raise InvalidBackendRequest(f"local pipeline failed: {exc}", provider="local") from exc
            finally:
                STEP_GUARD.reset(token)
            billed = self._clock() - run_started
        elapsed = self._clock() - started
        return BackendResult(
            images=tuple(images),
            usage=Usage(images=len(images), elapsed_s=elapsed, predict_time_s=billed, hardware=self.device),
            seed=call.request.seed,
            metadata=meta,
        )

    async def agenerate(self, call: BackendCall) -> BackendResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self.generate, call))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loaded.clear()

    # ------------------------------------------------------------------ loading

    def _load(self, path: Path, adapter: dict[str, Any] | None = None, edit: bool = False) -> _Loaded:
        base: Any = path / ":edit" if edit else path  # edits have their own runners (local_edit.py)
        key: Any = (
            base if adapter is None else (base, adapter["adapter"], adapter.get("adapter_tensor_sha256"))
        )
        with self._load_lock:
            got = self._loaded.get(key)
            if got is None:
                cls = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
                make = RUNNERS.get(cls, _diffusers_runner)
                if edit:
                    from .local_edit import EDIT_RUNNERS, diffusers_edit_runner

                    make = EDIT_RUNNERS.get(cls, diffusers_edit_runner)
                if adapter is None:
                    runner = make(path, self.device, self.dtype)
                else:  # a signed LoRA: verified and applied by gateway/backends/lora.py
                    runner = cast(Any, make)(path, self.device, self.dtype, adapter=adapter)
                got = _Loaded(runner=runner, lock=threading.Lock())
                self._loaded[key] = got
            return got


def _adapter_options(call: BackendCall) -> dict[str, Any] | None:
    """The card options of a fine-tuned route (``adapter`` = the signed adapter file), else None."""
    return dict(call.options) if call.options.get("adapter") else None


def _class_name(call: BackendCall) -> str:
    try:
        path = resolve_model_dir(call.model, dict(call.options))
        return str(json.loads((path / "model_index.json").read_text()).get("_class_name", ""))
    except (UsageError, OSError, ValueError):
        return ""


def _torch_dtype(name: str) -> Any:
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"unknown torch dtype {name!r}")
    return dtype


def make_scheduler(name: str, config: Any) -> Any:
    """Build scheduler ``name`` from another scheduler's config (diffusers' from_config)."""
    import diffusers

    cls_name = SCHEDULER_CLASSES.get(name)
    if cls_name is None and name in few_step.FEW_STEP_SCHEDULERS:  # tcd, trailing DDIM/Euler
        return few_step.make_few_step_scheduler(name, config)
    if cls_name is None:
        raise InvalidBackendRequest(f"unknown scheduler {name!r}", provider="local")
    return getattr(diffusers, cls_name).from_config(config)


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def grey_images(x: Any) -> list[Any]:
    """A batch of one-channel samples in [-1, 1] (the digits UNets' space) as greyscale PIL images."""
    import numpy as np
    import torch
    from PIL import Image

    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a[0])) for a in arr]


def upscaled_pngs(x: Any, r: Any, native: int) -> tuple[list[bytes], dict[str, Any]]:
    """The digits samples as PNGs at the request's size (256 by default) and the size facts for the
    result's metadata; every digits text-to-image runner answers in this shape."""
    from PIL import Image

    w, h = r.width or 256, r.height or 256
    out = [_png(img.resize((w, h), Image.Resampling.BICUBIC)) for img in grey_images(x)]
    return out, {"native_size": [native, native], "upscaled": (w, h) != (native, native)}


# ---------------------------------------------------------------------- runners


def load_digits_unet(
    path: Path, device: str, dtype: str, adapter: dict[str, Any] | None = None
) -> tuple[Any, dict[str, Any] | None]:
    """A digits model's UNet2DModel on ``device`` in eval mode, ``adapter`` (a verified LoRA) applied
    before the move; returns the UNet and the adapter's metadata (None without one)."""
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(
        path / "unet", local_files_only=True, low_cpu_mem_usage=False, torch_dtype=_torch_dtype(dtype)
    )
    adapter_info = None
    if adapter is not None:
        from .lora import apply_to_unet

        adapter_info = apply_to_unet(unet, path, adapter)
    return unet.to(device=device).eval(), adapter_info


Runner = Callable[[BackendCall], tuple[list[bytes], dict[str, Any]]]


def _tiny_digits_runner(path: Path, device: str, dtype: str, adapter: dict[str, Any] | None = None) -> Runner:
    """Class-conditional UNet with classifier-free guidance (null class = 10), upscaled output."""
    import torch
    from diffusers import DDPMScheduler

    unet, adapter_info = load_digits_unet(path, device, dtype, adapter)
    base_config = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True).config
    null_class = int(unet.config.num_class_embeds) - 1
    native = int(unet.config.sample_size)

    def run(call: BackendCall) -> tuple[list[bytes], dict[str, Any]]:
        r = call.request
        digit = digit_from_prompt(r.prompt)
        sched = make_scheduler(r.scheduler or DEFAULT_SCHEDULER, base_config)
        steps = r.steps or DEFAULT_STEPS
        guidance = DEFAULT_GUIDANCE if r.guidance_scale is None else r.guidance_scale
        sched.set_timesteps(steps)
        gen = torch.Generator(device="cpu").manual_seed(int(r.seed or 0))
        x = torch.randn((r.n, 1, native, native), generator=gen).to(device=device, dtype=unet.dtype)
        x = x * sched.init_noise_sigma
        cond = torch.full((r.n,), digit, dtype=torch.long, device=device)
        labels = torch.cat([cond, torch.full_like(cond, null_class)])
        step_kwargs: dict[str, Any] = {}
        if "generator" in _step_params(sched):
            step_kwargs["generator"] = gen
        with torch.inference_mode():
            for i, t in enumerate(sched.timesteps):
                if i:
                    guard_step()
                inp = sched.scale_model_input(torch.cat([x, x]), t)
                eps = unet(inp, t, class_labels=labels).sample
                eps_c, eps_u = eps.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
                x = sched.step(eps, t, x, **step_kwargs).prev_sample
        out, size = upscaled_pngs(x, r, native)
        meta = {
            "digit": digit,
            **size,
            "scheduler": r.scheduler or DEFAULT_SCHEDULER,
            "steps": steps,
            "guidance_scale": guidance,
        }
        if adapter_info is not None:
            meta["adapter"] = adapter_info
        return out, meta

    return run


def _step_params(sched: Any) -> set[str]:
    import inspect

    return set(inspect.signature(sched.step).parameters)


def _diffusers_runner(path: Path, device: str, dtype: str, adapter: dict[str, Any] | None = None) -> Runner:
    """Any diffusers pipeline directory (SD 1.5, SDXL, SD-Turbo, LCM, or an unconditional DDPM).

    Arguments are passed only where the pipeline's ``__call__`` accepts them. A pipeline that takes no
    prompt is refused unless its card says ``unconditional: true``: ignoring a prompt silently would
    be the kind of quiet correction that hides mistakes.
    """
    import inspect

    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(
        path, local_files_only=True, torch_dtype=_torch_dtype(dtype), low_cpu_mem_usage=False
    )
    adapter_info = None
    if adapter is not None:
        from .lora import apply_to_pipeline

        adapter_info = apply_to_pipeline(pipe, path, adapter)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    accepted = set(inspect.signature(pipe.__call__).parameters)

    def run(call: BackendCall) -> tuple[list[bytes], dict[str, Any]]:
        r = call.request
        if "prompt" not in accepted and not call.options.get("unconditional"):
            raise InvalidBackendRequest(
                f"{type(pipe).__name__} takes no prompt; mark its card `unconditional: true` to use it",
                provider="local",
            )
        pipe.scheduler = make_scheduler(r.scheduler, base_config) if r.scheduler else pipe.scheduler
        wanted: dict[str, Any] = {
            "prompt": r.prompt,
            "negative_prompt": r.negative_prompt,
            "num_images_per_prompt": r.n,
            "batch_size": r.n,
            "width": r.width,
            "height": r.height,
            "num_inference_steps": r.steps,
            "guidance_scale": r.guidance_scale,
            "generator": torch.Generator(device="cpu").manual_seed(int(r.seed or 0)),
            "output_type": "pil",
            "callback_on_step_end": _step_end_guard(r.steps),
        }
        few = few_step.apply(pipe, call, path)  # LCM/TCD/Turbo cards: LoRA, scheduler, step counts
        kwargs = {k: v for k, v in wanted.items() if v is not None and k in accepted}
        images = pipe(**kwargs).images
        meta: dict[str, Any] = {"pipeline": type(pipe).__name__, **(few or {})}
        if adapter_info is not None:
            meta["adapter"] = adapter_info
        return [_png(img) for img in images], meta

    return run


def _step_end_guard(steps: int | None) -> Callable[..., Any] | None:
    """diffusers' ``callback_on_step_end``: the deadline check between steps (none after the last)."""
    if STEP_GUARD.get() is None:
        return None

    def callback(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if steps is None or step + 1 < steps:
            guard_step()
        return kwargs

    return callback


RUNNERS: dict[str, Callable[[Path, str, str], Runner]] = {"TinyDigitsPipeline": _tiny_digits_runner}
RUNNERS.update(few_step.RUNNERS)
EMBEDDED_MODELS.update(few_step.EMBEDDED_MODELS)


def _few_step_check(call: BackendCall) -> str | None:
    """Few-step models (cards with ``few_step``, or the distilled student) refuse other step counts."""
    try:
        path: Path | None = resolve_model_dir(call.model, dict(call.options))
    except UsageError:
        path = None
    return few_step.check(call, path)
