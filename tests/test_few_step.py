"""Few-step models on the local backend: the shipped distilled student, and users' SD-family few-step
checkpoints / LCM-LoRA adapters (a tiny SD pipeline built from configs here: random weights, so these
tests check loading, scheduling and step accounting, not image quality)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_sd import build_tiny_sd

from gateway.backends.base import BackendCall
from gateway.backends.few_step import FEW_STEP_SCHEDULERS
from gateway.backends.local import LocalBackend, resolve_model_dir
from gateway.errors import InvalidBackendRequest, UsageError
from gateway.models.quality import class_consistency, frechet_distance
from gateway.types import ImageRequest


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    b = LocalBackend()
    yield b
    b.close()


def lcm_call(prompt: str = "a handwritten 7", **kw: Any) -> BackendCall:
    opts: dict[str, Any] = {"width": 64, "height": 64, "seed": 0, "steps": 2, **kw}
    return BackendCall(ImageRequest(prompt=prompt, **opts), "tiny-digits-lcm")


def unet_calls() -> Any:
    """Count UNet forward calls (any diffusers UNet) through torch's global forward hook."""
    import torch

    counter = {"n": 0}

    def hook(module: Any, args: Any, out: Any) -> None:
        if type(module).__name__ in ("UNet2DModel", "UNet2DConditionModel"):
            counter["n"] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    return counter, handle


# ---------------------------------------------------------------------------- tiny-digits-lcm


def test_student_is_shipped_in_diffusers_format() -> None:
    path = resolve_model_dir("tiny-digits-lcm")
    index = json.loads((path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "LCMScheduler"]
    assert json.loads((path / "few_step.json").read_text()) == {"scheduler": "lcm", "steps": [1, 2, 4, 8]}
    sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["prediction_type"], sched["original_inference_steps"]) == ("sample", 50)
    assert (path / "README.md").is_file()
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size < 4_000_000


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_student_runs_one_unet_call_per_step(steps: int, backend: LocalBackend) -> None:
    backend.generate(lcm_call(n=1))  # loaded outside the count
    counter, handle = unet_calls()
    try:
        res = backend.generate(lcm_call(n=3, steps=steps))
    finally:
        handle.remove()
    assert counter["n"] == steps  # guidance is baked in: no second (unconditional) call
    assert len(res.images) == 3
    assert res.metadata["unet_calls"] == steps and res.metadata["steps"] == steps
    assert res.metadata["scheduler"] == "lcm" and res.metadata["digit"] == 7


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 3}, "made for 1, 2, 4, 8 step"),
        ({"steps": 50}, "50 asked"),
        ({"scheduler": "dpm++"}, "'lcm' scheduler"),
    ],
)
def test_student_refuses_what_it_is_not_made_for(
    kw: dict[str, Any], match: str, backend: LocalBackend
) -> None:
    call = lcm_call(**kw)
    reason = backend.check(call)
    assert reason is not None and match.split("'")[0] in reason
    with pytest.raises(InvalidBackendRequest, match=match):
        backend.generate(call)


def test_student_same_seed_same_bytes(backend: LocalBackend) -> None:
    a = backend.generate(lcm_call("four", n=2, seed=42))
    b = backend.generate(lcm_call("four", n=2, seed=42))
    c = backend.generate(lcm_call("four", n=2, seed=43))
    assert a.images == b.images != c.images


def test_student_quality_bar(backend: LocalBackend) -> None:
    """The distilled model reads as the digit asked for at 1 and 2 steps (the judge: real digits only)."""
    for steps, bar in ((2, 0.9), (1, 0.85)):
        images: list[bytes] = []
        targets: list[int] = []
        for d in range(10):
            res = backend.generate(lcm_call(f"digit {d}", n=10, seed=1000 + d, steps=steps))
            images += res.images
            targets += [d] * 10
        assert class_consistency(images, targets) >= bar, steps
        assert frechet_distance(images) < 400


def test_frechet_distance_is_small_for_real_digits_and_large_for_noise() -> None:
    import io

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    def png(a: Any) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    real = [png(img / 16 * 255) for img in load_digits().images[:300]]
    noise = [png(np.random.default_rng(i).integers(0, 256, (8, 8))) for i in range(300)]
    assert frechet_distance(real) < 0.2 * frechet_distance(noise)


