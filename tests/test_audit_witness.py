"""Witnessed checkpoints, pinned and external keys, key rotation: against real witness servers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from s3_support import S3Test, s3_env, s3_server  # noqa: F401 - fixtures
from witness_support import PgWitness, S3Server, TSAServer, object_lock_bucket, pg_witness, tsa_server

from gateway.audit import open_audit
from gateway.audit.configure import audit_from_settings
from gateway.audit.note import NoteError, TreeHead, open_note, parse_note, sign_note, vkey
from gateway.audit.signers import FileSigner, key_id, kms_signer
from gateway.audit.store import AuditLog
from gateway.audit.verify import envelope_bytes
from gateway.cli import cli
from gateway.config import Settings
from gateway.errors import AuditWriteError

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def home(_isolated_home: Path) -> Path:
    return _isolated_home


@pytest.fixture
def pgw(postgres_url: str) -> Iterator[PgWitness]:
    yield from pg_witness(postgres_url)


@pytest.fixture
def s3(s3_env: S3Test, monkeypatch: pytest.MonkeyPatch) -> S3Server:  # noqa: F811
    return object_lock_bucket(s3_env, monkeypatch)


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[TSAServer]:
    yield from tsa_server(tmp_path / "tsa-server")


def write_config(home: Path, **settings: object) -> Path:
    cfg = home.parent / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"home": str(home), **settings}))
    return cfg


def open_configured(cfg: Path) -> AuditLog:
    return audit_from_settings(Settings.load(cfg))


def fill(cfg: Path, batches: int = 3, per_batch: int = 2) -> None:
    """Several processes' worth of requests: each batch is one open/append/close (one witnessed head)."""
    n = 0
    for _ in range(batches):
        log = open_configured(cfg)
        for _ in range(per_batch):
            n += 1
            log.append({"event": "request", "request_id": f"r{n}", "team": "ml", "cost_usd": "0.01"})
        log.close()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)


def _sql(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    return conn


def truncate(home: Path, records: int) -> None:
    """What the issue describes: delete the last records and the last local checkpoint line."""
    conn = _sql(home / "audit.db")
    last = conn.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
    conn.execute("DELETE FROM audit_log WHERE seq > ?", (last - records,))
    conn.close()
    cps = home / "checkpoints" / "checkpoints.jsonl"
    lines = cps.read_text().splitlines()
    cps.write_text("".join(line + "\n" for line in lines[:-1]))


def rewrite_and_reseal(home: Path, seq: int) -> None:
    """Edit record ``seq``, re-chain every later record and re-sign fresh local checkpoints with the
    host's own key: everything local verifies; only a witness can tell."""
    conn = _sql(home / "audit.db")
    rows = conn.execute("SELECT seq, body FROM audit_log ORDER BY seq").fetchall()
    prev = "0" * 64
    for s, body in rows:
        env = json.loads(body)
        record = env["record"]
        if s == seq:
            record["cost_usd"] = "0.00"
        rec_json = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        new = envelope_bytes(prev, rec_json, s, env["ts"])
        digest = sha256(b"\x00" + new).hexdigest()
        conn.execute("UPDATE audit_log SET body = ?, entry_hash = ? WHERE seq = ?", (new, digest, s))
        prev = digest
    conn.close()
    (home / "checkpoints" / "checkpoints.jsonl").unlink()
    log = open_audit(f"sqlite:///{home / 'audit.db'}", checkpoint_dir=home / "checkpoints")
    log.checkpoint()
    assert log.verify().ok, "the rewritten log must verify locally, or the test proves nothing"
    log.close()


# --------------------------------------------------------------------------- signed notes


def test_checkpoint_note_is_c2sp_shaped_and_verifies(tmp_path: Path) -> None:
    signer = FileSigner(tmp_path / "k.pem")
    head = TreeHead("example.com/log", 12, sha256(b"x").digest())
    note = sign_note(head, [("example.com/log", signer)])
    text = note.decode()
    lines = text.split("\n")
    assert lines[:3] == ["example.com/log", "12", head.text().split("\n")[2]]
    assert lines[3] == "" and lines[4].startswith("\u2014 example.com/log ")
    assert open_note(note, [("example.com/log", signer.public_key)]) == head
    assert vkey("example.com/log", signer.public_key).startswith("example.com/log+")
    with pytest.raises(NoteError, match="trusted"):
        open_note(note, [("other.example/log", signer.public_key)])
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note.replace(b"\n12\n", b"\n13\n"), [("example.com/log", signer.public_key)])
    for bad in (
        b"no signatures\n",
        note[:-1],
        note.replace(b"12", b"012"),
        b"a\n1\n!!\n\n\xe2\x80\x94 a AAAA\n",
    ):
        with pytest.raises(NoteError):
            parse_note(bad)


