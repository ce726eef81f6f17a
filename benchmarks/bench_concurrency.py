"""Concurrency: AsyncGateway with 1, 10, 100 and 1000 requests in flight against a 200 ms backend.

    python benchmarks/bench_concurrency.py            # 1, 10, 100, 1000
    python benchmarks/bench_concurrency.py --quick    # 1, 10, 100

The backend is ``MockBackend`` with an ``async`` function that sleeps 200 ms and returns a cached
512x512 PNG, registered as the ``bedrock`` backend so the real Titan provider card, the shipped
default policy pack, SQLite ledger and audit and the telemetry all run as in production; only the
network call is replaced. Each level is one ``asyncio.gather`` of N ``generate`` calls on one warm
gateway; wall time is from the first call to the last result. Goal: 1000 concurrent requests finish
within 1.5x one call's latency (300 ms). The largest level is also run split over N processes
(``--processes 2``: one event loop each, the same home, so the same SQLite ledger and audit log) to
show how the per-request CPU scales out. Group commit: ``audit max batch`` is the most requests whose
records went to disk in one audit transaction during the level.

Two audit settings are measured: the default (SQLite ``synchronous=FULL``, one fsync per request,
run in a worker thread because it blocks) and ``synchronous=normal`` (no fsync per commit; run on the
event loop). CPU seconds per request (process time / requests) are reported: on one event loop the
per-request Python work is serial, so it bounds throughput no matter how long the backend sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, emit, machine, quiet_logs, versions

MODEL = "amazon.titan-image-generator-v2:0"
LATENCY_S = 0.2


def make_gateway(home: Path, size: int, audit_sync: str | None) -> Any:
    from gateway import AsyncGateway, MockBackend
    from gateway.backends.base import BackendCall
    from gateway.config import Settings
    from gateway.testing import png_bytes

    png = png_bytes(size, size, 7)

    async def slow(call: BackendCall) -> list[bytes]:
        await asyncio.sleep(LATENCY_S)
        return [png] * call.request.n

    settings = Settings(
        home=home,
        policies=(REPO / "policies/default.yaml",),
        provenance={"watermark_remote": False, "c2pa_remote": False},
        audit_url=f"sqlite:///{home / 'audit.db'}?synchronous={audit_sync}" if audit_sync else None,
    )
    return AsyncGateway(settings, backends={"bedrock": MockBackend(slow)})


async def level(gw: Any, n: int, size: int) -> dict[str, Any]:
    async def one(i: int) -> float:
        t0 = time.perf_counter()
        await gw.generate(f"a lighthouse, variation {i}", provider="bedrock", model=MODEL,
                          width=size, height=size, seed=i, team=f"team-{i % 8}")  # fmt: skip
        return time.perf_counter() - t0

    gc.collect()
    audit = gw._core.audit
    if hasattr(audit, "max_batch"):
        audit.max_batch = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    got = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    ok = sorted(x for x in got if isinstance(x, float))
    errors = sorted({type(x).__name__ for x in got if isinstance(x, BaseException)})
    return {
        "n": n,
        "ok": len(ok),
        "errors": errors,
        "wall_s": wall,
        "throughput_rps": len(ok) / wall,
        "wall_over_latency": wall / LATENCY_S,
        "latency_p50_s": ok[len(ok) // 2] if ok else None,
        "latency_max_s": ok[-1] if ok else None,
        "cpu_ms_per_request": cpu / n * 1e3,
        "audit_max_batch": getattr(audit, "max_batch", None),  # group commit: records' callers per commit
    }


async def run(levels: list[int], size: int, audit_sync: str | None, tmp: Path) -> list[dict[str, Any]]:
    gw = make_gateway(tmp / f"home-{audit_sync or 'full'}", size, audit_sync)
    try:
        await level(gw, 5, size)  # warm: stores opened, catalog and policy plans cached
        return [await level(gw, n, size) for n in levels]
    finally:
        await gw.aclose()


def _process(home: str, n: int, size: int, start: Any, out: Any) -> None:
    """One of N processes: its own event loop and gateway on the shared home (same SQLite stores)."""
    quiet_logs()

    async def go() -> dict[str, Any]:
        gw = make_gateway(Path(home), size, None)
        try:
            await level(gw, 5, size)
            await asyncio.get_running_loop().run_in_executor(None, start.wait)
            t0 = time.time()
            r = await level(gw, n, size)
            r["t0"], r["t1"] = t0, time.time()
            return r
        finally:
            await gw.aclose()

    out.put(asyncio.run(go()))


def processes(n: int, workers: int, size: int, tmp: Path) -> dict[str, Any]:
    """``n`` requests split over ``workers`` processes sharing one home (audit FULL): wall from the
    common start to the last finish."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(workers), ctx.Queue()
    home = tmp / f"home-procs-{workers}"
    procs = [
        ctx.Process(target=_process, args=(str(home), n // workers, size, start, out)) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    got = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    wall = max(r["t1"] for r in got) - min(r["t0"] for r in got)
    return {
        "workers": workers,
        "n": n,
        "ok": sum(r["ok"] for r in got),
        "wall_s": wall,
        "wall_over_latency": wall / LATENCY_S,
        "throughput_rps": sum(r["ok"] for r in got) / wall,
        "cpu_ms_per_request": sum(r["cpu_ms_per_request"] * r["n"] for r in got) / n,
    }


def profile_level(n: int, size: int, tmp: Path, top: int = 20) -> list[dict[str, Any]]:
    """cProfile of one level (audit NORMAL): the functions with the most own time, µs per request."""
    import cProfile
    import pstats

    async def go() -> None:
        gw = make_gateway(tmp / "home-profile", size, "normal")
        try:
            await level(gw, 5, size)
            prof.enable()
            await level(gw, n, size)
            prof.disable()
        finally:
            await gw.aclose()

    prof = cProfile.Profile()
    asyncio.run(go())
    stats = pstats.Stats(prof)
    rows = [
        {"function": f"{Path(f).name}:{line}({fn})", "own_us": t / n * 1e6, "cum_us": c / n * 1e6,
         "calls_per_request": nc / n}
        for (f, line, fn), (_cc, nc, t, c, _callers) in stats.stats.items()  # type: ignore[attr-defined]
    ]  # fmt: skip
    return sorted(rows, key=lambda r: -r["own_us"])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,10,100,1000")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="levels 1,10,100")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of the largest level")
    ap.add_argument("--processes", default="2", help="also run the largest level split over N processes")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    levels = [1, 10, 100] if args.quick else [int(x) for x in args.levels.split(",")]
    quiet_logs()
    result: dict[str, Any] = {
        "bench": "concurrency",
        "machine": machine(),
        "versions": versions("diffusion-gateway", "opentelemetry-sdk"),
        "backend_latency_s": LATENCY_S,
        "size": args.size,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for sync in (None, "normal"):
            label = "audit FULL (default)" if sync is None else "audit NORMAL"
            result["runs"][label] = asyncio.run(run(levels, args.size, sync, Path(tmp)))
        result["processes"] = [
            processes(max(levels), int(w), args.size, Path(tmp))
            for w in args.processes.split(",")
            if w.strip()
        ]
        if args.profile:
            result["profile"] = profile_level(max(levels), args.size, Path(tmp))
    top = max(levels)
    best = min(r[-1]["wall_over_latency"] for r in result["runs"].values())
    result["goals"] = {f"{top}_concurrent_within_1.5x": best <= 1.5}
    emit(result, args.json)


if __name__ == "__main__":
    main()
