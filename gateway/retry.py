"""Retry rules as values: what to retry, how long to wait, when to stop.

A :class:`RetryPolicy` is a frozen value that composes tenacity's ``stop`` and ``wait`` objects, so a
rule is data that can sit in configuration, be compared in tests, and be shared by the sync and async
paths. Three decisions are fixed here, because getting them wrong costs money:

* Only errors whose ``retryable`` attribute is True are retried. The backends decide that flag from
  what they know about the call: a throttled create was never accepted (safe to send again), a create
  that timed out after it was sent may have started a billed prediction (never re-sent blindly).
* ``RateLimited.retry_after`` replaces the backoff, up to ``max_retry_after_s``. A provider that asks
  for a longer pause than the cap is not waited for at all: the policy stops so the caller can fall
  back to another route at once, instead of sleeping and being throttled again.
* ``sleep`` is injected, so tests never sleep for real and a caller can make waits cancellable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

T = TypeVar("T")
OnRetry = Callable[[BaseException, int], None]


def is_retryable(exc: BaseException) -> bool:
    """True for gateway errors that say a resend is safe (``retryable``); False for everything else."""
    return bool(getattr(exc, "retryable", False))


def retry_after_of(exc: BaseException | None) -> float | None:
    """The pause the provider asked for (``RateLimited.retry_after``), if any."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    return None


def _last_exception(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()


class wait_retry_after(wait_base):  # noqa: N801 - tenacity's naming convention for strategies
    """Wait what the provider asked for (capped); otherwise defer to ``fallback``."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self.fallback = fallback
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        asked = retry_after_of(_last_exception(retry_state))
        if asked is not None:
            return min(asked, self.cap_s)
        return float(self.fallback(retry_state))


class stop_retry_after_over(stop_base):  # noqa: N801
    """Stop when the provider asks for a pause longer than ``cap_s`` (fall back instead of waiting)."""

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        asked = retry_after_of(_last_exception(retry_state))
        return asked is not None and asked > self.cap_s


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to try one call and how long to wait between tries.

    ``max_attempts`` counts the first try (1 = never retry). Backoff is exponential from
    ``base_backoff_s`` up to ``max_backoff_s`` with full jitter (``jitter=False`` makes it
    deterministic). ``max_elapsed_s`` optionally bounds the total time spent including waits.
    """

    max_attempts: int = 3
    base_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 20.0
    max_elapsed_s: float | None = None
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_backoff_s < 0 or self.max_backoff_s < self.base_backoff_s:
            raise ValueError("need 0 <= base_backoff_s <= max_backoff_s")
        if self.max_retry_after_s < 0:
            raise ValueError("max_retry_after_s must not be negative")

    # ------------------------------------------------------------------ composition

    @property
    def stop(self) -> stop_base:
        rule: stop_base = stop_after_attempt(self.max_attempts) | stop_retry_after_over(
            self.max_retry_after_s
        )
        if self.max_elapsed_s is not None:
            rule = rule | stop_after_delay(self.max_elapsed_s)
        return rule

    @property
    def wait(self) -> wait_base:
        backoff: wait_base
        if self.jitter:
            backoff = wait_random_exponential(multiplier=self.base_backoff_s, max=self.max_backoff_s)
        else:
            backoff = wait_exponential(multiplier=self.base_backoff_s, min=0, max=self.max_backoff_s)
        return wait_retry_after(backoff, self.max_retry_after_s)

    def _before_sleep(self, on_retry: OnRetry | None) -> Callable[[RetryCallState], None] | None:
        if on_retry is None:
            return None

        def hook(state: RetryCallState) -> None:
            exc = _last_exception(state)
            if exc is not None:
                on_retry(exc, state.attempt_number)

        return hook

    # ------------------------------------------------------------------ running

    def run(
        self,
        fn: Callable[[], T],
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: OnRetry | None = None,
    ) -> T:
        """Call ``fn`` until it returns, raises a non-retryable error, or the policy stops.

        The last error is re-raised as itself (never wrapped), so callers see the typed error.
        ``on_retry(exc, attempt_number)`` runs before each wait.
        """
        retrying = Retrying(
            stop=self.stop,
            wait=self.wait,
            retry=retry_if_exception(is_retryable),
            sleep=sleep,
            before_sleep=self._before_sleep(on_retry),
            reraise=True,
        )
        return retrying(fn)

    async def arun(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: OnRetry | None = None,
    ) -> T:
        """The async twin of :meth:`run`; ``fn`` is called afresh for every attempt."""
        retrying = AsyncRetrying(
            stop=self.stop,
            wait=self.wait,
            retry=retry_if_exception(is_retryable),
            sleep=sleep,
            before_sleep=self._before_sleep(on_retry),
            reraise=True,
        )

        async def attempt() -> T:
            return await fn()

        return await retrying(attempt)


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_RETRY = RetryPolicy()

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "RetryPolicy",
    "is_retryable",
    "retry_after_of",
    "stop_retry_after_over",
    "wait_retry_after",
]
