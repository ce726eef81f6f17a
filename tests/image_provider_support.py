"""Shared set-up for the OpenAI / Azure OpenAI / Gemini / Vertex tests: one factory per backend name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.backends import Backend, BackendCall
from gateway.backends.gemini import GeminiBackend, VertexGeminiBackend
from gateway.backends.openai_images import AzureOpenAIBackend, OpenAIBackend
from gateway.testing import FAKE_GOOGLE_TOKEN
from gateway.types import ImageRequest


def vertex_credentials() -> Any:
    """What ADC would return, minus the network: a bearer token the fake accepts."""
    from google.oauth2.credentials import Credentials

    return Credentials(token=FAKE_GOOGLE_TOKEN)


FACTORIES: dict[str, Callable[[], Backend]] = {
    "openai": OpenAIBackend,
    "azure-openai": lambda: AzureOpenAIBackend(deployments={"gpt-image-2": "img-prod"}),
    "google-gemini": GeminiBackend,
    "google-vertex": lambda: VertexGeminiBackend(credentials=vertex_credentials()),
}
MODELS: dict[str, str] = {
    "openai": "gpt-image-2",
    "azure-openai": "gpt-image-2",
    "google-gemini": "gemini-2.5-flash-image",
    "google-vertex": "gemini-2.5-flash-image",
}
FAKE_OF: dict[str, str] = {
    "openai": "fake_openai",
    "azure-openai": "fake_openai",
    "google-gemini": "fake_gemini",
    "google-vertex": "fake_gemini",
}


def call_for(
    name: str, timeout_s: float = 10.0, options: dict[str, Any] | None = None, **request: Any
) -> BackendCall:
    fields = {"prompt": "a red bicycle", "width": 1024, "height": 1024, "seed": 7, **request}
    opts = (
        options
        if options is not None
        else ({"family": "gpt-image"} if "openai" in name else {"image_sizes": ["1K"]})
    )
    return BackendCall(ImageRequest(**fields), MODELS[name], opts, timeout_s=timeout_s)
