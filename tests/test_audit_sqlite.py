"""SQLite specifics: many writer processes on one file, and failing closed on real storage errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.audit import open_audit
from gateway.audit.sqlite import SQLiteAuditLog
from gateway.errors import AuditWriteError, UsageError

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from gateway.audit import open_audit
    url, cps, name, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    log = open_audit(url, checkpoint_dir=cps, checkpoint_every=7)
    for i in range(n):
        # Mix single appends and batches: a batch must land as consecutive seqs.
        if i % 5 == 0:
            log.append_many([{"event": "attempt", "writer": name, "i": i, "part": p} for p in range(2)])
        log.append({"event": "request", "writer": name, "i": i})
    log.close()
    """
)


def test_many_processes_append_to_one_file_as_one_gap_free_chain(tmp_path: Path) -> None:
    url, cps = f"sqlite:///{tmp_path / 'audit.db'}?synchronous=normal", tmp_path / "cps"
    writers, n = 4, 25
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), url, str(cps), f"w{k}", str(n)])
        for k in range(writers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * writers
    log = open_audit(url, checkpoint_dir=cps)
    report = log.verify()
    per_writer = writers * (n + 2 * len(range(0, n, 5)))
    assert report.ok, report
    assert report.count == per_writer
    assert report.checkpoints >= writers  # each writer sealed on close, some also every 7 records
    records = list(log.iter_records())
    assert [r["seq"] for r in records] == list(range(1, per_writer + 1))
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    for k in range(writers):
        mine = [r for r in records if r["writer"] == f"w{k}"]
        order = [(r["i"], r["event"] == "request", r.get("part", 0)) for r in mine]
        assert order == sorted(order)  # each writer's appends keep their order
        for batch_first in (r for r in mine if r.get("part") == 0):
            follower = records[batch_first["seq"]]  # seq is 1-based: this is the next record
            assert (follower["writer"], follower["part"]) == (f"w{k}", 1)
    log.close()


def test_a_held_write_lock_makes_append_fail_closed_then_recover(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    log = open_audit(f"sqlite:///{db}?timeout=0.05", checkpoint_dir=tmp_path / "cps")
    log.append({"event": "request"})
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(AuditWriteError, match="locked"):
        log.append({"event": "request"})
    other.execute("ROLLBACK")
    other.close()
    assert log.append({"event": "request"}) == 2
    assert log.verify().ok
    log.close()


def test_a_full_disk_makes_append_fail_closed_and_leaves_the_chain_intact(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    log = open_audit(f"sqlite:///{db}", checkpoint_dir=tmp_path / "cps", checkpoint_every=0)
    log.append({"event": "request"})
    assert isinstance(log, SQLiteAuditLog)
    pages = log._conn.execute("PRAGMA page_count").fetchone()[0]
    log._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    with pytest.raises(AuditWriteError, match="full"):
        log.append_many([{"event": "attempt", "pad": "x" * 5000} for _ in range(20)])
    assert log.head()[0] == 1
    log._conn.execute("PRAGMA max_page_count = 1073741823")
    assert log.append({"event": "request"}) == 2
    assert log.verify().ok
    log.close()


def test_a_blob_turned_text_by_a_hand_edit_is_still_hashed_and_caught(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    log = open_audit(f"sqlite:///{db}", checkpoint_dir=tmp_path / "cps")
    log.append_many([{"event": "request", "cost_usd": "1.00"}, {"event": "request"}])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET body = CAST(body AS TEXT) WHERE seq = 2")  # same bytes, TEXT class
    assert log.verify().ok
    conn.execute("UPDATE audit_log SET body = replace(body, '1.00', '0.01') WHERE seq = 1")
    report = log.verify()
    assert (report.problem, report.first_bad_seq) == ("edited", 1)
    assert log.get(1) is not None
    conn.close()
    log.close()


def test_url_options_and_errors(tmp_path: Path) -> None:
    fast = open_audit(f"sqlite:///{tmp_path / 'a.db'}?synchronous=normal", checkpoint_dir=tmp_path / "c")
    durable = open_audit(f"sqlite:///{tmp_path / 'b.db'}", checkpoint_dir=tmp_path / "d")
    assert (fast.blocking_io, durable.blocking_io) == (False, True)
    assert durable.url == f"sqlite:///{tmp_path / 'b.db'}"
    fast.close()
    durable.close()
    for bad in ("sqlite://x.db", "sqlite:///:memory:", f"sqlite:///{tmp_path}/c.db?synchronous=sometimes"):
        with pytest.raises(UsageError):
            open_audit(bad, checkpoint_dir=tmp_path / "e")
    with pytest.raises(UsageError, match="no audit log"):
        open_audit(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    with pytest.raises(UsageError, match="unsupported") as info:
        open_audit("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(info.value)


def test_default_checkpoint_folder_sits_next_to_the_database(tmp_path: Path) -> None:
    log = open_audit(f"sqlite:///{tmp_path / 'logs' / 'audit.db'}")
    log.append({"event": "request"})
    log.close()  # seals on close by default
    line = (tmp_path / "logs" / "checkpoints" / "checkpoints.jsonl").read_text()
    assert json.loads(line)["size"] == 1
