"""Idempotency keys: a repeat returns the original result and pays nothing, also when processes race.

Real stores throughout: SQLite files and the real PostgreSQL server (a unique schema per test); the
racing test starts separate Python processes that meet at a barrier before calling ``generate``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_support import Counting, catalog, ledger_rows, make
from ledger_support import STORES, fresh_ledger_url

from gateway import AsyncGateway, MockBackend
from gateway.archive.keeper import Job, decide
from gateway.config import Settings
from gateway.errors import BackendUnavailable, ProvidersFailed, UsageError
from gateway.ledger.idempotency import KeyState

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=STORES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_ledger_url(request, tmp_path)


@pytest.fixture
def settings(tmp_path: Path, ledger_url: str) -> Settings:
    return Settings(home=tmp_path / "home", ledger_url=ledger_url)


def test_repeat_returns_the_original_result_and_pays_once(settings: Settings) -> None:
    fn = Counting()
    with make(settings, fn) as gw:
        first = gw.generate("a lighthouse", n=2, team="design", idempotency_key="order-1")
        again = gw.generate("a lighthouse", n=2, team="design", idempotency_key="order-1")
        assert fn.calls == 1
        assert again.replayed and not first.replayed
        assert again.request_id == first.request_id and again.audit_seq == first.audit_seq
        # byte-exact, from the archive
        assert [i.data for i in again.images] == [i.data for i in first.images]
        assert again.cost_usd == first.cost_usd  # the original's figures; nothing new was charged
        rows = ledger_rows(gw)
        assert [(r[0], r[1]) for r in rows] == [(first.request_id, "settled")]
        events = [(r["event"], r["request_id"]) for r in gw._core.audit.iter_records()]
        assert events[-1] == ("replayed", first.request_id)
        replay = list(gw._core.audit.iter_records())[-1]
        assert replay["cost_usd"] == "0" and "order-1" not in json.dumps(replay)  # the key is hashed
        assert gw._core.ledger.key_state("design", "order-1").replays == 1  # type: ignore[union-attr]
        assert gw._core.audit.verify().ok


def test_keys_are_scoped_to_the_team(settings: Settings) -> None:
    fn = Counting()
    with make(settings, fn) as gw:
        a = gw.generate("a boat", team="red", idempotency_key="k")
        b = gw.generate("a boat", team="blue", idempotency_key="k")
    assert fn.calls == 2 and a.request_id != b.request_id and not b.replayed


def test_a_different_request_under_the_same_key_is_a_usage_error(settings: Settings) -> None:
    fn = Counting()
    with make(settings, fn) as gw:
        gw.generate("a boat", seed=1, idempotency_key="k")
        with pytest.raises(UsageError, match="different request") as err:
            gw.generate("a boat", seed=2, idempotency_key="k")
        assert err.value.exit_code == 2
        with pytest.raises(UsageError):
            gw.generate("a car", seed=1, idempotency_key="k")
    assert fn.calls == 1


def test_an_unseeded_repeat_replays_the_seed_drawn_the_first_time(settings: Settings) -> None:
    with make(settings) as gw:
        first = gw.generate("a boat", idempotency_key="k")
        again = gw.generate("a boat", idempotency_key="k")
    assert again.replayed and again.seed == first.seed


def test_keys_expire_after_their_window(settings: Settings) -> None:
    now = [dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)]
    s = settings.model_copy(update={"idempotency": settings.idempotency.model_copy(update={"ttl_s": 3600})})
    fn = Counting()
    with make(s, fn, clock=lambda: now[0]) as gw:
        first = gw.generate("a boat", seed=1, idempotency_key="k")
        now[0] += dt.timedelta(minutes=59)
        assert gw.generate("a boat", seed=1, idempotency_key="k").replayed
        now[0] += dt.timedelta(minutes=2)
        fresh = gw.generate("a boat", seed=2, idempotency_key="k")  # expired: reusable for anything
        assert not fresh.replayed and fresh.request_id != first.request_id
        assert gw._core.ledger.prune_keys(now[0] + dt.timedelta(hours=2)) == 1
    assert fn.calls == 2


def test_a_failed_request_frees_its_key_for_the_retry(settings: Settings) -> None:
    fn = Counting(fail=1, exc=BackendUnavailable("down", provider="a"))
    with make(settings, fn) as gw:
        with pytest.raises(ProvidersFailed):
            gw.generate("a boat", seed=3, idempotency_key="k")
        assert gw._core.ledger.key_state("default", "k") is None
        ok = gw.generate("a boat", seed=3, idempotency_key="k")
        assert not ok.replayed and fn.calls == 2
        assert [r[1] for r in ledger_rows(gw)] == ["released", "settled"]


def test_async_twin_replays_too(settings: Settings) -> None:
    fn = Counting()

    async def main() -> tuple[Any, Any]:
        async with AsyncGateway(settings, catalog=catalog(), backends={"a": MockBackend(fn)}) as gw:
            first = await gw.generate("a kite", seed=4, idempotency_key="k")
            again = await gw.generate("a kite", seed=4, idempotency_key="k")
            return first, again

    first, again = asyncio.run(main())
    assert again.replayed and again.request_id == first.request_id and fn.calls == 1
    assert [i.data for i in again.images] == [i.data for i in first.images]


def test_decide_is_pure() -> None:
    job = Job("t", "k", "fp")
    row = KeyState("t", "k", "fp", "r1", "pending", 0, lease_us=100, expires_us=1000, replays=0, result=None)
    assert decide(job, None, 50) == ("run", None)
    assert decide(job, row, 50) == ("wait", None)
    assert decide(job, row, 150) == ("run", None)  # the claimer's lease ran out: take over
    done = KeyState("t", "k", "fp", "r1", "done", 0, 100, 1000, 0, {"request_id": "r1"})
    assert decide(job, done, 500) == ("replay", {"request_id": "r1"})
    assert decide(job, done, 1000) == ("run", None)  # expired
    with pytest.raises(UsageError):
        decide(Job("t", "k", "other"), done, 500)


# ------------------------------------------------------------------ processes racing on one key

RACER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path[:0] = [{root!r}, {tests!r}]
    from archive_support import Counting, make
    from gateway.config import Settings

    barrier, n = Path(sys.argv[1]), int(sys.argv[2])
    settings = Settings(home=Path({home!r}), ledger_url={ledger!r})
    fn = Counting(delay_s=0.5)
    gw = make(settings, fn, sleep=time.sleep)
    (barrier / sys.argv[3]).touch()
    while len(list(barrier.iterdir())) < n:
        time.sleep(0.01)
    res = gw.generate("a race", seed=5, team="racers", idempotency_key="same-key")
    print(json.dumps({{"request_id": res.request_id, "replayed": res.replayed, "calls": fn.calls,
                      "sha": [i.sha256 for i in res.images]}}))
    gw.close()
    """
)


