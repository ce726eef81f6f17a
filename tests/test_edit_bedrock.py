"""Bedrock edits through real boto3 against FakeBedrock: every Titan/Nova task type and SD3.5
image-to-image, masks converted to Bedrock's convention, and an edit through the Gateway on the
shipped cards (routing by edit capability, cost from the card, input ingredient in the output)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edit_support import half_mask, jpeg, png
from PIL import Image

from gateway import Gateway
from gateway.backends import BackendCall, create_backend
from gateway.backends.bedrock import BedrockBackend
from gateway.config import Settings
from gateway.errors import InvalidBackendRequest
from gateway.testing import FakeBedrock
from gateway.types import ImageRequest

pytest_plugins = ["gateway.testing.pytest_plugin"]

TITAN = ("amazon.titan-image-generator-v2:0", {"family": "titan-image", "region": "us-east-1"})
NOVA = ("amazon.nova-canvas-v1:0", {"family": "nova-canvas", "region": "us-east-1"})
SD35 = (
    "stability.sd3-5-large-v1:0",
    {"family": "stability-image", "region": "us-west-2", "fixed": {"mode": "text-to-image"}},
)
SIZE = (320, 320)


@pytest.fixture
def backend(fake_bedrock: FakeBedrock) -> Iterator[BedrockBackend]:
    b = create_backend("bedrock", {"max_workers": 2})
    assert isinstance(b, BedrockBackend)
    yield b
    b.close()


def edit(model: tuple[str, dict[str, Any]], **request: Any) -> BackendCall:
    fields = {"prompt": "a red sofa", "seed": 7, "images": (png(SIZE),), **request}
    return BackendCall(ImageRequest(**fields), model[0], model[1], timeout_s=10.0)


def sent(fake: FakeBedrock) -> Any:
    return fake.requests_of("invoke")[-1].json()


def grey(b64: str) -> Any:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L"))


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("model", [TITAN, NOVA], ids=["titan", "nova"])
def test_inpainting_sends_a_black_means_change_mask(backend: BedrockBackend, fake_bedrock: FakeBedrock,
                                                    model: Any) -> None:  # fmt: skip
    res = backend.generate(edit(model, mask=half_mask(SIZE), negative_prompt="blur", n=2, guidance_scale=6.5))
    body = sent(fake_bedrock)
    assert body["taskType"] == "INPAINTING"
    p = body["inPaintingParams"]
    assert p["text"] == "a red sofa" and p["negativeText"] == "blur" and "maskPrompt" not in p
    m = grey(p["maskImage"])
    assert m[:, 160:].max() == 0 and m[:, :160].min() == 255  # ours: white = repaint; Bedrock: black
    assert body["imageGenerationConfig"] == {"numberOfImages": 2, "quality": "standard", "seed": 7,
                                             "cfgScale": 6.5}  # fmt: skip
    assert [size_of(d) for d in res.images] == [SIZE, SIZE]


@pytest.mark.parametrize("model", [TITAN, NOVA], ids=["titan", "nova"])
def test_outpainting_keeps_black_and_extends_white(backend: BedrockBackend, fake_bedrock: FakeBedrock,
                                                   model: Any) -> None:  # fmt: skip
    res = backend.generate(edit(model, mask=half_mask(SIZE), mode="outpaint",
                                extras={"outpainting_mode": "precise"}))  # fmt: skip
    body = sent(fake_bedrock)
    assert body["taskType"] == "OUTPAINTING"
    p = body["outPaintingParams"]
    assert p["outPaintingMode"] == "PRECISE"
    m = grey(p["maskImage"])
    assert m[:, 160:].min() == 255 and m[:, :160].max() == 0  # repaint area stays white, kept area black
    assert size_of(res.images[0]) == SIZE


@pytest.mark.parametrize("model", [TITAN, NOVA], ids=["titan", "nova"])
def test_variation_takes_several_images_and_maps_strength(
    backend: BedrockBackend, fake_bedrock: FakeBedrock, model: Any
) -> None:
    res = backend.generate(edit(model, images=(png(SIZE), jpeg(SIZE)), mode="variation", strength=0.3,
                                width=512, height=512))  # fmt: skip
    body = sent(fake_bedrock)
    assert body["taskType"] == "IMAGE_VARIATION"
    p = body["imageVariationParams"]
    assert len(p["images"]) == 2 and p["similarityStrength"] == 0.7
    assert base64.b64decode(p["images"][1]).startswith(b"\xff\xd8\xff")  # sent as given, JPEG stays JPEG
    assert (body["imageGenerationConfig"]["width"], body["imageGenerationConfig"]["height"]) == (512, 512)
    assert size_of(res.images[0]) == (512, 512)
    backend.generate(edit(model, mode="variation", strength=1.0))
    assert sent(fake_bedrock)["imageVariationParams"]["similarityStrength"] == 0.2  # clamped to 0.2


def test_mask_prompt_and_background_removal(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    backend.generate(edit(NOVA, mode="inpaint", extras={"mask_prompt": "the sofa"}))
    assert sent(fake_bedrock)["inPaintingParams"]["maskPrompt"] == "the sofa"
    res = backend.generate(edit(NOVA, extras={"task": "background_removal"}))
    image = base64.b64encode(png(SIZE)).decode()
    assert sent(fake_bedrock) == {
        "taskType": "BACKGROUND_REMOVAL",
        "backgroundRemovalParams": {"image": image},
    }
    assert Image.open(io.BytesIO(res.images[0])).mode == "RGBA"


def test_stability_image_to_image(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    res = backend.generate(edit(SD35, strength=0.35, width=1024, height=1024))
    body = sent(fake_bedrock)
    assert body["mode"] == "image-to-image" and body["strength"] == 0.35  # card's text-to-image replaced
    assert "aspect_ratio" not in body and body["image"] == base64.b64encode(png(SIZE)).decode()
    assert size_of(res.images[0]) == SIZE


def test_unsupported_edits_are_refused_before_sending(
    backend: BedrockBackend, fake_bedrock: FakeBedrock
) -> None:
    assert backend.check(edit(TITAN)) is not None  # img2img is not an Amazon task
    assert "takes one input image" in str(backend.check(edit(TITAN, images=(png(SIZE), png(SIZE)),
                                                             mask=half_mask(SIZE))))  # fmt: skip
    assert backend.check(edit(SD35, mask=half_mask(SIZE))) is not None
    with pytest.raises(InvalidBackendRequest):
        backend.generate(edit(TITAN, mode="outpaint", mask=half_mask(SIZE), extras={"outpainting_mode": "x"}))
    assert fake_bedrock.requests_of("invoke") == []


def test_edit_through_the_gateway_on_the_shipped_cards(fake_bedrock: FakeBedrock, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("GATEWAY_TODAY", "2026-06-01")  # before Nova Canvas's end of life
    with Gateway(Settings(home=tmp_path / "h")) as gw:
        plan = gw.explain("a red sofa", images=(png(SIZE),), mask=half_mask(SIZE), provider="bedrock")
        reasons = {c.route.model: c.reason for c in plan.routes.candidates}
        assert reasons["stability.stable-image-ultra-v1:1"] == (
            "does not edit images (no capabilities.edit on its card)"
        )
        assert "edit mode 'inpaint' not supported" in str(reasons["stability.sd3-5-large-v1:0"])
        assert [c.route.model for c in plan.routes.ranked] == [
            "amazon.titan-image-generator-v2:0", "amazon.nova-canvas-v1:0"
        ]  # fmt: skip
        res = gw.edit(png(SIZE), "a red sofa", mask=half_mask(SIZE), provider="bedrock", seed=5)
        report = gw._core.provenance.verify(res.image.data)
    assert res.model == "amazon.titan-image-generator-v2:0" and res.cost_usd == Decimal("0.008")
    assert res.image.c2pa == "signed" and report.actions[:2] == ("c2pa.opened", "c2pa.edited")
    assert sent(fake_bedrock)["taskType"] == "INPAINTING"
