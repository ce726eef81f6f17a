"""HTML building blocks: escaping, money and time formats, the page shell and its Content-Security-Policy.

Why strings and not a template engine: the pages are a handful of tables and SVGs, every value goes
through :func:`e` (or a formatter that calls it), and there is no dependency to audit. The stylesheet
is inlined and allowed by its SHA-256 in the CSP, so the page needs no second request, runs no script
at all, and a report file saved from it still renders offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from html import escape
from typing import Any
from urllib.parse import urlencode

CSS = """
:root{--fg:#1d2329;--mut:#65707b;--bd:#dfe3e8;--ok:#2e7d4f;--warn:#9a6412;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:#f4f6f8}
header{background:#1d2b3a;color:#fff;padding:10px 20px;display:flex;gap:22px;align-items:center;
flex-wrap:wrap}
header a{color:#cfd8e3;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .brand{font-weight:700;color:#fff;margin-right:8px}header .meta{margin-left:auto;
color:#9fb0c2;font-size:12px}
main{max-width:1200px;margin:0 auto;padding:16px 20px}
section{background:#fff;border:1px solid var(--bd);border-radius:6px;padding:14px 16px;
margin:0 0 16px;overflow-x:auto}
h1{font-size:18px;margin:0 0 12px}h2{font-size:15px;margin:0 0 10px}h3{font-size:14px;
margin:0 0 6px}
a{color:#245c9e}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:10px;
margin:0 0 16px}
.kpi{border:1px solid var(--bd);border-radius:6px;padding:8px 10px;background:#fff}
.kpi b{display:block;font-size:19px;font-variant-numeric:tabular-nums}.kpi span{color:var(--mut);
font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #edf0f3;text-align:left;vertical-align:top}
th{color:var(--mut);font-weight:600;white-space:nowrap}.n{text-align:right;
font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;border-top:2px solid var(--bd)}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}.muted{color:var(--mut)}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;background:#eef1f4;
white-space:nowrap}
.badge.bad{background:#fbe9e7;color:var(--bad)}.badge.ok{background:#e8f5ec;color:var(--ok)}
.badge.warn{background:#fdf3e1;color:var(--warn)}
.banner{padding:8px 12px;border-radius:6px;margin:0 0 16px;border:1px solid}
.banner.ok{background:#e8f5ec;border-color:#b9dfc6}.banner.bad{background:#fbe9e7;
border-color:#f0b8b0}
.banner.note{background:#fdf8e7;border-color:#efdca0}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:0 0 16px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--mut)}
select,input,button{font:inherit;padding:3px 6px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:16px}
.grid2>section{margin:0 0 16px}
.budgets{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.budget{border:1px solid var(--bd);border-radius:6px;padding:8px 10px}
.legend{list-style:none;padding:0;margin:6px 0 0;display:flex;flex-wrap:wrap;gap:4px 14px;
font-size:12px}
.chart{max-width:100%;height:auto}.chart.wide{width:100%}.chart .ax,.chart .lb{font-size:11px;
fill:#55606b}
.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;
word-break:break-all}
pre{background:#f7f8fa;border:1px solid var(--bd);padding:8px;overflow:auto;font-size:12px;
white-space:pre-wrap}
details{border-bottom:1px solid #edf0f3;padding:4px 0}details:target{background:#fffbe6}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;
margin:0}dl.kv dt{color:var(--mut)}
dl.kv dd{margin:0;overflow-wrap:anywhere}
"""
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
#: No script, no frames, no outside fetches; the inline stylesheet by hash; SVG marks need no more.
# img-src 'self': record pages show thumbnails served from the archive by this same dashboard
META_CSP = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; img-src 'self' data:; form-action 'self'; base-uri 'none'"
)
#: The header adds what a <meta> policy cannot carry (browsers ignore frame-ancestors there, loudly).
CSP = META_CSP + "; frame-ancestors 'none'"
REPORT_CSP = f"default-src 'none'; style-src '{STYLE_HASH}'; img-src data:; base-uri 'none'"


def e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute; None is an empty cell."""
    return "" if value is None else escape(str(value), quote=True)


def money(value: Any, *, short: bool = False) -> str:
    """Exact dollars: thousands separators, at least cents, no trailing zeros past them."""
    if value is None or value == "":
        return "–"
    d = Decimal(str(value))
    if short:
        return f"${d:,.2f}" if abs(d) >= 1 or d == 0 else f"${d.normalize():f}"
    whole, _, frac = f"{d:,.6f}".partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"-${whole[1:]}.{frac}" if whole.startswith("-") else f"${whole}.{frac}"


def num(value: Any) -> str:
    return "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def pct(value: Any) -> str:
    return "–" if value is None else f"{Decimal(str(value)):+.2f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def when(ts: Any) -> str:
    """``2026-11-25T17:47:02.123456Z`` -> ``2026-11-25 17:47:02``; datetimes likewise, in UTC."""
    if isinstance(ts, dt.datetime):
        return ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = str(ts or "")
    return text[:19].replace("T", " ")


def badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {e(kind)}">{e(text)}</span>' if text else ""


def qs(params: Mapping[str, Any]) -> str:
    clean = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(clean) if clean else ""


def table(
    headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]], *, total: Sequence[str] | None = None
) -> str:
    """``headers`` are (text, css class); each row's cells are already-escaped HTML."""
    head = "".join(f'<th class="{c}">{e(h)}</th>' for h, c in headers)
    classes = [c for _, c in headers]
    body = []
    for row in rows:
        body.append(
            "<tr>" + "".join(f'<td class="{c}">{v}</td>' for v, c in zip(row, classes, strict=True)) + "</tr>"
        )
    if total is not None:
        cells = "".join(f'<td class="{c}">{v}</td>' for v, c in zip(total, classes, strict=True))
        body.append(f'<tr class="total">{cells}</tr>')
    if not body:
        return '<p class="muted">Nothing in this range.</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


NAV = (("/", "cost", "Cost"), ("/audit", "audit", "Audit"), ("/providers", "providers", "Providers"))


def shell(
    title: str,
    body: str,
    *,
    active: str,
    generated: dt.datetime,
    nav: bool = True,
    csp: str = META_CSP,
    root: str = "",
) -> str:
    """The whole document. ``nav=False`` for the offline report (its links would lead nowhere);
    ``root`` is the mount point when the dashboard is served under a prefix."""
    links = ""
    if nav:
        links = "".join(
            f'<a href="{e(root + href)}" class="{"on" if key == active else ""}">{e(text)}</a>'
            for href, key, text in NAV
        )
    meta = f"read-only · {e(when(generated))} UTC"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">'
        f"<title>{e(title)} · diffusion-gateway</title><style>{CSS}</style></head><body>"
        f'<header><span class="brand">diffusion-gateway</span>{links}'
        f'<span class="meta">{meta}</span></header>'
        f"<main>{body}</main></body></html>"
    )


__all__ = [
    "CSP",
    "CSS",
    "META_CSP",
    "REPORT_CSP",
    "badge",
    "e",
    "money",
    "num",
    "pct",
    "qs",
    "seconds",
    "shell",
    "table",
    "when",
]
