"""The ledger interface, and the pure logic every store shares: time windows, scope matching, checks.

Why counters: a budget check must not scan history. Each store keeps one *counter* row per
``(period, window_start, scope, scope_value)`` holding spent, reserved and admitted-request totals for
that window. A reservation touches a handful of counter rows, so its cost does not grow with history,
and the counter rows are exactly what a database locks to make the check-and-reserve atomic.
Everything here is pure (no I/O, no clock reads) so both stores run the same rules and tests can check
them without a database.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BudgetExceeded, RateLimitExceeded
from ..types import Budget, Context, RateLimit
from .pricing import from_micros

if TYPE_CHECKING:
    from .idempotency import KeyClaim, KeyState

Period = Literal["minute", "hour", "day", "week", "month", "total"]
PERIODS: tuple[Period, ...] = ("minute", "hour", "day", "week", "month", "total")
SCOPES: tuple[str, ...] = ("org", "team", "project", "use_case", "user")
STATUSES: tuple[str, ...] = ("reserved", "settled", "released", "expired")
REPORT_DIMENSIONS: tuple[str, ...] = (
    "team",
    "project",
    "use_case",
    "user",
    "provider",
    "model",
    "route",
    "day",
)

US = 1_000_000
DAY_US = 86_400 * US
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FIXED_US: Mapping[str, int] = {"minute": 60 * US, "hour": 3_600 * US, "day": DAY_US, "week": 7 * DAY_US}

CounterKey = tuple[str, int, str, str]  # (period, window_start_us, scope, scope_value)


# --------------------------------------------------------------------------- time


def to_us(ts: dt.datetime) -> int:
    """Epoch microseconds of an aware datetime. Naive datetimes are refused: the ledger is UTC-only."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"ledger times must be timezone-aware (UTC), got naive {ts.isoformat()}")
    d = ts - EPOCH
    return (d.days * 86_400 + d.seconds) * US + d.microseconds


def from_us(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


def window_start_us(period: str, ts_us: int) -> int:
    """Start of the UTC window of ``period`` that contains ``ts_us`` (weeks start on Monday)."""
    if period == "total":
        return 0
    if period == "month":
        d = from_us(ts_us)
        return to_us(dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC))
    if period == "week":
        days = ts_us // DAY_US
        return (days - (days + 3) % 7) * DAY_US  # 1970-01-01 was a Thursday (weekday 3)
    size = _FIXED_US[period]
    return ts_us - ts_us % size


def window_end_us(period: str, start_us: int) -> int | None:
    """End (exclusive) of the window that starts at ``start_us``; None for ``total``."""
    if period == "total":
        return None
    if period == "month":
        d = from_us(start_us)
        nxt = dt.datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=dt.UTC)
        return to_us(nxt)
    return start_us + _FIXED_US[period]