# --------------------------------------------------------------------------- Done when: truncation


@pytest.mark.postgres
def test_truncation_detected_by_a_postgres_witness(home: Path, pgw: PgWitness) -> None:
    cfg = write_config(home, audit_witnesses=[pgw.url])
    fill(cfg, batches=3, per_batch=2)
    assert run("verify", "--config", str(cfg)).exit_code == 0
    truncate(home, records=2)
    # Without the witness the shortened log passes: that is the hole witnesses close.
    alone = run("verify", "--audit", f"sqlite:///{home / 'audit.db'}")
    assert alone.exit_code == 0, alone.output
    result = run("verify", "--config", str(cfg), "--json")
    assert result.exit_code == 6
    report = json.loads(result.stdout)
    assert report["problem"] == "truncated" and report["first_bad_seq"] == 5
    assert pgw.role in report["detail"] and "size 6" in report["detail"]
    text = run("verify", "--config", str(cfg))
    assert text.exit_code == 6 and "truncated at seq 5" in text.output and pgw.database in text.output


@pytest.mark.postgres
def test_the_witness_role_may_insert_and_select_but_not_rewrite(pgw: PgWitness) -> None:
    import psycopg

    with psycopg.connect(pgw.url, autocommit=True) as conn:
        conn.execute("INSERT INTO audit_witness_heads (origin, size, root, note) VALUES ('o', 1, 'r', 'n')")
        assert conn.execute("SELECT count(*) FROM audit_witness_heads").fetchone() == (1,)
        for stmt in (
            "UPDATE audit_witness_heads SET root = 'x'",
            "DELETE FROM audit_witness_heads",
            "TRUNCATE audit_witness_heads",
            "DROP TABLE audit_witness_heads",
            "CREATE TABLE sneaky (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)


# --------------------------------------------------------------------------- rewriting, per witness kind


def _kinds(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    if kind == "postgres":
        return request.getfixturevalue("pgw").url  # type: ignore[no-any-return]
    if kind == "s3":
        return request.getfixturevalue("s3").url  # type: ignore[no-any-return]
    if kind == "tsa":
        return request.getfixturevalue("tsa").url  # type: ignore[no-any-return]
    return f"dir://{tmp_path / 'dev-witness'}"


@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pytest.mark.postgres), "s3", "tsa", "dir"])
def test_rewritten_middle_record_with_resigned_checkpoints_detected(
    home: Path, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    url = _kinds(request, kind, tmp_path)
    cfg = write_config(home, audit_witnesses=[url])
    fill(cfg, batches=3, per_batch=2)
    assert run("verify", "--config", str(cfg)).exit_code == 0
    rewrite_and_reseal(home, seq=3)
    result = run("verify", "--config", str(cfg), "--json")
    assert result.exit_code == 6, result.output
    report = json.loads(result.stdout)
    assert report["problem"] == "rewritten"
    assert report["first_bad_seq"] == 3  # heads at 2, 4, 6: the one at 2 still matches
    assert "rewritten" in report["detail"]


def test_tsa_token_binds_the_note_and_the_time(home: Path, tsa: TSAServer) -> None:
    cfg = write_config(home, audit_witnesses=[tsa.url])
    fill(cfg, batches=2, per_batch=1)
    assert len(tsa.requests) == 2
    tokens = sorted((home / "checkpoints" / "tsa").rglob("*.tsr"))
    assert len(tokens) == 2
    # Swapping a token for another head's is caught: the token's imprint is the note's SHA-256.
    tokens[0].chmod(0o644)
    tokens[0].write_bytes(tokens[1].read_bytes())
    report = json.loads(run("verify", "--config", str(cfg), "--json").stdout)
    assert report["problem"] == "witness" and "another note" in report["detail"]


def test_s3_witness_refuses_a_bucket_without_object_lock(home: Path, s3: S3Server) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="no-lock-bucket")
    cfg = write_config(home, audit_witnesses=["s3://no-lock-bucket/heads"])
    log = open_configured(cfg)
    log.append({"event": "request"})
    with pytest.raises(AuditWriteError, match="Object Lock"):
        log.close()


