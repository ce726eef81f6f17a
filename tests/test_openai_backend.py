"""OpenAI and Azure OpenAI backends: the real ``openai`` client against FakeOpenAI, wire details."""

from __future__ import annotations

import asyncio
import io

import pytest
from image_provider_support import call_for
from PIL import Image

from gateway.backends import BackendCall, create_backend
from gateway.backends.openai_images import AzureOpenAIBackend, OpenAIBackend
from gateway.errors import AuthenticationError, ContentFiltered, InvalidBackendRequest, UsageError
from gateway.testing import FAKE_AZURE_KEY, FAKE_OPENAI_KEY, FakeOpenAI
from gateway.types import ImageRequest

pytest_plugins = ["gateway.testing.pytest_plugin"]


def test_registry_builds_both_backends(fake_openai: FakeOpenAI) -> None:
    assert isinstance(create_backend("openai"), OpenAIBackend)
    azure = create_backend("azure-openai", {"deployments": {"gpt-image-2": "img"}})
    assert isinstance(azure, AzureOpenAIBackend)
    assert azure.deployments == {"gpt-image-2": "img"}


def test_gpt_image_body_always_has_model_and_never_response_format(fake_openai: FakeOpenAI) -> None:
    b = OpenAIBackend()
    result = b.generate(call_for("openai", n=2, width=1536, height=1024, quality="high",
                                 extras={"background": "opaque"}))  # fmt: skip
    req = fake_openai.requests_of("generate")[-1]
    assert req.path == "/v1/images/generations"
    assert req.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    body = req.json()
    assert body == {"model": "gpt-image-2", "prompt": "a red bicycle", "n": 2, "size": "1536x1024",
                    "quality": "high", "background": "opaque"}  # fmt: skip
    assert "response_format" not in body and "style" not in body
    assert len(result.images) == 2
    assert Image.open(io.BytesIO(result.images[0])).size == (1536, 1024)
    u = result.usage
    assert (u.images, u.input_text_tokens, u.output_image_tokens) == (2, 3, 2 * 6240)
    assert u.provider_request_id and u.provider_request_id.startswith("req_")
    assert result.seed is None  # the Images API takes no seed
    assert result.metadata["quality"] == "high"
    b.close()


def test_dall_e_3_asks_for_base64_and_may_take_a_style(fake_openai: FakeOpenAI) -> None:
    b = OpenAIBackend()
    call = call_for("openai", options={"family": "dall-e"}, quality="hd", extras={"style": "natural"})
    call = BackendCall(call.request, "dall-e-3", call.options, timeout_s=10)
    result = b.generate(call)
    body = fake_openai.requests_of("generate")[-1].json()
    assert body["response_format"] == "b64_json"
    assert body["style"] == "natural" and body["quality"] == "hd" and body["model"] == "dall-e-3"
    assert result.usage.output_image_tokens is None
    assert "revised_prompt_sha256" in result.metadata  # the text itself may echo the prompt: hashed
    b.close()


def test_azure_deployment_path_api_version_and_key(fake_openai: FakeOpenAI) -> None:
    b = AzureOpenAIBackend(deployments={"gpt-image-2": "img-prod"})
    fake_openai.deployments["img-prod"] = "gpt-image-2"
    b.generate(call_for("azure-openai"))
    req = fake_openai.requests_of("generate")[-1]
    assert req.path.startswith("/openai/deployments/img-prod/images/generations?")
    assert req.info["api_version"] == "2025-04-01-preview"
    assert req.headers["api-key"] == FAKE_AZURE_KEY
    assert "authorization" not in req.headers
    assert req.json()["model"] == "img-prod"  # on Azure the model argument is the deployment
    # Without a mapping the deployment is the model id (or the card's options.deployment).
    other = AzureOpenAIBackend()
    other.generate(call_for("azure-openai", options={"family": "gpt-image", "deployment": "from-card"}))
    assert fake_openai.requests_of("generate")[-1].info["deployment"] == "from-card"


