"""The audit log contract on both stores: chaining, atomicity, checkpoints, and the four tamperings.

Every test runs on SQLite and on the real PostgreSQL server (unique table prefix per test, dropped
after). Tampering is done the way an attacker with database access would: triggers disabled, rows
changed with plain SQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditLog, canonical_bytes, merkle, open_audit
from gateway.errors import AuditWriteError, VerificationFailed


class Harness:
    """Opens logs on one backend and tampers with them through a raw connection."""

    def __init__(self, kind: str, url: str, checkpoint_dir: Path, table: str) -> None:
        self.kind, self.url, self.checkpoint_dir, self.table = kind, url, checkpoint_dir, table
        self.opened: list[AuditLog] = []

    def open(self, **kw: Any) -> AuditLog:
        kw.setdefault("checkpoint_dir", self.checkpoint_dir)
        kw.setdefault("checkpoint_every", 0)
        kw.setdefault("checkpoint_on_close", False)
        log = open_audit(self.url, **kw)
        self.opened.append(log)
        return log

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL as the attacker: append-only triggers switched off first."""
        if self.kind == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            try:
                conn.execute(f"DROP TRIGGER IF EXISTS {self.table}_no_update")
                conn.execute(f"DROP TRIGGER IF EXISTS {self.table}_no_delete")
                return conn.execute(
                    statement.replace("%s", "?").replace("{t}", self.table), params
                ).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url.split("?")[0], autocommit=True) as pg:
            pg.execute(f"ALTER TABLE {self.table} DISABLE TRIGGER USER")
            cur = pg.execute(statement.replace("{t}", self.table), params)
            return cur.fetchall() if cur.description else []

    def body(self, seq: int) -> bytes:
        (value,) = self.sql("SELECT body FROM {t} WHERE seq = %s", seq)[0]
        return value if isinstance(value, bytes) else value.encode()

    def set_row(self, seq: int, body: bytes, entry_hash: str | None = None) -> None:
        stored: Any = body if self.kind == "sqlite" else body.decode()
        if entry_hash is None:
            self.sql("UPDATE {t} SET body = %s WHERE seq = %s", stored, seq)
        else:
            self.sql("UPDATE {t} SET body = %s, entry_hash = %s WHERE seq = %s", stored, entry_hash, seq)

    def fail_inserts_of(self, event: str) -> None:
        """A real database error mid-transaction: the server refuses rows of this event."""
        if self.kind == "sqlite":
            self.sql(
                "CREATE TRIGGER boom BEFORE INSERT ON {t} WHEN json_extract(CAST(NEW.body AS TEXT), "
                f"'$.record.event') = '{event}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
            )
            return
        self.sql(
            f"CREATE FUNCTION {self.table}_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF (NEW.body::jsonb -> 'record' ->> 'event') = '{event}' "
            "THEN RAISE EXCEPTION 'refused by test'; END IF; RETURN NEW; END $$"
        )
        self.sql("CREATE TRIGGER boom BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_boom()")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        h = Harness("sqlite", f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "checkpoints", "audit_log")
        yield h
        for log in h.opened:
            log.close()
        return
    base = request.getfixturevalue("postgres_url")
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    h = Harness("postgres", f"{base}?table_prefix={prefix}", tmp_path / "checkpoints", f"{prefix}audit_log")
    yield h
    for log in h.opened:
        log.close()
    import psycopg

    with psycopg.connect(base, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {prefix}audit_log, {prefix}audit_meta CASCADE")
        pg.execute(f"DROP FUNCTION IF EXISTS {prefix}audit_append_only(), {prefix}audit_log_boom() CASCADE")


def rec(i: int, event: str = "request", **extra: Any) -> dict[str, Any]:
    """A record shaped like the ones the client writes."""
    return {
        "event": event,
        "request_id": f"req-{i}",
        "team": "ml" if i % 2 else "ads",
        "project": "p",
        "use_case": "marketing",
        "user": "u1",
        "tags": ["a"],
        "decision": {"allowed": True, "rule_ids": [], "policy_hash": "ph"},
        "provider": "local",
        "model": "tiny-digits",
        "cost_usd": "0.0040",
        "image_sha256s": ["ab" * 32],
        "prompt_sha256": "cd" * 32,
        "prompt_len": 12,
        **extra,
    }


def filled(h: Harness, n: int, **kw: Any) -> AuditLog:
    log = h.open(**kw)
    log.append_many([rec(i) for i in range(1, n + 1)])
    return log


# --------------------------------------------------------------------------- writing


def test_append_assigns_consecutive_seqs_and_chains_each_entry_to_the_previous(harness: Harness) -> None:
    log = harness.open()
    assert log.append(rec(1)) == 1
    assert log.append_many([rec(2), rec(3, "attempt")]) == [2, 3]
    assert log.append_many([]) == []
    records = list(log.iter_records())
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev_hash"] == "0" * 64
    for prev, cur in itertools.pairwise(records):
        assert cur["prev_hash"] == prev["entry_hash"]
    # Anyone holding an export can recompute each hash: RFC 6962 leaf over the canonical envelope.
    for r in records:
        chain = {k: r.pop(k) for k in ("seq", "ts", "prev_hash", "entry_hash")}
        envelope = {"prev_hash": chain["prev_hash"], "record": r, "seq": chain["seq"], "ts": chain["ts"]}
        assert hashlib.sha256(b"\x00" + canonical_bytes(envelope)).hexdigest() == chain["entry_hash"]
    third = log.get(3)
    assert third is not None
    assert third["event"] == "attempt"
    assert log.get(4) is None
    assert [r["seq"] for r in log.iter_records(since_seq=2)] == [3]
    assert log.head()[0] == 3


def test_records_are_stored_as_given_and_dashboard_columns_follow_the_hashed_bytes(harness: Harness) -> None:
    log = harness.open()
    log.append(rec(1, extra_field={"nested": [1, "x"]}))
    stored = log.get(1)
    assert stored is not None
    assert stored["extra_field"] == {"nested": [1, "x"]}
    assert stored["cost_usd"] == "0.0040"
    rows = harness.sql("SELECT event, team, use_case, provider, model, request_id, ts, prev_hash FROM {t}")
    assert rows == [("request", "ml", "marketing", "local", "tiny-digits", "req-1", stored["ts"], "0" * 64)]


def test_secrets_are_scrubbed_before_they_are_stored(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "r8_" + "Zq7" * 12 + "x"
    monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    log = harness.open()
    log.append(
        rec(1, error=f"401 from https://api.replicate.com: Authorization: Bearer {token}", api_key="k-123")
    )
    raw = harness.body(1)
    assert token.encode() not in raw
    assert b"k-123" not in raw
    assert log.verify().ok


def test_append_many_is_all_or_nothing_when_the_database_refuses_a_row(harness: Harness) -> None:
    log = harness.open()
    log.append(rec(1))
    harness.fail_inserts_of("boom")
    with pytest.raises(AuditWriteError, match="refused by test"):
        log.append_many([rec(2), rec(3, "boom"), rec(4)])
    assert log.head()[0] == 1
    assert log.append(rec(5)) == 2
    assert log.verify().ok


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"team": "x"}, "event"),
        ({"event": ""}, "event"),
        ({"event": "request", "seq": 9}, "reserved"),
        ({"event": "request", "entry_hash": "x"}, "reserved"),
        ({"event": "request", "cost": float("nan")}, "serialisable"),
        ({"event": "request", "blob": b"bytes"}, "serialisable"),
    ],
)
def test_invalid_records_raise_audit_write_error_and_write_nothing(
    harness: Harness, record: dict[str, Any], message: str
) -> None:
    log = harness.open()
    with pytest.raises(AuditWriteError, match=message):
        log.append_many([rec(1), record])
    assert log.head() == (0, "0" * 64)


