"""Group commit: concurrent appends share transactions, every caller gets its own consecutive seqs,
the chain verifies, and a single caller is never made to wait for company."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit import AuditLog, open_audit
from gateway.errors import AuditWriteError


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    """Both stores; PostgreSQL through the shared fixture (a failure in CI when absent, else a loud skip)."""
    if request.param == "sqlite":
        a = open_audit(f"sqlite:///{tmp_path / 'audit.db'}", checkpoint_dir=tmp_path / "cps")
    else:
        url = request.getfixturevalue("postgres_url")
        prefix = f"gc{os.getpid()}_{threading.get_ident() % 10_000}_"
        a = open_audit(url, checkpoint_dir=tmp_path / "cps", table_prefix=prefix)
    yield a
    a.close()
    drop = getattr(a, "drop", None)
    if drop is not None:
        drop()


def _check(log: AuditLog, got: dict[str, list[int]], parts: int) -> None:
    report = log.verify()
    assert report.ok, report
    assert report.count == sum(len(s) for s in got.values())
    records = {r["seq"]: r for r in log.iter_records()}
    for name, seqs in got.items():
        assert len(seqs) == parts
        assert seqs == list(range(seqs[0], seqs[0] + parts))  # one caller's batch stays consecutive
        assert [records[s]["writer"] for s in seqs] == [name] * parts
        assert [records[s]["part"] for s in seqs] == list(range(parts))


def test_threads_share_transactions_and_each_gets_its_own_seqs(log: AuditLog) -> None:
    got: dict[str, list[int]] = {}
    start = threading.Barrier(16)

    def writer(k: int) -> None:
        start.wait()
        for i in range(10):
            name = f"t{k}-{i}"
            got[name] = log.append_many([{"event": "attempt", "writer": name, "part": p} for p in range(2)])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check(log, got, 2)
    assert log.max_batch > 1  # the writers did not each pay a transaction


def test_async_callers_are_group_committed(log: AuditLog) -> None:
    async def burst() -> dict[str, list[int]]:
        async def one(i: int) -> tuple[str, list[int]]:
            name = f"a{i}"
            seqs = await log.aappend_many([{"event": "request", "writer": name, "part": p} for p in range(3)])
            return name, seqs

        return dict(await asyncio.gather(*(one(i) for i in range(200))))

    got = asyncio.run(burst())
    _check(log, got, 3)
    assert log.max_batch > 10


def test_a_lone_caller_writes_at_once(log: AuditLog) -> None:
    assert log.append_many([{"event": "request", "writer": "solo", "part": 0}]) == [1]
    assert asyncio.run(log.aappend_many([{"event": "request", "writer": "solo2", "part": 0}])) == [2]
    assert log.max_batch == 1


def test_a_failed_transaction_fails_every_caller_in_it_and_the_next_writes(log: AuditLog) -> None:
    real = log._append_rows
    calls = {"n": 0}

    def flaky(make_rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real(make_rows)

    log._append_rows = flaky  # type: ignore[method-assign]
    with pytest.raises(AuditWriteError, match="disk full"):
        log.append({"event": "request", "writer": "x", "part": 0})
    assert log.append({"event": "request", "writer": "y", "part": 0}) == 1
    assert log.verify().ok
