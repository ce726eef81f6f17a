"""Bedrock backend: real boto3 (SigV4, URL-encoded model ids) against FakeBedrock."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gateway.backends import BackendCall, create_backend
from gateway.backends.bedrock import BedrockBackend
from gateway.catalog import Catalog
from gateway.errors import (
    AuthenticationError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadResponse,
    ContentFiltered,
    InvalidBackendRequest,
    RateLimited,
)
from gateway.retry import RetryPolicy
from gateway.testing import FAKE_AWS_KEY, FAKE_AWS_SECRET, FakeBedrock, png_bytes
from gateway.types import ImageRequest

pytest_plugins = ["gateway.testing.pytest_plugin"]

ROOT = Path(__file__).resolve().parent.parent
TITAN = ("amazon.titan-image-generator-v2:0", {"family": "titan-image", "region": "us-east-1"})
NOVA = ("amazon.nova-canvas-v1:0", {"family": "nova-canvas", "region": "us-east-1"})
SD35 = (
    "stability.sd3-5-large-v1:0",
    {"family": "stability-image", "region": "us-west-2", "fixed": {"mode": "text-to-image"}},
)
ULTRA = ("stability.stable-image-ultra-v1:1", {"family": "stability-image", "region": "us-west-2"})
CORE = ("stability.stable-image-core-v1:1", {"family": "stability-image", "region": "us-west-2"})


@pytest.fixture
def backend(fake_bedrock: FakeBedrock) -> Iterator[BedrockBackend]:
    # Endpoint, credentials and default region come from the standard AWS environment (fixture).
    b = create_backend("bedrock", {"max_workers": 4})
    assert isinstance(b, BedrockBackend)
    yield b
    b.close()


def call_for(model: tuple[str, dict[str, Any]], timeout_s: float = 10.0, **request: Any) -> BackendCall:
    fields = {"prompt": "a lighthouse at dusk", "width": 512, "height": 512, "seed": 42, **request}
    return BackendCall(ImageRequest(**fields), model[0], model[1], timeout_s=timeout_s)


def last_invoke(fake: FakeBedrock) -> Any:
    return fake.requests_of("invoke")[-1]


# --------------------------------------------------------------------------- end to end, per model


def test_titan_v2(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    call = call_for(TITAN, n=2, negative_prompt="fog", guidance_scale=8.0, extras={"quality": "premium"})
    result = backend.generate(call)
    req = last_invoke(fake_bedrock)
    assert req.path == "/model/amazon.titan-image-generator-v2%3A0/invoke"
    assert req.info["model_id"] == "amazon.titan-image-generator-v2:0"
    assert (req.info["service"], req.info["region"], req.info["access_key"]) == (
        "bedrock",
        "us-east-1",
        FAKE_AWS_KEY,
    )
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "application/json"
    assert req.json() == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a lighthouse at dusk", "negativeText": "fog"},
        "imageGenerationConfig": {
            "numberOfImages": 2,
            "quality": "premium",
            "width": 512,
            "height": 512,
            "seed": 42,
            "cfgScale": 8.0,
        },
    }
    assert len(result.images) == 2
    assert Image.open(io.BytesIO(result.images[0])).size == (512, 512)
    assert result.images[0] != result.images[1]
    assert result.usage.images == 2
    assert result.usage.predict_time_s is None
    assert result.usage.provider_request_id == result.metadata["request_id"]
    assert result.seed == 42
    assert result.metadata["region"] == "us-east-1"
    assert result.metadata["family"] == "titan-image"


def test_nova_canvas_style(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    result = backend.generate(call_for(NOVA, width=1024, height=576, extras={"style": "PHOTOREALISM"}))
    body = last_invoke(fake_bedrock).json()
    assert body["textToImageParams"]["style"] == "PHOTOREALISM"
    assert body["imageGenerationConfig"]["width"] == 1024
    assert last_invoke(fake_bedrock).info["model_id"] == "amazon.nova-canvas-v1:0"
    assert Image.open(io.BytesIO(result.images[0])).size == (1024, 576)


@pytest.mark.parametrize(
    ("model", "size", "ratio", "mode"),
    [
        (SD35, (1344, 768), "16:9", "text-to-image"),
        (ULTRA, (1024, 1024), "1:1", None),
        (CORE, (832, 1216), "2:3", None),
    ],
)
def test_stability_models(
    backend: BedrockBackend,
    fake_bedrock: FakeBedrock,
    model: tuple[str, dict[str, Any]],
    size: tuple[int, int],
    ratio: str,
    mode: str | None,
) -> None:
    result = backend.generate(call_for(model, width=size[0], height=size[1], negative_prompt="fog", seed=7))
    req = last_invoke(fake_bedrock)
    assert req.info["region"] == "us-west-2"
    assert req.info["model_id"] == model[0]
    expected = {
        "prompt": "a lighthouse at dusk",
        "output_format": "png",
        "negative_prompt": "fog",
        "aspect_ratio": ratio,
        "seed": 7,
    }
    if mode:
        expected["mode"] = mode
    assert req.json() == expected
    assert Image.open(io.BytesIO(result.images[0])).size == size
    assert result.seed == 7
    assert result.metadata["finish_reasons"] == [None]


def test_async_path_runs_in_the_bounded_pool(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    async def go() -> list[Any]:
        calls = [call_for(TITAN, seed=i) for i in range(6)]
        return await asyncio.gather(*(backend.agenerate(c) for c in calls))

    results = asyncio.run(go())
    assert sorted(r.seed for r in results) == list(range(6))
    assert len(fake_bedrock.requests_of("invoke")) == 6
    assert backend._pool is not None
    assert backend._pool._max_workers == 4


def test_region_falls_back_to_the_environment(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    backend.generate(call_for(("amazon.titan-image-generator-v2:0", {"family": "titan-image"})))
    assert last_invoke(fake_bedrock).info["region"] == "us-east-1"  # AWS_REGION from the fixture


def test_clients_are_cached_per_region(backend: BedrockBackend) -> None:
    for model in (TITAN, TITAN, SD35, CORE):
        backend.generate(call_for(model, width=1024, height=1024))
    assert {key[0] for key in backend._clients} == {"us-east-1", "us-west-2"}
    assert len(backend._clients) == 2


def test_seed_beyond_the_model_range_is_folded_and_reported(
    backend: BedrockBackend, fake_bedrock: FakeBedrock
) -> None:
    result = backend.generate(call_for(NOVA, seed=4_000_000_000))
    sent = last_invoke(fake_bedrock).json()["imageGenerationConfig"]["seed"]
    assert sent == 4_000_000_000 % 858_993_460
    assert result.seed == sent
    assert result.metadata["requested_seed"] == 4_000_000_000


# --------------------------------------------------------------------------- errors


FACTS_ERRORS = [
    ("ValidationException", 400, InvalidBackendRequest),
    ("ServiceQuotaExceededException", 400, RateLimited),
    ("AccessDeniedException", 403, AuthenticationError),
    ("ResourceNotFoundException", 404, InvalidBackendRequest),
    ("ModelTimeoutException", 408, BackendTimeout),
    ("ModelErrorException", 424, BadResponse),
    ("ThrottlingException", 429, RateLimited),
    ("ModelNotReadyException", 429, BackendUnavailable),
    ("InternalServerException", 500, BackendUnavailable),
    ("ServiceUnavailableException", 503, BackendUnavailable),
    ("SomethingNewException", 502, BackendUnavailable),  # unknown name: decided by status
    ("SomethingNewException", 418, InvalidBackendRequest),
]


@pytest.mark.parametrize(("name", "status", "error"), FACTS_ERRORS)
def test_every_bedrock_error_maps_to_the_tree(
    backend: BedrockBackend, fake_bedrock: FakeBedrock, name: str, status: int, error: type[BackendError]
) -> None:
    fake_bedrock.inject("server_error", error_type=name, status=status, message=f"{name} happened")
    with pytest.raises(error) as info:
        backend.generate(call_for(TITAN))
    assert type(info.value) is error
    assert info.value.provider == "bedrock"
    assert info.value.status == status
    assert name in str(info.value)
    assert len(fake_bedrock.requests_of("invoke")) == 1  # botocore made no retry of its own


def test_throttling_carries_retry_after_and_is_retried(
    backend: BedrockBackend, fake_bedrock: FakeBedrock
) -> None:
    fake_bedrock.inject("rate_limit", times=2, retry_after=2)
    sleeps: list[float] = []
    result = RetryPolicy(max_attempts=3).run(lambda: backend.generate(call_for(TITAN)), sleep=sleeps.append)
    assert result.images
    assert sleeps == [2.0, 2.0]
    assert len(fake_bedrock.requests_of("invoke")) == 3


@pytest.mark.parametrize(
    ("model", "stage", "match"),
    [
        (TITAN, "output", "blocked by our content filters"),
        (NOVA, "input", "blocked by our content filters"),
        (SD35, "input", "Filter reason: prompt"),
        (CORE, "output", "Filter reason: output image"),
    ],
)
def test_provider_moderation_is_content_filtered(
    backend: BedrockBackend,
    fake_bedrock: FakeBedrock,
    model: tuple[str, dict[str, Any]],
    stage: str,
    match: str,
) -> None:
    fake_bedrock.inject("content_filtered", stage=stage)
    with pytest.raises(ContentFiltered, match=match) as info:
        RetryPolicy().run(
            lambda: backend.generate(call_for(model, width=1024, height=1024)), sleep=lambda _s: None
        )
    assert not info.value.retryable
    assert len(fake_bedrock.requests_of("invoke")) == 1


def test_broken_answers_are_bad_responses(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    for fault, match in (("malformed_json", "malformed JSON"), ("truncated_image", "truncated")):
        fake_bedrock.inject(fault)
        with pytest.raises(BadResponse, match=match) as info:
            backend.generate(call_for(TITAN))
        assert info.value.retryable


def test_connection_reset_is_unavailable_and_slow_is_timeout(
    backend: BedrockBackend, fake_bedrock: FakeBedrock
) -> None:
    fake_bedrock.inject("reset")
    with pytest.raises(BackendUnavailable, match="ConnectionClosedError"):
        backend.generate(call_for(TITAN))
    fake_bedrock.inject("slow", delay=60)
    with pytest.raises(BackendTimeout, match="ReadTimeout"):
        backend.generate(call_for(TITAN, timeout_s=0.4))


def test_async_timeout(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.inject("slow", delay=60)
    with pytest.raises(BackendTimeout):
        asyncio.run(backend.agenerate(call_for(TITAN, timeout_s=0.4)))


def test_bad_credentials_never_leak(
    backend: BedrockBackend, fake_bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-123")
    b = BedrockBackend()
    with pytest.raises(AuthenticationError, match="signature") as info:
        b.generate(call_for(TITAN))
    text = str(info.value)
    assert "wrong-secret-value-123" not in text
    assert FAKE_AWS_KEY not in text
    assert "Signature=" not in text
    b.close()


def test_bedrock_api_key_switches_auth_and_is_never_sent_in_clear(
    fake_bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_BEARER_TOKEN_BEDROCK replaces SigV4 with a Bearer key, which botocore sends over TLS only."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "ABSKQmVkcm9ja0FQSUtleS1zZWNyZXQ=")
    b = BedrockBackend()
    with pytest.raises(AuthenticationError, match="HTTPS") as info:
        b.generate(call_for(TITAN))
    assert "ABSKQmVkcm9ja0FQSUtleS1zZWNyZXQ=" not in str(info.value)
    assert fake_bedrock.requests_of("invoke") == []
    b.close()


def test_secret_key_never_appears_in_any_message(backend: BedrockBackend, fake_bedrock: FakeBedrock) -> None:
    fake_bedrock.inject(
        "server_error", message=f"echo {FAKE_AWS_SECRET} AKIAABCDEFGHIJKLMNOP Signature={'a' * 64}"
    )
    with pytest.raises(BackendUnavailable) as info:
        backend.generate(call_for(TITAN))
    text = str(info.value)
    assert FAKE_AWS_SECRET not in text
    assert "AKIAABCDEFGHIJKLMNOP" not in text
    assert "a" * 64 not in text


# --------------------------------------------------------------------------- check()


@pytest.mark.parametrize(
    ("model", "request_fields", "reason"),
    [
        (TITAN, {"prompt": "x" * 513}, "up to 512 characters"),
        (NOVA, {"prompt": "x" * 1025}, "up to 1024 characters"),
        (TITAN, {"n": 6}, "at most 5"),
        (SD35, {"n": 2, "width": 1024, "height": 1024}, "at most 1"),
        (TITAN, {"steps": 30}, "no step count"),
        (TITAN, {"scheduler": "ddim"}, "no scheduler"),
        (TITAN, {"guidance_scale": 12.0}, "guidance 1.1-10.0"),
        (SD35, {"guidance_scale": 5.0, "width": 1024, "height": 1024}, "no guidance"),
        (SD35, {"width": 1000, "height": 700}, "aspect ratios"),
        (TITAN, {"extras": {"quality": "ultra"}}, "quality"),
        (("amazon.x", {"family": "nope", "region": "us-east-1"}), {}, "unknown Bedrock body family"),
        (("amazon.x", {"family": "titan-image", "region": "mars-1"}), {}, "not an AWS region"),
        (("amazon.x", {"family": "titan-image", "limits": {"colour": 1}}), {}, "unknown Bedrock limit"),
    ],
)
def test_check_explains_unservable_requests(
    backend: BedrockBackend, model: tuple[str, dict[str, Any]], request_fields: dict[str, Any], reason: str
) -> None:
    why = backend.check(call_for(model, **request_fields))
    assert why is not None
    assert reason in why
    with pytest.raises(InvalidBackendRequest):
        backend.generate(call_for(model, **request_fields))


def test_no_region_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    why = BedrockBackend().check(call_for(("amazon.x", {"family": "titan-image"})))
    assert why == "no AWS region: set the card's options.region or AWS_REGION"


def test_card_limits_override_family_defaults(backend: BedrockBackend) -> None:
    options = {**TITAN[1], "limits": {"max_prompt": 20}}
    assert "up to 20 characters" in (backend.check(call_for((TITAN[0], options), prompt="x" * 21)) or "")


# --------------------------------------------------------------------------- cards


def test_cards_match_the_backend_and_the_facts() -> None:
    catalog = Catalog.load([ROOT / "providers" / "bedrock.yaml"])
    cards = {r.model: r for r in catalog}
    nova = cards["amazon.nova-canvas-v1:0"].card
    assert nova.status == "legacy"
    assert str(nova.end_of_life) == "2026-09-30"
    assert cards["amazon.titan-image-generator-v2:0"].card.indemnity.level == "uncapped"
    assert nova.indemnity.level == "uncapped"
    for model_id in (SD35[0], ULTRA[0], CORE[0]):
        assert cards[model_id].card.indemnity.level == "none"
        assert cards[model_id].card.regions == ("us-west-2",)
    b = BedrockBackend()
    for route in catalog:
        card = route.card
        assert card.options["region"] in card.regions
        sizes = card.capabilities.sizes or ((card.defaults.width, card.defaults.height),)
        for w, h in sizes:
            req = ImageRequest(prompt="x", width=w, height=h, n=card.capabilities.max_images, seed=2**32 - 1)
            assert b.check(BackendCall(req, route.model, card.options)) is None, (route.key, w, h)


def test_base64_decoding_rejects_garbage() -> None:
    from gateway.backends._bedrock_bodies import decode_images

    good = base64.b64encode(png_bytes(8, 8)).decode()
    assert decode_images([good], what="t") == (png_bytes(8, 8),)
    for bad in (None, [], [1], ["!!!not base64!!!"], [base64.b64encode(b"GIF89a....").decode()]):
        with pytest.raises(BadResponse):
            decode_images(bad, what="t")