# ---------------------------------------------------------------------------- users' SD checkpoints


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny StableDiffusionPipeline saved from configs (random weights), and an LCM-style LoRA for it."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("sd")
    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    sd = build_tiny_sd(root, vae_blocks=4, scheduler=sched, name="sd15-tiny")  # 8x8 latents, 64 px
    unet = UNet2DConditionModel.from_pretrained(sd / "unet", low_cpu_mem_usage=False)
    torch.manual_seed(1)
    unet.add_adapter(
        LoraConfig(
            r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
        )
    )
    StableDiffusionPipeline.save_lora_weights(
        root / "lcm-lora", unet_lora_layers=get_peft_model_state_dict(unet)
    )
    return sd, root / "lcm-lora"


def sd_call(path: Path, few_step: dict[str, Any] | None, **kw: Any) -> BackendCall:
    opts: dict[str, Any] = {"width": 64, "height": 64, "seed": 0, "guidance_scale": 1.0, **kw}
    options: dict[str, Any] = {"path": str(path)}
    if few_step is not None:
        options["few_step"] = few_step
    return BackendCall(ImageRequest(prompt="a cat", **opts), "sd15-tiny", options)


def _to_q(backend: LocalBackend, path: Path) -> Any:
    runner = backend._loaded[path].runner
    pipe = next(c.cell_contents for c in runner.__closure__ or () if hasattr(c.cell_contents, "unet"))
    return pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight.detach().clone()


def test_lcm_lora_is_fused_with_the_lcm_scheduler_and_steps_are_counted(tiny_sd: tuple[Path, Path]) -> None:
    import torch

    sd, lora = tiny_sd
    b = LocalBackend()
    try:
        plain = b.generate(sd_call(sd, None, steps=2))
        base_w = _to_q(b, sd)
        spec = {"scheduler": "lcm", "steps": [2, 4], "lora": str(lora)}
        counter, handle = unet_calls()
        try:
            res = b.generate(sd_call(sd, spec, steps=2))
        finally:
            handle.remove()
        assert counter["n"] == 2  # guidance 1.0: one UNet call per step
        assert res.metadata["few_step"] == {
            "scheduler": "lcm",
            "scheduler_class": "LCMScheduler",
            "steps": 2,
            "timesteps": [999, 499],
            "lora": True,
        }
        assert not torch.equal(_to_q(b, sd), base_w)  # the adapter is fused into the UNet
        assert res.images != plain.images
        # The same folder without the adapter: unfused again, not silently still LoRA'd.
        again = b.generate(sd_call(sd, None, steps=2))
        assert torch.allclose(_to_q(b, sd), base_w, atol=1e-6)
        assert "few_step" not in again.metadata
        with pytest.raises(InvalidBackendRequest, match=r"made for 2, 4 step\(s\) with 'lcm'; 3 asked"):
            b.generate(sd_call(sd, spec, steps=3))
        assert b.check(sd_call(sd, spec, steps=8)) == "sd15-tiny is made for 2, 4 step(s) with 'lcm'; 8 asked"
        assert b.check(sd_call(sd, spec, steps=4)) is None
    finally:
        b.close()


@pytest.mark.parametrize(
    ("name", "cls", "first"),
    [
        ("tcd", "TCDScheduler", 999),
        ("euler-trailing", "EulerDiscreteScheduler", 999),
        ("ddim-trailing", "DDIMScheduler", 999),
    ],
)
def test_few_step_schedulers_use_trailing_timesteps(
    name: str, cls: str, first: int, tiny_sd: tuple[Path, Path]
) -> None:
    sd, _ = tiny_sd
    b = LocalBackend()
    try:
        counter, handle = unet_calls()
        try:
            res = b.generate(sd_call(sd, {"scheduler": name, "steps": [1, 4]}, steps=4, guidance_scale=0.0))
        finally:
            handle.remove()
        meta = res.metadata["few_step"]
        assert (meta["scheduler_class"], meta["timesteps"][0], len(meta["timesteps"])) == (cls, first, 4)
        assert counter["n"] == 4
    finally:
        b.close()


def test_bad_few_step_settings_are_usage_errors(tiny_sd: tuple[Path, Path]) -> None:
    sd, lora = tiny_sd
    b = LocalBackend()
    try:
        assert "not one of" in (b.check(sd_call(sd, {"scheduler": "dpm++", "steps": [4]}, steps=4)) or "")
        assert "bad few_step" in (b.check(sd_call(sd, {"scheduler": "lcm"}, steps=4)) or "")
        with pytest.raises(UsageError, match="does not exist"):
            b.generate(sd_call(sd, {"scheduler": "lcm", "steps": [4], "lora": str(lora / "nope")}, steps=4))
    finally:
        b.close()
    assert set(FEW_STEP_SCHEDULERS) == {"lcm", "tcd", "ddim-trailing", "euler-trailing"}
