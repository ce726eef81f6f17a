"""Every failure as OpenAI's error envelope, from ONE handler.

``{"error": {"message", "type", "param", "code"}}`` with the status a stock ``openai`` client acts on
correctly: it retries 408/409/429/5xx unless ``x-should-retry: false`` says retrying cannot help, and
waits ``retry-after`` seconds when told. So a budget refusal (429) carries ``x-should-retry: false``
(the client must not ask again and be refused again), a rate window carries ``retry-after``.

The table maps an error *class* to its reply and is looked up along the exception's MRO (no
``isinstance`` chain). Messages come from the gateway's own error texts where those are meant for
callers (policy reasons with rule ids, validation messages, budget figures); where a message would
expose internals (routes, provider answers, stack traces) the reply is generic and the details stay
in the audit record and the log, found by the request id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import (
    AuditWriteError,
    BackendError,
    BudgetExceeded,
    ConfigError,
    ContentFiltered,
    GatewayError,
    InvalidBackendRequest,
    InvalidRequestError,
    NoEligibleRoute,
    PolicyDenied,
    ProvidersFailed,
    RateLimitExceeded,
    UsageError,
)

_log = logging.getLogger("gateway.server")


class ServerError(GatewayError):
    """An HTTP-level refusal (before the gateway is asked): carries its status and OpenAI code."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        self.param = param
        if code is not None:
            self.code = code
        super().__init__(message)


class InvalidApiKey(ServerError):
    status, code = 401, "invalid_api_key"


class KeyNotAllowed(ServerError):
    """The key is valid but may not use this model / use case."""

    status, type, code = 403, "permission_denied", "model_not_allowed"


class BadRequest(ServerError):
    """The body could not be read (not JSON, missing fields, bad multipart)."""


class NotAvailable(ServerError):
    """A capability this build of the gateway does not offer (retrying cannot help)."""

    status, type, code = 501, "invalid_request_error", "not_implemented"


@dataclass(frozen=True)
class Reply:
    status: int
    type: str
    code: str | None
    message: Callable[[BaseException], str] | None = None  # None: the exception's own text
    retry: bool | None = None  # x-should-retry; None = let the client decide by status


def _generic(text: str) -> Callable[[BaseException], str]:
    return lambda _exc: text


def _denied(exc: BaseException) -> str:
    ids = getattr(exc, "rule_ids", ())
    return f"{exc} (rule ids: {', '.join(ids)})" if ids else str(exc)


def _failed(exc: BaseException) -> str:
    attempts = getattr(exc, "attempts", ())
    kinds = sorted({a.outcome for a in attempts})
    detail = f" ({len(attempts)} attempt(s): {', '.join(kinds)})" if kinds else ""
    return "every eligible provider route failed" + detail


# Most specific classes first only for readability: lookup walks the MRO.
REPLIES: dict[type[BaseException], Reply] = {
    PolicyDenied: Reply(400, "invalid_request_error", "content_policy_violation", _denied, retry=False),
    ContentFiltered: Reply(
        400,
        "invalid_request_error",
        "content_policy_violation",
        _generic("the provider's moderation blocked this request"),
        retry=False,
    ),
    InvalidRequestError: Reply(400, "invalid_request_error", "invalid_value", retry=False),
    InvalidBackendRequest: Reply(
        400, "invalid_request_error", "invalid_value", _generic("the provider refused the input"), False
    ),
    ConfigError: Reply(500, "server_error", "server_misconfigured", _generic("the gateway is misconfigured")),
    UsageError: Reply(400, "invalid_request_error", "invalid_value", retry=False),
    RateLimitExceeded: Reply(429, "requests", "rate_limit_exceeded"),
    BudgetExceeded: Reply(429, "insufficient_quota", "budget_exceeded", retry=False),
    NoEligibleRoute: Reply(
        503, "server_error", "no_eligible_route", _generic("no provider route can serve this request"), False
    ),
    ProvidersFailed: Reply(502, "server_error", "providers_failed", _failed),
    BackendError: Reply(502, "server_error", "providers_failed", _generic("the provider call failed")),
    AuditWriteError: Reply(
        503,
        "server_error",
        "audit_unavailable",
        _generic("the audit log is unavailable; nothing was returned"),
    ),
}
_INTERNAL = Reply(500, "server_error", None, _generic("internal error"), retry=False)


def reply_for(exc: BaseException) -> Reply:
    if isinstance(exc, ServerError):
        return Reply(exc.status, exc.type, exc.code, retry=False)
    for cls in type(exc).__mro__:
        found = REPLIES.get(cls)
        if found is not None:
            return found
    return _INTERNAL


def error_response(exc: BaseException, headers: dict[str, str] | None = None) -> JSONResponse:
    """The envelope and headers for ``exc`` (any exception: unknown ones are a generic 500)."""
    out = dict(headers or {})
    if isinstance(exc, HTTPException):
        message = str(exc.detail) if exc.detail else "error"
        http = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        out.update(exc.headers or {})
        return JSONResponse({"error": http}, exc.status_code, headers=out)
    r = reply_for(exc)
    if r is _INTERNAL:
        _log.error("server: unexpected %s", type(exc).__name__, exc_info=exc)
    message = r.message(exc) if r.message is not None else str(exc)
    body: dict[str, Any] = {
        "message": message,
        "type": r.type,
        "param": getattr(exc, "param", None),
        "code": r.code,
    }
    if isinstance(exc, PolicyDenied):
        body["rule_ids"] = list(exc.rule_ids)
    if isinstance(exc, BudgetExceeded):
        body["limit_ids"] = list(exc.budget_ids)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimitExceeded) and retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(retry_after)))
    if r.retry is not None:
        out["x-should-retry"] = "true" if r.retry else "false"
    return JSONResponse({"error": body}, r.status, headers=out)


async def handle(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler the app registers (for every exception class)."""
    from .app import response_headers

    return error_response(exc, response_headers(request))


__all__ = [
    "REPLIES",
    "BadRequest",
    "InvalidApiKey",
    "KeyNotAllowed",
    "NotAvailable",
    "ServerError",
    "error_response",
    "handle",
    "reply_for",
]
