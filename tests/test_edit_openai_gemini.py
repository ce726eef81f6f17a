"""OpenAI / Azure OpenAI ``/images/edits`` and Gemini / Vertex image parts, through the official clients
against the loopback fakes: every declared mode per backend (sync and async), the mask converted to
OpenAI's convention (checked on the bytes the fake received), refusals before any call, and edits
through the Gateway on the shipped cards (routing by edit capability, token cost with input images,
provenance, audit, a denied input costing nothing)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edit_support import half_mask, jpeg, ledger_rows, png
from image_provider_support import FACTORIES, MODELS
from PIL import Image

from gateway import AsyncGateway, Gateway
from gateway.backends import Backend, BackendCall, BackendResult
from gateway.config import Settings
from gateway.errors import (
    ContentFiltered,
    InvalidBackendRequest,
    InvalidRequestError,
    PolicyDenied,
    RateLimited,
)
from gateway.policy import PolicySet
from gateway.testing import FAKE_OPENAI_KEY, FakeGemini, FakeOpenAI
from gateway.testing._http import FormPart
from gateway.types import ImageRequest

pytest_plugins = ["gateway.testing.pytest_plugin"]

SIZE = (512, 512)
OPENAI_NAMES = ("openai", "azure-openai")
GEMINI_NAMES = ("google-gemini", "google-vertex")
REQUIRE_C2PA = "version: 1\nrules:\n  - id: inputs.signed\n    kind: input_image\n    require: c2pa\n"


def webp(size: tuple[int, int] = SIZE) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="WEBP")
    return buf.getvalue()


def edit_call(name: str, **request: Any) -> BackendCall:
    fields: dict[str, Any] = {"prompt": "a red sofa", "width": 1024, "height": 1024, "images": (png(SIZE),),
                              **request}  # fmt: skip
    opts = {"family": "gpt-image"} if "openai" in name else {"image_sizes": ["1K"]}
    return BackendCall(ImageRequest(**fields), MODELS[name], opts, timeout_s=10.0)


def run(backend: Backend, call: BackendCall, is_async: bool) -> BackendResult:
    if not is_async:
        return backend.generate(call)

    async def go() -> BackendResult:
        try:
            return await backend.agenerate(call)
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.fixture
def openai_backend(request: pytest.FixtureRequest, fake_openai: FakeOpenAI) -> Iterator[Backend]:
    fake_openai.deployments["img-prod"] = "gpt-image-2"
    b = FACTORIES[request.param]()
    yield b
    b.close()


@pytest.fixture
def gemini_backend(request: pytest.FixtureRequest, fake_gemini: FakeGemini) -> Iterator[Backend]:
    b = FACTORIES[request.param]()
    yield b
    b.close()


def files(fake: FakeOpenAI) -> list[FormPart]:
    return [p for p in fake.requests_of("edit")[-1].form() if p.filename is not None]


def fields(fake: FakeOpenAI) -> dict[str, str]:
    return {p.name: p.text for p in fake.requests_of("edit")[-1].form() if p.filename is None}


def alpha(data: bytes) -> Any:
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGBA"
    return np.asarray(img)[..., 3]


# --------------------------------------------------------------------------- OpenAI / Azure


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("openai_backend", OPENAI_NAMES, indirect=True)
@pytest.mark.parametrize("alpha_mask", [False, True], ids=["white-mask", "alpha-mask"])
def test_openai_inpaint_sends_an_rgba_mask_transparent_where_to_repaint(
    openai_backend: Backend, fake_openai: FakeOpenAI, is_async: bool, alpha_mask: bool
) -> None:
    res = run(openai_backend, edit_call(openai_backend.name, mask=half_mask(SIZE, alpha=alpha_mask), n=2,
                                        quality="low"), is_async)  # fmt: skip
    image, mask = files(fake_openai)
    assert (image.name, image.filename, image.content_type) == ("image", "image-0.png", "image/png")
    assert image.data == png(SIZE)  # the input as given: not re-encoded
    assert (mask.name, mask.content_type) == ("mask", "image/png")
    a = alpha(mask.data)
    assert a.shape == (512, 512)
    assert a[:, 256:].max() == 0 and a[:, :256].min() == 255  # ours: white/alpha 0 = repaint -> alpha 0
    sent = fields(fake_openai)
    assert sent["prompt"] == "a red sofa" and sent["n"] == "2" and sent["size"] == "1024x1024"
    assert "response_format" not in sent and "moderation" not in sent
    assert len(res.images) == 2 and Image.open(io.BytesIO(res.images[0])).size == (1024, 1024)
    assert res.usage.input_image_tokens == round(3050 / 4)  # one 512x512 input at the fake's rate
    assert res.metadata["endpoint"] == "images/edits"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("openai_backend", OPENAI_NAMES, indirect=True)
def test_openai_img2img_and_variation(
    openai_backend: Backend, fake_openai: FakeOpenAI, is_async: bool
) -> None:
    run(openai_backend, edit_call(openai_backend.name, extras={"input_fidelity": "high"}), is_async)
    assert [p.name for p in files(fake_openai)] == ["image"]  # one input: the `image` part, no mask
    assert fields(fake_openai)["input_fidelity"] == "high"
    res = run(openai_backend, edit_call(openai_backend.name, images=(png(SIZE), jpeg(SIZE), webp()),
                                        mode="variation"), is_async)  # fmt: skip
    got = files(fake_openai)
    assert [(p.name, p.content_type) for p in got] == [
        ("image[]", "image/png"), ("image[]", "image/jpeg"), ("image[]", "image/webp")
    ]  # fmt: skip
    assert [p.filename for p in got] == ["image-0.png", "image-1.jpg", "image-2.webp"]
    assert res.usage.input_image_tokens == 3 * round(3050 / 4)


def test_azure_edit_goes_to_the_deployment_path(fake_openai: FakeOpenAI) -> None:
    fake_openai.deployments["img-prod"] = "gpt-image-2"
    b = FACTORIES["azure-openai"]()
    b.generate(edit_call("azure-openai", mask=half_mask(SIZE)))
    req = fake_openai.requests_of("edit")[-1]
    assert req.path.startswith("/openai/deployments/img-prod/images/edits?api-version=")
    assert req.headers["api-key"] and "authorization" not in req.headers
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert fields(fake_openai)["model"] == "img-prod"
    b.close()


@pytest.mark.parametrize(
    ("request_fields", "why"),
    [
        ({"mask": half_mask((256, 256))}, "the mask must have input image 0's size"),
        ({"strength": 0.5}, "edits take no strength"),
        ({"negative_prompt": "blur"}, "edits take no negative prompt"),
        ({"mode": "outpaint", "mask": half_mask(SIZE)}, "not 'outpaint'"),
        ({"mode": "inpaint", "extras": {"mask_prompt": "the sofa"}}, "inpaint needs one"),
        ({"extras": {"moderation": "low"}}, "does not take moderation"),
    ],
)
def test_openai_refuses_before_sending(
    fake_openai: FakeOpenAI, request_fields: dict[str, Any], why: str
) -> None:
    b = FACTORIES["openai"]()
    call = edit_call("openai", **request_fields)
    assert why in str(b.check(call))
    with pytest.raises(InvalidBackendRequest, match=why.replace("(", r"\(")):
        b.generate(call)
    dalle = BackendCall(edit_call("openai").request, "dall-e-3", {"family": "dall-e"}, timeout_s=10)
    assert "does not edit" in str(b.check(dalle))
    assert fake_openai.requests == []
    b.close()


def test_fake_refuses_what_the_api_refuses(fake_openai: FakeOpenAI) -> None:
    """Straight through the client: bare bytes go as application/octet-stream, a mask of another size."""
    import openai

    client = openai.OpenAI(api_key=FAKE_OPENAI_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="unsupported mimetype"):
        client.images.edit(model="gpt-image-2", prompt="p", image=png(SIZE))
    with pytest.raises(openai.BadRequestError, match="mask size does not match"):
        client.images.edit(model="gpt-image-2", prompt="p", image=("a.png", png(SIZE), "image/png"),
                           mask=("m.png", png((64, 64), mode="RGBA"), "image/png"))  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="alpha channel"):
        client.images.edit(model="gpt-image-2", prompt="p", image=("a.png", png(SIZE), "image/png"),
                           mask=("m.png", half_mask(SIZE), "image/png"))  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="GPT image models only"):
        client.images.edit(model="dall-e-3", prompt="p", image=("a.png", png(SIZE), "image/png"))
    client.close()


# --------------------------------------------------------------------------- Gemini / Vertex


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("gemini_backend", GEMINI_NAMES, indirect=True)
def test_gemini_edits_send_inline_image_parts(
    gemini_backend: Backend, fake_gemini: FakeGemini, is_async: bool
) -> None:
    res = run(gemini_backend, edit_call(gemini_backend.name), is_async)
    parts = fake_gemini.requests_of("generate")[-1].json()["contents"][0]["parts"]
    assert parts[0] == {"text": "a red sofa"} and len(parts) == 2
    assert parts[1]["inlineData"]["mime_type"] == "image/png"
    assert res.usage.input_image_tokens == 258  # one 512x512 input: one 768 tile
    assert Image.open(io.BytesIO(res.images[0])).size == (1024, 1024)
    res = run(gemini_backend, edit_call(gemini_backend.name, images=(png((1024, 1024)), jpeg(SIZE), webp()),
                                        mode="variation", n=2), is_async)  # fmt: skip
    for req in fake_gemini.requests_of("generate")[-2:]:  # n images are n calls, each with every input
        parts = req.json()["contents"][0]["parts"]
        assert [p["inlineData"]["mime_type"] for p in parts[1:]] == ["image/png", "image/jpeg", "image/webp"]
    assert res.usage.input_image_tokens == 2 * (4 * 258 + 258 + 258)


@pytest.mark.parametrize("gemini_backend", GEMINI_NAMES, indirect=True)
def test_gemini_refuses_masks_and_strength(gemini_backend: Backend, fake_gemini: FakeGemini) -> None:
    for request in (
        {"mask": half_mask(SIZE)},
        {"mode": "outpaint", "mask": half_mask(SIZE)},
        {"strength": 0.4},
    ):
        call = edit_call(gemini_backend.name, **request)
        assert "take" in str(gemini_backend.check(call))
        with pytest.raises(InvalidBackendRequest):
            gemini_backend.generate(call)
    assert fake_gemini.requests == []


# --------------------------------------------------------------------------- through the Gateway


def _estimated(home: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(home / "ledger.db") as db:
        return [(int(a), int(b)) for a, b in db.execute(
            "SELECT estimated_micros, actual_micros FROM ledger_requests ORDER BY ts_us")]  # fmt: skip


def test_openai_edit_through_the_gateway(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    home = tmp_path / "h"
    with Gateway(Settings(home=home)) as gw:
        plan = gw.explain("a red sofa", images=(png(SIZE),), mask=half_mask(SIZE), provider="google-gemini")
        assert {c.reason for c in plan.routes.candidates} >= {
            "edit mode 'inpaint' not supported (has ['img2img', 'variation'])"
        }  # fmt: skip
        res = gw.edit(png(SIZE), "a red sofa", mask=half_mask(SIZE), provider="openai", model="gpt-image-2",
                      quality="low")  # fmt: skip
        rec = gw._core.audit.get(res.audit_seq or 0)
        report = gw._core.provenance.verify(res.image.data)
    # 2 text tokens, 762 input image tokens, 272 output tokens at $5 / $8 / $30 per 1M
    assert res.cost_usd == (Decimal(2 * 5 + 762 * 8 + 272 * 30) / Decimal(1_000_000)).quantize(
        Decimal("1e-6")
    )
    ((estimated, actual),) = _estimated(home)
    assert estimated >= actual  # the estimate reserved the input image tokens too
    assert res.image.c2pa == "signed" and report.actions[:2] == ("c2pa.opened", "c2pa.edited")
    assert rec is not None and rec["edit_mode"] == "inpaint"
    assert rec["inputs"][0]["sha256"] == hashlib.sha256(png(SIZE)).hexdigest()
    assert rec["mask_sha256"] == hashlib.sha256(half_mask(SIZE)).hexdigest()


def test_gemini_edit_through_the_async_gateway(fake_gemini: FakeGemini, tmp_path: Path) -> None:
    home = tmp_path / "h"

    async def go() -> Any:
        async with AsyncGateway(Settings(home=home)) as gw:
            return await gw.edit([png(SIZE), jpeg(SIZE)], "a poster", mode="variation",
                                 provider="google-gemini", model="gemini-2.5-flash-image")  # fmt: skip

    res = asyncio.run(go())
    assert res.model == "gemini-2.5-flash-image" and res.image.c2pa == "signed"
    parts = fake_gemini.requests_of("generate")[-1].json()["contents"][0]["parts"]
    assert len(parts) == 3
    # 1290 output tokens at $30/1M, 2 x 258 input image tokens and 2 text tokens at $0.30/1M
    usd = (Decimal(1290 * 30) + Decimal("0.3") * (2 * 258 + 2)) / Decimal(1_000_000)
    assert res.cost_usd == usd.quantize(Decimal("1e-6"))
    ((estimated, actual),) = _estimated(home)
    assert estimated >= actual


@pytest.mark.parametrize("provider", ["openai", "google-gemini"])
def test_unsigned_input_under_require_c2pa_costs_nothing(
    fake_openai: FakeOpenAI, fake_gemini: FakeGemini, tmp_path: Path, provider: str
) -> None:
    home = tmp_path / "h"
    with Gateway(Settings(home=home), policy=PolicySet.from_text(REQUIRE_C2PA)) as gw:
        with pytest.raises(PolicyDenied) as err:
            gw.edit(png(SIZE), "a red sofa", provider=provider)
        records = list(gw._core.audit.iter_records())
    assert err.value.rule_ids == ("inputs.signed",) and err.value.exit_code == 3
    assert fake_openai.requests == [] and fake_gemini.requests == []  # nothing reached a provider
    assert ledger_rows(home) == 0  # nothing reserved
    assert records[-1]["event"] == "denied" and records[-1]["edit_mode"] == "img2img"


def test_mask_of_another_size_is_a_typed_error_before_any_call(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    with Gateway(Settings(home=home)) as gw, pytest.raises(InvalidRequestError, match="must match") as err:
        gw.edit(png(SIZE), "a red sofa", mask=half_mask((256, 256)), provider="openai")
    assert err.value.exit_code == 2
    assert fake_openai.requests == [] and ledger_rows(home) == 0


@pytest.mark.parametrize(("provider", "extra"), [("openai", ["--mask"]), ("google-gemini", [])])
def test_cli_edit_on_openai_and_gemini(
    fake_openai: FakeOpenAI, fake_gemini: FakeGemini, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    provider: str, extra: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from gateway.cli import main

    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path / "h"))
    src, mask = tmp_path / "in.png", tmp_path / "mask.png"
    src.write_bytes(png(SIZE))
    mask.write_bytes(half_mask(SIZE))
    args = ["edit", str(src), "a red sofa", *(extra and [extra[0], str(mask)]), "--provider", provider,
            "--out", str(tmp_path / "out"), "--json"]  # fmt: skip
    try:
        code = int(main(args) or 0)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out)
    assert obj["provider"] == provider and obj["edit_mode"] == ("inpaint" if extra else "img2img")
    assert obj["inputs"][0]["sha256"] == hashlib.sha256(png(SIZE)).hexdigest()
    assert obj["c2pa"] == "signed" and Decimal(obj["cost_usd"]) > 0


@pytest.mark.parametrize("name", [*OPENAI_NAMES, *GEMINI_NAMES])
def test_faults_hit_edits_too(fake_openai: FakeOpenAI, fake_gemini: FakeGemini, name: str) -> None:
    fake_openai.deployments["img-prod"] = "gpt-image-2"
    fake = fake_openai if "openai" in name else fake_gemini
    b = FACTORIES[name]()
    fake.inject("moderation")
    with pytest.raises(ContentFiltered):
        b.generate(edit_call(name))
    fake.inject("rate_limit", retry_after=2)
    with pytest.raises(RateLimited) as err:
        b.generate(edit_call(name))
    assert err.value.retry_after == 2.0
    b.close()
