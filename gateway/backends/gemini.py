"""Gemini image models on the official ``google-genai`` client (3.x): ``google-gemini`` (Developer API)
and ``google-vertex`` (Vertex AI).

Both call ``models.generate_content`` with ``response_modalities=["IMAGE"]``; the Developer API sends
``POST {base}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key`` (``GEMINI_API_KEY`` or
``GOOGLE_API_KEY``; base override ``GOOGLE_GEMINI_BASE_URL``), Vertex sends
``.../projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`` with an OAuth
bearer token (Application Default Credentials, ``GOOGLE_CLOUD_PROJECT``, ``GOOGLE_CLOUD_LOCATION``,
base override ``GOOGLE_VERTEX_BASE_URL``). All of that is the client's own resolution.

Retries: the client retries nothing without ``retry_options``, but with aiohttp installed its async
path retries connection errors on its own; ``HttpRetryOptions(attempts=1)`` switches both off, so the
gateway's retry policy is the only one. One call returns one image: ``n`` images are ``n`` calls
(sequential in ``generate``, concurrent in ``agenerate``); if some of them fail after others were
paid for, the paid images are returned with ``metadata["partial_failure"]`` rather than dropped.

``google.genai`` is imported only when the first client is built (it takes about a second), so
planning and ``import gateway`` never pay for it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..errors import BackendError, BackendTimeout, BackendUnavailable, BadResponse, UsageError
from ._gemini_wire import (
    ParsedCandidate,
    api_error,
    generate_config,
    parse_response,
    request_parts,
    sum_tokens,
)
from ._sdk import SdkBackend
from .base import BackendCall, BackendResult, Usage

# Transport exception class names (httpx and httpx2 share them) -> what they mean for a resend.
_TRANSPORT: tuple[tuple[str, type[BackendError]], ...] = (
    ("TimeoutException", BackendTimeout),
    ("TimeoutError", BackendTimeout),  # the async path over aiohttp: asyncio's (= the builtin) timeout
    ("TransportError", BackendUnavailable),  # httpx's and google.auth's
    ("DecodingError", BadResponse),
    ("JSONDecodeError", BadResponse),
    ("ValidationError", BadResponse),
    ("ValueError", BadResponse),
)


class GeminiBackend(SdkBackend):
    """Gemini image models on the Gemini Developer API (AI Studio keys)."""

    name: ClassVar[str] = "google-gemini"
    label: ClassVar[str] = "Gemini API"
    extra: ClassVar[str] = "google"
    module: ClassVar[str] = "google.genai"
    package: ClassVar[str] = "google-genai"
    vertexai: ClassVar[bool] = False

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        credentials: Any = None,
        **_: Any,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.base_url = base_url
        self.api_version = api_version
        self.credentials = credentials

    # ------------------------------------------------------------------ pure core

    def credentials_problem(self) -> str | None:
        if not (self.api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")):
            return "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY)"
        return None

    def validate(self, call: BackendCall) -> None:
        request_parts(call, self.name, files=False)
        generate_config(call, self.name)

    def secrets(self) -> tuple[str | None, ...]:
        token = getattr(self.credentials, "token", None)
        return (self.api_key, os.environ.get("GEMINI_API_KEY"), os.environ.get("GOOGLE_API_KEY"), token)

    # ------------------------------------------------------------------ client

    def client_kwargs(self, types: Any) -> dict[str, Any]:
        http: dict[str, Any] = {"retry_options": types.HttpRetryOptions(attempts=1)}
        if self.base_url:
            http["base_url"] = self.base_url
        if self.api_version:
            http["api_version"] = self.api_version
        kwargs: dict[str, Any] = {"vertexai": False, "http_options": types.HttpOptions(**http)}
        if self.api_key:
            kwargs["api_key"] = self.api_key
        return kwargs

    def build(self, *, is_async: bool) -> Any:
        """One ``genai.Client`` serves both paths (``client.aio`` is its async face)."""
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise self.needs_extra() from None
        try:
            return genai.Client(**self.client_kwargs(types))
        except (ValueError, OSError) as exc:  # no key / project / credentials
            raise UsageError(f"{self.label}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and kin
            raise UsageError(f"{self.label}: {type(exc).__name__}") from None

    async def close_async_client(self, client: Any) -> None:
        await client.aio.aclose()
        client.close()

    # ------------------------------------------------------------------ calls

    def _request(self, call: BackendCall) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        timeout_ms = max(1, int(call.timeout_s * 1000))
        contents = [{"role": "user", "parts": request_parts(call, self.name)}]
        return contents, generate_config(call, self.name, timeout_ms)

    def generate(self, call: BackendCall) -> BackendResult:
        started = time.monotonic()
        contents, config = self._request(call)
        client = self.client(is_async=False)
        done: list[ParsedCandidate] = []
        failure: BackendError | None = None
        for _ in range(call.request.n):
            try:
                response = client.models.generate_content(model=call.model, contents=contents, config=config)
                done.append(parse_response(response, provider=self.name, label=self.label))
            except BackendError as exc:
                failure = exc
                break
            except Exception as exc:
                failure = self.error(exc)
                break
        return self._result(call, done, failure, started)

    async def agenerate(self, call: BackendCall) -> BackendResult:
        started = time.monotonic()
        contents, config = self._request(call)
        client = self.client(is_async=True)

        async def one() -> ParsedCandidate:
            try:
                response = await client.aio.models.generate_content(
                    model=call.model, contents=contents, config=config
                )
            except Exception as exc:
                raise self.error(exc) from None
            return parse_response(response, provider=self.name, label=self.label)

        outcomes = await asyncio.gather(*(one() for _ in range(call.request.n)), return_exceptions=True)
        done = [o for o in outcomes if isinstance(o, ParsedCandidate)]
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        for o in errors:
            if not isinstance(o, BackendError):
                raise o  # cancellation or a bug: never swallowed
        first = next((e for e in errors if isinstance(e, BackendError)), None)
        return self._result(call, done, first, started)

    def _result(
        self, call: BackendCall, done: list[ParsedCandidate], failure: BackendError | None, started: float
    ) -> BackendResult:
        if not done:
            raise failure or BadResponse(f"{self.label} returned no image", provider=self.name)
        tokens = sum_tokens([d.tokens for d in done])
        meta: dict[str, Any] = {**done[0].metadata, "calls": len(done)}
        if failure is not None:
            meta["partial_failure"] = f"{type(failure).__name__}: {failure}"
        return BackendResult(
            images=tuple(d.image for d in done),
            usage=Usage(
                images=len(done),
                elapsed_s=time.monotonic() - started,
                input_text_tokens=tokens["input_text_tokens"],
                input_image_tokens=tokens["input_image_tokens"],
                output_image_tokens=tokens["output_image_tokens"],
                output_text_tokens=tokens["output_text_tokens"],
            ),
            seed=call.request.seed % 2**31 if call.request.seed is not None else None,
            metadata=meta,
        )

    def error(self, exc: BaseException) -> BackendError:
        """An exception out of the client -> our tree (secrets scrubbed)."""
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            response = getattr(exc, "response", None)
            headers: Mapping[str, str] | None = getattr(response, "headers", None)
            return api_error(
                int(exc.code or 0),
                exc.status,
                exc.message,
                exc.details,
                headers,
                provider=self.name,
                label=self.label,
                secrets=self.secrets(),
            )
        names = [k.__name__ for k in type(exc).__mro__]
        for name, target in _TRANSPORT:
            if name in names:
                return target(f"{self.label}: {type(exc).__name__}", provider=self.name)
        return BackendUnavailable(f"{self.label}: {type(exc).__name__}", provider=self.name)


class VertexGeminiBackend(GeminiBackend):
    """The same models on Vertex AI (project + location, OAuth credentials)."""

    name: ClassVar[str] = "google-vertex"
    label: ClassVar[str] = "Vertex AI"
    vertexai: ClassVar[bool] = True

    def __init__(
        self,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        credentials_factory: Callable[[], Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(credentials=credentials, **options)
        self.project = project
        self.location = location
        self.credentials_factory = credentials_factory

    def credentials_problem(self) -> str | None:
        if not (self.project or os.environ.get("GOOGLE_CLOUD_PROJECT")):
            return "no Google Cloud project: set GOOGLE_CLOUD_PROJECT"
        return None

    def _location(self, call: BackendCall | None = None) -> str | None:
        opt = call.options.get("location") if call is not None else None
        return str(opt or self.location or os.environ.get("GOOGLE_CLOUD_LOCATION") or "") or None

    def client_kwargs(self, types: Any) -> dict[str, Any]:
        kwargs = super().client_kwargs(types)
        # Resolved here, not left to the client: with a custom base URL (GOOGLE_VERTEX_BASE_URL) the
        # client only builds project/location paths when both are passed explicitly.
        project = self.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        kwargs.update(vertexai=True, project=project, location=self._location() or "global")
        kwargs.pop("api_key", None)
        creds = self.credentials
        if creds is None and self.credentials_factory is not None:
            creds = self.credentials = self.credentials_factory()
        if creds is not None:
            kwargs["credentials"] = creds
        return kwargs


__all__ = ["GeminiBackend", "VertexGeminiBackend"]