def test_azure_entra_id_token_provider(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    b = AzureOpenAIBackend(azure_ad_token_provider=lambda: "entra-token-123")
    assert b.check(call_for("azure-openai")) is None
    b.generate(call_for("azure-openai"))
    req = fake_openai.requests_of("generate")[-1]
    assert req.headers["authorization"] == "Bearer entra-token-123"


def test_async_path(fake_openai: FakeOpenAI) -> None:
    async def run() -> int:
        b = OpenAIBackend()
        try:
            results = await asyncio.gather(*(b.agenerate(call_for("openai")) for _ in range(3)))
        finally:
            await b.aclose()
        return sum(len(r.images) for r in results)

    assert asyncio.run(run()) == 3


def test_check_refuses_without_io(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_VERSION",
                 "AZURE_OPENAI_AD_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert "OPENAI_API_KEY" in (OpenAIBackend().check(call_for("openai")) or "")
    assert "AZURE_OPENAI_ENDPOINT" in (AzureOpenAIBackend().check(call_for("azure-openai")) or "")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://x.openai.azure.com")
    assert "OPENAI_API_VERSION" in (AzureOpenAIBackend().check(call_for("azure-openai")) or "")
    b = OpenAIBackend(api_key="sk-test-0000000000000000")
    assert "negative prompt" in (b.check(call_for("openai", negative_prompt="fog")) or "")
    assert "does not take style" in (b.check(call_for("openai", extras={"style": "vivid"})) or "")
    assert b.check(call_for("openai")) is None
    with pytest.raises(UsageError, match="OPENAI_API_VERSION"):
        AzureOpenAIBackend(api_key="k").generate(call_for("azure-openai"))


def test_wrong_key_is_refused_and_never_echoed(fake_openai: FakeOpenAI) -> None:
    wrong = "sk-proj-WrongKeyThatMustNeverAppear1234"
    with pytest.raises(AuthenticationError) as info:
        OpenAIBackend(api_key=wrong).generate(call_for("openai"))
    assert "Incorrect API key provided" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_azure_wrong_key_is_scrubbed(fake_openai: FakeOpenAI) -> None:
    wrong = "0123456789abcdef0123456789abcdef"
    with pytest.raises(AuthenticationError) as info:
        AzureOpenAIBackend(api_key=wrong).generate(call_for("azure-openai"))
    assert wrong not in str(info.value)


def test_moderation_variants(fake_openai: FakeOpenAI) -> None:
    fake_openai.inject("moderation")
    with pytest.raises(ContentFiltered, match="moderation_blocked"):
        OpenAIBackend().generate(call_for("openai"))
    fake_openai.inject("moderation")
    call = call_for("openai", options={"family": "dall-e"})
    with pytest.raises(ContentFiltered, match="content_policy_violation"):
        OpenAIBackend().generate(BackendCall(call.request, "dall-e-3", call.options))
    fake_openai.inject("moderation")
    with pytest.raises(ContentFiltered, match="content_filter"):
        AzureOpenAIBackend().generate(call_for("azure-openai"))


def test_the_api_refuses_what_the_model_rejects(fake_openai: FakeOpenAI) -> None:
    """The fake keeps the API's rules, so a regression that sends style to GPT-image would fail here."""
    import openai

    client = openai.OpenAI(max_retries=0)
    with pytest.raises(openai.BadRequestError, match="Unknown parameter"):
        client.images.generate(model="gpt-image-2", prompt="x", response_format="b64_json")
    with pytest.raises(openai.BadRequestError, match="model is required"):
        client.images.generate(prompt="x")
    client.close()
    with pytest.raises(InvalidBackendRequest, match="Invalid size"):
        OpenAIBackend().generate(call_for("openai", width=1000, height=1000))


def test_request_quality_none_sends_no_quality(fake_openai: FakeOpenAI) -> None:
    b = OpenAIBackend()
    b.generate(BackendCall(ImageRequest(prompt="p"), "gpt-image-2", {"family": "gpt-image"}))
    assert fake_openai.requests_of("generate")[-1].json() == {"model": "gpt-image-2", "prompt": "p", "n": 1}
