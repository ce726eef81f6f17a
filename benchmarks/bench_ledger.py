"""Ledger speed: reserve + settle latency on SQLite, and PostgreSQL throughput with 16 workers.

    python benchmarks/bench_ledger.py                       # both stores, default sizes
    python benchmarks/bench_ledger.py --skip-postgres --n 5000

Each "op" is what one generate call costs the ledger: ``reserve`` against two budgets in scope (a team
month budget and an org day budget) followed by ``settle``. SQLite is measured in one process
(synchronous=NORMAL, the default, and FULL). PostgreSQL runs W worker processes for a fixed time in two
shapes: *hot*, every worker on the same team and org budget (the rows every reservation must lock:
the worst case for an atomic hard stop), and *spread*, each worker its own team budget only.
Results go to stdout as a Markdown table; copy them into docs/ledger.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from typing import Any

from gateway.ledger import Ledger, open_ledger
from gateway.types import Budget, Context

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
AMOUNT = Decimal("0.003")
BIG = Decimal("1000000")


def budgets(team: str, org: bool = True) -> list[Budget]:
    out = [Budget(id=f"{team}-month", scope="team", scope_value=team, period="month", limit_usd=BIG)]
    if org:
        out.append(Budget(id="org-day", scope="org", scope_value="*", period="day", limit_usd=BIG))
    return out


def op(ledger: Ledger, rid: str, ctx: Context, bs: list[Budget]) -> None:
    res = ledger.reserve(request_id=rid, context=ctx, budgets=bs, rate_limits=[], amount_usd=AMOUNT,
                         route_key="replicate/black-forest-labs/flux-schnell", now=NOW)  # fmt: skip
    ledger.settle(res, actual_usd=AMOUNT, provider="replicate", model="black-forest-labs/flux-schnell",
                  images=1, latency_s=1.0, now=NOW)  # fmt: skip


def latency(url: str, n: int) -> dict[str, float]:
    ctx, bs = Context(team="eng"), budgets("eng")
    with open_ledger(url) as ledger:
        for i in range(min(200, n)):  # warm-up: counters exist, statements prepared
            op(ledger, f"warm-{i}", ctx, bs)
        samples = []
        for i in range(n):
            t = time.perf_counter_ns()
            op(ledger, f"r-{i}", ctx, bs)
            samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    return {
        "p50_us": statistics.median(samples),
        "p90_us": samples[int(0.9 * len(samples))],
        "p99_us": samples[int(0.99 * len(samples))],
    }


def sqlite_floor(path: str, n: int) -> float:
    """p50 of the least a ledger can do (raw sqlite3, two tiny transactions): the machine's yardstick."""
    import sqlite3

    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE b (id TEXT PRIMARY KEY, spent INT, reserved INT)")
    c.execute("CREATE TABLE r (id TEXT PRIMARY KEY, amount INT, status TEXT)")
    c.execute("INSERT INTO b VALUES ('x', 0, 0)")
    samples = []
    for i in range(n):
        t = time.perf_counter_ns()
        c.execute("BEGIN IMMEDIATE")
        c.execute("SELECT spent, reserved FROM b WHERE id = 'x'").fetchone()
        c.execute("UPDATE b SET reserved = reserved + 1 WHERE id = 'x'")
        c.execute("INSERT INTO r VALUES (?, 1, 'reserved')", (str(i),))
        c.execute("COMMIT")
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE r SET status = 'settled' WHERE id = ?", (str(i),))
        c.execute("UPDATE b SET reserved = reserved - 1, spent = spent + 1 WHERE id = 'x'")
        c.execute("COMMIT")
        samples.append((time.perf_counter_ns() - t) / 1000)
    c.close()
    return statistics.median(samples)


def pg_commit_floor(url: str, schema: str, n: int = 100) -> float:
    """p50 of one committed single-row INSERT into a logged table: the server's WAL flush on this disk."""
    import psycopg
    from psycopg import sql

    table = sql.Identifier(schema, "bench_floor")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE TABLE {} (x int)").format(table))
        samples = []
        for _ in range(n):
            t = time.perf_counter_ns()
            c.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
            samples.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(samples)


def _worker(url: str, worker: int, hot: bool, seconds: float, start: Any, out: Any) -> None:
    team = "eng" if hot else f"team{worker}"
    ctx, bs = Context(team=team), budgets(team, org=hot)
    with open_ledger(url) as ledger:
        op(ledger, f"warm-{worker}-{uuid.uuid4().hex}", ctx, bs)
        start.wait()
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            op(ledger, f"{worker}-{done}-{uuid.uuid4().hex[:8]}", ctx, bs)
            done += 1
    out.put(done)


def throughput(url: str, workers: int, seconds: float, hot: bool) -> float:
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, w, hot, seconds, start, out)) for w in range(workers)]
    for p in procs:
        p.start()
    start.wait()
    t = time.monotonic()
    total = sum(out.get(timeout=seconds + 120) for _ in procs)
    elapsed = time.monotonic() - t
    for p in procs:
        p.join()
    return total / max(elapsed, seconds)


def row(store: str, measure: str, result: str) -> None:
    print(f"| {store} | {measure} | {result} |", flush=True)


def pcts(r: dict[str, float]) -> str:
    return f"p50 {r['p50_us']:.0f} µs, p90 {r['p90_us']:.0f} µs, p99 {r['p99_us']:.0f} µs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="reserve+settle pairs per latency run")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    default_pg = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--pg-url", default=default_pg)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("| store | measure | result |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        floor = sqlite_floor(f"{tmp}/floor.db", args.n)
        row(
            "SQLite floor (raw sqlite3, 2 tiny txns, NORMAL)",
            "same machine, same moment",
            f"p50 {floor:.0f} µs",
        )
        for sync in ("normal", "full"):
            r = latency(f"sqlite:///{tmp}/bench-{sync}.db?synchronous={sync}", args.n)
            row(
                f"SQLite (WAL, synchronous={sync.upper()})",
                f"reserve+settle, 1 process, {args.n} ops",
                pcts(r),
            )
        for hot in (True, False):
            url = f"sqlite:///{tmp}/bench-mp-{hot}.db"
            ops = throughput(url, args.workers, args.seconds, hot)
            shape = "hot: one team + org budget" if hot else "spread: a team budget each"
            row("SQLite", f"{args.workers} processes, {shape}", f"{ops:,.0f} reserve+settle/s")
    if args.skip_postgres:
        return
    import psycopg
    from psycopg import sql

    schema = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    url = f"{args.pg_url}{'&' if '?' in args.pg_url else '?'}schema={schema}"
    try:
        r = latency(url, max(args.n // 3, 300))
        floor = pg_commit_floor(args.pg_url, schema)
        row("PostgreSQL floor", "one committed 1-row INSERT", f"p50 {floor:.0f} µs")
        row("PostgreSQL", "reserve+settle (2 commits), 1 connection", pcts(r))
        for hot in (True, False):
            ops = throughput(url, args.workers, args.seconds, hot)
            shape = "hot: one team + org budget" if hot else "spread: a team budget each"
            row("PostgreSQL", f"{args.workers} worker processes, {shape}", f"{ops:,.0f} reserve+settle/s")
    finally:
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
