"""Gemini Developer API and Vertex AI backends: the real ``google-genai`` client against FakeGemini."""

from __future__ import annotations

import asyncio
import io

import pytest
from image_provider_support import call_for, vertex_credentials
from PIL import Image

from gateway.backends import create_backend
from gateway.backends.gemini import GeminiBackend, VertexGeminiBackend
from gateway.errors import AuthenticationError, ContentFiltered, RateLimited
from gateway.testing import FAKE_GEMINI_KEY, FAKE_GOOGLE_TOKEN, FakeGemini

pytest_plugins = ["gateway.testing.pytest_plugin"]


def test_developer_api_wire(fake_gemini: FakeGemini) -> None:
    b = create_backend("google-gemini")
    assert isinstance(b, GeminiBackend)
    result = b.generate(call_for("google-gemini", width=1344, height=768))
    req = fake_gemini.requests_of("generate")[-1]
    assert req.info["api"] == "developer"
    assert req.path.endswith("/models/gemini-2.5-flash-image:generateContent")
    assert req.headers["x-goog-api-key"] == FAKE_GEMINI_KEY
    body = req.json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a red bicycle"}]}]
    assert body["generationConfig"]["responseModalities"] == ["IMAGE"]
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}
    assert Image.open(io.BytesIO(result.images[0])).size == (1344, 768)
    u = result.usage
    assert (u.images, u.input_text_tokens, u.output_image_tokens, u.output_text_tokens) == (1, 3, 1290, None)
    assert result.seed == 7
    b.close()


def test_vertex_wire(fake_gemini: FakeGemini) -> None:
    b = VertexGeminiBackend(credentials=vertex_credentials())
    b.generate(call_for("google-vertex"))
    req = fake_gemini.requests_of("generate")[-1]
    assert req.info["api"] == "vertex"
    assert (req.info["project"], req.info["location"]) == ("fake-project", "us-central1")
    assert req.headers["authorization"] == f"Bearer {FAKE_GOOGLE_TOKEN}"
    assert "x-goog-api-key" not in req.headers
    b.close()


def test_n_images_are_n_calls_with_usage_summed(fake_gemini: FakeGemini) -> None:
    b = GeminiBackend()
    result = b.generate(call_for("google-gemini", n=3))
    assert len(fake_gemini.requests_of("generate")) == 3
    assert (result.usage.images, result.usage.output_image_tokens) == (3, 3 * 1290)

    async def run() -> int:
        try:
            r = await b.agenerate(call_for("google-gemini", n=2))
        finally:
            await b.aclose()
        return r.usage.output_image_tokens or 0

    assert asyncio.run(run()) == 2 * 1290


def test_paid_images_survive_a_partial_failure(fake_gemini: FakeGemini) -> None:
    """Two concurrent calls, one throttled: the image already paid for is returned, not dropped."""
    fake_gemini.inject("rate_limit")
    b = GeminiBackend()

    async def run() -> object:
        try:
            return await b.agenerate(call_for("google-gemini", n=2))
        finally:
            await b.aclose()

    result = asyncio.run(run())
    assert len(result.images) == 1  # type: ignore[attr-defined]
    assert "RateLimited" in result.metadata["partial_failure"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("stage", "reason"),
    [("input", "PROHIBITED_CONTENT"), ("input", "SAFETY"), ("output", "IMAGE_SAFETY"),
     ("output", "PROHIBITED_CONTENT")],
)  # fmt: skip
def test_safety_blocks_are_content_filtered(fake_gemini: FakeGemini, stage: str, reason: str) -> None:
    fake_gemini.inject("moderation", stage=stage, reason=reason)
    with pytest.raises(ContentFiltered, match=reason):
        GeminiBackend().generate(call_for("google-gemini"))


def test_sizes_and_image_sizes() -> None:
    b = GeminiBackend(api_key="AIzaTestKeyForCheckOnly000000000")
    assert "no size 1000x1000" in (b.check(call_for("google-gemini", width=1000, height=1000)) or "")
    call = call_for("google-gemini", width=2048, height=2048, options={"image_sizes": ["1K", "2K"]})
    assert b.check(call) is None
    assert "no negative prompt" in (b.check(call_for("google-gemini", negative_prompt="x")) or "")


def test_retry_delay_and_wrong_key(fake_gemini: FakeGemini) -> None:
    fake_gemini.inject("rate_limit", retry_after=2.5)
    with pytest.raises(RateLimited) as info:
        GeminiBackend().generate(call_for("google-gemini"))
    assert info.value.retry_after == pytest.approx(2.5)
    wrong = "AIzaWrongKeyThatMustNeverAppear0000000"
    with pytest.raises(AuthenticationError) as err:
        GeminiBackend(api_key=wrong).generate(call_for("google-gemini"))
    assert wrong not in str(err.value)


def test_vertex_bad_token_is_authentication(fake_gemini: FakeGemini) -> None:
    from google.oauth2.credentials import Credentials

    with pytest.raises(AuthenticationError):
        VertexGeminiBackend(credentials=Credentials(token="ya29.wrong-token-value")).generate(
            call_for("google-vertex")
        )


def test_check_needs_a_key_or_a_project(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    assert "GEMINI_API_KEY" in (GeminiBackend().check(call_for("google-gemini")) or "")
    assert "GOOGLE_CLOUD_PROJECT" in (VertexGeminiBackend().check(call_for("google-vertex")) or "")
