"""Page sections for cost and providers, and the widgets every page shares (range form, charts, links).

Figures the browser test compares with the ledger carry ``data-metric`` / ``data-value`` attributes
holding the exact decimal string, so "the page equals the ledger" is checked on the value, not on a
formatted rendering of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ..ledger.store import from_us
from . import svg
from .html import badge, e, money, num, pct, seconds, table, when
from .timeseries import RANGES, Window
from .views import DIMENSIONS, BudgetView, CostView, RouteView, Series


class Links:
    """Where links lead: the live dashboard's URLs, or anchors inside one offline report file."""

    def __init__(self, live: bool, root: str = "", thumbs: bool | None = None) -> None:
        self.live = live
        self.root = root  # the mount point when served under a prefix (``/dashboard`` in the server)
        self.thumbs = live if thumbs is None else thumbs  # only where an archive can serve them

    def record(self, seq: Any) -> str:
        return f"{self.root}/audit/{int(seq)}" if self.live else f"#rec-{int(seq)}"

    def path(self, path: str) -> str:
        """A page of the live dashboard, under its mount point."""
        return f"{self.root}{path}"


_DATE = 'placeholder="YYYY-MM-DD" size="16"'


def window_form(window: Window, extra: Mapping[str, str], choices: Mapping[str, Sequence[str]]) -> str:
    """The range picker plus page-specific selects, as a plain GET form (no script needed)."""
    opts = "".join(
        f'<option value="{k}"{" selected" if window.key == k else ""}>'
        f"{'all time' if k == 'all' else 'last ' + k}</option>"
        for k in RANGES
    ) + (f'<option value="custom"{" selected" if window.key == "custom" else ""}>custom</option>')
    since = window.since.strftime("%Y-%m-%dT%H:%M") if window.key == "custom" and window.since else ""
    until = window.until.strftime("%Y-%m-%dT%H:%M") if window.key == "custom" and window.until else ""
    parts = [
        f'<label>range<select name="range">{opts}</select></label>',
        f'<label>since (UTC)<input name="since" value="{e(since)}" {_DATE}></label>',
        f'<label>until (UTC)<input name="until" value="{e(until)}" {_DATE}></label>',
    ]
    for name, values in choices.items():
        current = extra.get(name, "")
        first = "" if name == "by" else '<option value="">any</option>'
        items = "".join(f"<option{' selected' if v == current else ''}>{e(v)}</option>" for v in values)
        parts.append(
            f'<label>{e(name.replace("_", " "))}<select name="{e(name)}">{first}{items}</select></label>'
        )
    if "request_id" in extra:
        parts.append(
            f'<label>request id<input name="request_id" value="{e(extra["request_id"])}" size="20"></label>'
        )
    return f'<form class="filters" method="get">{"".join(parts)}<button>Show</button></form>'


def chart_block(title: str, series: Series, *, money_axis: bool) -> str:
    if not series.series:
        return f'<h2>{e(title)}</h2><p class="muted">Nothing in this range.</p>'

    def fmt(v: Any) -> str:
        return money(v, short=True) if money_axis else f"{Decimal(str(v)).normalize():f}"

    unit = f" (per {series.buckets.unit})" if series.buckets else ""
    chart = svg.stacked_bars(series.labels, series.series, fmt=fmt, title=title)
    return f"<h2>{e(title)}{e(unit)}</h2>{chart}{svg.legend(series.series)}"


# --------------------------------------------------------------------------- cost


_KPIS = (
    ("spent_usd", "spent", money),
    ("requests", "requests", num),
    ("images", "images", num),
    ("usd_per_image", "$ per image", money),
    ("refused", "refused (budget/rate)", num),
    ("reserved_usd", "reserved now", money),
    ("estimate_error_pct", "estimate error", pct),
    ("mean_abs_error_usd", "mean |est - actual|", money),
)


def kpis(totals: Mapping[str, Any]) -> str:
    tiles = []
    for key, label, fmt in _KPIS:
        value = totals.get(key)
        tiles.append(
            f'<div class="kpi" data-metric="{key}" data-value="{e(value)}"><b>{e(fmt(value))}</b>'
            f"<span>{e(label)}</span></div>"
        )
    return f'<div class="kpis">{"".join(tiles)}</div>'


