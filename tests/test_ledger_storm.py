"""Proof under concurrency: 8 OS processes x 25 concurrent requests against one budget, on both stores.

All 200 requests start together (a cross-process barrier), and none settles before every one has tried
to reserve (a second barrier), so the budget sees the worst case: 200 simultaneous claims on money for
50. Exactly 50 must win, the budget must end exactly at its limit, and no reservation may be left.
A second storm kills processes while they hold reservations and proves the lease reclaims them.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ledger_support import STORES, fresh_ledger_url

from gateway.errors import BudgetExceeded
from gateway.ledger import open_ledger
from gateway.types import Budget, Context

PROCESSES = 8
THREADS = 25
AMOUNT = Decimal("0.013")
ALLOWED = 50
T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
TEAM = Budget(id="eng-day", scope="team", scope_value="eng", period="day", limit_usd=AMOUNT * ALLOWED)
ORG = Budget(id="org-month", scope="org", scope_value="*", period="month", limit_usd=Decimal("1000"))
BARRIER_S = 120.0


@pytest.fixture(params=STORES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_ledger_url(request, tmp_path)


def _worker(url: str, worker: int, start: Any, middle: Any, results: Any, crash: bool) -> None:
    """One OS process: THREADS concurrent requests, each reserve -> (all wait) -> settle."""
    ledger = open_ledger(url)
    ctx = Context(team="eng", user=f"w{worker}")

    def one(i: int) -> bool:
        start.wait(BARRIER_S)
        try:
            res = ledger.reserve(request_id=f"w{worker}-{i}", context=ctx, budgets=[TEAM, ORG],
                                 rate_limits=[], amount_usd=AMOUNT, route_key="mock/m", now=T0,
                                 lease_s=300)  # fmt: skip
        except BudgetExceeded:
            res = None
        middle.wait(BARRIER_S)
        if res is not None and not crash:
            ledger.settle(res, actual_usd=AMOUNT, provider="mock", model="m", images=1, latency_s=0.1, now=T0)
        return res is not None

    with ThreadPoolExecutor(THREADS) as pool:
        won = sum(pool.map(one, range(THREADS)))
    results.put((worker, won))
    if crash:
        results.close()
        results.join_thread()  # the result must leave before the process dies
        os._exit(17)  # die holding reservations: no settle, no release, no close
    ledger.close()


def _storm(url: str, crash_workers: frozenset[int] = frozenset()) -> dict[int, int]:
    ctx = mp.get_context("fork")
    parties = PROCESSES * THREADS
    start, middle, results = ctx.Barrier(parties), ctx.Barrier(parties), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, w, start, middle, results, w in crash_workers))
             for w in range(PROCESSES)]  # fmt: skip
    for p in procs:
        p.start()
    won = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    codes = {p.exitcode for i, p in enumerate(procs) if i not in crash_workers}
    assert codes == {0}, f"worker processes failed: {[p.exitcode for p in procs]}"
    return won


def test_storm_exactly_the_allowed_number_succeed_and_nothing_is_overspent(ledger_url: str) -> None:
    with open_ledger(ledger_url) as ledger:  # schema created up front, as a deployed gateway would have
        won = _storm(ledger_url)
        assert sum(won.values()) == ALLOWED
        team, org = ledger.budget_status([TEAM, ORG], T0)
        assert team.spent_usd == TEAM.limit_usd
        assert team.reserved_usd == 0
        assert org.spent_usd == TEAM.limit_usd
        assert org.reserved_usd == 0
        assert team.requests == ALLOWED
        (total,) = ledger.report(by=[])
        assert total["settled"] == ALLOWED
        assert total["in_flight"] == 0
        assert total["refused"] == PROCESSES * THREADS - ALLOWED
        assert total["spent_usd"] == AMOUNT * ALLOWED
        per_worker = ledger.report(by=["user"])
        assert {r["user"]: r["settled"] for r in per_worker if r["settled"]} == {
            f"w{w}": n for w, n in won.items() if n
        }
        assert ledger.verify() == []


def test_storm_with_crashed_processes_reclaims_every_lease(ledger_url: str) -> None:
    crashed = frozenset({1, 4, 6})
    with open_ledger(ledger_url) as ledger:
        won = _storm(ledger_url, crash_workers=crashed)
        held = sum(n for w, n in won.items() if w in crashed)
        assert sum(won.values()) == ALLOWED
        (team,) = ledger.budget_status([TEAM], T0)
        assert team.reserved_usd == AMOUNT * held  # dead processes still hold their estimates ...
        assert ledger.reconcile(T0 + dt.timedelta(seconds=299)) == 0
        assert ledger.reconcile(T0 + dt.timedelta(seconds=300)) == held  # ... until their lease ends
        (team,) = ledger.budget_status([TEAM], T0)
        assert team.reserved_usd == 0
        assert team.spent_usd == TEAM.limit_usd
        (total,) = ledger.report(by=[])
        assert total["in_flight"] == 0
        assert total["expired"] == held
        assert ledger.verify() == []
