"""RetryPolicy: only retryable errors, Retry-After honoured up to a cap, injected sleep, typed re-raise."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.backends._wire import parse_retry_after, retry_after_from_text
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
from gateway.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy


class Script:
    """A callable that raises the scripted errors in order, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def acall(self) -> str:
        return self()


def test_retryable_errors_are_retried_until_success() -> None:
    sleeps: list[float] = []
    seen: list[tuple[str, int]] = []
    fn = Script(BackendUnavailable("503"), BadResponse("truncated"))
    out = RetryPolicy(max_attempts=3, jitter=False).run(
        fn, sleep=sleeps.append, on_retry=lambda e, n: seen.append((type(e).__name__, n))
    )
    assert out == "ok"
    assert fn.calls == 3
    assert seen == [("BackendUnavailable", 1), ("BadResponse", 2)]
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize(
    "error",
    [
        BackendTimeout("create may have started a billed prediction"),
        AuthenticationError("bad token"),
        InvalidBackendRequest("bad size"),
        ContentFiltered("blocked"),
    ],
)
def test_non_retryable_errors_raise_at_once(error: BackendError) -> None:
    sleeps: list[float] = []
    fn = Script(error)
    with pytest.raises(type(error)) as info:
        DEFAULT_RETRY.run(fn, sleep=sleeps.append)
    assert info.value is error
    assert fn.calls == 1
    assert sleeps == []


def test_foreign_exceptions_are_not_retried() -> None:
    fn = Script(KeyError("a bug"))
    with pytest.raises(KeyError):
        DEFAULT_RETRY.run(fn, sleep=lambda _s: None)
    assert fn.calls == 1


def test_gives_up_after_max_attempts_with_the_typed_error() -> None:
    fn = Script(*[BackendUnavailable(f"down {i}") for i in range(5)])
    with pytest.raises(BackendUnavailable, match="down 2"):
        RetryPolicy(max_attempts=3).run(fn, sleep=lambda _s: None)
    assert fn.calls == 3


def test_rate_limited_waits_what_the_provider_asked() -> None:
    sleeps: list[float] = []
    fn = Script(RateLimited("429", retry_after=7.0), RateLimited("429", retry_after=3.5))
    assert RetryPolicy(max_attempts=3, max_retry_after_s=10).run(fn, sleep=sleeps.append) == "ok"
    assert sleeps == [7.0, 3.5]


def test_rate_limited_without_retry_after_uses_backoff() -> None:
    sleeps: list[float] = []
    fn = Script(RateLimited("429"))
    RetryPolicy(max_attempts=2, base_backoff_s=0.25, jitter=False).run(fn, sleep=sleeps.append)
    assert sleeps == [0.25]


def test_retry_after_over_the_cap_stops_instead_of_waiting() -> None:
    sleeps: list[float] = []
    fn = Script(RateLimited("429", retry_after=60.0))
    with pytest.raises(RateLimited) as info:
        RetryPolicy(max_attempts=5, max_retry_after_s=20).run(fn, sleep=sleeps.append)
    assert info.value.retry_after == 60.0
    assert fn.calls == 1
    assert sleeps == []


def test_backoff_is_exponential_and_capped() -> None:
    sleeps: list[float] = []
    fn = Script(*[BackendUnavailable("x") for _ in range(6)])
    RetryPolicy(max_attempts=7, base_backoff_s=1, max_backoff_s=5, jitter=False).run(fn, sleep=sleeps.append)
    assert sleeps == [1, 2, 4, 5, 5, 5]


def test_jittered_backoff_stays_within_bounds() -> None:
    sleeps: list[float] = []
    fn = Script(*[BackendUnavailable("x") for _ in range(9)])
    RetryPolicy(max_attempts=10, base_backoff_s=0.5, max_backoff_s=2).run(fn, sleep=sleeps.append)
    assert len(sleeps) == 9
    assert all(0 <= s <= 2 for s in sleeps)


def test_max_elapsed_stops_early() -> None:
    fn = Script(BackendUnavailable("x"), BackendUnavailable("y"))
    with pytest.raises(BackendUnavailable, match="x"):
        RetryPolicy(max_attempts=5, max_elapsed_s=0).run(fn, sleep=lambda _s: None)
    assert fn.calls == 1


def test_no_retry_policy_calls_once() -> None:
    fn = Script(BackendUnavailable("x"))
    with pytest.raises(BackendUnavailable):
        NO_RETRY.run(fn, sleep=lambda _s: None)
    assert fn.calls == 1


def test_policies_are_values() -> None:
    assert RetryPolicy() == DEFAULT_RETRY
    assert hash(RetryPolicy(max_attempts=2)) == hash(RetryPolicy(max_attempts=2))
    with pytest.raises(AttributeError):
        DEFAULT_RETRY.max_attempts = 9  # type: ignore[misc]
    for bad in ({"max_attempts": 0}, {"base_backoff_s": 2, "max_backoff_s": 1}, {"max_retry_after_s": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]


def test_async_run_retries_with_injected_async_sleep() -> None:
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)

    fn = Script(RateLimited("429", retry_after=2), BackendUnavailable("503"))
    seen: list[int] = []
    out = asyncio.run(
        RetryPolicy(max_attempts=3, jitter=False).arun(
            fn.acall, sleep=fake_sleep, on_retry=lambda _e, n: seen.append(n)
        )
    )
    assert out == "ok"
    assert sleeps == [2, 1.0]
    assert seen == [1, 2]


def test_async_run_reraises_non_retryable() -> None:
    fn = Script(BackendTimeout("maybe billed"))

    async def fake_sleep(_s: float) -> None:
        raise AssertionError("must not sleep")

    with pytest.raises(BackendTimeout):
        asyncio.run(DEFAULT_RETRY.arun(fn.acall, sleep=fake_sleep))
    assert fn.calls == 1


_ERRORS = st.sampled_from(
    [BackendUnavailable, BadResponse, RateLimited, BackendTimeout, InvalidBackendRequest, ContentFiltered]
)


@given(errors=st.lists(_ERRORS, max_size=8), max_attempts=st.integers(1, 6))
def test_calls_never_exceed_attempts_and_stop_at_the_first_final_error(
    errors: list[type[BackendError]], max_attempts: int
) -> None:
    fn = Script(*[cls("x") for cls in errors])
    raised: BackendError | None = None
    try:
        RetryPolicy(max_attempts=max_attempts).run(fn, sleep=lambda _s: None)
    except BackendError as exc:
        raised = exc
    if raised is not None:  # a retryable error only escapes when the attempts ran out
        assert not raised.retryable or fn.calls == max_attempts
    first_final = next((i for i, cls in enumerate(errors) if not cls.retryable), None)
    expected = min(len(errors) + 1, max_attempts)
    if first_final is not None:
        expected = min(expected, first_final + 1)
    assert fn.calls == expected


# --------------------------------------------------------------------------- Retry-After parsing


def test_parse_retry_after_forms() -> None:
    now = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 25 Nov 2026 12:00:10 GMT", now=now) == 10.0
    assert parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


def test_retry_after_from_replicate_throttle_text() -> None:
    assert retry_after_from_text("Request was throttled. Your rate limit resets in ~30s.") == 30.0
    assert retry_after_from_text("nothing here") is None
