"""Concurrency: AsyncGateway with 1, 10, 100 and 1000 requests in flight against a 200 ms backend.

    python benchmarks/bench_concurrency.py            # 1, 10, 100, 1000
    python benchmarks/bench_concurrency.py --quick    # 1, 10, 100

The backend is ``MockBackend`` with an ``async`` function that sleeps 200 ms and returns a cached
512x512 PNG, registered as the ``bedrock`` backend so the real Titan provider card, the shipped
default policy pack, SQLite ledger and audit and the telemetry all run as in production; only the
network call is replaced. Each level is one ``asyncio.gather`` of N ``generate`` calls on one warm
gateway; wall time is from the first call to the last result. Goal: 1000 concurrent requests finish
within 1.5x one call's latency (300 ms).

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
    }


async def run(levels: list[int], size: int, audit_sync: str | None, tmp: Path) -> list[dict[str, Any]]:
    gw = make_gateway(tmp / f"home-{audit_sync or 'full'}", size, audit_sync)
    try:
        await level(gw, 5, size)  # warm: stores opened, catalog and policy plans cached
        return [await level(gw, n, size) for n in levels]
    finally:
        await gw.aclose()


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
        if args.profile:
            result["profile"] = profile_level(max(levels), args.size, Path(tmp))
    top = max(levels)
    best = min(r[-1]["wall_over_latency"] for r in result["runs"].values())
    result["goals"] = {f"{top}_concurrent_within_1.5x": best <= 1.5}
    emit(result, args.json)


if __name__ == "__main__":
    main()
