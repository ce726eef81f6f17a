"""Token counts live next to dollars in the ledger and its report (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_support import STORES, fresh_ledger_url

from gateway.cli import main
from gateway.ledger import open_ledger
from gateway.types import Context

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


@pytest.fixture(params=STORES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_ledger_url(request, tmp_path)


def test_settle_keeps_token_counts_and_report_sums_them(
    ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = open_ledger(ledger_url)
    try:
        calls = [
            (
                "openai/gpt-image-2",
                {"input_text_tokens": 3, "input_image_tokens": 0, "output_image_tokens": 8320},
            ),
            (
                "openai/gpt-image-2",
                {"input_text_tokens": 5, "output_image_tokens": 272, "output_text_tokens": 2},
            ),
            ("local/tiny-digits", None),
        ]
        for i, (route, tokens) in enumerate(calls):
            res = ledger.reserve(request_id=f"r{i}", context=Context(), budgets=(), rate_limits=(),
                                 amount_usd=Decimal("0.3"), route_key=route, now=NOW)  # fmt: skip
            provider, model = route.split("/")
            extra = {"tokens": tokens} if tokens else {}
            ledger.settle(res, actual_usd=Decimal("0.1"), provider=provider, model=model, images=1,
                          latency_s=0.5, now=NOW, **extra)  # fmt: skip
        rows = {r["provider"]: r for r in ledger.report(by=["provider"])}
    finally:
        ledger.close()
    assert rows["openai"]["tokens"] == {"input_text_tokens": 8, "input_image_tokens": 0,
                                        "output_image_tokens": 8592, "output_text_tokens": 2}  # fmt: skip
    assert "tokens" not in rows["local"]  # routes billed by time or image carry no token block
    try:
        args = [
            "report",
            "--ledger",
            ledger_url,
            "--by",
            "provider",
            "--format",
            "json",
            "--since",
            "2026-11-01",
        ]
        code = int(main(args) or 0)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, _ = capsys.readouterr()
    assert code == 0
    data = json.loads(out)
    openai_row = next(r for r in data["rows"] if r["provider"] == "openai")
    assert openai_row["tokens"]["output_image_tokens"] == 8592
