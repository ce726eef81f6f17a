"""Spend reports: grouped rows, totals and budgets from a ledger, rendered as table, CSV or JSON.

Totals are a second grouped query (no dimensions), not a Python sum of the rows, so a test can prove
the two agree, and both agree with the per-request costs the audit log records. Budgets come from the
ledger itself (as last enforced), so finance can run ``gateway report`` without the policy files.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .store import Ledger

SPEND_COLUMNS: tuple[str, ...] = (
    "requests", "settled", "released", "expired", "in_flight", "refused", "images", "spent_usd",
    "reserved_usd", "estimated_usd", "usd_per_image", "estimate_error_usd", "estimate_error_pct",
    "mean_abs_error_usd", "avg_latency_s",
)  # fmt: skip
BUDGET_COLUMNS: tuple[str, ...] = (
    "budget", "scope", "scope_value", "period", "window_start", "window_end", "limit_usd", "spent_usd",
    "reserved_usd", "remaining_usd", "used_pct", "requests", "warn", "exhausted",
)  # fmt: skip
# What fits a terminal: (column, header)
_SPEND_TABLE = (
    ("requests", "requests"), ("refused", "refused"), ("in_flight", "in flight"), ("images", "images"),
    ("spent_usd", "spent $"), ("reserved_usd", "reserved $"), ("usd_per_image", "$/image"),
    ("estimate_error_pct", "est err %"), ("mean_abs_error_usd", "mean |err| $"),
)  # fmt: skip
_BUDGET_TABLE = (
    ("budget", "budget"), ("scope", "scope"), ("scope_value", "value"), ("period", "period"),
    ("limit_usd", "limit $"), ("spent_usd", "spent $"), ("reserved_usd", "reserved $"),
    ("remaining_usd", "remaining $"), ("used_pct", "used %"), ("state", "state"),
)  # fmt: skip


@dataclass(frozen=True)
class Report:
    by: tuple[str, ...]
    since: dt.datetime | None
    until: dt.datetime | None
    generated_at: dt.datetime
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    budgets: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": list(self.by),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "generated_at": self.generated_at.isoformat(),
            "rows": self.rows,
            "totals": self.totals,
            "budgets": self.budgets,
        }


def build_report(
    ledger: Ledger,
    *,
    by: Sequence[str],
    now: dt.datetime,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Report:
    rows = ledger.report(by=by, since=since, until=until)
    totals = ledger.report(by=[], since=since, until=until)
    budgets = [s.to_dict() for s in ledger.budget_status(ledger.recorded_budgets(), now)]
    return Report(tuple(by), since, until, now, rows, totals[0] if totals else _empty_totals(), budgets)


def _empty_totals() -> dict[str, Any]:
    zero = Decimal("0.000000")
    return {c: (zero if c.endswith("_usd") else 0) for c in SPEND_COLUMNS} | {
        "usd_per_image": None, "estimate_error_pct": None, "mean_abs_error_usd": None, "avg_latency_s": None,
    }  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return value


def render_json(report: Report, section: str = "all") -> str:
    """The whole report as one JSON object (money as decimal strings); ``section`` drops the other part."""
    data = report.to_dict()
    if section == "spend":
        del data["budgets"]
    elif section == "budgets":
        del data["rows"], data["totals"]
    return json.dumps(data, default=_plain, indent=2)


def render_csv(report: Report, section: str = "spend") -> str:
    """One CSV table: ``spend`` (a row per group) or ``budgets``. Empty cells mean "not applicable"."""
    out = io.StringIO()
    if section == "budgets":
        columns, rows = list(BUDGET_COLUMNS), report.budgets
    else:
        columns, rows = [*report.by, *SPEND_COLUMNS], report.rows
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _plain(row.get(c)) for c in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):  # money: thousands separators, at least cents, no trailing zeros
        whole, _, frac = f"{value:,.6f}".partition(".")
        return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i >= numeric_from else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()  # fmt: skip

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_table(report: Report, section: str = "all") -> str:
    lines: list[str] = []
    if section in ("all", "spend"):
        period = f"{_when(report.since)} .. {_when(report.until)}"
        lines.append(f"Spend by {', '.join(report.by) or 'total'} ({period}, UTC)")
        dims = list(report.by)
        body = [
            [_cell(r.get(d)) for d in dims] + [_cell(r.get(c)) for c, _ in _SPEND_TABLE] for r in report.rows
        ]
        if dims:
            body.append(
                ["TOTAL", *[""] * (len(dims) - 1), *(_cell(report.totals.get(c)) for c, _ in _SPEND_TABLE)]
            )
        else:
            body = [[_cell(report.totals.get(c)) for c, _ in _SPEND_TABLE]]
        lines += _table([*dims, *(h for _, h in _SPEND_TABLE)], body, len(dims))
    if section in ("all", "budgets"):
        if lines:
            lines.append("")
        lines.append(f"Budgets (current windows at {report.generated_at.isoformat(timespec='seconds')})")
        if not report.budgets:
            lines.append("(no budget has been enforced by this ledger yet)")
        else:
            rows = []
            for b in report.budgets:
                state = "EXHAUSTED" if b["exhausted"] else "WARN" if b["warn"] else "ok"
                rows.append([_cell({**b, "state": state}.get(c)) for c, _ in _BUDGET_TABLE])
            lines += _table([h for _, h in _BUDGET_TABLE], rows, 4)
    return "\n".join(lines) + "\n"


def _when(ts: dt.datetime | None) -> str:
    return ts.isoformat(timespec="seconds") if ts else "*"
