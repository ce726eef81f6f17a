"""One error tree for the whole SDK.

Every exception the gateway raises on purpose derives from :class:`GatewayError` and carries the CLI
exit code that the DESIGN contract assigns to it, so the CLI maps errors to exit codes by attribute,
never by a chain of ``isinstance`` checks::

    GatewayError                      1  unexpected / internal
    ├── UsageError                    2  bad arguments, request values or configuration
    │   ├── InvalidRequestError          the ImageRequest/Context failed validation
    │   └── ConfigError                  a YAML file is wrong; message starts ``FILE:LINE:``
    ├── PolicyDenied                  3  a policy rule denied the request (``rule_ids``)
    ├── BudgetExceeded                4  reserving the estimate would overspend a budget
    │   └── RateLimitExceeded            a request-count limit for the scope is used up
    ├── ProvidersFailed               5  every eligible route failed after retries and fallback
    │   └── NoEligibleRoute              policy/capabilities left no route to try
    ├── BackendError                  5  one backend call failed (raised inside routes, wrapped above)
    │   ├── AuthenticationError          credentials missing or refused (not retryable)
    │   ├── RateLimited                  throttled; ``retry_after`` seconds when the provider said
    │   ├── InvalidBackendRequest        the provider refused the input (not retryable)
    │   ├── ContentFiltered              provider-side moderation blocked the prompt or output
    │   ├── BackendTimeout               no final answer within the deadline
    │   │   └── ReservationExhausted         a time-billed run used the time its reservation pays for
    │   ├── BackendUnavailable           5xx, connection refused/reset
    │   └── BadResponse                  the provider answered something we cannot use
    ├── AuditWriteError               1  the audit record could not be written: fail closed
    └── VerificationFailed            6  ``gateway verify`` / ``gateway audit verify`` found a problem

Messages never contain secrets: backends build them from status codes and provider error texts, and
the redaction test plants tokens to prove it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error the SDK raises on purpose."""

    exit_code: ClassVar[int] = 1


class UsageError(GatewayError):
    """The caller asked for something invalid: fix the input, retrying will not help."""

    exit_code = 2


class InvalidRequestError(UsageError):
    """An ImageRequest or Context value is out of range or malformed."""


class ConfigError(UsageError):
    """A configuration or policy file is invalid.

    ``str(err)`` starts with ``FILE:LINE:`` so editors and CI annotate the right place.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        prefix = ""
        if file is not None:
            prefix = f"{file}:{line if line is not None else 1}: "
        super().__init__(prefix + message)


class PolicyDenied(GatewayError):
    """A policy rule denied the request before anything was spent."""

    exit_code = 3

    def __init__(self, message: str, *, rule_ids: Sequence[str], decision: Any = None) -> None:
        self.rule_ids = tuple(rule_ids)
        self.decision = decision
        super().__init__(message)


class BudgetExceeded(GatewayError):
    """Reserving the request's estimate would take a budget over its limit; nothing was spent."""

    exit_code = 4

    def __init__(self, message: str, *, budget_ids: Sequence[str] = ()) -> None:
        self.budget_ids = tuple(budget_ids)
        super().__init__(message)


class RateLimitExceeded(BudgetExceeded):
    """A request-count limit (``RateLimit``) for the scope is used up for the current window.

    A subclass of :class:`BudgetExceeded` so callers that stop on budgets stop on it too (exit code 4);
    ``retry_after`` says in how many seconds the tightest exhausted window ends.
    """

    def __init__(
        self, message: str, *, budget_ids: Sequence[str] = (), retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, budget_ids=budget_ids)


class ProvidersFailed(GatewayError):
    """Every eligible route was tried (with retries and fallback) and none produced images."""

    exit_code = 5

    def __init__(self, message: str, *, attempts: Sequence[Any] = ()) -> None:
        self.attempts = tuple(attempts)
        super().__init__(message)


class NoEligibleRoute(ProvidersFailed):
    """No catalogued route satisfies the request's capabilities and the policy's constraints."""


class BackendError(GatewayError):
    """One backend call failed. ``retryable`` says whether sending the same call again is safe."""

    exit_code = 5
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        super().__init__(message)


class AuthenticationError(BackendError):
    """Credentials are missing or were refused."""


class RateLimited(BackendError):
    """The provider throttled the call; the call was not accepted, so it may be sent again."""

    retryable = True

    def __init__(
        self, message: str, *, provider: str = "", status: int | None = 429, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, status=status)


class InvalidBackendRequest(BackendError):
    """The provider refused the input as invalid."""


class ContentFiltered(BackendError):
    """Provider-side moderation blocked the prompt or the output."""


class BackendTimeout(BackendError):
    """No final answer within the deadline.

    Not retryable by default: a create that timed out may have started a billed prediction.
    """


class ReservationExhausted(BackendTimeout):
    """A time-billed run reached the billed seconds its reservation pays for and was stopped.

    The budget's hard stop, not a fault of the route: it does not count towards the circuit breaker.
    """


class BackendUnavailable(BackendError):
    """The provider is down or the connection failed before the call was accepted."""

    retryable = True


class BadResponse(BackendError):
    """The provider answered with something unusable (malformed JSON, truncated image)."""

    retryable = True


class AuditWriteError(GatewayError):
    """The audit record could not be written; the gateway fails closed and returns no images."""


class VerificationFailed(GatewayError):
    """A watermark, C2PA manifest or audit chain did not verify."""

    exit_code = 6


__all__ = [
    "AuditWriteError",
    "AuthenticationError",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BadResponse",
    "BudgetExceeded",
    "ConfigError",
    "ContentFiltered",
    "GatewayError",
    "InvalidBackendRequest",
    "InvalidRequestError",
    "NoEligibleRoute",
    "PolicyDenied",
    "ProvidersFailed",
    "RateLimitExceeded",
    "RateLimited",
    "ReservationExhausted",
    "UsageError",
    "VerificationFailed",
]
