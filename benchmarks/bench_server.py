"""The HTTP server's cost: AsyncOpenAI -> ``gateway serve`` -> fake Bedrock, against the same call made
in-process on an AsyncGateway, at 1, 10 and 100 requests in flight, with 1 and N workers.

    python benchmarks/bench_server.py                   # levels 1,10,100; workers 1 and 2
    python benchmarks/bench_server.py --quick           # fewer requests per level
    python benchmarks/bench_server.py --json out.json

Everything real except the provider: the loopback fake Bedrock (its own process, PNGs rendered once)
answers boto3; the server is a ``gateway serve`` subprocess (SQLite ledger and audit, the shipped
default policy pack, an API key); the client is the official ``AsyncOpenAI``. The baseline is an
``AsyncGateway`` in this process calling the same fake with the same settings. "Added latency" is the
server's percentile minus the in-process percentile at the same concurrency: what a caller pays for
HTTP, JSON + base64, key checks and the extra process hop; a bare ``GET /healthz`` round trip is
measured beside it, because on a loaded machine each process hop costs a scheduling delay that
dwarfs the server's own work. Bounded: a fixed number of requests per
level, each level under a minute on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, bedrock_env, cached_fake_bedrock, emit, machine, pct, quiet_logs, versions

ROUTE = "bedrock/amazon.titan-image-generator-v2:0"
SIZE = 512


def _fake_main(port: int) -> None:
    """``--fake PORT``: serve the cached fake Bedrock until killed (a separate process)."""
    from gateway.testing import FAKE_AWS_KEY, FAKE_AWS_SECRET

    fake = cached_fake_bedrock(port=port, credentials={FAKE_AWS_KEY: FAKE_AWS_SECRET})
    fake.start()
    print(fake.url, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    fake.stop()


def _config(home: Path) -> Path:
    home.parent.mkdir(parents=True, exist_ok=True)
    cfg = home.parent / "gateway.yaml"
    cfg.write_text(
        f"home: {home}\npolicies: ['{REPO / 'policies/default.yaml'}']\n"
        "provenance: {watermark_remote: false, c2pa_remote: false}\n"
        "routing: {breaker_threshold: 1000}\n"
    )
    return cfg


async def _levels(call: Any, levels: list[int], per_level: dict[int, int]) -> list[dict[str, Any]]:
    out = []
    for c in levels:
        n = per_level[c]
        lat: list[float] = []
        errors: dict[str, int] = {}
        sem = asyncio.Semaphore(c)

        async def one(
            i: int, sem: asyncio.Semaphore = sem, lat: list[float] = lat, errors: dict[str, int] = errors
        ) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    await call(i)
                except Exception as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    return
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
        out.append({
            "concurrency": c, "requests": n, "ok": len(lat), "errors": errors, "wall_s": round(wall, 3),
            "rps": round(len(lat) / wall, 1), "p50_ms": round(pct(lat, 50) * 1e3, 2),
            "p99_ms": round(pct(lat, 99) * 1e3, 2),
        })  # fmt: skip
    return out


async def in_process(home: Path, levels: list[int], per_level: dict[int, int]) -> list[dict[str, Any]]:
    from gateway import AsyncGateway
    from gateway.config import Settings

    gw = AsyncGateway(Settings.load(_config(home)))
    provider, model = ROUTE.split("/", 1)

    async def call(i: int) -> None:
        await gw.generate(f"a lighthouse {i}", provider=provider, model=model, width=SIZE, height=SIZE,
                          team="bench", user="key-bench")  # fmt: skip

    try:
        await _levels(call, [10], {10: 20})  # warm
        return await _levels(call, levels, per_level)
    finally:
        await gw.aclose()


def _serve(cfg: Path, workers: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--port", "0",
         "--workers", str(workers), "--config", str(cfg)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    m = re.search(r"http://127\.0\.0\.1:\d+/v1", proc.stdout.readline())
    if m is None:
        proc.kill()
        raise SystemExit("gateway serve did not start")
    return proc, m.group(0)


async def over_http(base: str, secret: str, levels: list[int], per_level: dict[int, int]) -> Any:
    import httpx
    import openai

    async with httpx.AsyncClient() as probe:  # workers may still be importing: wait until one answers
        for _ in range(600):
            try:
                if (await probe.get(base.removesuffix("/v1") + "/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        hop: list[float] = []  # one loopback HTTP round trip on this machine right now: the floor
        for _ in range(30):
            t0 = time.perf_counter()
            await probe.get(base.removesuffix("/v1") + "/healthz")
            hop.append(time.perf_counter() - t0)
    floor = {
        "healthz_p50_ms": round(pct(hop[5:], 50) * 1e3, 2),
        "healthz_p99_ms": round(pct(hop[5:], 99) * 1e3, 2),
    }
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with openai.AsyncOpenAI(
        base_url=base, api_key=secret, max_retries=0, timeout=120,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    ) as client:  # fmt: skip

        async def call(i: int) -> None:
            await client.images.generate(prompt=f"a lighthouse {i}", model=ROUTE, size=f"{SIZE}x{SIZE}")

        await _levels(call, [10], {10: 20})  # warm every worker's connections and caches
        return await _levels(call, levels, per_level), floor


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--fake":
        _fake_main(int(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,10,100")
    ap.add_argument("--workers", default="1,2", help="worker counts to measure")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    quiet_logs()
    levels = [int(x) for x in args.levels.split(",")]
    per_level = {c: (20 if c == 1 else 5 * c if c < 100 else 300) for c in levels}
    if args.quick:
        per_level = {c: max(10, c * 2) for c in levels}
    result: dict[str, Any] = {
        "bench": "server", "machine": machine(),
        "versions": versions("diffusion-gateway", "starlette", "uvicorn", "openai"),
        "route": ROUTE, "size": SIZE, "per_level": per_level, "runs": {},
    }  # fmt: skip
    fake = subprocess.Popen([sys.executable, __file__, "--fake", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        fake_url = fake.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp, bedrock_env(fake_url):
            env = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_LOG_LEVEL": "ERROR"}
            home = Path(tmp) / "inproc" / "home"
            result["runs"]["in-process AsyncGateway"] = asyncio.run(in_process(home, levels, per_level))
            from gateway.config import Settings
            from gateway.server.keys import KeyStore

            for workers in [int(w) for w in args.workers.split(",")]:
                home = Path(tmp) / f"w{workers}" / "home"
                cfg = _config(home)
                with KeyStore(Settings.load(cfg).resolved_ledger_url) as keys:
                    secret = keys.create("bench", team="bench")[1]
                proc, base = _serve(cfg, workers, env)
                try:
                    runs, floor = asyncio.run(over_http(base, secret, levels, per_level))
                    result.setdefault("http_round_trip", {})[f"{workers} worker(s)"] = floor
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=120)
                result["runs"][f"server, {workers} worker(s)"] = runs
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=30)
    base_runs = {r["concurrency"]: r for r in result["runs"]["in-process AsyncGateway"]}
    result["added_latency_ms"] = {
        label: {
            str(r["concurrency"]): {
                "p50": round(r["p50_ms"] - base_runs[r["concurrency"]]["p50_ms"], 2),
                "p99": round(r["p99_ms"] - base_runs[r["concurrency"]]["p99_ms"], 2),
            }
            for r in runs
        }
        for label, runs in result["runs"].items()
        if label.startswith("server")
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