def test_processes_racing_on_one_key_pay_once(settings: Settings, tmp_path: Path) -> None:
    n = 3
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(root=str(ROOT), tests=str(ROOT / "tests"), home=str(settings.home),
                                   ledger=settings.resolved_ledger_url))  # fmt: skip
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    with make(settings):  # create the schema once, so the racers only race on the key
        pass
    args = [sys.executable, str(script), str(barrier), str(n)]
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen([*args, uuid.uuid4().hex], **pipes) for _ in range(n)]
    outs, errors = [], []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            if p.returncode != 0:
                errors.append(err[-3000:])
            else:
                outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert not errors, errors[0]
    assert len({o["request_id"] for o in outs}) == 1
    assert len({tuple(o["sha"]) for o in outs}) == 1
    assert sum(o["calls"] for o in outs) == 1  # one backend call in all processes together
    assert sorted(o["replayed"] for o in outs) == [False] + [True] * (n - 1)
    with make(settings) as gw:
        rows = ledger_rows(gw)
        assert [(r[0], r[1]) for r in rows] == [(outs[0]["request_id"], "settled")]  # one payment
        events = [r["event"] for r in gw._core.audit.iter_records()]
        assert events.count("request") == 1 and events.count("replayed") == n - 1


def test_the_claim_rolls_back_with_its_reservation(ledger_url: str) -> None:
    from decimal import Decimal

    from gateway.ledger import open_ledger
    from gateway.ledger.idempotency import KeyClaim, KeyTaken
    from gateway.types import Budget, Context

    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    budget = Budget("b", "team", "t", "day", Decimal("1"))
    ctx = Context(team="t")
    with open_ledger(ledger_url) as ledger:

        def reserve(rid: str) -> Any:
            return ledger.reserve(request_id=rid, context=ctx, budgets=[budget], rate_limits=[],
                                  amount_usd=Decimal("0.10"), route_key="a/m", now=now,
                                  claim=KeyClaim("t", "k", "fp", rid))  # fmt: skip

        reserve("r1")
        with pytest.raises(KeyTaken):
            reserve("r2")
        (status,) = ledger.budget_status([budget], now)
        assert status.reserved_usd == Decimal("0.10")  # the loser reserved nothing
        state = ledger.key_state("t", "k")
        assert state is not None and state.request_id == "r1" and state.status == "pending"
        assert ledger.verify() == []


def test_concurrent_coroutines_with_one_key_pay_once(settings: Settings) -> None:
    calls = []

    async def slow(call: Any) -> list[bytes]:
        calls.append(call)
        await asyncio.sleep(0.3)
        return Counting()(call)

    async def main() -> list[Any]:
        async with AsyncGateway(settings, catalog=catalog(), backends={"a": MockBackend(slow)}) as gw:
            calls3 = [gw.generate("a kite", seed=4, idempotency_key="k") for _ in range(3)]
            return await asyncio.gather(*calls3)

    results = asyncio.run(main())
    assert len(calls) == 1 and len({r.request_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False, True, True]