def test_a_closed_log_refuses_to_append(harness: Harness) -> None:
    log = harness.open()
    log.close()
    with pytest.raises(AuditWriteError, match="closed"):
        log.append(rec(1))
    log.close()  # idempotent


def test_updates_and_deletes_are_refused_by_the_database(harness: Harness) -> None:
    log = filled(harness, 2)
    conn_error: type[BaseException]
    if harness.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(harness.url.removeprefix("sqlite:///"), isolation_level=None)
        conn_error = sqlite3.DatabaseError
        for sql in ("UPDATE audit_log SET entry_hash = 'x'", "DELETE FROM audit_log WHERE seq = 1"):
            with pytest.raises(conn_error, match="append-only"):
                conn.execute(sql)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(harness.url.split("?")[0], autocommit=True) as pg:
            for sql in ("UPDATE {t} SET entry_hash = 'x'", "DELETE FROM {t}", "TRUNCATE {t}"):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    pg.execute(sql.format(t=harness.table))
    assert log.verify().ok


def test_timestamps_come_from_the_clock_and_never_run_backwards(harness: Harness) -> None:
    times = iter(
        [dt.datetime(2026, 5, 1, 12, 0, 0, 5, tzinfo=dt.UTC), dt.datetime(2026, 5, 1, 11, 0, tzinfo=dt.UTC)]
    )
    log = harness.open(clock=lambda: next(times))
    log.append(rec(1))
    log.append(rec(2))  # this writer's clock lags: it takes the previous entry's time
    ts = [r["ts"] for r in log.iter_records()]
    assert ts == ["2026-05-01T12:00:00.000005Z", "2026-05-01T12:00:00.000005Z"]


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_are_signed_incremental_and_vouch_for_size_root_and_head(harness: Harness) -> None:
    log = filled(harness, 5)
    first = log.checkpoint()
    assert (first.size, first.head) == (5, log.head()[1])
    assert log.checkpoint() == first  # nothing new: no new line
    log.append_many([rec(i) for i in range(6, 14)])
    second = log.checkpoint()
    leaves = [bytes.fromhex(r["entry_hash"]) for r in log.iter_records()]
    assert (second.root, second.size) == (merkle.root(leaves).hex(), 13)
    lines = (harness.checkpoint_dir / "checkpoints.jsonl").read_text().splitlines()
    assert [json.loads(x)["size"] for x in lines] == [5, 13]
    proof = [bytes.fromhex(h) for h in log.consistency_proof(5, 13)]
    assert merkle.verify_consistency(5, 13, bytes.fromhex(first.root), bytes.fromhex(second.root), proof)
    p = log.inclusion_proof(7)
    assert merkle.verify_inclusion(
        bytes.fromhex(p["leaf"]),
        6,
        p["size"],
        [bytes.fromhex(h) for h in p["path"]],
        bytes.fromhex(second.root),
    )
    report = log.verify()
    assert (report.ok, report.checkpoints, report.checkpoint_size) == (True, 2, 13)
    assert report.root == second.root
    key = harness.checkpoint_dir / "signing-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600


