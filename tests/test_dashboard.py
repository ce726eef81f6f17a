"""Dashboard and offline report over a ledger and audit log seeded through the real Gateway.

What must hold: the page's figures are the ledger's; nothing is ever written to either store (byte
for byte, checkpoints and keys included); the safety rules (loopback Host, token, GET only, CSP) hold;
a tampered log shows as failed with the record to blame; prompts appear only where policy captured
them; the HTML report references nothing outside itself; the Grafana JSON queries only metrics that
the SDK emits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import GATEWAY, gateway_process
from click.testing import CliRunner
from dashboard_support import Seeded, seed

from gateway.cli import cli
from gateway.dashboard import create_app, open_sources, write_report_html
from gateway.dashboard.app import DashboardApp, Request, Response
from gateway.dashboard.stores import open_audit_reader, open_ledger_reader
from gateway.dashboard.views import cost_view
from gateway.errors import AuditWriteError, UsageError
from gateway.ledger import open_ledger

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = r"http://127\.0\.0\.1:\d+/"
METRIC = re.compile(r'data-metric="([a-z_]+)" data-value="([^"]*)"')


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed(tmp_path_factory.mktemp("dash") / "home", n=160)


def fingerprint(s: Seeded) -> dict[str, str]:
    """Every file of both stores and the checkpoint folder, hashed (the -shm index excepted: SQLite's
    readers coordinate through it, it holds no data)."""
    out = {}
    for p in sorted(s.home.rglob("*")):
        if p.is_file() and not p.name.endswith("-shm") and p.suffix != ".png":
            out[str(p.relative_to(s.home))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def app(seeded: Seeded) -> Iterator[DashboardApp]:
    src = open_sources(
        seeded.ledger_url,
        seeded.audit_url,
        checkpoint_dir=seeded.checkpoints,
        route_stats=seeded.home / "route_stats.json",
    )
    yield create_app(src, clock=lambda: seeded.end + dt.timedelta(seconds=1))
    src.close()


def get(app: DashboardApp, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
    base, _, query = path.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    return app.handle(Request(method, base, params, {"host": "127.0.0.1:8765", **(headers or {})}))


def metrics(html: str) -> list[tuple[str, str]]:
    return METRIC.findall(html)


def test_cost_page_totals_equal_the_ledger(app: DashboardApp, seeded: Seeded) -> None:
    html = get(app, "/?range=all").body.decode()
    with open_ledger(seeded.ledger_url) as led:
        totals = led.report(by=[])[0]
        teams = {r["team"]: r for r in led.report(by=["team"])}
    tiles = dict(metrics(html.split('<div class="kpis">')[1].split("</div></div>")[0] + "</div>"))
    assert Decimal(tiles["spent_usd"]) == totals["spent_usd"] > 0
    assert int(tiles["requests"]) == totals["requests"]
    assert int(tiles["images"]) == totals["images"]
    assert int(tiles["refused"]) == totals["refused"] > 0  # the interns' daily budget refused some
    for team, row in teams.items():
        cell = re.search(rf'data-key="{team}">{team}</span></td>.*?data-value="([^"]*)"', html)
        assert cell is not None and Decimal(cell.group(1)) == row["spent_usd"], team
    assert set(teams) <= {"design", "marketing", "research", "interns"}


def test_chart_series_sum_to_the_ledger_total(seeded: Seeded) -> None:
    led = open_ledger_reader(seeded.ledger_url)
    try:
        now = seeded.end + dt.timedelta(seconds=1)
        from gateway.dashboard.timeseries import parse_window

        for dim in ("team", "model", "provider"):
            view = cost_view(open_sources_for(led), parse_window({"range": "all"}, now), dim)
            assert view is not None
            charted = sum((sum(v) for _, v in view.spend.series), Decimal(0))
            assert charted == view.totals["spent_usd"] == led.report(by=[])[0]["spent_usd"]
    finally:
        led.close()


def open_sources_for(led: Any) -> Any:
    from gateway.dashboard.views import Sources

    return Sources(ledger=led)


def test_budgets_show_status_and_burn_down(app: DashboardApp, seeded: Seeded) -> None:
    html = get(app, "/").body.decode()
    for budget in ("design-month", "org-total", "interns-day"):
        assert f'data-budget="{budget}"' in html
    with open_ledger(seeded.ledger_url) as led:
        status = {
            s.budget.id: s
            for s in led.budget_status(led.recorded_budgets(), seeded.end + dt.timedelta(seconds=1))
        }
    org = re.search(r'data-budget="org-total".*?data-value="([^"]*)"', html)
    assert org is not None
    assert Decimal(org.group(1)) == status["org-total"].spent_usd + status["org-total"].reserved_usd
    assert html.count("<svg") >= 6  # spend chart, 3 burn-downs, unit-cost and top-spender bars


def test_every_page_renders_and_nothing_is_written(app: DashboardApp, seeded: Seeded) -> None:
    before = fingerprint(seeded)
    paths = [
        "/",
        "/?by=model&range=7d",
        "/?range=custom&since=2020-01-01",
        "/audit?range=all",
        "/providers",
        "/audit?range=all&team=design&event=request",
        "/report.html?range=all",
        "/healthz",
        "/audit/1",
    ]
    for p in paths:
        assert get(app, p).status == 200, p
    assert get(app, "/audit/999999").status == 404
    assert get(app, "/?range=forever").status == 400
    assert get(app, "/nope").status == 404
    assert fingerprint(seeded) == before
    assert not (seeded.checkpoints / "signing-key.pem").exists() or "checkpoints/signing-key.pem" in before


def test_stores_refuse_writes_at_the_connection(seeded: Seeded) -> None:
    led = open_ledger_reader(seeded.ledger_url)
    audit = open_audit_reader(seeded.audit_url, seeded.checkpoints)
    try:
        with pytest.raises(UsageError, match="read-only"):
            led.reconcile(dt.datetime.now(dt.UTC))
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
            led._read(lambda q: q("DELETE FROM ledger_requests", ()))
        with pytest.raises(AuditWriteError, match="read-only"):
            audit.append({"event": "request"})
        with pytest.raises(sqlite3.OperationalError):
            audit.q("INSERT INTO audit_meta(key, value) VALUES ('x', 'y')")
    finally:
        led.close()
        audit.close()


def test_missing_stores_are_notices_and_nothing_is_created(tmp_path: Path) -> None:
    src = open_sources(f"sqlite:///{tmp_path}/none/ledger.db", f"sqlite:///{tmp_path}/none/audit.db")
    app = create_app(src)
    html = get(app, "/").body.decode()
    assert "no ledger at" in html
    assert "no audit log at" in html
    assert get(app, "/audit").status == 200
    assert get(app, "/providers").status == 200
    assert not (tmp_path / "none").exists()


def test_safety_host_method_token_and_headers(seeded: Seeded) -> None:
    src = open_sources(seeded.ledger_url, seeded.audit_url, checkpoint_dir=seeded.checkpoints)
    try:
        local = create_app(src)
        assert get(local, "/", {"host": "evil.example:8765"}).status == 421  # DNS rebinding
        assert get(local, "/", {"host": "localhost:8765"}).status == 200
        assert get(local, "/", {"host": "[::1]:8765"}).status == 200
        post = get(local, "/", method="POST")
        assert post.status == 405
        assert ("allow", "GET, HEAD") in post.headers
        with pytest.raises(UsageError, match="token"):
            create_app(src, host="0.0.0.0")
        shared = create_app(src, host="0.0.0.0", token="s3cret-token")
        assert get(shared, "/", {"host": "dash.example"}).status == 401
        assert get(shared, "/?token=wrong", {"host": "dash.example"}).status == 401
        hop = get(shared, "/audit?token=s3cret-token&team=design", {"host": "dash.example"})
        assert hop.status == 303
        assert dict(hop.headers)["location"] == "/audit?team=design"
        cookie = dict(hop.headers)["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "s3cret-token" not in cookie
        session = cookie.split(";")[0]
        assert get(shared, "/", {"host": "dash.example", "cookie": session}).status == 200
        assert (
            get(shared, "/", {"host": "dash.example", "authorization": "Bearer s3cret-token"}).status == 200
        )
        assert get(shared, "/", {"host": "dash.example", "cookie": "gateway_dashboard=forged"}).status == 401
    finally:
        src.close()
    headers = dict(DashboardApp._headers(Response(200, b"x")))
    csp = headers[b"content-security-policy"].decode()
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "unsafe-inline" not in csp
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"cache-control"] == b"no-store"


def test_record_detail_shows_chain_position_and_proofs(app: DashboardApp, seeded: Seeded) -> None:
    with open_audit_reader(seeded.audit_url, seeded.checkpoints) as audit:
        size = audit.head()[0]
    html = get(app, "/audit/3").body.decode()
    assert 'data-verified="true"' in html
    assert 'data-record-ok="true"' in html
    assert f"record 3 of {size}" in html
    # The smallest signed checkpoint covering record 3: the first one (its size depends on how the
    # requests' records batched around the every-100 boundary).
    from gateway.audit.checkpoints import CHECKPOINT_FILE, Checkpoint

    first = Checkpoint.from_json((seeded.checkpoints / CHECKPOINT_FILE).read_text().splitlines()[0])
    assert 100 <= first.size < 110
    assert f"included in checkpoint of size {first.size}" in html
    last = get(app, f"/audit/{size}").body.decode()
    assert 'data-record-ok="true"' in last
    assert "not sealed yet" in last or "included in checkpoint" in last
    listing = get(app, "/audit?range=all").body.decode()
    assert listing.count('href="/audit/') >= 50  # every listed record links to its verification


def test_tampered_log_fails_and_blames_the_record(seeded: Seeded, tmp_path: Path) -> None:
    home = tmp_path / "copy"
    shutil.copytree(seeded.home, home)
    db = home / "audit.db"
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit_log_no_update")
    body = conn.execute("SELECT body FROM audit_log WHERE seq = 7").fetchone()[0]
    conn.execute(
        "UPDATE audit_log SET body = ? WHERE seq = 7", (bytes(body).replace(b'"team":"', b'"team":"X'),)
    )
    conn.commit()
    conn.close()
    src = open_sources(
        f"sqlite:///{home / 'ledger.db'}", f"sqlite:///{db}", checkpoint_dir=home / "checkpoints"
    )
    try:
        app = create_app(src)
        html = get(app, "/audit").body.decode()
        assert 'data-verified="false"' in html
        assert 'href="/audit/7">record 7</a>' in html
        rec = get(app, "/audit/7").body.decode()
        assert 'data-record-ok="false"' in rec
        assert "do not hash to the entry hash" in rec
    finally:
        src.close()


def test_prompts_appear_only_where_policy_captured_them(app: DashboardApp, seeded: Seeded) -> None:
    assert seeded.captured_prompt
    assert seeded.hidden_prompt
    with open_audit_reader(seeded.audit_url, seeded.checkpoints) as audit:
        recs = list(audit.iter_records())
    captured = [r for r in recs if r.get("prompt") == seeded.captured_prompt]
    assert captured
    assert not any(seeded.hidden_prompt in json.dumps(r) for r in recs)
    page = get(app, f"/audit/{captured[-1]['seq']}").body.decode()
    assert "Prompt (captured by policy)" in page
    assert seeded.captured_prompt in page
    report = get(app, "/report.html?range=all").body.decode()
    assert seeded.hidden_prompt not in report


def test_providers_page_replays_attempts(app: DashboardApp) -> None:
    html = get(app, "/providers?range=all").body.decode()
    for route in ("alpha/a-1", "beta/b-xl", "gamma/g-lite"):
        assert f'data-route="{route}"' in html
    assert "BackendUnavailable" in html  # the flaky route's failed attempts


def test_report_html_via_cli_is_self_contained(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(seeded.home))
    out = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", "--html", str(out), "--format", "json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["totals"]["requests"] > 0  # stdout keeps its format
    html = out.read_text()
    assert "<script" not in html
    assert "url(" not in html
    assert "@import" not in html
    refs = re.findall(r'(?:src|href|action)="([^"]*)"', html)
    assert all(r.startswith("#") or r == "data:," for r in refs), {r for r in refs if not r.startswith("#")}
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    assert csp is not None
    assert "default-src 'none'" in unescape(csp.group(1))
    with open_ledger(seeded.ledger_url) as led:
        total = led.report(by=[])[0]["spent_usd"]
    assert (f'data-metric="spent_usd" data-value="{total}"') in html
    anchors = set(re.findall(r'id="rec-(\d+)"', html))
    links = set(re.findall(r'href="#rec-(\d+)"', html))
    assert links
    assert links <= anchors
    assert 'data-verified="true"' in html


def test_report_writer_honours_the_window(seeded: Seeded, tmp_path: Path) -> None:
    since = seeded.end - dt.timedelta(days=2)
    path = write_report_html(
        tmp_path / "r.html",
        ledger_url=seeded.ledger_url,
        audit_url=seeded.audit_url,
        checkpoint_dir=seeded.checkpoints,
        since=since,
        now=seeded.end,
    )
    with open_ledger(seeded.ledger_url) as led:
        total = led.report(by=[], since=since)[0]["spent_usd"]
    assert (f'data-metric="spent_usd" data-value="{total}"') in path.read_text()


def test_cli_dashboard_serves_on_loopback_and_refuses_open_binds(seeded: Seeded) -> None:
    env = {**os.environ, "GATEWAY_HOME": str(seeded.home)}
    env.pop("GATEWAY_DASHBOARD_TOKEN", None)
    bad = subprocess.run(
        [*GATEWAY, "dashboard", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "token" in bad.stderr
    served = gateway_process("dashboard", "--port", "0", env=env, url=LOOPBACK, exit_code=None)
    with served as url:
        page = httpx.get(url + "audit", timeout=30)
        assert page.status_code == 200
        assert 'data-verified="true"' in page.text
        assert "content-security-policy" in page.headers
        assert "server" not in page.headers


# --------------------------------------------------------------------------- Grafana <-> SDK metrics

_LABEL_BLOCKS = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def grafana_queries() -> list[str]:
    dash = json.loads((ROOT / "examples/observability/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def queried_metrics_and_labels(exprs: list[str]) -> tuple[set[str], set[str]]:
    metrics_, labels = set(), set()
    for expr in exprs:
        labels |= set(re.findall(r"label_values\([^,]+,\s*([a-zA-Z0-9_]+)\)", expr))
        expr = re.sub(r"label_values\(([^,]+),[^)]*\)", r"\1", expr)
        for block in _LABEL_BLOCKS.findall(expr):
            labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", block))
            if not block.startswith("{"):
                labels |= set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", block.split("(", 1)[1]))
        bare = _LABEL_BLOCKS.sub("", expr)
        metrics_ |= set(re.findall(r"\b(?:gateway|gen_ai)_[a-zA-Z0-9_]+", bare))
    return metrics_, labels


def emitted(tmp_path: Path) -> tuple[set[str], set[str]]:
    """Metric names and attribute keys the SDK emits for real requests (allowed, denied, failed), as the
    Collector's Prometheus exporter names them (dots -> underscores, no unit suffixes)."""
    from dashboard_support import run_requests
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from gateway.audit import Telemetry
    from gateway.config import Settings
    from gateway.provenance import Provenance

    reader = InMemoryMetricReader()
    telemetry = Telemetry(None, MeterProvider(metric_readers=[reader]))
    run_requests(Settings(home=tmp_path / "home"), telemetry, Provenance(tmp_path / "home", {}))
    names, attrs = set(), set()
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                base = re.sub(r"[^a-zA-Z0-9_:]", "_", m.name)
                histogram = type(m.data).__name__ == "Histogram"
                names |= {base + s for s in ("_bucket", "_sum", "_count")} if histogram else {base}
                for point in m.data.data_points:
                    attrs |= {re.sub(r"[^a-zA-Z0-9_]", "_", k) for k in (point.attributes or {})}
    return names, attrs