# --------------------------------------------------------------------------- outages and conflicts


@pytest.mark.postgres
def test_witness_outage_fails_closed_by_default(home: Path, pgw: PgWitness) -> None:
    down = pgw.url.replace(":5432/", ":1/")  # nothing listens on port 1
    cfg = write_config(home, audit_witnesses=[pgw.url, down])
    log = open_configured(cfg)
    log.append({"event": "request"})
    with pytest.raises(AuditWriteError, match="reached 1 of the 2 witnesses"):
        log.checkpoint()
    log._closed = True  # the handle is spent; the records themselves are committed
    # A quorum of one tolerates it.
    cfg = write_config(home, audit_witnesses=[pgw.url, down], audit_witness_quorum=1)
    log = open_configured(cfg)
    log.append({"event": "request"})
    log.close()


@pytest.mark.postgres
def test_best_effort_records_the_gap_and_retries_it(home: Path, pgw: PgWitness) -> None:
    import psycopg

    cfg = write_config(home, audit_witnesses=[pgw.url], audit_witness_best_effort=True)
    with psycopg.connect(pgw.admin_url, autocommit=True) as conn:
        conn.execute(f'REVOKE INSERT ON audit_witness_heads FROM "{pgw.role}"')
    fill(cfg, batches=1, per_batch=2)  # no exception: best effort
    gaps = (home / "checkpoints" / "witness-gaps.jsonl").read_text()
    assert "InsufficientPrivilege" in gaps
    status = json.loads(run("witness", "status", "--config", str(cfg), "--json").stdout)
    assert status["witnesses"][0]["gap_recorded"] and status["witnesses"][0]["lag"] == 2
    with psycopg.connect(pgw.admin_url, autocommit=True) as conn:
        conn.execute(f'GRANT INSERT ON audit_witness_heads TO "{pgw.role}"')
    fill(cfg, batches=1, per_batch=1)  # the next checkpoint re-sends the missed head too
    status = json.loads(run("witness", "status", "--config", str(cfg), "--json").stdout)
    assert not status["witnesses"][0]["gap_recorded"] and status["witnesses"][0]["lag"] == 0
    assert run("verify", "--config", str(cfg)).exit_code == 0


def test_push_sends_heads_a_new_witness_never_saw(home: Path, tmp_path: Path) -> None:
    first = write_config(home, audit_witnesses=[f"dir://{tmp_path / 'a'}"])
    fill(first, batches=2, per_batch=1)
    both = write_config(home, audit_witnesses=[f"dir://{tmp_path / 'a'}", f"dir://{tmp_path / 'b'}"])
    out = json.loads(run("witness", "push", "--config", str(both)).stdout)
    assert sorted(out["sent"].values()) == [[], [1, 2]]
    assert run("verify", "--config", str(both)).exit_code == 0


def test_a_different_root_for_a_held_size_is_a_conflict(home: Path, tmp_path: Path) -> None:
    cfg = write_config(home, audit_witnesses=[f"dir://{tmp_path / 'w'}"])
    fill(cfg, batches=1, per_batch=2)
    rewrite_and_reseal(home, seq=1)  # same size 2, another root, signed by the same key
    log = open_configured(cfg)
    with pytest.raises(AuditWriteError, match="different root for size 2"):
        log._witness(log.checkpoints.latest(log.log_id))  # type: ignore[arg-type]
    log._closed = True


# --------------------------------------------------------------------------- keys


def test_pinned_key_ids_ignore_a_key_dropped_into_the_folder(home: Path) -> None:
    cfg = write_config(home)
    fill(cfg, batches=1, per_batch=2)
    own = key_id(FileSigner(home / "checkpoints" / "signing-key.pem").public_key)
    # An intruder re-signs with a key of their own and leaves its .pub next to the checkpoints.
    (home / "checkpoints" / "checkpoints.jsonl").unlink()
    intruder = FileSigner(home / "intruder.pem")
    log = open_audit(
        f"sqlite:///{home / 'audit.db'}",
        checkpoint_dir=home / "checkpoints",
        signer=intruder,
    )
    log.checkpoint()
    log.close()
    unpinned = run("verify", "--config", str(cfg))
    assert unpinned.exit_code == 0 and "not pinned" in unpinned.output
    pinned = write_config(home, audit_trusted_keys=[own])
    result = run("verify", "--config", str(pinned))
    assert result.exit_code == 6 and "untrusted key" in result.output