def spend_table(rows: Sequence[Mapping[str, Any]], dim: str, totals: Mapping[str, Any]) -> str:
    all_spent = Decimal(str(totals.get("spent_usd") or 0))
    headers = [
        (dim.replace("_", " "), ""),
        ("requests", "n"),
        ("refused", "n"),
        ("images", "n"),
        ("spent", "n"),
        ("share", "n"),
        ("$/image", "n"),
        ("est. error", "n"),
        ("avg latency", "n"),
    ]

    def cells(r: Mapping[str, Any], key: str) -> list[str]:
        spent = Decimal(str(r.get("spent_usd") or 0))
        share = f"{spent * 100 / all_spent:.1f}%" if all_spent else "–"
        return [
            key,
            e(num(r.get("requests"))),
            e(num(r.get("refused"))),
            e(num(r.get("images"))),
            f'<span data-metric="spent_usd" data-value="{e(r.get("spent_usd"))}">'
            f"{e(money(r.get('spent_usd')))}</span>",
            share,
            e(money(r.get("usd_per_image"))),
            e(pct(r.get("estimate_error_pct"))),
            e(seconds(r.get("avg_latency_s"))),
        ]

    body = [cells(r, f'<span data-key="{e(r.get(dim))}">{e(r.get(dim))}</span>') for r in rows]
    return table(headers, body, total=cells(totals, "total") if rows else None)


def budget_card(b: BudgetView) -> str:
    s = b.status
    bud = s.budget
    span = (b.end_us or b.now_us) - b.start_us or 1
    points = [((t - b.start_us) / span, v) for t, v in b.points]
    start = from_us(b.start_us).strftime("%Y-%m-%d")
    end = from_us(b.end_us).strftime("%Y-%m-%d %H:%M") if b.end_us else "now"
    chart = svg.burndown(
        points,
        limit=bud.limit_usd,
        warn_at=bud.warn_at,
        projected=b.projected_usd,
        now_x=(b.now_us - b.start_us) / span,
        title=f"budget {bud.id}",
        fmt=money,
        start_label=start,
        end_label=end,
    )
    kind = {"exhausted": "bad", "warn": "warn"}.get(b.state, "ok")
    used = s.spent_usd + s.reserved_usd
    projection = ""
    if b.projected_usd is not None:
        over = b.projected_usd > bud.limit_usd
        projection = (
            f'<div class="{"bad" if over else "muted"}">at this rate: {e(money(b.projected_usd))} by the '
            f"window's end{' (over the limit)' if over else ''}</div>"
        )
    return (
        f'<div class="budget" data-budget="{e(bud.id)}"><h3>{e(bud.id)} {badge(b.state, kind)}</h3>'
        f'<div class="muted">{e(bud.scope)}={e(bud.scope_value)} · {e(bud.period)} · warn at '
        f"{bud.warn_at:.0%}</div>"
        f'<div><span data-metric="budget_used_usd" data-value="{e(used)}">{e(money(used))}</span> of '
        f"{e(money(bud.limit_usd))} ({s.used_fraction:.1%}) · remaining {e(money(s.remaining_usd))}</div>"
        f"{chart}{projection}</div>"
    )


def cost_sections(v: CostView, *, dims: Sequence[str] | None = None) -> str:
    """Everything finance asks: totals, spend over time, breakdowns, budgets, unit costs, top spenders."""
    out = [kpis(v.totals)]
    out.append(f"<section>{chart_block(f'Spend over time by {v.dim}', v.spend, money_axis=True)}</section>")
    out.append(
        f'<section id="spend-by-{e(v.dim)}"><h2>Spend by {e(v.dim)}</h2>'
        f"{spend_table(v.rows, v.dim, v.totals)}</section>"
    )
    if v.budgets:
        cards = "".join(budget_card(b) for b in v.budgets)
        out.append(
            '<section id="budgets"><h2>Budgets (current windows)</h2>'
            f'<div class="budgets">{cards}</div></section>'
        )
    else:
        out.append(
            '<section id="budgets"><h2>Budgets</h2><p class="muted">No budget has been enforced by this '
            "ledger yet.</p></section>"
        )
    per_image = [
        (str(r["model"]), Decimal(str(r["usd_per_image"])), money(r["usd_per_image"]))
        for r in v.by_model
        if r.get("usd_per_image") is not None
    ]
    accuracy = table(
        [
            ("model", ""),
            ("settled", "n"),
            ("estimated", "n"),
            ("actual", "n"),
            ("error", "n"),
            ("mean |error|", "n"),
        ],
        [
            [
                e(r["model"]),
                e(num(r.get("settled"))),
                e(money(r.get("estimated_usd"))),
                e(money(r.get("spent_usd"))),
                e(pct(r.get("estimate_error_pct"))),
                e(money(r.get("mean_abs_error_usd"))),
            ]
            for r in v.by_model
        ],
    )
    out.append(
        '<div class="grid2"><section><h2>Cost per image by model</h2>'
        f"{svg.hbars(sorted(per_image, key=lambda x: -x[1]), title='cost per image by model')}</section>"
        f"<section><h2>Estimate vs actual by model</h2>{accuracy}</section></div>"
    )
    tops = []
    for title, rows, key in (
        ("Top spenders (users)", v.top_users, "user"),
        ("Top projects", v.top_projects, "project"),
    ):
        items = [
            (str(r[key]), Decimal(str(r["spent_usd"])), money(r["spent_usd"]))
            for r in rows
            if r.get("spent_usd")
        ]
        tops.append(
            f"<section><h2>{e(title)}</h2>{svg.hbars(items, title=title, fill=svg.PALETTE[1])}</section>"
        )
    out.append(f'<div class="grid2">{"".join(tops)}</div>')
    return "".join(out)


