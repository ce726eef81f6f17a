"""What witnesses cost: added time per checkpoint for each kind, and verify with and without them.

    python benchmarks/bench_audit_witness.py [--checkpoints 30] [--records 20000] [--postgres URL]

Each kind runs against a real server on loopback: PostgreSQL (a fresh database and INSERT-only role),
moto's S3 server with Object Lock, and an RFC 3161 TSA answered by OpenSSL (whose process start
dominates its figure: a production TSA is a network round trip instead). The baseline is the same
checkpoint with no witness, in the same run. Numbers go to docs/audit.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _common import emit, machine  # noqa: E402
from bench_audit import record  # noqa: E402

from gateway.audit import open_audit  # noqa: E402


def per_checkpoint(url: str | None, folder: Path, n: int, records_per: int = 10) -> list[float]:
    """Seconds per ``checkpoint()`` (records_per appends in between, not timed)."""
    log = open_audit(
        f"sqlite:///{folder / 'audit.db'}",
        checkpoint_dir=folder / "cps",
        checkpoint_every=0,
        checkpoint_on_close=False,
        witnesses=[url] if url else (),
    )
    samples = []
    i = 0
    for _ in range(n):
        for _ in range(records_per):
            i += 1
            log.append(record(i))
        t0 = time.perf_counter()
        log.checkpoint()
        samples.append(time.perf_counter() - t0)
    log.close()
    return samples


def verify_cost(url: str | None, folder: Path, records: int, heads: int) -> dict[str, Any]:
    log = open_audit(
        f"sqlite:///{folder / 'audit.db'}?synchronous=off",
        checkpoint_dir=folder / "cps",
        checkpoint_every=0,
        checkpoint_on_close=False,
        witnesses=[url] if url else (),
    )
    step = max(1, records // heads)
    batch: list[dict[str, Any]] = []
    for i in range(1, records + 1):
        batch.append(record(i))
        if i % step == 0:
            log.append_many(batch)
            batch = []
            log.checkpoint()
    if batch:
        log.append_many(batch)
        log.checkpoint()
    t0 = time.perf_counter()
    report = log.verify()
    elapsed = time.perf_counter() - t0
    log.close()
    assert report.ok, report.summary()
    return {"records": records, "heads": heads, "verify_s": round(elapsed, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=30)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--heads", type=int, default=20)
    ap.add_argument("--postgres", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"))
    ap.add_argument("--json")
    args = ap.parse_args()
    import s3_support as s3s
    import witness_support as ws

    out: dict[str, Any] = {
        "benchmark": "audit_witness",
        "machine": machine(),
        "checkpoint_ms": {},
        "verify": {},
    }
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        kinds: dict[str, str | None] = {"none": None, "dir": f"dir://{base / 'dir-witness'}"}
        if args.postgres:
            kinds["postgresql"] = stack.enter_context(
                contextlib.contextmanager(ws.pg_witness)(args.postgres)
            ).url
        endpoint = stack.enter_context(contextlib.contextmanager(s3s.s3_server.__wrapped__)())
        for k, v in {
            **s3s.CREDENTIALS,
            "AWS_DEFAULT_REGION": s3s.REGION,
            "AWS_ENDPOINT_URL_S3": endpoint,
        }.items():
            os.environ[k] = v
        kinds["s3"] = ws.S3Server(endpoint, s3s.S3Test(endpoint).bucket(object_lock=True)).url
        with contextlib.suppress(Exception):
            kinds["tsa"] = stack.enter_context(contextlib.contextmanager(ws.tsa_server)(base / "tsa")).url
        for name, url in kinds.items():
            folder = base / f"cp-{name}"
            folder.mkdir()
            s = per_checkpoint(url, folder, args.checkpoints)
            out["checkpoint_ms"][name] = {
                "p50": round(statistics.median(s) * 1e3, 2),
                "max": round(max(s) * 1e3, 2),
            }
        base_p50 = out["checkpoint_ms"]["none"]["p50"]
        for row in out["checkpoint_ms"].values():
            row["added_p50"] = round(row["p50"] - base_p50, 2)
        for name in ("none", "postgresql", "s3"):
            if name in kinds:
                folder = base / f"verify-{name}"
                folder.mkdir()
                out["verify"][name] = verify_cost(kinds[name], folder, args.records, args.heads)
    emit(out, args.json)


if __name__ == "__main__":
    main()