def test_checkpoints_are_written_every_n_records_and_on_close(harness: Harness) -> None:
    log = harness.open(checkpoint_every=4, checkpoint_on_close=True)
    log.append_many([rec(i) for i in range(1, 4)])
    assert not (harness.checkpoint_dir / "checkpoints.jsonl").exists()
    log.append_many([rec(4), rec(5)])  # crosses 4
    log.append(rec(6))
    log.close()
    sizes = [
        json.loads(x)["size"] for x in (harness.checkpoint_dir / "checkpoints.jsonl").read_text().splitlines()
    ]
    assert sizes == [5, 6]


def test_checkpoint_refuses_to_seal_a_tampered_or_truncated_log(harness: Harness) -> None:
    log = filled(harness, 4)
    log.checkpoint()
    log.append_many([rec(5), rec(6)])
    harness.set_row(6, harness.body(6).replace(b"req-6", b"req-X"))
    with pytest.raises(VerificationFailed, match="seq 6"):
        log.checkpoint()
    harness.sql("DELETE FROM {t} WHERE seq >= %s", 3)
    with pytest.raises(VerificationFailed, match="truncated"):
        log.checkpoint()


# --------------------------------------------------------------------------- verify and tampering


def test_an_untouched_log_verifies_and_says_what_it_cannot_see(harness: Harness) -> None:
    log = filled(harness, 9)
    report = log.verify()
    assert (report.ok, report.count, report.first_bad_seq, report.root) == (True, 9, None, "")
    assert any("no checkpoints" in w for w in report.warnings)
    deep = log.verify(deep=True)
    assert deep.root == merkle.root([bytes.fromhex(r["entry_hash"]) for r in log.iter_records()]).hex()
    assert deep.root_size == 9
    log.checkpoint()
    log.append(rec(10))
    assert any("after the last checkpoint" in w for w in log.verify().warnings)
    empty = open_audit(
        f"sqlite:///{harness.checkpoint_dir.parent / 'empty.db'}",
        checkpoint_dir=harness.checkpoint_dir.parent / "e",
    )
    assert (empty.verify().ok, empty.verify().count) == (True, 0)
    empty.close()


Tamper = Callable[[Harness], None]


def _edit(h: Harness) -> None:
    h.set_row(4, h.body(4).replace(b'"cost_usd":"0.0040"', b'"cost_usd":"0.0000"'))


