"""OpenAI Images backends on the official ``openai`` client (3.x, over ``httpx2``): ``openai`` and
``azure-openai``.

Both send ``POST /images/generations`` through ``client.images.generate`` and, for a request with
input images, ``POST /images/edits`` (multipart) through ``client.images.edit``; Azure's client adds
``?api-version=``, the ``api-key`` header (or an Entra ID bearer token) and puts the deployment in the
path (``/openai/deployments/{deployment}/images/{generations|edits}``), where the ``model`` argument
is the deployment name. Deployment names default to the model id and are mapped in gateway.yaml::

    backends:
      azure-openai:
        deployments: {gpt-image-2: my-gpt-image-deployment}

The clients' own retries are off (``max_retries=0``): the gateway's retry policy is the only one, so
every attempt is counted once against one budget and audited. Everything else is the client's: keys,
base URL and organisation from ``OPENAI_API_KEY``/``OPENAI_BASE_URL``/``OPENAI_ORG_ID``/
``OPENAI_PROJECT_ID``, or ``AZURE_OPENAI_API_KEY``/``AZURE_OPENAI_ENDPOINT``/``OPENAI_API_VERSION``.

``openai`` is imported only when the first client is built (:mod:`._sdk`), so planning (``check``)
and ``import gateway`` stay free of it. Request fields, response parsing and error mapping are pure
helpers in :mod:`._openai_wire`, shared by the sync and async paths and both endpoints.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..errors import BackendError, UsageError
from ._openai_wire import ParsedImages, parse_images, request_fields, status_error, transport_error
from ._sdk import SdkBackend
from .base import BackendCall, BackendResult, Usage

# A response body above this size is decoded in a worker thread by the async path (base64 + PNG
# checks of a ~2 MB image take milliseconds: too long to hold the event loop).
_THREAD_DECODE_BYTES = 256 * 1024


class OpenAIBackend(SdkBackend):
    """GPT-image (and DALL·E) models on the OpenAI API."""

    name: ClassVar[str] = "openai"
    label: ClassVar[str] = "OpenAI"
    extra: ClassVar[str] = "openai"
    module: ClassVar[str] = "openai"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        max_connections: int = 64,
        **_: Any,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.base_url = base_url
        self.organization = organization
        self.project = project
        self.max_connections = max_connections

    # ------------------------------------------------------------------ pure core

    def model_for(self, call: BackendCall) -> str:
        """What goes in the ``model`` field (Azure: the deployment name)."""
        return call.model

    def credentials_problem(self) -> str | None:
        if not (self.api_key or os.environ.get("OPENAI_API_KEY")):
            return "no OpenAI API key: set OPENAI_API_KEY"
        return None

    def fields(self, call: BackendCall, *, files: bool = True) -> dict[str, Any]:
        """``images.generate`` keywords, or ``images.edit`` ones when the request has input images."""
        return request_fields(call, self.model_for(call), self.name, files=files)

    def validate(self, call: BackendCall) -> None:
        self.fields(call, files=False)

    def secrets(self) -> tuple[str | None, ...]:
        return (self.api_key, os.environ.get("OPENAI_API_KEY"))

    # ------------------------------------------------------------------ clients

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key,
            "base_url": self.base_url,
            "organization": self.organization,
            "project": self.project,
        }

    def new_client(self, openai: Any, *, is_async: bool) -> Any:
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(max_retries=0, **self.client_kwargs())

    def build(self, *, is_async: bool) -> Any:
        try:
            import openai
        except ImportError:
            raise self.needs_extra() from None
        try:
            return self.new_client(openai, is_async=is_async)
        except (openai.OpenAIError, ValueError) as exc:  # missing key/endpoint/api version
            raise UsageError(f"{self.label}: {type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ calls

    @staticmethod
    def _endpoint(client: Any, call: BackendCall) -> Any:
        return client.images.edit if call.request.images else client.images.generate

    def generate(self, call: BackendCall) -> BackendResult:
        started = time.monotonic()
        fields = self.fields(call)
        send = self._endpoint(self.client(is_async=False), call)
        response = self._guard(lambda: send(**fields, timeout=call.timeout_s))
        return self._result(
            call, response, started, parse_images(response, provider=self.name, expected=call.request.n)
        )

    async def agenerate(self, call: BackendCall) -> BackendResult:
        started = time.monotonic()
        fields = self.fields(call)
        send = self._endpoint(self.client(is_async=True), call)
        import openai

        try:
            response = await send(**fields, timeout=call.timeout_s)
        except (openai.OpenAIError, ValueError) as exc:
            raise self.error(exc) from None
        if _payload_size(response) > _THREAD_DECODE_BYTES:
            parsed = await asyncio.to_thread(
                parse_images, response, provider=self.name, expected=call.request.n
            )
        else:
            parsed = parse_images(response, provider=self.name, expected=call.request.n)
        return self._result(call, response, started, parsed)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        import openai

        try:
            return fn()
        except (openai.OpenAIError, ValueError) as exc:
            raise self.error(exc) from None

    def error(self, exc: Exception) -> BackendError:
        """Any exception out of the client -> our tree, secrets scrubbed."""
        import openai

        if isinstance(exc, openai.APIStatusError):
            headers: Mapping[str, str] = exc.response.headers
            body = exc.body if isinstance(exc.body, Mapping) else {}
            return status_error(
                exc.status_code,
                {"error": body},
                headers,
                provider=self.name,
                label=self.label,
                secrets=self.secrets(),
            )
        if isinstance(exc, openai.APITimeoutError):
            return transport_error("timeout", "read timeout", provider=self.name, label=self.label)
        if isinstance(exc, openai.APIConnectionError):
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
            return transport_error("connection", cause, provider=self.name, label=self.label)
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            return transport_error("decode", type(exc).__name__, provider=self.name, label=self.label)
        return transport_error("connection", type(exc).__name__, provider=self.name, label=self.label)

    def _result(
        self, call: BackendCall, response: Any, started: float, parsed: ParsedImages
    ) -> BackendResult:
        request_id = getattr(response, "_request_id", None)
        t = parsed.tokens
        meta: dict[str, Any] = {"model_sent": self.model_for(call), "request_id": request_id}
        if call.request.images:
            meta["endpoint"] = "images/edits"
        return BackendResult(
            images=parsed.images,
            usage=Usage(
                images=len(parsed.images),
                elapsed_s=time.monotonic() - started,
                provider_request_id=request_id,
                input_text_tokens=t.get("input_text_tokens"),
                input_image_tokens=t.get("input_image_tokens"),
                output_image_tokens=t.get("output_image_tokens"),
                output_text_tokens=t.get("output_text_tokens"),
            ),
            seed=None,  # the Images API takes no seed
            metadata={**meta, **parsed.metadata},
        )


class AzureOpenAIBackend(OpenAIBackend):
    """The same models as Azure OpenAI deployments (``AzureOpenAI`` client)."""

    name: ClassVar[str] = "azure-openai"
    label: ClassVar[str] = "Azure OpenAI"

    def __init__(
        self,
        deployments: Mapping[str, str] | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        api_key: str | None = None,
        azure_ad_token_provider: Callable[[], str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(api_key=api_key, **options)
        self.deployments = dict(deployments or {})
        self.azure_endpoint = azure_endpoint
        self.api_version = api_version
        self.azure_ad_token_provider = azure_ad_token_provider

    def model_for(self, call: BackendCall) -> str:
        return str(self.deployments.get(call.model) or call.options.get("deployment") or call.model)

    def credentials_problem(self) -> str | None:
        env = os.environ.get
        if not (self.azure_endpoint or self.base_url or env("AZURE_OPENAI_ENDPOINT")):
            return "no Azure OpenAI endpoint: set AZURE_OPENAI_ENDPOINT"
        if not (self.api_version or env("OPENAI_API_VERSION")):
            return "no Azure OpenAI API version: set OPENAI_API_VERSION"
        if not (
            self.api_key
            or self.azure_ad_token_provider
            or env("AZURE_OPENAI_API_KEY")
            or env("AZURE_OPENAI_AD_TOKEN")
        ):
            return "no Azure OpenAI credential: set AZURE_OPENAI_API_KEY or pass azure_ad_token_provider"
        return None

    def secrets(self) -> tuple[str | None, ...]:
        env = os.environ.get
        return (self.api_key, env("AZURE_OPENAI_API_KEY"), env("AZURE_OPENAI_AD_TOKEN"))

    def new_client(self, openai: Any, *, is_async: bool) -> Any:
        cls = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
        kwargs: dict[str, Any] = {
            "api_version": self.api_version,
            "api_key": self.api_key,
            "azure_ad_token_provider": self.azure_ad_token_provider,
            "organization": self.organization,
            "project": self.project,
        }
        if self.base_url:
            kwargs["base_url"] = self.base_url
        else:
            kwargs["azure_endpoint"] = self.azure_endpoint
        return cls(max_retries=0, **kwargs)


def _payload_size(response: Any) -> int:
    return sum(len(getattr(d, "b64_json", None) or "") for d in (getattr(response, "data", None) or ()))


__all__ = ["AzureOpenAIBackend", "OpenAIBackend"]
