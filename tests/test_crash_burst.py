"""kill -9 during a burst of group-committed requests: every result the caller saw has its audit
record, the chain verifies, and the reservations of requests that never finished expire."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.audit import open_audit
from gateway.ledger import open_ledger

ROOT = Path(__file__).resolve().parents[1]
OPEN = "SELECT count(*) FROM ledger_requests WHERE status = 'reserved'"
SEEN_BEFORE_KILL = 40

BURST = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from gateway import AsyncGateway, MockBackend
    from gateway.config import Settings
    from gateway.testing import png_bytes

    home, root = Path(sys.argv[2]), Path(sys.argv[1])
    png = png_bytes(64, 64, 7)

    async def slow(call):  # the last 40 of each burst hang in the backend, holding their reservations
        await asyncio.sleep(0.05 if call.request.seed % 100 < 60 else 30)
        return [png] * call.request.n

    async def main():
        settings = Settings(home=home, policies=(root / "policies/default.yaml",),
                            provenance={"watermark_remote": False, "c2pa_remote": False})
        gw = AsyncGateway(settings, backends={"bedrock": MockBackend(slow)})

        async def one(i):
            r = await gw.generate(f"a lighthouse, variation {i}", provider="bedrock",
                                  model="amazon.titan-image-generator-v2:0", width=512, height=512, seed=i)
            print(r.request_id, r.audit_seq, flush=True)  # returned to the caller: must be on disk

        while True:  # bursts until killed
            await asyncio.gather(*(one(i) for i in range(100)))  # (never returns: the kill comes first)

    asyncio.run(main())
    """
)


def test_kill_9_during_a_burst_loses_no_returned_result(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GATEWAY_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", BURST, str(ROOT), str(home)], stdout=subprocess.PIPE, text=True, env=env
    )
    seen: list[tuple[str, int]] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            rid, seq = line.split()
            seen.append((rid, int(seq)))
            if len(seen) >= SEEN_BEFORE_KILL:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: other requests are reserved, in flight, queued
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    seen += [(r, int(s)) for r, s in (ln.split() for ln in rest.splitlines() if ln.strip())]
    assert len(seen) >= SEEN_BEFORE_KILL

    log = open_audit(f"sqlite:///{home / 'audit.db'}", checkpoint_dir=home / "checkpoints")
    try:
        report = log.verify()
        assert report.ok, report
        requests = {r["request_id"]: r["seq"] for r in log.iter_records() if r["event"] == "request"}
    finally:
        log.close()
    for rid, seq in seen:
        assert requests.get(rid) == seq, f"result {rid} was returned without its audit record"

    db = home / "ledger.db"
    with sqlite3.connect(db) as c:
        open_before = c.execute("SELECT count(*) FROM ledger_requests WHERE status = 'reserved'").fetchone()[
            0
        ]
    assert open_before > 0  # the kill caught requests holding money
    ledger = open_ledger(f"sqlite:///{db}")
    try:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # past every lease
        assert ledger.reconcile(later) == open_before
        assert ledger.verify() == []  # the counters agree with the requests
    finally:
        ledger.close()
    with sqlite3.connect(db) as c:
        assert c.execute(OPEN).fetchone()[0] == 0
