"""The local backend on the shipped tiny-digits model (real weights, no stubs)."""

from __future__ import annotations

import pytest

from gateway.backends.base import BackendCall
from gateway.backends.local import LocalBackend, digit_from_prompt
from gateway.errors import InvalidBackendRequest
from gateway.models.quality import class_consistency
from gateway.types import ImageRequest


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    b = LocalBackend()
    yield b  # type: ignore[misc]
    b.close()


def call(prompt: str, **kw: object) -> BackendCall:
    opts: dict[str, object] = {"width": 256, "height": 256, "seed": 0, **kw}
    return BackendCall(ImageRequest(prompt=prompt, **opts), "tiny-digits")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prompt", "digit"),
    [("a handwritten 7", 7), ("seven", 7), ("digit 0", 0), ("The number NINE, please", 9), ("7 seven 7", 7)],
)
def test_prompt_names_one_digit(prompt: str, digit: int) -> None:
    assert digit_from_prompt(prompt) == digit


@pytest.mark.parametrize("prompt", ["a cat", "3 and 4", "one or two", "the number 42"])
def test_prompt_naming_none_or_several_is_refused(prompt: str, backend: LocalBackend) -> None:
    with pytest.raises(InvalidBackendRequest, match="digit"):
        digit_from_prompt(prompt)
    assert backend.check(call(prompt)) is not None


def test_quality_bar_class_consistency(backend: LocalBackend) -> None:
    """>= 90% of 100 images (10 per digit, default scheduler and steps) read as the digit asked for."""
    images: list[bytes] = []
    targets: list[int] = []
    for d in range(10):
        res = backend.generate(call(f"a handwritten {d}", n=10, seed=1000 + d))  # the defaults
        images += res.images
        targets += [d] * 10
    score = class_consistency(images, targets)
    assert score >= 0.90, score


def test_guidance_really_steers(backend: LocalBackend) -> None:
    """guidance 0 is the unconditional model (the learned null class): it must not follow the prompt."""
    uncond: list[bytes] = []
    for d in range(10):
        uncond += backend.generate(call(f"digit {d}", n=5, seed=d, guidance_scale=0.0)).images
    assert class_consistency(uncond, [d for d in range(10) for _ in range(5)]) < 0.4


def test_same_seed_same_bytes_and_different_seed_differs(backend: LocalBackend) -> None:
    a = backend.generate(call("a handwritten 4", n=2, seed=42))
    b = backend.generate(call("a handwritten 4", n=2, seed=42))
    c = backend.generate(call("a handwritten 4", n=2, seed=43))
    assert a.images == b.images
    assert a.images != c.images


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm++", "euler", "euler-ancestral", "lcm"])
def test_every_scheduler_draws(scheduler: str, backend: LocalBackend) -> None:
    res = backend.generate(call("three", n=2, scheduler=scheduler, steps=8, width=64, height=96))
    assert len(res.images) == 2
    assert res.metadata["scheduler"] == scheduler
    assert res.metadata["native_size"] == [16, 16] and res.metadata["upscaled"] is True
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(res.images[0])).size == (64, 96)


def test_usage_is_measured(backend: LocalBackend) -> None:
    res = backend.generate(call("one", n=3, steps=5))
    assert res.usage.images == 3
    # Billed time starts once the model is loaded (the local backend's contract): never above the wall.
    assert res.usage.predict_time_s is not None and 0 < res.usage.predict_time_s <= res.usage.elapsed_s
    assert res.usage.hardware == "cpu"


def test_any_diffusers_pipeline_directory_loads_offline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A pipeline saved with save_pretrained loads from disk (local_files_only) and honours n and seed."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(tmp_path / "p")
    b = LocalBackend()
    req = ImageRequest(prompt="anything", n=2, seed=3, steps=3)
    with pytest.raises(InvalidBackendRequest, match="unconditional"):
        b.generate(BackendCall(req, str(tmp_path / "p")))
    res = b.generate(BackendCall(req, str(tmp_path / "p"), {"unconditional": True}))
    again = b.generate(BackendCall(req, str(tmp_path / "p"), {"unconditional": True}))
    assert len(res.images) == 2 and res.images == again.images
    assert res.metadata["pipeline"] == "DDPMPipeline"
    b.close()