def test_grafana_dashboard_queries_only_metrics_the_sdk_emits(tmp_path: Path) -> None:
    queried, labels = queried_metrics_and_labels(grafana_queries())
    names, attrs = emitted(tmp_path)
    assert queried, "no metric found in the Grafana queries"
    assert queried <= names, f"queried but never emitted: {sorted(queried - names)}"
    assert labels <= attrs | {"le", "job", "instance"}, f"unknown labels: {sorted(labels - attrs)}"
    used = {re.sub(r"_(bucket|sum|count)$", "", q) for q in queried}
    every = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert every <= used, f"emitted but shown nowhere: {sorted(every - used)}"


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_postgres_stores_read_only_with_the_same_totals(postgres_url: str, tmp_path: Path) -> None:
    """The same pages over PostgreSQL: totals equal the ledger's, the chain verifies, and the session
    is read-only at the server (a write is refused by PostgreSQL itself, not by our code)."""
    import uuid

    import psycopg

    from gateway.audit import open_audit

    tag = uuid.uuid4().hex[:8]
    sep = "&" if "?" in postgres_url else "?"
    ledger_url = f"{postgres_url}{sep}schema=dash_{tag}"
    audit_url = f"{postgres_url}{sep}table_prefix=dash_{tag}_"
    try:
        s = seed(tmp_path / "home", n=40, ledger_url=ledger_url, audit_url=audit_url)
        src = open_sources(ledger_url, audit_url, checkpoint_dir=s.checkpoints)
        assert src.notices == []
        app = create_app(src, clock=lambda: s.end + dt.timedelta(seconds=1))
        html = get(app, "/?range=all").body.decode()
        with open_ledger(ledger_url) as led:
            totals = led.report(by=[])[0]
        assert ('data-metric="spent_usd" data-value="{}"'.format(totals["spent_usd"])) in html
        listing = get(app, "/audit?range=all").body.decode()
        assert 'data-verified="true"' in listing
        assert 'data-record-ok="true"' in get(app, "/audit/2").body.decode()
        assert "data-route=" in get(app, "/providers?range=all").body.decode()
        assert src.ledger is not None and src.audit is not None
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            src.ledger._read(lambda q: q("DELETE FROM ledger_requests", ()))
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            src.audit.q("INSERT INTO {t}(seq, entry_hash, body) VALUES (999999, 'x', 'y')")
        src.close()
    finally:
        with open_ledger(ledger_url) as led:
            led.drop_schema()  # type: ignore[attr-defined]
        audit = open_audit(audit_url, checkpoint_dir=tmp_path / "home" / "checkpoints")
        audit.drop()  # type: ignore[attr-defined]
        audit.close()