def test_signing_key_outside_the_home_must_be_private(home: Path, tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "audit.pem"
    cfg = write_config(home, audit_signing_key=str(key))
    fill(cfg, batches=1, per_batch=1)
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
    assert not (home / "checkpoints" / "signing-key.pem").exists()
    assert run("verify", "--config", str(cfg)).exit_code == 0
    key.chmod(0o644)
    log = open_configured(cfg)
    log.append({"event": "request"})
    with pytest.raises(PermissionError, match="chmod 600"):
        log.checkpoints.signer.sign(b"x")
    log._closed = True


def test_kms_signer_signs_checkpoints_and_notes_with_ecdsa(home: Path, tmp_path: Path, s3: S3Server) -> None:
    import boto3

    kms = boto3.client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    cfg = write_config(
        home, audit_signing_key=f"kms:{key}", audit_witnesses=[f"dir://{tmp_path / 'w'}", s3.url]
    )
    fill(cfg, batches=2, per_batch=1)
    signer = kms_signer(key)
    pinned = write_config(
        home,
        audit_signing_key=f"kms:{key}",
        audit_witnesses=[f"dir://{tmp_path / 'w'}", s3.url],
        audit_trusted_keys=[key_id(signer.public_key)],
    )
    result = run("verify", "--config", str(pinned), "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["witnesses"]) == 2
    note = next((tmp_path / "w").rglob("*.note")).read_bytes()
    head, sigs = parse_note(note)
    assert head.size in (1, 2) and len(sigs[0].signature) > 64  # DER ECDSA, not a 64-byte Ed25519


def test_rotation_is_a_signed_statement_that_pinned_verifiers_follow(home: Path, tmp_path: Path) -> None:
    cfg = write_config(home, audit_witnesses=[f"dir://{tmp_path / 'w'}"])
    fill(cfg, batches=1, per_batch=2)
    old = key_id(FileSigner(home / "checkpoints" / "signing-key.pem").public_key)
    new_key = tmp_path / "keys" / "new.pem"
    out = json.loads(run("rotate-key", "--config", str(cfg), "--new-key", str(new_key)).stdout)
    assert out["old_key_id"] == old and out["seq"] == 3
    rotated = write_config(
        home,
        audit_signing_key=str(new_key),
        audit_witnesses=[f"dir://{tmp_path / 'w'}"],
        audit_trusted_keys=[old],  # the verifier still pins only the old key
    )
    fill(rotated, batches=1, per_batch=1)
    result = run("verify", "--config", str(rotated), "--json")
    assert result.exit_code == 0, result.output
    # A rotation "statement" by a key nobody trusts is ignored: checkpoints by its new key fail.
    from gateway.audit.rotation import rotate_key

    log = open_configured(rotated)
    log.checkpoints.signer = FileSigner(tmp_path / "forged.pem")
    rotate_key(log, FileSigner(tmp_path / "rogue.pem"))
    log.close()
    result = run("verify", "--config", str(rotated))
    assert result.exit_code == 6 and "untrusted key" in result.output


def test_witness_config_errors_are_usage_errors(home: Path) -> None:
    cfg = write_config(home, audit_witnesses=["ftp://nowhere/x"])
    result = run("verify", "--config", str(cfg))
    assert result.exit_code == 2 and "unsupported audit witness" in result.output
    cfg = write_config(home, audit_witnesses=["dir:///tmp/x"], audit_witness_quorum=3)
    assert run("verify", "--config", str(cfg)).exit_code == 2


def test_sql_command_prints_the_grants() -> None:
    out = run("witness", "sql", "--role", "gw").stdout
    assert "GRANT SELECT, INSERT ON audit_witness_heads TO gw;" in out and "UPDATE" not in out


def test_no_secret_in_witness_errors(home: Path) -> None:
    cfg = write_config(home, audit_witnesses=["postgresql://w:hunter2secret@127.0.0.1:1/x"])
    log = open_configured(cfg)
    log.append({"event": "request"})
    with pytest.raises(AuditWriteError) as exc:
        log.checkpoint()
    log._closed = True
    assert "hunter2secret" not in str(exc.value)
    gaps = (home / "checkpoints" / "witness-gaps.jsonl").read_text()
    assert "hunter2secret" not in gaps
