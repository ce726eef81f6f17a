"""PostgreSQL specifics: many connections appending at once, lost connections, URL handling."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit import open_audit
from gateway.audit.postgres import PostgresAuditLog, split_url
from gateway.errors import AuditWriteError, UsageError

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A log of its own on the shared `test` database (unique table prefix), dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    yield f"{postgres_url}?table_prefix={prefix}"
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {prefix}audit_log, {prefix}audit_meta CASCADE")
        pg.execute(f"DROP FUNCTION IF EXISTS {prefix}audit_append_only() CASCADE")


def test_many_connections_appending_at_once_form_one_gap_free_chain(pg_url: str, tmp_path: Path) -> None:
    writers, n = 6, 30
    logs = [open_audit(pg_url, checkpoint_dir=tmp_path / "cps", checkpoint_every=25) for _ in range(writers)]
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            start.wait()
            for i in range(n):
                if i % 10 == 0:
                    logs[k].append_many(
                        [{"event": "attempt", "writer": k, "i": i, "part": p} for p in range(3)]
                    )
                logs[k].append({"event": "request", "writer": k, "i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for log in logs:
        log.close()
    with open_audit(pg_url, checkpoint_dir=tmp_path / "cps") as log:
        report = log.verify()
        total = writers * (n + 3 * 3)
        assert report.ok, report
        assert report.count == total
        assert report.checkpoints >= 1
        records = list(log.iter_records())
    assert [r["seq"] for r in records] == list(range(1, total + 1))
    for k in range(writers):
        mine = [(r["i"], r["event"] == "request", r.get("part", 0)) for r in records if r["writer"] == k]
        assert mine == sorted(mine)
    batches = [r["seq"] for r in records if r.get("part") == 0]
    for seq in batches:  # a batch is consecutive, never interleaved with another writer
        assert [records[seq - 1 + j].get("part") for j in range(3)] == [0, 1, 2]


def test_a_lost_connection_fails_closed_then_reconnects(
    pg_url: str, tmp_path: Path, postgres_url: str
) -> None:
    import psycopg

    log = open_audit(pg_url, checkpoint_dir=tmp_path / "cps")
    assert isinstance(log, PostgresAuditLog)
    log.append({"event": "request"})
    pid = log._conn.info.backend_pid
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(AuditWriteError):
        log.append({"event": "request", "n": 2})
    assert log.append({"event": "request", "n": 3}) == 2
    assert log.verify().ok
    log.close()


def test_url_parameters_and_secrets_in_urls(postgres_url: str, tmp_path: Path) -> None:
    conninfo, ours = split_url("postgresql://u:pw@h:5/db?sslmode=disable&table_prefix=x_")
    assert (conninfo, ours) == ("postgresql://u:pw@h:5/db?sslmode=disable", {"table_prefix": "x_"})
    with pytest.raises(UsageError, match="table_prefix"):
        open_audit(f"{postgres_url}?table_prefix=Robert'); DROP TABLE x;--", checkpoint_dir=tmp_path)
    with pytest.raises(AuditWriteError) as info:
        open_audit("postgresql://postgres:s3cr3t-pw@127.0.0.1:1/test", checkpoint_dir=tmp_path)
    assert "s3cr3t-pw" not in str(info.value)
    assert "[REDACTED]" in str(info.value)


def test_the_default_prefix_and_a_second_open_reuse_the_same_log(postgres_url: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    try:
        first = open_audit(postgres_url, checkpoint_dir=tmp_path, table_prefix=prefix)
        first.append({"event": "request"})
        second = open_audit(postgres_url, checkpoint_dir=tmp_path, table_prefix=prefix)
        assert second.log_id == first.log_id
        assert second.append({"event": "request"}) == 2
        second.close()
        assert isinstance(first, PostgresAuditLog)
        assert first.table == f"{prefix}audit_log"
        first.close()
    finally:
        with open_audit(postgres_url, checkpoint_dir=tmp_path / "x", table_prefix=prefix) as log:
            assert isinstance(log, PostgresAuditLog)
            log.drop()
