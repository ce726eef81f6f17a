"""The offline report: the dashboard's cost and audit views in one self-contained HTML file.

For e-mail and archives: no script, no external reference of any kind (the CSP in the file forbids
fetching anything), stylesheet inline, charts inline SVG, record links are anchors inside the file.
Each listed record carries its chain position and the signed checkpoint that seals it; the whole
chain's verification result is stated once at the top of the audit section.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..audit.checkpoints import Checkpoint
from ..types import atomic_write
from .audit_pages import images_table, quarantine_table, record_fields, record_rows, verify_banner
from .html import REPORT_CSP, e, shell, table, when
from .pages import Links, chart_block, cost_sections, providers_sections, spend_table
from .stores import open_audit_reader, open_ledger_reader
from .timeseries import Window
from .views import Sources, audit_filter, audit_view, cost_view, providers_view, row_summary

EXTRA_DIMENSIONS = ("project", "use_case", "provider", "model")


def open_sources(
    ledger_url: str | None,
    audit_url: str | None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    route_stats: Path | None = None,
    breaker_threshold: int = 3,
    breaker_cooldown_s: float = 30.0,
) -> Sources:
    """Open what exists, read-only; a store that is missing or unreadable becomes a notice on the page."""
    from ..errors import GatewayError

    src = Sources(
        route_stats=route_stats, breaker_threshold=breaker_threshold, breaker_cooldown_s=breaker_cooldown_s
    )
    if ledger_url:
        try:
            src.ledger = open_ledger_reader(ledger_url)
        except GatewayError as exc:
            src.notices.append(f"ledger: {exc}")
    if audit_url:
        try:
            src.audit = open_audit_reader(audit_url, checkpoint_dir)
        except GatewayError as exc:
            src.notices.append(f"audit log: {exc}")
    return src


def notices(src: Sources) -> str:
    return "".join(f'<div class="banner note">{e(n)}</div>' for n in src.notices)


def _sealed_by(cps: Sequence[Checkpoint], seq: int) -> Checkpoint | None:
    return next((c for c in cps if c.size >= seq), None)


def _record_details(src: Sources, rows: Sequence[dict[str, Any]]) -> str:
    """One collapsible block per record: chain position, sealing checkpoint, fields, images."""
    assert src.audit is not None
    cps, _ = src.audit.checkpoints.read_all(src.audit.log_id)
    cps = sorted(cps, key=lambda c: c.size)
    out = []
    for rec in rows:
        seq = int(rec["seq"])
        cp = _sealed_by(cps, seq)
        seal = (
            f"checkpoint of size {cp.size} signed {e(when(cp.ts))} (key {e(cp.key_id)})"
            if cp
            else '<span class="warn">not sealed yet (after the last checkpoint)</span>'
        )
        s = row_summary(rec)
        out.append(
            f'<details id="rec-{seq}"><summary>#{seq} · {e(when(s["ts"]))} · {e(s["event"])} · '
            f'{e(s["team"])} · {e(s["route"])}</summary><dl class="kv"><dt>position</dt><dd>record {seq}</dd>'
            f'<dt>previous hash</dt><dd class="mono">{e(rec.get("prev_hash"))}</dd>'
            f'<dt>entry hash</dt><dd class="mono">{e(rec.get("entry_hash"))}</dd>'
            f"<dt>sealed by</dt><dd>{seal}</dd></dl>{record_fields(rec)}{images_table(rec)}</details>"
        )
    return "".join(out)


def render_report_html(src: Sources, window: Window, *, max_records: int = 500) -> str:
    """The full report for ``window`` as one HTML document (a string)."""
    links = Links(live=False)
    parts = [f"<h1>Cost and audit report · {e(window.label())}</h1>", notices(src)]
    cost = cost_view(src, window, "team")
    if cost is not None:
        parts.append(f'<h2 id="cost">Cost</h2>{cost_sections(cost)}')
        assert src.ledger is not None
        for dim in EXTRA_DIMENSIONS:
            rows = src.ledger.report(by=[dim], since=window.since, until=window.until)
            rows.sort(key=lambda r: (-(r.get("spent_usd") or 0), str(r[dim])))
            parts.append(
                f"<section><h2>Spend by {e(dim)}</h2>{spend_table(rows, dim, cost.totals)}</section>"
            )
    audit = audit_view(src, window, {}, None, limit=1)  # the summary; the records come next
    if audit is not None and src.audit is not None:
        recs = src.audit.page(audit_filter(window, {}), before=None, limit=max_records)
        listed = (
            f"the {len(recs)} most recent of {audit.total} record(s) in this range; the log has {audit.size}"
        )
        denials = chart_block("Policy denials by rule", audit.denials, money_axis=False)
        parts.append(
            f'<h2 id="audit">Audit</h2>{verify_banner(audit.verify, links)}'
            f'<section><h2>Records</h2><p class="muted">{e(listed)}.</p>'
            f"{record_rows([row_summary(r) for r in recs], links)}</section>"
            f'<div class="grid2"><section>{denials}'
            "</section><section><h2>Quarantined outputs</h2>"
            f"{quarantine_table(audit.quarantined, links)}</section>"
            f"</div><section><h2>Record details</h2>{_record_details(src, recs)}</section>"
        )
    routes = providers_view(src, window)
    if routes:
        parts.append(f'<h2 id="providers">Providers</h2>{providers_sections(routes)}')
    sources = [
        ("ledger", src.ledger.url if src.ledger else "–"),
        ("audit log", src.audit.url if src.audit else "–"),
    ]
    parts.append(
        f"<section><h2>Sources</h2>{table([('store', ''), ('URL', '')], [[e(a), e(b)] for a, b in sources])}"
        "</section>"
    )
    return shell(
        "Cost and audit report", "".join(parts), active="", generated=window.now, nav=False, csp=REPORT_CSP
    )


def write_report_html(
    path: str | os.PathLike[str],
    *,
    ledger_url: str | None,
    audit_url: str | None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    now: dt.datetime | None = None,
    max_records: int = 500,
    route_stats: Path | None = None,
) -> Path:
    """Write the report to ``path`` atomically (a reader never sees half a file); returns the path."""
    now = now or dt.datetime.now(dt.UTC)
    key = "custom" if since or until else "all"
    window = Window(key, since, until, now)
    src = open_sources(ledger_url, audit_url, checkpoint_dir=checkpoint_dir, route_stats=route_stats)
    try:
        text = render_report_html(src, window, max_records=max_records)
    finally:
        src.close()
    out = Path(path)
    atomic_write(out, text.encode("utf-8"))
    return out


def write_report_for_cli(
    path: str, ledger_url: str, config: str | None, since: dt.datetime | None, until: dt.datetime | None
) -> Path:
    """``gateway report --html``: the audit log found as ``gateway audit`` finds it ($GATEWAY_AUDIT_URL,
    else the config's), checkpoints and route stats under the configured home."""
    from ..config import Settings
    from ..routing import default_stats_path

    settings = Settings.load(config)
    explicit = os.environ.get("GATEWAY_AUDIT_URL")
    return write_report_html(
        path,
        ledger_url=ledger_url,
        audit_url=explicit or settings.resolved_audit_url,
        checkpoint_dir=None if explicit else settings.home / "checkpoints",
        since=since,
        until=until,
        route_stats=default_stats_path(settings.home),
    )


__all__ = ["open_sources", "render_report_html", "write_report_for_cli", "write_report_html"]
