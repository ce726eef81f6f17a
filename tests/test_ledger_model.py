"""Random operation sequences against a plain Python model of the books, on both stores.

The model keeps only request rows and sums them on demand, the way an auditor would; the stores keep
incremental counters. After hundreds of reserves, settles (above and below the estimate), releases,
lease expiries, day/week/month rollovers and a budget that joins mid-way, every decision and every
figure must agree, and ``verify()`` must find no drift.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_support import STORES, fresh_ledger_url

from gateway.errors import BudgetExceeded, RateLimitExceeded
from gateway.ledger import Ledger, Reservation, open_ledger
from gateway.ledger.store import (
    US,
    budget_key,
    context_fields,
    counter_covers,
    rate_key,
    scope_matches,
    to_us,
)
from gateway.types import Budget, Context, RateLimit

T0 = dt.datetime(2026, 2, 27, 18, 0, tzinfo=dt.UTC)  # a Friday evening: day, week and month roll over
BUDGETS = [
    Budget(id="org-day", scope="org", scope_value="*", period="day", limit_usd=Decimal("3.00")),
    Budget(id="eng-week", scope="team", scope_value="eng*", period="week", limit_usd=Decimal("2.50")),
    Budget(id="p1-month", scope="project", scope_value="p1", period="month", limit_usd=Decimal("4.00")),
    Budget(id="u1-total", scope="user", scope_value="u1", period="total", limit_usd=Decimal("6.00")),
]
LATE = Budget(id="gen-day", scope="use_case", scope_value="gen", period="day", limit_usd=Decimal("1.00"))
RATE = [RateLimit(id="u2-hour", scope="user", scope_value="u2", requests=5, per="hour")]
CONTEXTS = [
    Context(team=t, project=p, use_case=u, user=us)
    for t in ("eng", "eng-ml", "ops")
    for p in ("p1", "p2")
    for u in ("gen", "edit")
    for us in ("u1", "u2", "u3")
]


@dataclass
class Row:
    ctx: dict[str, str]
    ts: int
    est: int
    expires: int
    status: str = "reserved"
    actual: int = 0


class Model:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def expire(self, now: int) -> int:
        n = 0
        for r in self.rows.values():
            if r.status == "reserved" and r.expires <= now:
                r.status, r.actual, n = "expired", r.est, n + 1
        return n

    def usage(self, key: tuple[str, int, str, str]) -> tuple[int, int, int]:
        spent = reserved = requests = 0
        for r in self.rows.values():
            if counter_covers(key, r.ctx, r.ts):
                requests += 1
                reserved += r.est if r.status == "reserved" else 0
                spent += r.actual if r.status in ("settled", "expired") else 0
        return spent, reserved, requests

    def allows(self, budgets: list[Budget], ctx: dict[str, str], amount: int, now: int) -> bool:
        for b in budgets:
            if scope_matches(b.scope, b.scope_value, ctx):
                spent, reserved, _ = self.usage(budget_key(b, now))
                if spent + reserved + amount > int(b.limit_usd * US):
                    return False
        for rl in RATE:
            if (
                scope_matches(rl.scope, rl.scope_value, ctx)
                and self.usage(rate_key(rl, now))[2] + 1 > rl.requests
            ):
                return False
        return True


@pytest.fixture(params=STORES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_ledger_url(request, tmp_path)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_operations_agree_with_the_model(ledger_url: str, seed: int) -> None:
    rnd = random.Random(seed)
    model = Model()
    held: dict[str, Reservation] = {}
    now = T0
    budgets = list(BUDGETS)
    outcomes = {"ok": 0, "refused": 0, "settled": 0, "released": 0, "expired": 0}
    with open_ledger(ledger_url) as ledger:
        for step in range(300):
            if step == 150:
                budgets.append(LATE)  # the policy changes mid-window: its counter starts from history
            now_us, op = to_us(now), rnd.random()
            if op < 0.5:
                rid, context = f"r{step}", rnd.choice(CONTEXTS)
                ctx, amount = context_fields(context), rnd.randint(1, 400_000)
                expected = (model.expire(now_us), model.allows(budgets, ctx, amount, now_us))[1]
                try:
                    held[rid] = ledger.reserve(
                        request_id=rid,
                        context=context,
                        budgets=budgets,
                        rate_limits=RATE,
                        amount_usd=Decimal(amount) / US,
                        route_key=rnd.choice(["a/x", "b/y"]),
                        now=now,
                        lease_s=rnd.choice([60.0, 900.0, 7200.0]),
                    )
                    got = True
                except (BudgetExceeded, RateLimitExceeded):
                    got = False
                assert got == expected, f"step {step}: ledger {'allowed' if got else 'refused'} {rid}"
                outcomes["ok" if got else "refused"] += 1
                if got:
                    model.rows[rid] = Row(ctx, now_us, amount, to_us(held[rid].expires_at))
            elif op < 0.7 and held:
                rid = rnd.choice(sorted(held))
                actual = held[rid].amount_usd * Decimal(rnd.randint(0, 130)) / 100
                actual = actual.quantize(Decimal("0.000001"))
                _settle(ledger, held.pop(rid), actual, now)
                model.rows[rid].status, model.rows[rid].actual = "settled", int(actual * US)
                outcomes["settled"] += 1
            elif op < 0.8 and held:
                rid = rnd.choice(sorted(held))
                ledger.release(held.pop(rid), reason="failed", now=now)
                model.rows[rid].status, model.rows[rid].actual = "released", 0
                outcomes["released"] += 1
            elif op < 0.95:
                now += dt.timedelta(seconds=rnd.randint(1, 20_000))
            else:
                n = model.expire(now_us)
                assert ledger.reconcile(now) == n
                outcomes["expired"] += n
            if step % 50 == 49:
                _compare(ledger, model, budgets, now)
        _compare(ledger, model, budgets, now)
        assert ledger.verify() == []
        (total,) = ledger.report(by=[])
        spent = sum(r.actual for r in model.rows.values() if r.status in ("settled", "expired"))
        assert total["spent_usd"] == Decimal(spent) / US
        assert total["requests"] == len(model.rows)
        assert total["refused"] == outcomes["refused"]
    assert min(outcomes["ok"], outcomes["refused"], outcomes["settled"], outcomes["released"]) > 5, outcomes


def _settle(ledger: Ledger, res: Reservation, actual: Decimal, now: dt.datetime) -> None:
    ledger.settle(res, actual_usd=actual, provider="p", model="m", images=1, latency_s=1.0, now=now)


def _compare(ledger: Ledger, model: Model, budgets: list[Budget], now: dt.datetime) -> None:
    now_us = to_us(now)
    for s in ledger.budget_status(budgets, now):
        spent, reserved, requests = model.usage(budget_key(s.budget, now_us))
        assert (s.spent_usd, s.reserved_usd, s.requests) == (
            Decimal(spent) / US,
            Decimal(reserved) / US,
            requests,
        )
