"""Replicate backend: the real ``replicate`` client against FakeReplicate, and respx for HTTP edge cases."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
from PIL import Image

from gateway.backends import BackendCall, create_backend
from gateway.backends._download import DownloadPolicy, UnsafeOutput
from gateway.backends.replicate import PredictionFailed, ReplicateBackend
from gateway.catalog import Catalog
from gateway.errors import (
    AuthenticationError,
    BackendError,
    BackendTimeout,
    BadResponse,
    ContentFiltered,
    InvalidBackendRequest,
    RateLimited,
)
from gateway.retry import RetryPolicy
from gateway.testing import FAKE_REPLICATE_TOKEN, FakeReplicate, png_bytes
from gateway.types import ImageRequest

pytest_plugins = ["gateway.testing.pytest_plugin"]

ROOT = Path(__file__).resolve().parent.parent
FLUX = ("black-forest-labs/flux-schnell", {"family": "flux-schnell"})
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
SDXL = (f"stability-ai/sdxl:{SDXL_VERSION}", {"family": "sdxl", "hardware": "L40S"})


class Sleeps:
    """Injected sleep for both paths: records the requested pauses, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def backend(fake_replicate: FakeReplicate, sleeps: Sleeps) -> Iterator[ReplicateBackend]:
    # Token and base URL come from REPLICATE_API_TOKEN / REPLICATE_BASE_URL (set by the fixture).
    b = create_backend("replicate", {"sleep": sleeps, "async_sleep": sleeps.asleep})
    assert isinstance(b, ReplicateBackend)
    yield b
    b.close()


def call_for(model: tuple[str, dict[str, Any]], timeout_s: float = 10.0, **request: Any) -> BackendCall:
    fields = {"prompt": "a lighthouse at dusk", "width": 1024, "height": 1024, "seed": 42, **request}
    return BackendCall(ImageRequest(**fields), model[0], model[1], timeout_s=timeout_s, request_id="req-1")


def run_async(backend: ReplicateBackend, call: BackendCall) -> Any:
    async def go() -> Any:
        try:
            return await backend.agenerate(call)
        finally:
            await backend.aclose()

    return asyncio.run(go())


# --------------------------------------------------------------------------- end to end


def test_official_model_per_image(backend: ReplicateBackend, fake_replicate: FakeReplicate) -> None:
    result = backend.generate(call_for(FLUX, n=2, steps=4))
    assert len(result.images) == 2
    for data in result.images:
        assert Image.open(io.BytesIO(data)).size == (1024, 1024)
    create = fake_replicate.requests_of("create")[0]
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {FAKE_REPLICATE_TOKEN}"
    assert create.headers["prefer"].startswith("wait=")
    assert create.json() == {
        "input": {
            "prompt": "a lighthouse at dusk",
            "aspect_ratio": "1:1",
            "num_outputs": 2,
            "seed": 42,
            "num_inference_steps": 4,
            "output_format": "png",
        }
    }
    pid = create_id(fake_replicate)
    assert result.usage.provider_request_id == pid
    assert result.usage.images == 2
    assert result.usage.predict_time_s == fake_replicate.predict_time
    assert result.seed == 42
    assert result.metadata["billing"] == "image"
    assert result.metadata["prediction_id"] == pid
    assert "prompt" not in result.metadata["input"]
    assert [r.kind for r in fake_replicate.requests] == ["create", "file", "file"]
    assert fake_replicate.file_auth_headers == []
    assert all("authorization" not in r.headers for r in fake_replicate.requests_of("file"))


def create_id(fake: FakeReplicate) -> str:
    return next(iter(fake.predictions))


