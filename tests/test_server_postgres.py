"""Two ``gateway serve`` workers on one PostgreSQL ledger: one budget, atomic across processes.

Real everything: ``gateway serve --workers 2`` as a subprocess, the ledger, audit log and keys in a
fresh PostgreSQL schema, the Bedrock route answered by the loopback fake through boto3, and the
official AsyncOpenAI client firing more concurrent requests than the budget covers. Exactly as many
succeed as the budget pays for, every other one is a 429 recorded once, and the chain verifies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from cli_support import gateway_serve
from ledger_support import drop_schema, with_schema

from gateway.audit import open_audit
from gateway.ledger import open_ledger
from gateway.server.keys import KeyStore
from gateway.testing import FakeBedrock

pytest_plugins = ["gateway.testing.pytest_plugin"]
pytestmark = pytest.mark.postgres

TITAN = "bedrock/amazon.titan-image-generator-v2:0"  # $0.008 per image
POLICY = """version: 1
rules:
  - {id: team-day, kind: budget, when: {team: design}, scope: team, period: day, limit_usd: "0.040"}
"""


@pytest.fixture
def pg_urls(postgres_url: str) -> Iterator[tuple[str, str]]:
    """(ledger URL in a fresh schema, audit URL with a fresh table prefix), both dropped afterwards."""
    import psycopg

    tag = uuid.uuid4().hex[:12]
    schema, prefix = f"t_server_{tag}", f"t{tag}_"
    try:
        yield with_schema(postgres_url, schema), f"{postgres_url}?table_prefix={prefix}"
    finally:
        drop_schema(postgres_url, schema)
        with psycopg.connect(postgres_url, autocommit=True) as pg:
            pg.execute(f"DROP TABLE IF EXISTS {prefix}audit_log, {prefix}audit_meta CASCADE")
            pg.execute(f"DROP FUNCTION IF EXISTS {prefix}audit_append_only() CASCADE")


def test_two_workers_share_one_budget(
    tmp_path: Path, pg_urls: tuple[str, str], fake_bedrock: FakeBedrock
) -> None:
    pg_url, audit_url = pg_urls
    (tmp_path / "policy.yaml").write_text(POLICY)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"home: {tmp_path / 'home'}\npolicies: [policy.yaml]\n"
        f"ledger_url: '{pg_url}'\naudit_url: '{audit_url}'\n"
        "provenance: {watermark_remote: false, c2pa_remote: false}\nretry: {max_attempts: 1}\n"
    )
    with KeyStore(pg_url) as keys:
        _, secret = keys.create("svc", team="design")

    async def storm(base_url: str) -> list[Any]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=secret, max_retries=2, timeout=120) as ac:
            calls = [
                ac.images.with_raw_response.generate(prompt=f"a lighthouse {i}", model=TITAN, size="512x512")
                for i in range(12)
            ]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    with gateway_serve("--workers", "2", "--config", str(config)) as base_url:
        outcomes = asyncio.run(storm(base_url))
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(ok) == 5, outcomes  # $0.040 / $0.008
    assert len(refused) == 7, outcomes
    assert all(r.code == "budget_exceeded" for r in refused)
    assert len(fake_bedrock.requests_of("invoke")) == 5  # refused requests never reached the provider
    with open_ledger(pg_url) as led:
        totals = led.report(by=[])[0]
        assert totals["spent_usd"] == Decimal("0.040")
        assert totals["refused"] == 7  # once each: the client did not retry them
        assert not led.verify()
    with open_audit(audit_url, checkpoint_dir=tmp_path / "home" / "checkpoints") as log:
        assert log.verify(deep=True).ok
        recs = list(log.iter_records())
    assert sum(r["event"] == "request" for r in recs) == 5
    assert sum(r["event"] == "budget_refused" for r in recs) == 7
    assert {r["key_name"] for r in recs} == {"svc"}
