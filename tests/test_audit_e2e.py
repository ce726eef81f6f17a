"""Full runs through the real client: planted secrets never surface, and no audit means no images.

The Replicate and Bedrock backends run their real clients against the loopback fakes, with
credentials shaped like real ones; one fake is told to echo the bearer token in an error, as a
misbehaving provider might. Afterwards every span, metric, log line, audit record, checkpoint, file
under GATEWAY_HOME, error message and result is searched for the planted values.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from telemetry_support import in_memory_telemetry

from gateway import Gateway
from gateway.audit import Telemetry, get_logger, open_audit
from gateway.config import Settings
from gateway.errors import AuditWriteError, GatewayError
from gateway.testing import FakeBedrock, FakeReplicate

TOKEN = "r8_" + "Qm4Zt9" * 6 + "X"  # shaped like a Replicate token (40 chars)
AWS_KEY = "AKIAQ7ZP4K2M9X3B6C1D"
AWS_SECRET = "kR8vYb2NwQ5tLz1HcJ7pF3sG9dX0mA4eV6uTiOyZ"
PLANTED = (TOKEN, AWS_KEY, AWS_SECRET)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeReplicate, FakeBedrock]]:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    with FakeReplicate(token=TOKEN) as rep, FakeBedrock(credentials={AWS_KEY: AWS_SECRET}) as bed:
        env = {
            "REPLICATE_API_TOKEN": TOKEN,
            "REPLICATE_BASE_URL": rep.url,
            "AWS_ACCESS_KEY_ID": AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bed.url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield rep, bed


def test_planted_secrets_reach_no_span_log_record_file_or_error(
    fakes: tuple[FakeReplicate, FakeBedrock], log_stream: io.StringIO, tmp_path: Path
) -> None:
    rep, bed = fakes
    telemetry, spans, reader = in_memory_telemetry()
    settings = Settings(home=tmp_path / "home")
    evidence: list[str] = []
    log = get_logger("app")
    with Gateway(settings, telemetry=telemetry, sleep=lambda _s: None) as gw:
        ok = [gw.generate("a red fox in snow", provider=p, team="ml") for p in ("bedrock", "replicate")]
        evidence += [json.dumps(r.to_dict()) for r in ok]
        # Every create fails from now on (a route may fall back to another model of the same provider).
        rep.inject("prediction_failed", times=50, error=f"bad input; echo Authorization: Bearer {TOKEN}")
        bed.inject("content_filtered", times=50)
        for provider in ("replicate", "bedrock"):
            with pytest.raises(GatewayError) as err:
                gw.generate(f"a fox, key {AWS_SECRET}", provider=provider)  # a secret pasted into a prompt
            evidence += [str(err.value), repr(err.value), str(err.value.__cause__)]
            log.error("generate failed", exc_info=err.value, provider=provider)
        records = list(gw._core.audit.iter_records())
        report = gw._core.audit.verify()
    assert report.ok
    assert [r["event"] for r in records].count("request") == 2
    assert {r["trace_id"] for r in records if r["event"] == "request"} == {r.trace_id for r in ok}
    evidence.append(json.dumps(records))
    for span in spans.get_finished_spans():
        evidence.append(span.to_json())
    data = reader.get_metrics_data()
    assert data is not None
    evidence.append(data.to_json())
    evidence.append(log_stream.getvalue())
    assert log_stream.getvalue().count('"event":"generate failed"') == 2
    for path in sorted(settings.home.rglob("*")):
        if path.is_file():
            evidence.append(path.read_bytes().decode("latin-1"))
    text = "\n".join(evidence)
    assert "generate_content amazon.titan-image-generator-v2:0" in text  # the search did see the spans
    for secret in PLANTED:
        assert secret not in text, f"planted secret {secret[:6]}... leaked"


def _gateway(tmp_path: Path, audit: Any, telemetry: Telemetry) -> Gateway:
    return Gateway(Settings(home=tmp_path / "home"), audit=audit, telemetry=telemetry, sleep=lambda _s: None)


def test_no_images_are_returned_when_the_audit_record_cannot_be_written(
    fakes: tuple[FakeReplicate, FakeBedrock], tmp_path: Path
) -> None:
    db = tmp_path / "audit.db"
    audit = open_audit(f"sqlite:///{db}?timeout=0.05", checkpoint_dir=tmp_path / "cps")
    telemetry, spans, _ = in_memory_telemetry()
    with _gateway(tmp_path, audit, telemetry) as gw:
        assert gw.generate("a fox", provider="bedrock").images  # works while the log is writable
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the audit log's write lock
        with pytest.raises(AuditWriteError):
            gw.generate("a fox", provider="bedrock")
        blocker.execute("ROLLBACK")
        blocker.close()
        assert gw.generate("a fox", provider="bedrock").audit_seq == 4  # the failed request left nothing
    roots = [s for s in spans.get_finished_spans() if s.parent is None]
    assert [(s.attributes or {}).get("error.type") for s in roots] == [None, "AuditWriteError", None]
    assert audit.verify().ok


@pytest.mark.postgres
def test_no_images_when_the_postgres_audit_connection_is_lost(
    fakes: tuple[FakeReplicate, FakeBedrock], tmp_path: Path, postgres_url: str
) -> None:
    import uuid

    import psycopg

    from gateway.audit.postgres import PostgresAuditLog

    prefix = f"t{uuid.uuid4().hex[:12]}_"
    audit = open_audit(f"{postgres_url}?table_prefix={prefix}", checkpoint_dir=tmp_path / "cps")
    assert isinstance(audit, PostgresAuditLog)
    telemetry, _, _ = in_memory_telemetry()
    try:
        with _gateway(tmp_path, audit, telemetry) as gw:
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (audit._conn.info.backend_pid,))
            with pytest.raises(AuditWriteError):
                gw.generate("a fox", provider="bedrock")
            result = gw.generate("a fox", provider="bedrock")  # reconnected
            assert result.audit_seq == 2
            assert audit.verify().ok
    finally:
        audit.drop()
