"""How fast and how big the dashboard's pages are over a large ledger and audit log.

Seeds N requests straight through the ledger and audit APIs (reserve + settle, and the audit records
the client writes: attempt + request, some denials), then renders each page through the ASGI app's
handler (no HTTP) and reports the median time and the size of each. Run:

    python benchmarks/bench_dashboard.py --requests 10000
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from gateway.audit import open_audit
from gateway.dashboard import create_app, open_sources
from gateway.dashboard.app import Request
from gateway.ledger import open_ledger
from gateway.types import Budget, Context


def seed(home: Path, n: int) -> tuple[str, str]:
    ledger_url, audit_url = f"sqlite:///{home}/ledger.db", f"sqlite:///{home}/audit.db"
    rng = random.Random(1)
    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=30)
    budget = Budget(id="org", scope="org", scope_value="*", period="month", limit_usd=Decimal("100000"))
    clock = {"t": start}
    ledger = open_ledger(ledger_url)
    audit = open_audit(
        f"{audit_url}?synchronous=normal", checkpoint_dir=home / "checkpoints", clock=lambda: clock["t"]
    )
    batch = []
    for i in range(n):
        now = start + dt.timedelta(seconds=30 * 86_400 * i / n)
        clock["t"] = now
        team = rng.choice(("design", "marketing", "research", "ops"))
        route = rng.choice(("alpha/a-1", "beta/b-xl", "gamma/g-lite"))
        provider, model = route.split("/")
        ctx = Context(
            team=team, project=f"{team}-p{rng.randint(1, 5)}", use_case="bench", user=f"u{rng.randint(1, 40)}"
        )
        base = {
            "request_id": f"r{i}",
            "team": team,
            "project": ctx.project,
            "use_case": "bench",
            "user": ctx.user,
            "tags": [],
            "decision": {"allowed": True, "rule_ids": ["org"], "reasons": [], "policy_hash": "x"},
            "prompt_sha256": "0" * 64,
            "prompt_len": 10,
        }
        if rng.random() < 0.05:
            batch.append(
                {
                    **base,
                    "event": "denied",
                    "decision": {**base["decision"], "allowed": False, "rule_ids": ["no-boats"]},
                }
            )
        else:
            est = Decimal(rng.choice(("0.02", "0.04", "0.05")))
            res = ledger.reserve(
                request_id=f"r{i}",
                context=ctx,
                budgets=[budget],
                rate_limits=[],
                amount_usd=est,
                route_key=route,
                now=now,
            )
            ledger.settle(
                res, actual_usd=est, provider=provider, model=model, images=1, latency_s=1.0, now=now
            )
            batch.append(
                {
                    **base,
                    "event": "attempt",
                    "provider": provider,
                    "model": model,
                    "route_key": route,
                    "outcome": "ok",
                    "latency_s": rng.random() * 3,
                    "cost_usd": str(est),
                }
            )
            batch.append(
                {
                    **base,
                    "event": "request",
                    "provider": provider,
                    "model": model,
                    "route_key": route,
                    "cost_usd": str(est),
                    "estimated_cost_usd": str(est),
                    "image_sha256s": ["0" * 64],
                    "watermark": ["embedded"],
                    "c2pa": ["signed"],
                }
            )
        if len(batch) >= 200:
            audit.append_many(batch)
            batch = []
    if batch:
        audit.append_many(batch)
    ledger.close()
    audit.close()
    return ledger_url, audit_url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    ledger_url, audit_url = seed(home, args.requests)
    print(f"seeded {args.requests} requests in {time.perf_counter() - t0:.1f} s")
    src = open_sources(ledger_url, audit_url, checkpoint_dir=home / "checkpoints")
    app = create_app(src)
    size = src.audit.head()[0] if src.audit else 0
    pages = [
        "/?range=30d",
        "/?range=all&by=model",
        "/audit?range=30d",
        f"/audit/{size // 2}",
        "/providers?range=30d",
        "/report.html?range=30d",
    ]
    print(f"audit records: {size}")
    print(f"{'page':28} {'median ms':>10} {'KiB':>8}")
    for page in pages:
        path, _, query = page.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        times = []
        body = b""
        for _ in range(args.repeat):
            t = time.perf_counter()
            resp = app.handle(Request("GET", path, params, {"host": "127.0.0.1"}))
            times.append(time.perf_counter() - t)
            body = resp.body
            assert resp.status == 200, (page, resp.status)
        print(f"{page:28} {statistics.median(times) * 1000:10.1f} {len(body) / 1024:8.1f}")
    src.close()


if __name__ == "__main__":
    main()