def _edit_and_rehash(h: Harness) -> None:
    body = h.body(4).replace(b'"team":"ads"', b'"team":"eve"')
    h.set_row(4, body, hashlib.sha256(b"\x00" + body).hexdigest())


def _delete(h: Harness) -> None:
    h.sql("DELETE FROM {t} WHERE seq = %s", 4)


def _reorder(h: Harness) -> None:
    rows = {s: (b, e) for s, b, e in h.sql("SELECT seq, body, entry_hash FROM {t} WHERE seq IN (4, 5)")}
    h.sql("DELETE FROM {t} WHERE seq IN (4, 5)")
    for seq, src in ((4, 5), (5, 4)):
        h.sql("INSERT INTO {t}(seq, body, entry_hash) VALUES (%s, %s, %s)", seq, *rows[src])


def _renumber_after_delete(h: Harness) -> None:
    rows = h.sql("SELECT seq, body, entry_hash FROM {t} WHERE seq > 4 ORDER BY seq")
    h.sql("DELETE FROM {t} WHERE seq >= %s", 4)
    for seq, body, entry_hash in rows:
        h.sql("INSERT INTO {t}(seq, body, entry_hash) VALUES (%s, %s, %s)", seq - 1, body, entry_hash)


def _truncate(h: Harness) -> None:
    h.sql("DELETE FROM {t} WHERE seq > %s", 6)


@pytest.mark.parametrize(
    ("tamper", "problem", "first_bad"),
    [
        (_edit, "edited", 4),
        (_edit_and_rehash, "edited", 4),
        (_delete, "deleted", 4),
        (_reorder, "reordered", 4),
        (_renumber_after_delete, "deleted", 4),
        (_truncate, "truncated", 7),
    ],
    ids=["edited", "edited-rehashed", "deleted", "reordered", "deleted-renumbered", "truncated"],
)
@pytest.mark.parametrize("deep", [False, True], ids=["fast", "deep"])
def test_verify_names_the_problem_and_the_first_bad_seq(
    harness: Harness, tamper: Tamper, problem: str, first_bad: int, deep: bool
) -> None:
    log = filled(harness, 8)
    log.checkpoint()
    tamper(harness)
    report = log.verify(deep=deep)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, problem, first_bad), report
    with pytest.raises(VerificationFailed, match=f"{problem} at seq {first_bad}"):
        report.raise_for_problem()


def test_a_consistent_rewrite_of_checkpointed_records_is_caught_by_the_checkpoint(harness: Harness) -> None:
    log = filled(harness, 12)
    log.checkpoint()
    # The attacker rewrites records 10..12 and recomputes every hash so the chain itself is valid.
    prev = log.get(9)["entry_hash"]  # type: ignore[index]
    for seq in range(10, 13):
        env = json.loads(harness.body(seq))
        env["prev_hash"], env["record"]["cost_usd"] = prev, "0"
        body = canonical_bytes(env)
        prev = hashlib.sha256(b"\x00" + body).hexdigest()
        harness.set_row(seq, body, prev)
    for deep in (False, True):
        report = log.verify(deep=deep)
        assert (report.problem, report.first_bad_seq) == ("edited", 9)  # the differing subtree is 9..12
        assert "checkpoint of size 12" in report.detail


def test_forged_or_foreign_checkpoints_fail_verification(harness: Harness, tmp_path: Path) -> None:
    log = filled(harness, 3)
    log.checkpoint()
    path = harness.checkpoint_dir / "checkpoints.jsonl"
    good = path.read_text()
    forged = json.loads(good)
    forged["root"] = "00" * 32
    path.write_text(good + json.dumps(forged) + "\n")
    report = log.verify()
    assert (report.ok, report.problem) == (False, "checkpoint")
    assert "bad signature" in report.detail
    other = open_audit(f"sqlite:///{tmp_path / 'other.db'}", checkpoint_dir=harness.checkpoint_dir)
    other.append(rec(1))
    other.checkpoint()  # signed with the same key, but for another log
    other.close()
    path.write_text(path.read_text().replace(json.dumps(forged) + "\n", ""))
    report = log.verify()
    assert report.problem == "checkpoint"
    assert "another log" in report.detail
    pinned = open_audit(
        harness.url, checkpoint_dir=harness.checkpoint_dir, public_keys=[tmp_path / "nope.pub"]
    )
    (tmp_path / "nope.pub").write_bytes(b"not a key")
    assert pinned.verify().problem == "checkpoint"
    pinned.close()
