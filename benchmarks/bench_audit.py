"""Audit log speed: append latency (SQLite durable/fast, PostgreSQL) and verify throughput on 100k records.

    python benchmarks/bench_audit.py [--records 100000] [--appends 400] [--postgres URL] [--json]

Records are shaped like the client's (about 700 bytes stored each). Numbers go to docs/audit.md.
The PostgreSQL part runs when --postgres (or GATEWAY_TEST_POSTGRES_URL) points at a server; it uses a
throwaway table prefix and drops it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.audit import AuditLog, open_audit


def record(i: int) -> dict[str, Any]:
    return {
        "event": "request" if i % 3 else "attempt",
        "request_id": uuid.UUID(int=i).hex,
        "team": f"team-{i % 7}",
        "project": "brand",
        "use_case": "marketing",
        "user": f"user-{i % 50}",
        "tags": ["campaign-q4"],
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "decision": {"allowed": True, "rule_ids": ["indemnity-required"], "policy_hash": "ab" * 32},
        "provider": "bedrock",
        "model": "amazon.titan-image-generator-v2:0",
        "route_key": "bedrock/amazon.titan-image-generator-v2:0",
        "cost_usd": "0.008",
        "estimated_cost_usd": "0.008",
        "prompt_sha256": "cd" * 32,
        "prompt_len": 42,
        "image_sha256s": ["ef" * 32],
        "watermark": ["provider"],
        "c2pa": ["signed"],
        "attempts": [{"provider": "bedrock", "outcome": "ok", "latency_s": 0.8, "retries": 0}],
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50_us": round(statistics.median(s) * 1e6, 1),
        "p95_us": round(s[int(len(s) * 0.95) - 1] * 1e6, 1),
        "n": len(s),
    }


def time_appends(log: AuditLog, n: int, batch: int = 1) -> dict[str, float]:
    samples = []
    for i in range(n):
        recs = [record(i * batch + j) for j in range(batch)]
        t = time.perf_counter()
        if batch == 1:
            log.append(recs[0])
        else:
            log.append_many(recs)
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def fill(log: AuditLog, n: int) -> None:
    for start in range(0, n, 2000):
        log.append_many([record(i) for i in range(start, min(n, start + 2000))])


def best_of(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def floor(log: AuditLog) -> int:
    """The same rows fetched and each hashed once, nothing else: what verify cannot beat in Python."""
    n = 0
    for _seq, _h, body in log._scan(0):
        hashlib.sha256(b"\x00" + body).digest()
        n += 1
    return n


def time_verify(log: AuditLog) -> dict[str, Any]:
    fast, report = best_of(log.verify)
    deep, deep_report = best_of(lambda: log.verify(deep=True))
    base, n = best_of(lambda: floor(log))
    assert report.ok, report
    assert deep_report.ok, deep_report
    return {
        "records": report.count,
        "checkpoints": report.checkpoints,
        "seconds": round(fast, 3),
        "records_per_s": round(report.count / fast),
        "deep_records_per_s": round(report.count / deep),
        "floor_fetch_and_hash_per_s": round(n / base),
    }


def bench_sqlite(tmp: Path, appends: int, records: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sync in ("full", "normal"):
        log = open_audit(
            f"sqlite:///{tmp / f'append-{sync}.db'}?synchronous={sync}",
            checkpoint_dir=tmp / sync,
            checkpoint_every=0,
        )
        time_appends(log, 20)  # warm up
        out[f"append_{sync}"] = time_appends(log, appends)
        out[f"append_many3_{sync}"] = time_appends(log, appends // 2, batch=3)
        log.close()
    big = open_audit(
        f"sqlite:///{tmp / 'big.db'}?synchronous=off", checkpoint_dir=tmp / "big", checkpoint_every=0
    )
    t = time.perf_counter()
    fill(big, records)
    out["fill_s"] = round(time.perf_counter() - t, 2)
    out["stored_bytes_per_record"] = round((tmp / "big.db").stat().st_size / records)
    t = time.perf_counter()
    big.checkpoint()
    out["first_checkpoint_s"] = round(time.perf_counter() - t, 3)
    big.append_many([record(i) for i in range(100)])
    t = time.perf_counter()
    big.checkpoint()
    out["incremental_checkpoint_ms"] = round((time.perf_counter() - t) * 1e3, 2)
    out["verify"] = time_verify(big)
    big.close()
    return out


def bench_postgres(url: str, tmp: Path, appends: int, records: int) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    log = open_audit(f"{url}?table_prefix={prefix}", checkpoint_dir=tmp / "pg", checkpoint_every=0)
    out: dict[str, Any] = {}
    try:
        time_appends(log, 20)
        out["append"] = time_appends(log, appends)
        out["append_many3"] = time_appends(log, appends // 2, batch=3)
        t = time.perf_counter()
        fill(log, records - log.head()[0])
        out["fill_s"] = round(time.perf_counter() - t, 2)
        log.checkpoint()
        out["verify"] = time_verify(log)
    finally:
        log.drop()
        log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--appends", type=int, default=400)
    ap.add_argument("--postgres", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "record_bytes": len(json.dumps(record(1), separators=(",", ":"))),
    }
    with tempfile.TemporaryDirectory() as d:
        results["sqlite"] = bench_sqlite(Path(d), args.appends, args.records)
        if args.postgres:
            results["postgres"] = bench_postgres(args.postgres, Path(d), args.appends, args.records)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for store in ("sqlite", "postgres"):
        for key, value in results.get(store, {}).items():
            print(f"{store:9} {key:28} {value}")


if __name__ == "__main__":
    main()
