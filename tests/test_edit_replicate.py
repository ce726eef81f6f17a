"""Replicate edits through the real ``replicate`` client against FakeReplicate: image, mask and strength
inputs per model family, files as data: URIs (no upload, no token to a file host), and an edit through
the Gateway on the shipped cards."""

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
from gateway.backends.replicate import ReplicateBackend
from gateway.config import Settings
from gateway.errors import InvalidBackendRequest
from gateway.testing import FAKE_REPLICATE_TOKEN, FakeReplicate

pytest_plugins = ["gateway.testing.pytest_plugin"]

SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
SDXL = (f"stability-ai/sdxl:{SDXL_VERSION}", {"family": "sdxl", "hardware": "L40S"})
FILL = ("black-forest-labs/flux-fill-pro", {"family": "generic", "edit_family": "flux-fill",
        "inputs": {"negative_prompt": None, "count": None, "steps": "steps", "size": "none"}})  # fmt: skip
SIZE = (320, 256)


@pytest.fixture
def backend(fake_replicate: FakeReplicate) -> Iterator[ReplicateBackend]:
    b = create_backend("replicate", {})
    assert isinstance(b, ReplicateBackend)
    yield b
    b.close()


def edit(model: tuple[str, dict[str, Any]], **request: Any) -> BackendCall:
    from gateway.types import ImageRequest

    fields = {"prompt": "a red sofa", "seed": 7, "images": (png(SIZE),), **request}
    return BackendCall(ImageRequest(**fields), model[0], model[1], timeout_s=10.0)


def sent_input(fake: FakeReplicate) -> dict[str, Any]:
    return dict(fake.requests_of("create")[-1].json()["input"])


def decode_uri(uri: str) -> tuple[str, bytes]:
    head, _, data = uri.partition(",")
    return head, base64.b64decode(data)


def test_sdxl_img2img_and_inpaint(backend: ReplicateBackend, fake_replicate: FakeReplicate) -> None:
    res = backend.generate(edit(SDXL, strength=0.4, width=1024, height=1024))
    inp = sent_input(fake_replicate)
    head, data = decode_uri(inp["image"])
    assert head == "data:image/png;base64" and data == png(SIZE) and inp["prompt_strength"] == 0.4
    assert Image.open(io.BytesIO(res.images[0])).size == SIZE  # the fake answers at the input's size
    backend.generate(edit(SDXL, images=(jpeg(SIZE),), mask=half_mask(SIZE)))
    inp = sent_input(fake_replicate)
    assert inp["image"].startswith("data:image/jpeg;base64,")
    m = np.asarray(Image.open(io.BytesIO(decode_uri(inp["mask"])[1])).convert("L"))
    assert m[:, 160:].min() == 255 and m[:, :160].max() == 0  # sdxl: white = inpaint, as ours
    assert "prompt_strength" not in inp
    assert fake_replicate.file_auth_headers == []  # outputs fetched without the token


def test_flux_fill_takes_image_and_mask(backend: ReplicateBackend, fake_replicate: FakeReplicate) -> None:
    backend.generate(edit(FILL, mask=half_mask(SIZE, alpha=True)))
    inp = sent_input(fake_replicate)
    assert set(inp) >= {"prompt", "image", "mask", "seed"} and "num_outputs" not in inp
    m = np.asarray(Image.open(io.BytesIO(decode_uri(inp["mask"])[1])).convert("L"))
    assert m[:, 160:].min() == 255  # transparent in the user's mask = repaint = white for FLUX Fill
    req = fake_replicate.requests_of("create")[-1]
    assert req.path == "/v1/models/black-forest-labs/flux-fill-pro/predictions"


def test_refusals_before_sending(backend: ReplicateBackend, fake_replicate: FakeReplicate) -> None:
    assert "takes no strength" in str(backend.check(edit(FILL, mask=half_mask(SIZE), strength=0.5)))
    assert "needs a mask" in str(backend.check(edit(FILL, mode="inpaint", extras={"mask_prompt": "sofa"})))
    assert "one input image" in str(backend.check(edit(SDXL, images=(png(SIZE), png(SIZE)))))
    with pytest.raises(InvalidBackendRequest):
        backend.generate(edit(("x/y", {"family": "flux-schnell"})))
    assert fake_replicate.requests_of("create") == []


def test_fake_refuses_bad_file_inputs(fake_replicate: FakeReplicate) -> None:
    import httpx

    url = f"{fake_replicate.url}/v1/predictions"
    headers = {"Authorization": f"Bearer {FAKE_REPLICATE_TOKEN}"}
    for bad, why in (("data:text/plain;base64,aGk=", "unsupported file type"),
                     ("data:image/png;base64," + base64.b64encode(b"nope").decode(), "does not decode"),
                     ("https://example.com/x.png", "data: URIs only")):  # fmt: skip
        r = httpx.post(url, json={"version": "v", "input": {"prompt": "p", "image": bad}}, headers=headers)
        assert r.status_code == 422 and why in r.json()["detail"]


def test_edit_through_the_gateway_on_the_shipped_cards(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    with Gateway(Settings(home=tmp_path / "h")) as gw:
        plan = gw.explain("a red sofa", images=(png(SIZE),), mask=half_mask(SIZE), provider="replicate")
        ranked = [c.route.model for c in plan.routes.ranked]
        assert sorted(ranked) == ["black-forest-labs/flux-fill-pro", SDXL[0]]  # sdxl is cheaper by time
        reasons = {c.route.model: c.reason for c in plan.routes.candidates}
        assert "does not edit images" in str(reasons["black-forest-labs/flux-schnell"])
        res = gw.edit(png(SIZE), "a red sofa", mask=half_mask(SIZE), provider="replicate",
                      model="black-forest-labs/flux-fill-pro")  # fmt: skip
    assert res.cost_usd == Decimal("0.05") and res.image.c2pa == "signed"
    assert res.decision.inputs[0]["c2pa"] == "absent"