def windows(ts_us: int) -> dict[str, int]:
    """Every period's window start for one instant: the counter windows a request at ``ts_us`` lands in."""
    return {"minute": ts_us - ts_us % _FIXED_US["minute"], "hour": ts_us - ts_us % _FIXED_US["hour"],
            **_day_windows(ts_us // DAY_US)}  # fmt: skip


@lru_cache(maxsize=64)
def _day_windows(day: int) -> dict[str, int]:
    """Day, week, month and total windows depend on the date only: computed once per date (hot path)."""
    return {p: window_start_us(p, day * DAY_US) for p in ("day", "week", "month", "total")}


# --------------------------------------------------------------------------- scopes


def context_fields(context: Context) -> dict[str, str]:
    return {
        "team": context.team,
        "project": context.project,
        "use_case": context.use_case,
        "user": context.user,
    }


def scope_matches(scope: str, scope_value: str, ctx: Mapping[str, str]) -> bool:
    """Does a budget/rate-limit scope cover a request? ``org`` covers all; others match a name or glob."""
    if scope == "org":
        return True
    value = ctx[scope]
    return value == scope_value or fnmatchcase(value, scope_value)


def normal_value(scope: str, scope_value: str) -> str:
    return "*" if scope == "org" else scope_value


def budget_key(b: Budget, now_us: int) -> CounterKey:
    return (b.period, window_start_us(b.period, now_us), b.scope, normal_value(b.scope, b.scope_value))


def rate_key(r: RateLimit, now_us: int) -> CounterKey:
    return (r.per, window_start_us(r.per, now_us), r.scope, normal_value(r.scope, r.scope_value))


def counter_covers(key: CounterKey, ctx: Mapping[str, str], ts_us: int) -> bool:
    """Does counter ``key`` account for a request of ``ctx`` admitted at ``ts_us``?"""
    period, start, scope, value = key
    return windows(ts_us)[period] == start and scope_matches(scope, value, ctx)


def _applies(scope: str, scope_value: str, ctx: Mapping[str, str]) -> bool:
    return scope in SCOPES and scope_matches(scope, scope_value, ctx)


def budgets_in_scope(budgets: Sequence[Budget], ctx: Mapping[str, str]) -> list[Budget]:
    return [b for b in budgets if _applies(b.scope, b.scope_value, ctx)]


def rate_limits_in_scope(limits: Sequence[RateLimit], ctx: Mapping[str, str]) -> list[RateLimit]:
    return [r for r in limits if _applies(r.scope, r.scope_value, ctx)]


@dataclass(frozen=True, slots=True)
class Usage:
    """One counter's figures: micro-dollars spent (settled/expired) and reserved, requests admitted."""

    spent: int = 0
    reserved: int = 0
    requests: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.spent + other.spent, self.reserved + other.reserved, self.requests + other.requests)


def contribution(status: str, estimated: int, actual: int | None) -> Usage:
    """What one request row adds to its counters: the estimate while reserved, the actual once final.

    An *expired* reservation (its process never came back) is charged at its estimate: the provider may
    well have billed it, and a hard stop must never assume it did not. A late settle or release fixes it.
    """
    if status == "reserved":
        return Usage(reserved=estimated)
    if status in ("settled", "expired"):
        return Usage(spent=actual or 0)
    return Usage()


def check(
    budgets: Sequence[Budget],
    rate_limits: Sequence[RateLimit],
    usage: Mapping[CounterKey, Usage],
    amount: int,
    now_us: int,
) -> tuple[list[str], list[str], float | None, list[str]]:
    """Check one reservation of ``amount`` micro-dollars against every budget and rate limit in scope.

    Returns (refusal reasons, refused limit ids, retry-after seconds for rate limits, warned budget ids).
    """
    reasons: list[str] = []
    refused: list[str] = []
    warned: list[str] = []
    retry_after: float | None = None
    for b in budgets:
        u = usage.get(budget_key(b, now_us), Usage())
        limit = int(b.limit_usd * US)
        after = u.spent + u.reserved + amount
        if after > limit:
            refused.append(b.id)
            reasons.append(
                f"budget {b.id!r} ({b.scope}={b.scope_value}, {b.period}): spent ${from_micros(u.spent)}"
                f" + reserved ${from_micros(u.reserved)} + this request ${from_micros(amount)}"
                f" > limit ${from_micros(limit)}"
            )
        elif limit and after >= b.warn_at * limit:
            warned.append(b.id)
    for r in rate_limits:
        key = rate_key(r, now_us)
        u = usage.get(key, Usage())
        if u.requests + 1 > r.requests:
            refused.append(r.id)
            reasons.append(
                f"rate limit {r.id!r} ({r.scope}={r.scope_value}): {r.requests} requests per {r.per}"
            )
            end = window_end_us(r.per, key[1])
            wait = (end - now_us) / US if end is not None else None
            if wait is not None:
                retry_after = wait if retry_after is None else max(retry_after, wait)
    return reasons, refused, retry_after, warned


def refusal(
    reasons: list[str], refused: list[str], retry_after: float | None, budgets: Sequence[Budget]
) -> BudgetExceeded:
    """The error for a refused reservation: a budget wins over a rate limit when both refuse."""
    budget_ids = {b.id for b in budgets}
    message = "refused before any backend call: " + "; ".join(reasons)
    if any(i in budget_ids for i in refused):
        return BudgetExceeded(message, budget_ids=refused)
    return RateLimitExceeded(message, budget_ids=refused, retry_after=retry_after)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Reservation:
    """A held estimate. Pass it back to :meth:`Ledger.settle` or :meth:`Ledger.release`."""

    request_id: str
    amount_usd: Decimal
    route_key: str
    context: Context
    reserved_at: dt.datetime
    expires_at: dt.datetime
    budget_ids: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # budgets at or past their warning threshold after this reservation


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where one budget stands in its current window."""

    budget: Budget
    window_start: dt.datetime | None  # None for a ``total`` budget
    window_end: dt.datetime | None
    spent_usd: Decimal
    reserved_usd: Decimal
    requests: int

    @property
    def remaining_usd(self) -> Decimal:
        """Negative when actual costs came in above their estimates and took the budget over."""
        return self.budget.limit_usd - self.spent_usd - self.reserved_usd

    @property
    def used_fraction(self) -> float:
        used = self.spent_usd + self.reserved_usd
        if self.budget.limit_usd <= 0:
            return 1.0 if used > 0 else 0.0
        return float(used / self.budget.limit_usd)

    @property
    def warn(self) -> bool:
        return self.used_fraction >= self.budget.warn_at

    @property
    def exhausted(self) -> bool:
        return self.remaining_usd <= 0

    def to_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "budget": b.id,
            "scope": b.scope,
            "scope_value": b.scope_value,
            "period": b.period,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "limit_usd": b.limit_usd,
            "spent_usd": self.spent_usd,
            "reserved_usd": self.reserved_usd,
            "remaining_usd": self.remaining_usd,
            "used_pct": round(self.used_fraction * 100, 2),
            "requests": self.requests,
            "warn": self.warn,
            "exhausted": self.exhausted,
        }


def status_of(b: Budget, usage: Usage, now_us: int) -> BudgetStatus:
    start = window_start_us(b.period, now_us)
    end = window_end_us(b.period, start)
    return BudgetStatus(
        budget=b,
        window_start=None if b.period == "total" else from_us(start),
        window_end=None if end is None else from_us(end),
        spent_usd=from_micros(usage.spent),
        reserved_usd=from_micros(usage.reserved),
        requests=usage.requests,
    )


@dataclass(frozen=True, slots=True)
class CounterDrift:
    """A counter that disagrees with the request rows it summarises (found by :meth:`Ledger.verify`)."""

    key: CounterKey
    stored: Usage
    recomputed: Usage


@dataclass
class _Plan:
    """Per-counter deltas a transaction will apply (kept sorted so row locks are taken in one order)."""

    deltas: dict[CounterKey, Usage] = field(default_factory=dict)

    def add(self, key: CounterKey, u: Usage) -> None:
        self.deltas[key] = self.deltas.get(key, Usage()) + u


# --------------------------------------------------------------------------- interface


class Ledger(abc.ABC):
    """Where money is reserved, settled and reported. SQLite and PostgreSQL implement it identically.

    Every method that takes ``now`` uses it instead of reading the clock, so callers (and tests) own
    time. All figures are integer micro-dollars inside, ``Decimal`` outside.
    """

    blocking_io: bool = False  # True: the async client must call this ledger from a worker thread
    url: str = ""

    @abc.abstractmethod
    def reserve(
        self,
        *,
        request_id: str,
        context: Context,
        budgets: Sequence[Budget],
        rate_limits: Sequence[RateLimit],
        amount_usd: Decimal,
        route_key: str,
        now: dt.datetime,
        lease_s: float = 900.0,
        claim: KeyClaim | None = None,
    ) -> Reservation:
        """Hold ``amount_usd`` against every budget and rate limit in scope, atomically, or raise.

        Raises :class:`~gateway.errors.BudgetExceeded` (or its subclass ``RateLimitExceeded``) and holds
        nothing when any of them would go over. Expired leases are reclaimed first. Reserving the same
        ``request_id`` twice returns the first reservation, so a retried call cannot double-count.
        With ``claim``, the idempotency key is claimed in the same transaction; if another request
        holds it, :class:`~gateway.ledger.idempotency.KeyTaken` is raised and nothing is reserved.
        """

    @abc.abstractmethod
    def settle(
        self,
        reservation: Reservation,
        *,
        actual_usd: Decimal,
        provider: str,
        model: str,
        images: int,
        latency_s: float,
        now: dt.datetime,
        billed_seconds: float | None = None,
        tokens: Mapping[str, int] | None = None,
    ) -> None:
        """Replace the reservation with the actual spend (idempotent for the same amount).

        ``tokens`` holds the provider's counts (``input_text_tokens``, ``input_image_tokens``,
        ``output_image_tokens``, ``output_text_tokens``) for token-priced routes.
        """

    @abc.abstractmethod
    def release(self, reservation: Reservation, *, reason: str, now: dt.datetime) -> None:
        """Give the reservation back: the call failed or was cancelled before anything was billed."""

    @abc.abstractmethod
    def reconcile(self, now: dt.datetime) -> int:
        """Expire reservations whose lease ran out (charged at their estimate); return how many."""

    @abc.abstractmethod
    def budget_status(self, budgets: Sequence[Budget], now: dt.datetime) -> list[BudgetStatus]:
        """Spent, reserved and remaining for each budget in its window containing ``now``."""

    @abc.abstractmethod
    def expected_seconds(self, route_key: str) -> float | None:
        """A conservative (90th percentile) billed duration for ``route_key``, None without history.

        Only settled calls that returned images count (a timeout settled at its estimate says nothing
        about how long a call takes); ``billed_seconds`` is preferred over wall-clock latency.
        """

    @abc.abstractmethod
    def report(
        self, *, by: Sequence[str], since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """Spend grouped by :data:`REPORT_DIMENSIONS`: counts, money, estimate error, refusals."""

    @abc.abstractmethod
    def recorded_budgets(self) -> list[Budget]:
        """The budgets this ledger has enforced (as last seen), so reports need no policy file."""

    @abc.abstractmethod
    def verify(self) -> list[CounterDrift]:
        """Recompute every counter from the request rows; an empty list means the books balance."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close connections. The ledger must not be used afterwards."""

    # Idempotency keys (gateway/ledger/idempotency.py); the SQL stores implement them.
    def key_state(self, team: str, key: str) -> KeyState | None:
        raise NotImplementedError(f"{type(self).__name__} does not support idempotency keys")

    def claim_key(self, claim: KeyClaim, now: dt.datetime) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support idempotency keys")

    def complete_key(self, claim: KeyClaim, result: Mapping[str, Any], now: dt.datetime) -> bool:
        raise NotImplementedError(f"{type(self).__name__} does not support idempotency keys")

    def abandon_key(self, claim: KeyClaim) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support idempotency keys")

    def count_replay(self, team: str, key: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support idempotency keys")

    def prune_keys(self, now: dt.datetime) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not support idempotency keys")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
