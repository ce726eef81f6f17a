"""``gateway audit verify|export|show|checkpoint|proof`` through the real CLI group."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.audit import canonical_bytes, merkle, open_audit
from gateway.cli import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)


@pytest.fixture
def home_log(_isolated_home: Path) -> Path:
    """Four records in the default log ($GATEWAY_HOME/audit.db), sealed in $GATEWAY_HOME/checkpoints."""
    db = _isolated_home / "audit.db"
    log = open_audit(f"sqlite:///{db}", checkpoint_dir=_isolated_home / "checkpoints")
    log.append_many(
        [{"event": "request", "request_id": f"r{i}", "team": "ml", "cost_usd": "0.01"} for i in range(4)]
    )
    log.close()
    return db


def tamper(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    conn.execute(sql)
    conn.close()


def test_verify_passes_on_the_default_log(home_log: Path) -> None:
    result = run("verify")
    assert result.exit_code == 0
    assert "audit log OK: 4 records, sealed to 4" in result.stdout
    report = json.loads(run("verify", "--json").stdout)
    assert (report["ok"], report["count"], report["checkpoint_size"]) == (True, 4, 4)
    deep = json.loads(run("verify", "--deep", "--json").stdout)
    assert (deep["root"], deep["root_size"]) == (report["root"], 4)


@pytest.mark.parametrize(
    ("sql", "problem", "seq"),
    [
        ("UPDATE audit_log SET body = replace(body, '0.01', '9.99') WHERE seq = 2", "edited", 2),
        ("DELETE FROM audit_log WHERE seq = 3", "deleted", 3),
        ("UPDATE audit_log SET seq = -seq WHERE seq IN (2, 3)", "reordered", 2),
        ("DELETE FROM audit_log WHERE seq = 4", "truncated", 4),
    ],
)
def test_verify_exits_6_naming_the_first_bad_seq(home_log: Path, sql: str, problem: str, seq: int) -> None:
    tamper(home_log, sql)
    if "-seq" in sql:  # finish the swap: -2 -> 3, -3 -> 2
        tamper(home_log, "UPDATE audit_log SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE seq < 0")
    result = run("verify")
    assert result.exit_code == 6
    assert f"FAILED: {problem} at seq {seq}" in result.stderr
    report = json.loads(run("verify", "--json").stdout)
    assert (report["ok"], report["problem"], report["first_bad_seq"]) == (False, problem, seq)


def test_verify_of_a_deleted_database_is_a_truncation(home_log: Path) -> None:
    home_log.unlink()
    result = run("verify")
    assert result.exit_code == 6
    assert "truncated at seq 1" in result.stderr
    assert not home_log.exists()  # verify never creates a log


def test_verify_without_any_log_is_a_usage_error() -> None:
    result = run("verify")
    assert result.exit_code == 2
    assert "no audit log" in result.stderr


def test_verify_with_a_pinned_key_rejects_checkpoints_signed_by_another(
    home_log: Path, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    other = tmp_path / "other.pub"
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    other.write_bytes(pem)
    result = run("verify", "--public-key", str(other))
    assert result.exit_code == 6
    assert "untrusted key" in result.stderr
    own = home_log.parent / "checkpoints" / "signing-key.pub"
    assert run("verify", "--public-key", str(own)).exit_code == 0


def test_export_writes_jsonl_that_recomputes_to_the_signed_root(home_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "export" / "audit.jsonl"
    result = run("export", "--out", str(out))
    assert result.exit_code == 0
    assert "exported 4 records" in result.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    leaves = []
    for r in lines:
        chain = {k: r.pop(k) for k in ("seq", "ts", "prev_hash", "entry_hash")}
        body = canonical_bytes(
            {"prev_hash": chain["prev_hash"], "record": r, "seq": chain["seq"], "ts": chain["ts"]}
        )
        leaves.append(hashlib.sha256(b"\x00" + body).digest())
        assert leaves[-1].hex() == chain["entry_hash"]
    checkpoint = json.loads(
        (home_log.parent / "checkpoints" / "checkpoints.jsonl").read_text().splitlines()[-1]
    )
    assert merkle.root(leaves).hex() == checkpoint["root"]
    since = run("export", "--since", "2").stdout.splitlines()
    assert [json.loads(x)["seq"] for x in since] == [3, 4]


def test_show_prints_one_record_or_exits_2(home_log: Path) -> None:
    result = run("show", "2")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert (record["seq"], record["request_id"]) == (2, "r1")
    missing = run("show", "99")
    assert missing.exit_code == 2
    assert "no audit record 99 (the log has 4)" in missing.stderr


def test_checkpoint_and_proof_commands(home_log: Path, tmp_path: Path) -> None:
    log = open_audit(
        f"sqlite:///{home_log}", checkpoint_dir=home_log.parent / "checkpoints", checkpoint_on_close=False
    )
    log.append({"event": "request"})
    log.close()
    sealed = json.loads(run("checkpoint").stdout)
    assert sealed["size"] == 5
    proof = json.loads(run("proof", "3").stdout)
    ok = merkle.verify_inclusion(
        bytes.fromhex(proof["leaf"]),
        2,
        5,
        [bytes.fromhex(h) for h in proof["path"]],
        bytes.fromhex(sealed["root"]),
    )
    assert ok
    assert run("proof", "9").exit_code == 2


def test_explicit_url_and_checkpoint_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    log = open_audit(url, checkpoint_dir=tmp_path / "seals")
    log.append({"event": "denied"})
    log.close()
    assert run("verify", "--audit", url, "--checkpoints", str(tmp_path / "seals")).exit_code == 0
    assert "sealed to 1" in run("verify", "--audit", url, "--checkpoints", str(tmp_path / "seals")).stdout