def cost_page(v: CostView) -> str:
    form = window_form(v.window, {"by": v.dim}, {"by": DIMENSIONS})
    return f"<h1>Cost · {e(v.window.label())}</h1>{form}{cost_sections(v)}"


# --------------------------------------------------------------------------- audit


def providers_sections(routes: Sequence[RouteView]) -> str:
    kinds = {"open": "bad", "half-open": "warn", "closed": "ok"}
    rows = [
        [
            f'<span data-route="{e(r.route)}">{e(r.route)}</span>',
            e(num(r.attempts)),
            e(num(r.ok)),
            f'<span class="{"bad" if r.error_rate > 0.2 else ""}">{r.error_rate:.1%}</span>',
            e(", ".join(f"{k} x{n}" for k, n in sorted(r.errors.items()))),
            e(seconds(r.p50_s)),
            e(seconds(r.p95_s)),
            e(seconds(r.ewma_s)) + (f' <span class="muted">(n={r.ewma_n})</span>' if r.ewma_n else ""),
            badge(r.breaker, kinds.get(r.breaker, ""))
            + (f" {r.consecutive_failures}" if r.consecutive_failures else ""),
            e(when(r.last_seen)),
            e(money(r.spent_usd)),
        ]
        for r in routes
    ]
    headers = [
        ("route", ""),
        ("attempts", "n"),
        ("ok", "n"),
        ("error rate", "n"),
        ("errors", ""),
        ("call p50", "n"),
        ("call p95", "n"),
        ("provider EWMA", "n"),
        ("breaker", ""),
        ("last attempt", ""),
        ("spent", "n"),
    ]
    err = [(r.route, r.error_rate, f"{r.error_rate:.1%}") for r in routes if r.attempts]
    lat = [(r.route, r.p95_s, seconds(r.p95_s)) for r in routes if r.p95_s is not None]
    note = (
        "<p class=\"muted\">Call latency and errors come from the audit log's attempt records (the gateway's "
        "wall time per attempt); the EWMA of provider-reported time from route_stats.json; the breaker "
        "state is replayed from the attempts with the configured threshold and cool-down (each process "
        "keeps its own breaker).</p>"
    )
    return (
        f'<section id="routes"><h2>Routes</h2>{table(headers, rows)}{note}</section>'
        f'<div class="grid2"><section><h2>Error rate by route</h2>'
        f"{svg.hbars(sorted(err, key=lambda x: -x[1]), title='error rate', fill=svg.PALETTE[3])}</section>"
        "<section><h2>p95 latency by route</h2>"
        f"{svg.hbars(sorted(lat, key=lambda x: -float(x[1] or 0)), title='p95')}</section></div>"
    )


def providers_page(routes: Sequence[RouteView], window: Window) -> str:
    return (
        f"<h1>Providers · {e(window.label())}</h1>{window_form(window, {}, {})}{providers_sections(routes)}"
    )


__all__ = [
    "Links",
    "chart_block",
    "cost_page",
    "cost_sections",
    "providers_page",
    "providers_sections",
    "spend_table",
    "window_form",
]