def test_versioned_model_time_billed_keeps_predict_time(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    fake_replicate.predict_time = 7.25
    call = call_for(
        SDXL, width=768, height=512, steps=30, guidance_scale=7.5, scheduler="euler", negative_prompt="fog"
    )
    result = backend.generate(call)
    create = fake_replicate.requests_of("create")[0]
    assert create.path == "/v1/predictions"
    body = create.json()
    assert body["version"] == SDXL_VERSION
    assert body["input"] == {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "fog",
        "width": 768,
        "height": 512,
        "num_outputs": 1,
        "seed": 42,
        "num_inference_steps": 30,
        "guidance_scale": 7.5,
        "scheduler": "K_EULER",
    }
    assert Image.open(io.BytesIO(result.images[0])).size == (768, 512)
    assert result.usage.predict_time_s == 7.25
    assert result.usage.hardware == "L40S"
    assert result.metadata["billing"] == "time"
    assert result.metadata["version"] == SDXL_VERSION


def test_polls_until_final_with_injected_sleep(
    backend: ReplicateBackend, fake_replicate: FakeReplicate, sleeps: Sleeps
) -> None:
    fake_replicate.pending_polls = 3
    backend.poll_interval_s = 0.25
    result = backend.generate(call_for(FLUX))
    assert len(fake_replicate.requests_of("poll")) == 4
    assert sleeps.calls == [0.25, 0.25, 0.25, 0.25]
    assert result.usage.images == 1


def test_async_path_is_the_same_protocol(backend: ReplicateBackend, fake_replicate: FakeReplicate) -> None:
    fake_replicate.pending_polls = 2
    result = run_async(backend, call_for(SDXL, width=512, height=512))
    assert result.usage.provider_request_id == create_id(fake_replicate)
    assert [r.kind for r in fake_replicate.requests] == ["create", "poll", "poll", "poll", "file"]


def test_seed_comes_from_logs_when_not_sent(backend: ReplicateBackend) -> None:
    result = backend.generate(call_for(FLUX, seed=None))
    assert isinstance(result.seed, int)


def test_short_deadline_sends_no_prefer_wait(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    backend.generate(call_for(FLUX, timeout_s=2.5))
    assert "prefer" not in fake_replicate.requests_of("create")[0].headers
    backend.generate(call_for(FLUX, timeout_s=30))
    assert fake_replicate.requests_of("create")[1].headers["prefer"] == "wait=27"


def test_registry_reads_standard_environment(fake_replicate: FakeReplicate) -> None:
    b = create_backend("replicate")
    assert isinstance(b, ReplicateBackend)
    assert b.base_url == fake_replicate.url
    assert b.check(call_for(FLUX)) is None


# --------------------------------------------------------------------------- retries, timeouts, cancellation


def test_throttled_create_is_retried_by_the_policy(
    backend: ReplicateBackend, fake_replicate: FakeReplicate, sleeps: Sleeps
) -> None:
    fake_replicate.inject("rate_limit", times=2, retry_after=4)
    seen: list[tuple[str, int]] = []
    result = RetryPolicy(max_attempts=3).run(
        lambda: backend.generate(call_for(FLUX)),
        sleep=sleeps,
        on_retry=lambda e, n: seen.append((type(e).__name__, n)),
    )
    assert result.images
    assert sleeps.calls == [4.0, 4.0]
    assert seen == [("RateLimited", 1), ("RateLimited", 2)]
    assert len(fake_replicate.requests_of("create")) == 3


def test_create_with_unknown_outcome_is_never_resent(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    fake_replicate.inject("reset")
    with pytest.raises(BackendTimeout, match="may have started") as info:
        RetryPolicy(max_attempts=5).run(lambda: backend.generate(call_for(FLUX)), sleep=lambda _s: None)
    assert not info.value.retryable
    assert len(fake_replicate.requests_of("create")) == 1


def test_timeout_while_polling_cancels_the_prediction(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    fake_replicate.pending_polls = 1_000
    with pytest.raises(BackendTimeout, match="cancelled"):
        backend.generate(call_for(FLUX, timeout_s=0.3))
    assert fake_replicate.cancelled == [create_id(fake_replicate)]
    assert fake_replicate.predictions[create_id(fake_replicate)]["status"] == "canceled"


def test_async_deadline_cancels_the_prediction(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    fake_replicate.pending_polls = 1_000
    fake_replicate.inject("slow", on="poll", delay=60)
    with pytest.raises(BackendTimeout):
        run_async(backend, call_for(FLUX, timeout_s=0.3))
    assert fake_replicate.cancelled == [create_id(fake_replicate)]


def test_asyncio_cancellation_cancels_the_prediction(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    fake_replicate.pending_polls = 1_000

    async def go() -> None:
        task = asyncio.create_task(backend.agenerate(call_for(FLUX, timeout_s=60)))
        while not fake_replicate.requests_of("poll"):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.aclose()

    asyncio.run(go())
    assert fake_replicate.cancelled == [create_id(fake_replicate)]


def test_transient_poll_errors_are_retried_as_gets_only(
    backend: ReplicateBackend, fake_replicate: FakeReplicate, sleeps: Sleeps
) -> None:
    fake_replicate.pending_polls = 1
    fake_replicate.inject("unavailable", times=3, on="poll")
    backend.generate(call_for(FLUX))
    assert len(fake_replicate.requests_of("create")) == 1
    assert len(fake_replicate.requests_of("poll")) == 5
    assert sleeps.calls == [0.5, 1.0, 2.0, 4.0, 0.5]  # backoff grows while polls fail, then resets


def test_persistent_poll_failure_gives_up_and_cancels(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    fake_replicate.pending_polls = 1
    fake_replicate.inject("server_error", times=50, on="poll")
    with pytest.raises(BackendTimeout, match="lost track"):
        backend.generate(call_for(FLUX))
    assert fake_replicate.cancelled == [create_id(fake_replicate)]


def test_failed_and_filtered_predictions(backend: ReplicateBackend, fake_replicate: FakeReplicate) -> None:
    fake_replicate.inject("prediction_failed", error="Prediction interrupted; please retry (code: PA)")
    with pytest.raises(PredictionFailed, match="interrupted") as failed:
        backend.generate(call_for(FLUX))
    assert not failed.value.retryable
    assert failed.value.provider == "replicate"
    fake_replicate.inject("content_filtered")
    with pytest.raises(ContentFiltered, match="NSFW"):
        backend.generate(call_for(FLUX))


# --------------------------------------------------------------------------- check() and input mapping


@pytest.mark.parametrize(
    ("model", "request_fields", "reason"),
    [
        (FLUX, {"width": 1000, "height": 700}, "aspect ratios"),
        (FLUX, {"n": 5}, "at most 4"),
        (FLUX, {"steps": 20}, "1-4 steps"),
        (FLUX, {"negative_prompt": "fog"}, "no negative prompt"),
        (FLUX, {"guidance_scale": 3.0}, "no guidance"),
        (FLUX, {"scheduler": "ddim"}, "no scheduler"),
        (SDXL, {"scheduler": "lcm"}, "no scheduler 'lcm'"),
        (SDXL, {"guidance_scale": 0.5}, "guidance 1.0-50.0"),
        (("not a model", {}), {}, "owner/name"),
        (("a/b", {"family": "nope"}), {}, "unknown Replicate input family"),
        (("a/b", {"inputs": {"colour": "x"}}), {}, "unknown Replicate input override"),
    ],
)
def test_check_explains_unservable_requests(
    backend: ReplicateBackend, model: tuple[str, dict[str, Any]], request_fields: dict[str, Any], reason: str
) -> None:
    why = backend.check(call_for(model, **request_fields))
    assert why is not None
    assert reason in why
    with pytest.raises(InvalidBackendRequest):
        backend.generate(call_for(model, **request_fields))


def test_card_overrides_and_extras_shape_the_input(
    backend: ReplicateBackend, fake_replicate: FakeReplicate
) -> None:
    options = {
        "family": "generic",
        "inputs": {"count": None, "steps": "steps", "fixed": {"output_format": "png"}},
    }
    call = call_for(
        ("acme/painter", options), steps=12, width=512, height=512, extras={"replicate": {"go_fast": False}}
    )
    backend.generate(call)
    assert fake_replicate.requests_of("create")[0].json()["input"] == {
        "prompt": "a lighthouse at dusk",
        "width": 512,
        "height": 512,
        "seed": 42,
        "steps": 12,
        "output_format": "png",
        "go_fast": False,
    }


def test_no_token_is_reported_by_check_and_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    b = ReplicateBackend(base_url="http://127.0.0.1:9")
    assert b.check(call_for(FLUX)) == "no Replicate API token (set REPLICATE_API_TOKEN)"
    with pytest.raises(AuthenticationError):
        b.generate(call_for(FLUX))


def test_cards_match_the_backend() -> None:
    catalog = Catalog.load([ROOT / "providers" / "replicate.yaml"])
    cards = {r.model: r.card for r in catalog}
    assert not cards["black-forest-labs/flux-dev"].licence.commercial_use
    assert cards["black-forest-labs/flux-schnell"].licence.commercial_use
    assert {c.indemnity.level for c in cards.values()} == {"none"}
    assert cards[SDXL[0]].pricing.unit == "second"
    assert cards["black-forest-labs/flux-schnell"].pricing.unit == "image"
    b = ReplicateBackend(api_token="r8_check_only_0000")
    for route in catalog:
        d = route.card.defaults
        req = ImageRequest(
            prompt="x", width=d.width, height=d.height, steps=d.steps, guidance_scale=d.guidance_scale
        )
        assert b.check(BackendCall(req, route.model, route.card.options)) is None, route.key
        for w, h in route.card.capabilities.sizes or ():
            req = ImageRequest(prompt="x", width=w, height=h)
            assert b.check(BackendCall(req, route.model, route.card.options)) is None, (route.key, w, h)


# --------------------------------------------------------------------------- respx: HTTP edge cases

API = "https://api.replicate.com"
TOKEN = "r8_SuperSecretTokenValue123456"


def prediction(
    pid: str = "p1", output: Any = None, status: str = "succeeded", **extra: Any
) -> dict[str, Any]:
    return {
        "id": pid,
        "model": "black-forest-labs/flux-schnell",
        "version": "hidden",
        "status": status,
        "input": {},
        "output": output,
        "error": None,
        "logs": "",
        "metrics": {"predict_time": 0.5},
        "created_at": None,
        "started_at": None,
        "completed_at": None,
        "urls": {},
        **extra,
    }


@pytest.fixture
def remote() -> Iterator[ReplicateBackend]:
    b = ReplicateBackend(api_token=TOKEN, base_url=API, sleep=lambda _s: None)
    yield b
    b.close()


CREATE = f"{API}/v1/models/black-forest-labs/flux-schnell/predictions"


@respx.mock
def test_single_url_and_data_uri_outputs(remote: ReplicateBackend) -> None:
    png = png_bytes(64, 64, 3)
    file = respx.get("https://pbxt.replicate.delivery/abc/out-0.png").respond(200, content=png)
    respx.post(CREATE).respond(201, json=prediction(output="https://pbxt.replicate.delivery/abc/out-0.png"))
    assert remote.generate(call_for(FLUX)).images == (png,)
    assert "authorization" not in file.calls.last.request.headers
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    respx.post(CREATE).respond(201, json=prediction(output=[data_uri]))
    assert remote.generate(call_for(FLUX)).images == (png,)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://replicate.delivery/x.png", True),
        ("https://pbxt.replicate.delivery/x.png", True),
        ("http://replicate.delivery/x.png", False),  # no downgrade to plain http
        ("https://evilreplicate.delivery/x.png", False),
        ("https://replicate.delivery.evil.example/x.png", False),
        ("https://api.replicate.com/x.png", False),  # the API host over https is fine only as the base origin
        ("ftp://replicate.delivery/x.png", False),
    ],
)
def test_download_allow_list(url: str, allowed: bool) -> None:
    assert DownloadPolicy.build(None, "http://127.0.0.1:8000").allows(url) is allowed
    assert DownloadPolicy.build(None, "http://127.0.0.1:8000").allows("http://127.0.0.1:8000/files/a.png")
    assert not DownloadPolicy.build(None, "http://127.0.0.1:8000").allows("http://127.0.0.1:8001/files/a.png")


@respx.mock
def test_output_on_a_foreign_host_is_never_fetched(remote: ReplicateBackend) -> None:
    evil = respx.get("https://evil.example/steal.png").respond(200, content=png_bytes(8, 8))
    respx.post(CREATE).respond(201, json=prediction(output=["https://evil.example/steal.png"]))
    with pytest.raises(UnsafeOutput, match=r"evil\.example") as info:
        RetryPolicy().run(lambda: remote.generate(call_for(FLUX)), sleep=lambda _s: None)
    assert not info.value.retryable
    assert not evil.called


@respx.mock
def test_redirects_are_checked_hop_by_hop(remote: ReplicateBackend) -> None:
    png = png_bytes(16, 16)
    respx.get("https://replicate.delivery/a.png").respond(302, headers={"Location": "/b.png"})
    respx.get("https://replicate.delivery/b.png").respond(200, content=png)
    respx.post(CREATE).respond(201, json=prediction(output=["https://replicate.delivery/a.png"]))
    assert remote.generate(call_for(FLUX)).images == (png,)
    respx.get("https://replicate.delivery/c.png").respond(302, headers={"Location": "https://evil.example/x"})
    respx.post(CREATE).respond(201, json=prediction(output=["https://replicate.delivery/c.png"]))
    with pytest.raises(UnsafeOutput, match=r"evil\.example"):
        remote.generate(call_for(FLUX))


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels."""
    real = png_bytes(8, 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = real[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return patched + real[33:]


@pytest.mark.parametrize(
    ("content", "headers", "error", "match"),
    [
        (b"x" * 40, {"Content-Length": str(64 * 1024 * 1024)}, UnsafeOutput, "cap"),
        (b"\x89PNG\r\n\x1a\n" + b"0" * 5000, {}, UnsafeOutput, "cap"),
        (b"<html>not an image</html>", {}, BadResponse, "not a PNG"),
        (png_bytes(32, 32)[:-20], {}, BadResponse, "truncated"),
        (_bomb_png(200_000, 200_000), {}, BadResponse, r"pixel limit|bomb"),
    ],
)
def test_download_guards(content: bytes, headers: dict[str, str], error: type[Exception], match: str) -> None:
    with respx.mock:
        respx.get("https://replicate.delivery/o.png").respond(200, content=content, headers=headers)
        respx.post(CREATE).respond(201, json=prediction(output=["https://replicate.delivery/o.png"]))
        b = ReplicateBackend(api_token=TOKEN, base_url=API, sleep=lambda _s: None, max_download_bytes=4096)
        with pytest.raises(error, match=match):
            b.generate(call_for(FLUX))
        b.close()


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (401, AuthenticationError, False),
        (402, AuthenticationError, False),
        (404, InvalidBackendRequest, False),
        (422, InvalidBackendRequest, False),
        (429, RateLimited, True),
        (500, BackendError, True),
        (502, BackendTimeout, False),  # a proxy gave up: the origin may have started it
        (503, BackendError, True),
        (504, BackendTimeout, False),
    ],
)
@respx.mock
def test_create_status_mapping(
    remote: ReplicateBackend, status: int, error: type[BackendError], retryable: bool
) -> None:
    respx.post(CREATE).respond(
        status, json={"title": "t", "detail": f"echo Bearer {TOKEN} {TOKEN}", "status": status}
    )
    with pytest.raises(error) as info:
        remote.generate(call_for(FLUX))
    assert info.value.retryable is retryable
    assert info.value.provider == "replicate"
    assert TOKEN not in str(info.value)
    assert "r8_" not in str(info.value)


@respx.mock
def test_retry_after_from_http_date_or_detail_text(remote: ReplicateBackend) -> None:
    respx.post(CREATE).respond(429, json={"detail": "Request was throttled. Your rate limit resets in ~12s."})
    with pytest.raises(RateLimited) as info:
        remote.generate(call_for(FLUX))
    assert info.value.retry_after == 12.0
    respx.post(CREATE).respond(429, headers={"Retry-After": "3"}, json={"detail": "resets in ~12s"})
    with pytest.raises(RateLimited) as info:
        remote.generate(call_for(FLUX))
    assert info.value.retry_after == 3.0


@respx.mock
def test_moderation_on_create_is_content_filtered(remote: ReplicateBackend) -> None:
    respx.post(CREATE).respond(422, json={"detail": "NSFW content detected in the prompt"})
    with pytest.raises(ContentFiltered):
        remote.generate(call_for(FLUX))


@respx.mock
def test_prediction_with_no_usable_output(remote: ReplicateBackend) -> None:
    respx.post(CREATE).respond(201, json=prediction(output=None))
    with pytest.raises(BadResponse, match="no image URLs"):
        remote.generate(call_for(FLUX))
    respx.post(CREATE).respond(201, json=prediction(status="canceled"))
    with pytest.raises(PredictionFailed, match="canceled"):
        remote.generate(call_for(FLUX))
