"""The transport layer under the official ``replicate`` client, and error mapping.

``GatewayReplicateClient`` keeps the client's request building and response parsing but sends through
httpx clients the backend owns: no hidden retrying transport, every request's timeouts capped by the
call's deadline (:data:`DEADLINE`, a context variable set per call), and HTTP errors raised with their
headers (``Retry-After``) intact. :func:`map_error` turns whatever was raised into the gateway's error
tree, knowing which phase failed: an unknown outcome on ``create`` may mean a billed prediction.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx
from replicate.client import Client as ReplicateClient

from ..errors import (
    AuthenticationError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadResponse,
    ContentFiltered,
    InvalidBackendRequest,
    RateLimited,
)
from ._replicate_inputs import PROVIDER
from ._wire import parse_retry_after, redact, retry_after_from_text

Phase = Literal["create", "poll", "cancel"]
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("replicate_deadline", default=None)

# Error texts that mean provider-side moderation (FLUX's safety checker says "NSFW content detected").
FILTER_PATTERN = re.compile(
    r"nsfw|safety checker|content (?:policy|filter|moderation)|flagged as sensitive", re.I
)
_NOT_DELIVERED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError)


class HTTPStatusError(Exception):
    """A 4xx/5xx from the API with what error mapping needs (``ReplicateError`` loses the headers)."""

    def __init__(self, status: int, title: str, detail: str, retry_after: float | None) -> None:
        super().__init__(status, title, detail)
        self.status, self.title, self.detail, self.retry_after = status, title, detail, retry_after

    @classmethod
    def of(cls, resp: httpx.Response) -> HTTPStatusError:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        detail = str(body.get("detail") or "")
        retry_after = parse_retry_after(resp.headers.get("retry-after")) or retry_after_from_text(detail)
        return cls(resp.status_code, str(body.get("title") or ""), detail, retry_after)


def bounded(requested: object, default: httpx.Timeout) -> httpx.Timeout:
    """The request's timeouts, each capped by what is left of the call's deadline."""
    base = requested if isinstance(requested, httpx.Timeout) else default
    deadline = DEADLINE.get()
    if deadline is None:
        return base
    left = max(deadline - time.monotonic(), 0.001)

    def cap(v: float | None) -> float:
        return left if v is None else min(v, left)

    return httpx.Timeout(
        connect=cap(base.connect), read=cap(base.read), write=cap(base.write), pool=cap(base.pool)
    )


class GatewayReplicateClient(ReplicateClient):
    """The official client on httpx clients we supply: no hidden retries, deadline-capped timeouts."""

    def __init__(
        self, base_url: str, sync: Callable[[], httpx.Client], async_: Callable[[], httpx.AsyncClient]
    ) -> None:
        super().__init__(api_token=None, base_url=base_url)
        self._sync, self._async = sync, async_

    @property
    def _client(self) -> httpx.Client:
        return self._sync()

    @property
    def _async_client(self) -> httpx.AsyncClient:
        return self._async()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        http = self._client
        kwargs["timeout"] = bounded(kwargs.get("timeout"), http.timeout)
        resp = http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise HTTPStatusError.of(resp)
        return resp

    async def _async_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        http = self._async_client
        kwargs["timeout"] = bounded(kwargs.get("timeout"), http.timeout)
        resp = await http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise HTTPStatusError.of(resp)
        return resp


def map_error(exc: BaseException, phase: Phase, secrets: Sequence[str | None]) -> BackendError:
    """Map anything the client or httpx raised into the gateway's error tree, secrets removed."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, HTTPStatusError):
        return status_error(exc, phase, secrets)
    if isinstance(exc, _NOT_DELIVERED):
        text = redact(f"{type(exc).__name__}: {exc}", secrets)
        return BackendUnavailable(f"Replicate {phase}: request not delivered ({text})", provider=PROVIDER)
    if phase == "create" and isinstance(exc, httpx.HTTPError | ValueError):
        what = (
            "timed out"
            if isinstance(exc, httpx.TimeoutException)
            else f"lost its answer ({type(exc).__name__})"
        )
        return BackendTimeout(
            f"Replicate create {what} after it was sent; the prediction may have started and is not re-sent",
            provider=PROVIDER,
        )
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"Replicate {phase} timed out", provider=PROVIDER)
    if isinstance(exc, httpx.HTTPError):
        text = redact(f"{type(exc).__name__}: {exc}", secrets)
        return BackendUnavailable(f"Replicate {phase} failed: {text}", provider=PROVIDER)
    if isinstance(exc, ValueError):
        return BadResponse(
            f"Replicate {phase}: unreadable response ({type(exc).__name__})", provider=PROVIDER
        )
    return BadResponse(f"Replicate {phase}: {type(exc).__name__}", provider=PROVIDER)


def status_error(exc: HTTPStatusError, phase: Phase, secrets: Sequence[str | None]) -> BackendError:
    status = exc.status
    text = redact(": ".join(p for p in (exc.title, exc.detail) if p) or "no detail", secrets)
    msg = f"Replicate {phase} HTTP {status}: {text}"
    if status == 429:
        return RateLimited(msg, provider=PROVIDER, status=status, retry_after=exc.retry_after)
    if status in (401, 402, 403):
        return AuthenticationError(msg, provider=PROVIDER, status=status)
    if status >= 500:
        if phase == "create" and status in (502, 504):  # a proxy gave up; the origin may have accepted it
            return BackendTimeout(
                msg + " (the prediction may have started; not re-sent)", provider=PROVIDER, status=status
            )
        return BackendUnavailable(msg, provider=PROVIDER, status=status)
    if FILTER_PATTERN.search(text):
        return ContentFiltered(msg, provider=PROVIDER, status=status)
    return InvalidBackendRequest(msg, provider=PROVIDER, status=status)


__all__ = ["DEADLINE", "FILTER_PATTERN", "GatewayReplicateClient", "HTTPStatusError", "bounded", "map_error"]
