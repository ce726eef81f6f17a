"""The ledger contract, run against both stores (SQLite file and the real PostgreSQL server)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_support import STORES, fresh_ledger_url

from gateway.errors import BudgetExceeded, ConfigError, GatewayError, RateLimitExceeded
from gateway.ledger import Ledger, Reservation, open_ledger
from gateway.types import Budget, Context, RateLimit

T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)  # a Monday
ROUTE = "replicate/black-forest-labs/flux-schnell"
ENG = Context(team="eng", project="atlas", use_case="marketing", user="ada")
OPS = Context(team="ops", project="borealis", use_case="support", user="bob")


@pytest.fixture(params=STORES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_ledger_url(request, tmp_path)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    store = open_ledger(ledger_url)
    yield store
    store.close()


def budget(
    bid: str, limit: str, scope: str = "team", value: str = "eng", period: str = "month", **kw: float
) -> Budget:
    return Budget(id=bid, scope=scope, scope_value=value, period=period, limit_usd=Decimal(limit), **kw)  # type: ignore[arg-type]


def reserve(
    store: Ledger,
    rid: str,
    amount: str,
    budgets: list[Budget],
    *,
    ctx: Context = ENG,
    now: dt.datetime = T0,
    rate_limits: list[RateLimit] | None = None,
    lease_s: float = 900.0,
) -> Reservation:
    return store.reserve(request_id=rid, context=ctx, budgets=budgets, rate_limits=rate_limits or [],
                         amount_usd=Decimal(amount), route_key=ROUTE, now=now, lease_s=lease_s)  # fmt: skip


def settle(store: Ledger, res: Reservation, actual: str, *, now: dt.datetime = T0, images: int = 1) -> None:
    store.settle(res, actual_usd=Decimal(actual), provider="replicate", model="flux-schnell",
                 images=images, latency_s=2.0, now=now)  # fmt: skip


def status(store: Ledger, b: Budget, now: dt.datetime = T0) -> tuple[Decimal, Decimal]:
    (s,) = store.budget_status([b], now)
    return s.spent_usd, s.reserved_usd


# ------------------------------------------------------------------ reserve: the hard stop


def test_reserve_up_to_the_limit_exactly_then_refuse(ledger: Ledger) -> None:
    b = budget("eng-month", "1.00")
    for i in range(4):
        reserve(ledger, f"r{i}", "0.25", [b])
    with pytest.raises(BudgetExceeded) as exc:
        reserve(ledger, "r4", "0.000001", [b])
    assert exc.value.budget_ids == ("eng-month",)
    assert exc.value.exit_code == 4
    assert "eng-month" in str(exc.value)
    assert "limit $1.000000" in str(exc.value)
    assert status(ledger, b) == (Decimal(0), Decimal("1.00"))


def test_every_budget_in_scope_is_checked_and_any_one_refuses(ledger: Ledger) -> None:
    team = budget("eng", "10")
    org = budget("org-day", "0.50", scope="org", value="*", period="day")
    other = budget("ops", "0.01", value="ops")  # out of scope: must not refuse an eng request
    reserve(ledger, "a", "0.40", [team, org, other])
    with pytest.raises(BudgetExceeded) as exc:
        reserve(ledger, "b", "0.20", [team, org, other])
    assert exc.value.budget_ids == ("org-day",)
    # the refused request held nothing anywhere
    assert status(ledger, team) == (Decimal(0), Decimal("0.40"))
    assert status(ledger, org) == (Decimal(0), Decimal("0.40"))
    assert status(ledger, other) == (Decimal(0), Decimal(0))


@pytest.mark.parametrize(
    ("scope", "value", "applies"),
    [("team", "e*", True), ("team", "ops", False), ("project", "atl?s", True),
     ("use_case", "marketing", True), ("user", "ada", True), ("user", "[bc]*", False), ("org", "*", True)],
)  # fmt: skip
def test_scope_globs(ledger: Ledger, scope: str, value: str, applies: bool) -> None:
    b = budget("b", "0.10", scope=scope, value=value)
    if applies:
        with pytest.raises(BudgetExceeded):
            reserve(ledger, "x", "0.11", [b])
    else:
        reserve(ledger, "x", "0.11", [b])


def test_refusal_is_recorded_and_reported_but_holds_nothing(ledger: Ledger) -> None:
    b = budget("eng", "0.05")
    with pytest.raises(BudgetExceeded):
        reserve(ledger, "big", "0.06", [b])
    (row,) = ledger.report(by=["team"])
    assert row["team"] == "eng"
    assert row["refused"] == 1
    assert row["requests"] == 0
    assert row["spent_usd"] == 0
    assert row["reserved_usd"] == 0
    assert ledger.verify() == []


def test_zero_cost_request_passes_a_full_budget_but_not_an_overspent_one(ledger: Ledger) -> None:
    b = budget("eng", "0.10")
    res = reserve(ledger, "a", "0.10", [b])
    reserve(ledger, "free", "0", [b])  # exactly at the limit: still allowed
    settle(ledger, res, "0.12")  # actual came in above the estimate: the budget is over
    with pytest.raises(BudgetExceeded):
        reserve(ledger, "free2", "0", [b])
    (s,) = ledger.budget_status([b], T0)
    assert s.remaining_usd == Decimal("-0.02")
    assert s.exhausted


def test_warnings_at_threshold(ledger: Ledger) -> None:
    b = budget("eng", "1.00", warn_at=0.5)
    assert reserve(ledger, "a", "0.40", [b]).warnings == ()
    assert reserve(ledger, "b", "0.10", [b]).warnings == ("eng",)
    (s,) = ledger.budget_status([b], T0)
    assert s.warn
    assert not s.exhausted
    assert s.used_fraction == 0.5


# ------------------------------------------------------------------ settle and release


def test_settle_replaces_the_reservation_with_the_actual_cost(ledger: Ledger) -> None:
    b = budget("eng", "1.00")
    res = reserve(ledger, "a", "0.60", [b])
    with pytest.raises(BudgetExceeded):
        reserve(ledger, "b", "0.50", [b])
    settle(ledger, res, "0.30")
    assert status(ledger, b) == (Decimal("0.30"), Decimal(0))
    reserve(ledger, "b", "0.50", [b])  # the unused estimate was given back


def test_release_gives_the_reservation_back(ledger: Ledger) -> None:
    b = budget("eng", "1.00")
    res = reserve(ledger, "a", "0.90", [b])
    ledger.release(res, reason="BackendUnavailable", now=T0)
    assert status(ledger, b) == (Decimal(0), Decimal(0))
    (row,) = ledger.report(by=[])
    assert row["released"] == 1
    assert row["spent_usd"] == 0


def test_settle_is_idempotent_and_final(ledger: Ledger) -> None:
    b = budget("eng", "1.00")
    res = reserve(ledger, "a", "0.50", [b])
    settle(ledger, res, "0.40")
    settle(ledger, res, "0.40")  # a retry after a lost acknowledgement: no double count
    ledger.release(res, reason="late cleanup", now=T0)  # release after settle: no-op
    assert status(ledger, b) == (Decimal("0.40"), Decimal(0))
    with pytest.raises(GatewayError, match="already settled"):
        settle(ledger, res, "0.45")


def test_reserve_same_request_id_twice_returns_the_first(ledger: Ledger) -> None:
    b = budget("eng", "1.00")
    first = reserve(ledger, "a", "0.50", [b])
    again = reserve(ledger, "a", "0.50", [b])
    assert again.request_id == first.request_id
    assert again.amount_usd == first.amount_usd
    assert status(ledger, b) == (Decimal(0), Decimal("0.50"))
    with pytest.raises(GatewayError, match="already used"):
        reserve(ledger, "a", "0.20", [b])


def test_unknown_reservation_is_an_error(ledger: Ledger) -> None:
    ghost = Reservation("nope", Decimal(1), ROUTE, ENG, T0, T0)
    with pytest.raises(GatewayError, match="no reservation 'nope'"):
        settle(ledger, ghost, "1")


def test_bad_inputs_are_refused_loudly(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        reserve(ledger, "a", "0.1", [], now=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="negative"):
        reserve(ledger, "a", "-0.1", [])
    with pytest.raises(ValueError, match="lease_s"):
        reserve(ledger, "a", "0.1", [], lease_s=0)


# ------------------------------------------------------------------ crashed processes


def test_expired_lease_is_reclaimed_charged_at_its_estimate(ledger: Ledger) -> None:
    b = budget("eng", "1.00")
    reserve(ledger, "crashed", "0.70", [b], lease_s=60)
    later = T0 + dt.timedelta(seconds=61)
    # the next reserve reclaims the lease first; the provider may have billed, so the estimate stays spent
    with pytest.raises(BudgetExceeded):
        reserve(ledger, "b", "0.40", [b], now=later)
    assert status(ledger, b, later) == (Decimal("0.70"), Decimal(0))
    assert ledger.reconcile(later) == 0  # already reclaimed
    assert ledger.verify() == []
    (row,) = ledger.report(by=[])
    assert row["expired"] == 1
    assert row["in_flight"] == 0


def test_reconcile_expires_and_a_late_settle_corrects_the_charge(ledger: Ledger) -> None:
    b = budget("eng", "1.00")
    slow = reserve(ledger, "slow", "0.70", [b], lease_s=60)
    dead = reserve(ledger, "dead", "0.20", [b], lease_s=600)
    assert ledger.reconcile(T0 + dt.timedelta(seconds=59)) == 0
    assert ledger.reconcile(T0 + dt.timedelta(seconds=60)) == 1
    settle(ledger, slow, "0.10", now=T0 + dt.timedelta(seconds=90))  # slow, not dead: real figure wins
    assert status(ledger, b) == (Decimal("0.10"), Decimal("0.20"))
    assert ledger.reconcile(T0 + dt.timedelta(hours=1)) == 1
    ledger.release(dead, reason="operator: never sent", now=T0 + dt.timedelta(hours=2))
    assert status(ledger, b) == (Decimal("0.10"), Decimal(0))
    assert ledger.verify() == []


# ------------------------------------------------------------------ periods and windows


def test_day_budget_resets_at_utc_midnight_month_does_not(ledger: Ledger) -> None:
    day = budget("d", "1.00", period="day")
    month = budget("m", "1.50", period="month")
    total = budget("t", "100", period="total")
    late = dt.datetime(2026, 3, 2, 23, 59, 59, tzinfo=dt.UTC)
    settle(ledger, reserve(ledger, "a", "1.00", [day, month, total], now=late), "1.00", now=late)
    nxt = late + dt.timedelta(seconds=1)
    with pytest.raises(BudgetExceeded) as exc:
        reserve(ledger, "b", "1.00", [day, month, total], now=nxt)
    assert exc.value.budget_ids == ("m",)  # the day budget is fresh, the month one is not
    reserve(ledger, "c", "0.50", [day, month, total], now=nxt)
    assert [s.spent_usd + s.reserved_usd for s in ledger.budget_status([day, month, total], nxt)] == [
        Decimal("0.50"), Decimal("1.50"), Decimal("1.50")]  # fmt: skip
    april = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    assert [s.spent_usd + s.reserved_usd for s in ledger.budget_status([day, month, total], april)] == [
        Decimal(0), Decimal(0), Decimal("1.50")]  # fmt: skip


def test_week_budget_runs_monday_to_monday(ledger: Ledger) -> None:
    week = budget("w", "1.00", period="week")
    sunday = dt.datetime(2026, 3, 8, 23, 0, tzinfo=dt.UTC)
    reserve(ledger, "a", "1.00", [week], now=T0)  # Monday 2 March
    with pytest.raises(BudgetExceeded):
        reserve(ledger, "b", "0.01", [week], now=sunday)
    reserve(ledger, "c", "1.00", [week], now=dt.datetime(2026, 3, 9, tzinfo=dt.UTC))
    (s,) = ledger.budget_status([week], sunday)
    assert s.window_start == T0.replace(hour=0)
    assert s.window_end == dt.datetime(2026, 3, 9, tzinfo=dt.UTC)


def test_a_budget_added_mid_period_sees_the_spend_already_made(ledger: Ledger) -> None:
    old = budget("eng-big", "100")
    for i in range(3):
        settle(ledger, reserve(ledger, f"r{i}", "0.30", [old]), "0.30")
    pending = reserve(ledger, "pending", "0.05", [old])
    new = budget("eng-tight", "1.00")  # the policy changed: this budget's counter starts from history
    assert status(ledger, new) == (Decimal("0.90"), Decimal("0.05"))
    with pytest.raises(BudgetExceeded) as exc:
        reserve(ledger, "r4", "0.10", [old, new])
    assert exc.value.budget_ids == ("eng-tight",)
    reserve(ledger, "r5", "0.05", [old, new])
    settle(ledger, pending, "0.01")  # settles into both counters, though it was reserved under one
    assert status(ledger, new) == (Decimal("0.91"), Decimal("0.05"))
    assert ledger.verify() == []


def test_processes_with_different_policies_keep_every_counter_right(ledger_url: str) -> None:
    a, b = open_ledger(ledger_url), open_ledger(ledger_url)
    try:
        team = budget("eng", "10")
        org = budget("org", "10", scope="org", value="*")
        r1 = reserve(a, "r1", "1.00", [team])  # host A knows the team budget only
        r2 = reserve(b, "r2", "2.00", [org])  # host B knows the org budget only
        settle(b, r1, "0.50")
        settle(a, r2, "1.50")
        # both requests are eng's: each counter holds both, whichever host created it and settled them
        assert status(a, team) == (Decimal("2.00"), Decimal(0))
        assert status(b, org) == (Decimal("2.00"), Decimal(0))
        assert a.verify() == []
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ rate limits


def test_rate_limit_per_minute(ledger: Ledger) -> None:
    rl = RateLimit(id="ada-rpm", scope="user", scope_value="ada", requests=2, per="minute")
    reserve(ledger, "a", "0", [], rate_limits=[rl])
    reserve(ledger, "b", "0", [], rate_limits=[rl], now=T0 + dt.timedelta(seconds=10))
    with pytest.raises(RateLimitExceeded) as exc:
        reserve(ledger, "c", "0", [], rate_limits=[rl], now=T0 + dt.timedelta(seconds=15))
    assert exc.value.exit_code == 4
    assert isinstance(exc.value, BudgetExceeded)
    assert exc.value.retry_after == pytest.approx(45.0)
    reserve(ledger, "c", "0", [], rate_limits=[rl], now=T0 + dt.timedelta(seconds=60))
    reserve(ledger, "d", "0", [], ctx=OPS, rate_limits=[rl], now=T0 + dt.timedelta(seconds=15))  # other user


def test_budget_refusal_wins_over_rate_limit(ledger: Ledger) -> None:
    rl = RateLimit(id="rl", scope="team", scope_value="eng", requests=1, per="hour")
    b = budget("eng", "0.10")
    reserve(ledger, "a", "0.10", [b], rate_limits=[rl])
    with pytest.raises(BudgetExceeded) as exc:
        reserve(ledger, "b", "0.10", [b], rate_limits=[rl])
    assert type(exc.value) is BudgetExceeded
    assert set(exc.value.budget_ids) == {"eng", "rl"}


# ------------------------------------------------------------------ history, reports, budgets


def test_expected_seconds_is_a_high_percentile_of_billed_time(ledger: Ledger) -> None:
    assert ledger.expected_seconds(ROUTE) is None
    for i in range(10):
        res = reserve(ledger, f"r{i}", "0.01", [])
        ledger.settle(res, actual_usd=Decimal("0.01"), provider="replicate", model="m", images=1,
                      latency_s=100.0, billed_seconds=float(i + 1), now=T0)  # fmt: skip
    timeout = reserve(ledger, "timeout", "0.01", [])  # billed at its estimate, no images: not history
    ledger.settle(timeout, actual_usd=Decimal("0.01"), provider="replicate", model="m", images=0,
                  latency_s=0.0, now=T0)  # fmt: skip
    assert ledger.expected_seconds(ROUTE) == 9.0
    assert ledger.expected_seconds("local/other") is None


def test_report_groups_counts_and_estimate_error(ledger: Ledger) -> None:
    b = budget("org", "100", scope="org", value="*")
    day2 = T0 + dt.timedelta(days=1)
    settle(ledger, reserve(ledger, "e1", "0.10", [b]), "0.08", images=2)
    settle(ledger, reserve(ledger, "e2", "0.10", [b], now=day2), "0.12", images=2, now=day2)
    settle(ledger, reserve(ledger, "o1", "0.50", [b], ctx=OPS), "0.50", images=5)
    ledger.release(reserve(ledger, "o2", "0.50", [b], ctx=OPS), reason="failed", now=T0)
    reserve(ledger, "o3", "0.25", [b], ctx=OPS)
    rows = ledger.report(by=["team", "day"])
    assert [(r["team"], r["day"]) for r in rows] == [
        ("eng", "2026-03-02"),
        ("eng", "2026-03-03"),
        ("ops", "2026-03-02"),
    ]
    e1, e2, ops = rows
    assert e1["spent_usd"] == Decimal("0.08")
    assert e1["estimate_error_pct"] == Decimal("-20.00")
    assert e2["estimate_error_usd"] == Decimal("0.02")
    assert e2["usd_per_image"] == Decimal("0.06")
    assert ops["requests"] == 3
    assert ops["settled"] == 1
    assert ops["released"] == 1
    assert ops["in_flight"] == 1
    assert ops["reserved_usd"] == Decimal("0.25")
    assert ops["usd_per_image"] == Decimal("0.10")
    (total,) = ledger.report(by=[])
    assert total["spent_usd"] == sum(r["spent_usd"] for r in rows) == Decimal("0.70")
    assert total["images"] == 9
    assert total["mean_abs_error_usd"] == Decimal("0.013333")
    since = ledger.report(by=["provider", "model"], since=day2)
    assert len(since) == 1
    assert since[0]["provider"] == "replicate"
    assert since[0]["spent_usd"] == Decimal("0.12")
    assert ledger.report(by=["team"], until=T0) == []
    with pytest.raises(ValueError, match="cannot group by"):
        ledger.report(by=["team; DROP TABLE ledger_requests"])


def test_recorded_budgets_follow_the_policy(ledger: Ledger) -> None:
    reserve(ledger, "a", "0.1", [budget("eng", "5.00")])
    reserve(ledger, "b", "0.1", [budget("eng", "7.50", warn_at=0.9)])
    (b,) = ledger.recorded_budgets()
    assert b.limit_usd == Decimal("7.50")
    assert b.warn_at == 0.9


def test_micro_dollar_exactness(ledger: Ledger) -> None:
    b = budget("eng", "0.000010")
    for i in range(10):
        settle(ledger, reserve(ledger, f"r{i}", "0.000001", [b]), "0.000001")
    with pytest.raises(BudgetExceeded):
        reserve(ledger, "r10", "0.000001", [b])
    assert status(ledger, b) == (Decimal("0.000010"), Decimal(0))


# ------------------------------------------------------------------ schema and URLs


def test_reopen_is_idempotent_and_keeps_data(ledger_url: str) -> None:
    with open_ledger(ledger_url) as first:
        reserve(first, "a", "0.5", [budget("eng", "1")])
    with open_ledger(ledger_url) as second, pytest.raises(BudgetExceeded):
        reserve(second, "b", "0.6", [budget("eng", "1")])


def test_a_newer_schema_is_refused(ledger_url: str) -> None:
    store = open_ledger(ledger_url)
    try:
        store._write(lambda q: q("INSERT INTO ledger_migrations VALUES ('m999_future', 0)", ()))  # type: ignore[attr-defined]
    finally:
        store.close()
    with pytest.raises(ConfigError, match="newer gateway"):
        open_ledger(ledger_url)
