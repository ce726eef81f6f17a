"""Local edits: image-to-image and inpainting, for the embedded tiny-digits model and diffusers pipelines.

tiny-digits does what diffusers' img2img and inpainting pipelines do, on its own UNet (SDEdit):

* **img2img**: the input is brought to the model's 16x16 grey space, noised to the timestep that
  ``strength`` selects (``strength`` 1 = from pure noise, 0 = the input unchanged; diffusers' rule
  ``t_start = steps - int(steps * strength)``) and denoised towards the prompt's digit with
  classifier-free guidance. Low strength keeps the input's digit, high strength redraws it.
* **inpaint**: the same, and after every step the known region (mask 0) is replaced by the input
  noised to the next step's level, so only the masked region is generated. The result is composited
  at the input's own resolution: outside the mask the output's pixels *are* the input's.

Other pipeline directories go through ``AutoPipelineForImage2Image`` / ``AutoPipelineForInpainting``
(``from_pipe`` on the loaded pipeline, so weights are shared), with the mask converted to diffusers'
convention (white = repaint, which is ours too, alpha 0 included).
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidBackendRequest
from ..inputs import mask_to_repaint
from .base import BackendCall

Runner = Callable[[BackendCall], tuple[list[bytes], dict[str, Any]]]
DEFAULT_STRENGTH = {"img2img": 0.8, "inpaint": 1.0}


def _bad(message: str) -> InvalidBackendRequest:
    return InvalidBackendRequest(message, provider="local")


def _strength(call: BackendCall) -> float:
    r = call.request
    return DEFAULT_STRENGTH.get(str(r.mode), 0.8) if r.strength is None else float(r.strength)


def _open(data: bytes) -> Any:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def start_index(steps: int, strength: float) -> int:
    """The first of ``steps`` scheduler steps an edit of ``strength`` runs (diffusers' img2img rule)."""
    init = min(int(steps * strength), steps)
    return max(steps - init, 0)


def tiny_digits_edit_runner(path: Path, device: str, dtype: str) -> Runner:
    """img2img and inpainting on the class-conditional digits UNet (see the module docstring)."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from PIL import Image

    from .local import (
        DEFAULT_GUIDANCE,
        DEFAULT_SCHEDULER,
        DEFAULT_STEPS,
        _png,
        digit_from_prompt,
        grey_images,
        guard_step,
        load_digits_unet,
    )
    from .local import make_scheduler as scheduler_named

    unet, _ = load_digits_unet(path, device, dtype)
    base_config = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True).config
    null_class = int(unet.config.num_class_embeds) - 1
    native = int(unet.config.sample_size)

    def run(call: BackendCall) -> tuple[list[bytes], dict[str, Any]]:
        r = call.request
        if r.mode not in ("img2img", "inpaint"):
            raise _bad(f"tiny-digits edits by img2img or inpaint, not {r.mode!r}")
        digit = digit_from_prompt(r.prompt)
        strength = _strength(call)
        source = _open(r.images[0])
        grey = source.convert("L")
        small = grey.resize((native, native), Image.Resampling.BOX)
        x0 = torch.from_numpy(np.asarray(small, dtype=np.float32) / 127.5 - 1.0)[None, None]
        x0 = x0.repeat(r.n, 1, 1, 1).to(device=device, dtype=unet.dtype)
        m_small = None
        if r.mode == "inpaint":
            assert r.mask is not None
            full = mask_to_repaint(r.mask) >= 0.5
            cells = np.asarray(Image.fromarray(full.astype(np.uint8) * 255).resize((native, native),
                               Image.Resampling.BOX), dtype=np.float32)  # fmt: skip
            m_small = torch.from_numpy((cells > 0).astype(np.float32))[None, None].to(device, unet.dtype)
        sched = scheduler_named(r.scheduler or DEFAULT_SCHEDULER, base_config)
        steps = r.steps or DEFAULT_STEPS
        guidance = DEFAULT_GUIDANCE if r.guidance_scale is None else r.guidance_scale
        sched.set_timesteps(steps)
        t0 = start_index(steps, strength)
        timesteps = sched.timesteps[t0 * sched.order :]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t0 * sched.order)
        gen = torch.Generator(device="cpu").manual_seed(int(r.seed or 0))
        noise = torch.randn(x0.shape, generator=gen).to(device=device, dtype=unet.dtype)
        x = x0
        cond = torch.full((r.n,), digit, dtype=torch.long, device=device)
        labels = torch.cat([cond, torch.full_like(cond, null_class)])
        kwargs: dict[str, Any] = {"generator": gen} if "generator" in _params(sched.step) else {}
        with torch.inference_mode():
            if len(timesteps):
                x = sched.add_noise(x0, noise, timesteps[:1].repeat(r.n))
            for i, t in enumerate(timesteps):
                if i:
                    guard_step()  # stop before a step the reservation does not pay for (local.py)
                inp = sched.scale_model_input(torch.cat([x, x]), t)
                eps_c, eps_u = unet(inp, t, class_labels=labels).sample.chunk(2)
                x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x, **kwargs).prev_sample
                if m_small is not None:
                    known = x0
                    if i < len(timesteps) - 1:
                        known = sched.add_noise(x0, noise, timesteps[i + 1 : i + 2].repeat(r.n))
                    x = (1 - m_small) * known + m_small * x
        out = []
        for drawn in grey_images(x):
            if r.mode == "inpaint":
                out.append(_png(_composite(source, drawn, r.mask)))
            else:
                w, h = r.width or source.width, r.height or source.height
                out.append(_png(drawn.resize((w, h), Image.Resampling.BICUBIC)))
        meta = {
            "digit": digit,
            "edit_mode": r.mode,
            "strength": strength,
            "steps_run": len(timesteps),
            "steps": steps,
            "scheduler": r.scheduler or DEFAULT_SCHEDULER,
            "guidance_scale": guidance,
            "native_size": [native, native],
        }
        return out, meta

    return run


def _composite(source: Any, drawn: Any, mask: bytes | None) -> Any:
    """The drawn image where the mask repaints, the source's own pixels everywhere else."""
    import numpy as np
    from PIL import Image

    assert mask is not None
    mode = "L" if source.mode in ("L", "LA", "I", "1") else "RGB"
    base = source.convert(mode)
    up = drawn.resize(base.size, Image.Resampling.BICUBIC).convert(mode)
    m = mask_to_repaint(mask, base.size) >= 0.5
    a, b = np.asarray(base), np.asarray(up)
    if mode == "RGB":
        m = m[..., None]
    return Image.fromarray(np.where(m, b, a).astype(np.uint8))


def _params(fn: Any) -> set[str]:
    return set(inspect.signature(fn).parameters)


def diffusers_edit_runner(path: Path, device: str, dtype: str) -> Runner:
    """Any diffusers text-to-image directory, edited through its AutoPipeline img2img/inpaint twins."""
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

    from .local import _png, _step_end_guard, _torch_dtype, make_scheduler

    base = DiffusionPipeline.from_pretrained(
        path, local_files_only=True, dtype=_torch_dtype(dtype), low_cpu_mem_usage=False
    ).to(device)
    factories = {"img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}
    pipes: dict[str, Any] = {}

    def pipe_for(mode: str) -> Any:
        if mode not in factories:
            raise _bad(f"{type(base).__name__} edits by img2img or inpaint, not {mode!r}")
        if mode not in pipes:
            try:
                pipe = factories[mode].from_pipe(base)
            except (ValueError, KeyError) as exc:
                raise _bad(f"{type(base).__name__} has no {mode} twin in diffusers: {exc}") from None
            pipe.set_progress_bar_config(disable=True)
            pipes[mode] = pipe
        return pipes[mode]

    def run(call: BackendCall) -> tuple[list[bytes], dict[str, Any]]:
        from PIL import Image

        r = call.request
        pipe = pipe_for(str(r.mode))
        base_config = pipe.scheduler.config
        pipe.scheduler = make_scheduler(r.scheduler, base_config) if r.scheduler else pipe.scheduler
        source = _open(r.images[0]).convert("RGB")
        accepted = _params(pipe.__call__)
        wanted: dict[str, Any] = {
            "prompt": r.prompt,
            "negative_prompt": r.negative_prompt,
            "image": source,
            "strength": _strength(call),
            "num_images_per_prompt": r.n,
            "num_inference_steps": r.steps,
            "guidance_scale": r.guidance_scale,
            "generator": torch.Generator(device="cpu").manual_seed(int(r.seed or 0)),
            "output_type": "pil",
            "callback_on_step_end": _step_end_guard(r.steps),
        }
        if r.mode == "inpaint":
            import numpy as np

            assert r.mask is not None
            white = (mask_to_repaint(r.mask, source.size) >= 0.5).astype(np.uint8) * 255
            wanted.update(mask_image=Image.fromarray(white), width=source.width, height=source.height)
        kwargs = {k: v for k, v in wanted.items() if v is not None and k in accepted}
        images = pipe(**kwargs).images
        return [_png(img) for img in images], {"pipeline": type(pipe).__name__, "edit_mode": r.mode}

    return run


EDIT_RUNNERS: dict[str, Callable[[Path, str, str], Runner]] = {"TinyDigitsPipeline": tiny_digits_edit_runner}

__all__ = ["EDIT_RUNNERS", "diffusers_edit_runner", "start_index", "tiny_digits_edit_runner"]
