"""``gateway report``: formats, totals that equal the per-request costs, defaults and usage errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_support import STORES, fresh_ledger_url

from gateway.cli import main
from gateway.ledger import open_ledger
from gateway.ledger.report import build_report, render_table
from gateway.types import Budget, Context

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TEAM = Budget(id="eng-month", scope="team", scope_value="eng", period="month", limit_usd=Decimal("5.00"))
ORG = Budget(
    id="org-day", scope="org", scope_value="*", period="day", limit_usd=Decimal("2.00"), warn_at=0.05
)
# (request id, team, route, estimate, actual, images)
CALLS = [
    ("a", "eng", "replicate/black-forest-labs/flux-schnell", "0.009", "0.009", 3),
    ("b", "eng", "bedrock/amazon.titan-image-generator-v2:0", "0.016", "0.016", 2),
    ("c", "ops", "replicate/stability-ai/sdxl", "0.120", "0.081375", 1),
    ("d", "ops", "local/tiny-digits", "0.000056", "0.000031", 4),
]


def seed(url: str) -> Decimal:
    """Write the calls above; return the sum of their actual costs (what the audit records carry)."""
    with open_ledger(url) as ledger:
        for rid, team, route, est, actual, images in CALLS:
            res = ledger.reserve(
                request_id=rid,
                context=Context(team=team),
                budgets=[TEAM, ORG],
                rate_limits=[],
                amount_usd=Decimal(est),
                route_key=route,
                now=NOW,
            )
            provider, _, model = route.partition("/")
            ledger.settle(res, actual_usd=Decimal(actual), provider=provider, model=model, images=images,
                          latency_s=1.0, now=NOW)  # fmt: skip
    return sum((Decimal(c[4]) for c in CALLS), Decimal(0))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["report", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=STORES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_ledger_url(request, tmp_path)


def test_json_totals_equal_rows_and_per_request_costs(
    ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = seed(ledger_url)
    code, out, err = run(["--ledger", ledger_url, "--by", "team,provider,model", "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert [(r["team"], r["provider"]) for r in data["rows"]] == [
        ("eng", "bedrock"), ("eng", "replicate"), ("ops", "local"), ("ops", "replicate")]  # fmt: skip
    assert (
        Decimal(data["totals"]["spent_usd"]) == expected == sum(Decimal(r["spent_usd"]) for r in data["rows"])
    )
    assert data["totals"]["images"] == 10
    assert data["totals"]["requests"] == 4
    sdxl = data["rows"][3]
    assert Decimal(sdxl["estimate_error_pct"]) == Decimal("-32.19")
    assert Decimal(sdxl["usd_per_image"]) == Decimal("0.081375")
    budgets = {b["budget"]: b for b in data["budgets"]}
    assert Decimal(budgets["org-day"]["spent_usd"]) == expected
    assert budgets["org-day"]["warn"] is True
    assert Decimal(budgets["eng-month"]["remaining_usd"]) == Decimal("4.975")


def test_csv_spend_and_budgets(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    expected = seed(ledger_url)
    code, out, _ = run(["--ledger", ledger_url, "--by", "model", "--format", "csv"], capsys)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4
    assert sum(Decimal(r["spent_usd"]) for r in rows) == expected
    assert rows[0]["estimate_error_pct"] == "0.00"
    code, out, _ = run(["--ledger", ledger_url, "--format", "csv", "--section", "budgets"], capsys)
    assert code == 0
    assert [r["budget"] for r in csv.DictReader(io.StringIO(out))] == ["eng-month", "org-day"]


def test_table_on_the_default_embedded_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from gateway.config import default_home

    url = f"sqlite:///{default_home() / 'ledger.db'}"  # GATEWAY_HOME is per test (conftest)
    seed(url)
    code, out, _ = run(["--by", "team,day"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Spend by team, day")
    day = NOW.date().isoformat()
    assert any(line.startswith("eng") and day in line for line in lines)
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert "0.106406" in total  # 0.009 + 0.016 + 0.081375 + 0.000031
    assert any("org-day" in line and "WARN" in line for line in lines)


def test_since_until_filter(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(ledger_url)
    tomorrow = (NOW + dt.timedelta(days=1)).date().isoformat()
    code, out, _ = run(["--ledger", ledger_url, "--since", tomorrow, "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["rows"] == []
    assert data["totals"]["requests"] == 0
    assert data["since"].startswith(tomorrow)


def test_config_file_selects_the_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'books.db'}"
    seed(url)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"ledger_url: {url}\n")
    code, out, _ = run(["--config", str(config), "--format", "json", "--section", "spend"], capsys)
    assert code == 0
    assert "budgets" not in json.loads(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--by", "team,colour"], "unknown ['colour']"), (["--format", "csv", "--section", "all"], "one table"),
     (["--since", "2026-02-01", "--until", "2026-01-01"], "--until must be after")],
)  # fmt: skip
def test_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert out == ""
    assert message in err


def test_missing_embedded_ledger_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([], capsys)
    assert code == 2
    assert out == ""
    assert "no ledger at" in err


def test_empty_ledger_renders(tmp_path: Path) -> None:
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        text = render_table(build_report(ledger, by=["team"], now=NOW))
    assert "TOTAL" in text
    assert "no budget has been enforced" in text
