"""Charts as inline SVG strings: no JavaScript, no CDN, nothing fetched, so they work offline and in mail.

Three shapes cover every view: stacked bars over time, horizontal bars for rankings, and a budget
burn-down. Colours are SVG presentation attributes (not ``style=``), so a strict Content-Security-Policy
without ``'unsafe-inline'`` styles still renders them; each mark carries a ``<title>`` as its tooltip.
Amounts become floats here and only here, for pixel positions; labels are the exact strings given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from html import escape

PALETTE = ("#2f6db5", "#e07b39", "#3a9a5b", "#c8453c", "#8a63b8", "#8c6d31", "#d4609f", "#5b8f9e")
OTHER = "#9aa3ad"
Num = Decimal | float | int


def color(i: int, name: str = "") -> str:
    return OTHER if name.startswith("other") else PALETTE[i % len(PALETTE)]


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def nice_max(v: Num) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``v`` (axis top), as an exact Decimal.

    Decimal, not float: ``0.3 / 4`` in binary floating point prints as ``0.075000000000000001``, and an
    axis label must read as the money it stands for.
    """
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    if d <= 0:
        return Decimal(1)
    exp = Decimal(1).scaleb(d.adjusted())  # 10^k with 10^k <= d < 10^(k+1)
    for m in ("1", "2", "2.5", "5", "10"):
        top = Decimal(m) * exp
        if d <= top:
            return top
    return Decimal(10) * exp  # pragma: no cover - d < 10^(k+1) always matches "10"


def ticks(top: Num, count: int = 4) -> list[Decimal]:
    """``count + 1`` evenly spaced axis values from 0 to ``nice_max(top)``, computed in Decimal."""
    ymax = nice_max(top)
    return [(ymax * k / count).normalize() for k in range(count + 1)]


def swatch(i: int, name: str) -> str:
    """A legend key: a tiny SVG square in the series colour."""
    return (
        f'<svg class="sw" width="10" height="10" aria-hidden="true"><rect width="10" height="10" '
        f'fill="{color(i, name)}"/></svg>'
    )


def stacked_bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[Num]]],
    *,
    fmt: Callable[[Num], str],
    title: str,
    width: int = 880,
    height: int = 220,
) -> str:
    """Bars per label, one stacked segment per series; y axis in the series' unit (``fmt``)."""
    n = max(len(labels), 1)
    left, right, top, bottom = 64, 36, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum((Decimal(str(s[1][i])) for s in series), Decimal(0)) for i in range(len(labels))]
    axis = ticks(max(totals, default=Decimal(0)))
    ymax = float(axis[-1])
    bw = plot_w / n
    out = [
        f'<svg class="chart wide" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for k, tick in enumerate(axis):  # grid and y labels
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{_f(y)}" y2="{_f(y)}" stroke="#e3e6ea"/>')
        out.append(
            f'<text x="{left - 6}" y="{_f(y + 4)}" text-anchor="end" class="ax">{escape(fmt(tick))}</text>'
        )
    for i, label in enumerate(labels):
        x = left + i * bw
        y = top + plot_h
        for j, (name, values) in enumerate(series):
            v = float(values[i])
            if v <= 0:
                continue
            h = plot_h * v / ymax
            y -= h
            tip = f"{label} · {name}: {fmt(values[i])}"
            out.append(
                f'<rect x="{_f(x + bw * 0.1)}" y="{_f(y)}" width="{_f(max(bw * 0.8, 1))}" '
                f'height="{_f(max(h, 0.5))}"'
                f' fill="{color(j, name)}"><title>{escape(tip)}</title></rect>'
            )
    step = max(1, math.ceil(n / 8))
    for i in range(0, len(labels), step):
        x = left + i * bw + bw / 2
        out.append(
            f'<text x="{_f(x)}" y="{height - bottom + 16}" text-anchor="middle" class="ax">'
            f"{escape(labels[i])}</text>"
        )
    out.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'stroke="#8a939c"/></svg>'
    )
    return "".join(out)


def legend(series: Sequence[tuple[str, object]]) -> str:
    items = "".join(f"<li>{swatch(i, name)} {escape(name)}</li>" for i, (name, _) in enumerate(series))
    return f'<ul class="legend">{items}</ul>'


def hbars(
    items: Sequence[tuple[str, Num, str]],
    *,
    title: str,
    width: int = 420,
    bar: int = 18,
    fill: str = PALETTE[0],
) -> str:
    """One bar per (label, value, text shown at the bar's end), longest first as given."""
    if not items:
        return '<p class="muted">No data in this range.</p>'
    label_w, gap = 150, 4
    vmax = max((float(v) for _, v, _ in items), default=0.0) or 1.0
    height = len(items) * (bar + gap) + gap
    bar_w = width - label_w - 90
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, (label, value, text) in enumerate(items):
        y = gap + i * (bar + gap)
        w = max(bar_w * float(value) / vmax, 1 if float(value) > 0 else 0)
        short = label if len(label) <= 22 else label[:21] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar - 5}" text-anchor="end" class="lb">{escape(short)}'
            f"<title>{escape(label)}</title></text>"
            f'<rect x="{label_w}" y="{y}" width="{_f(w)}" height="{bar}" fill="{fill}">'
            f"<title>{escape(label)}: {escape(text)}</title></rect>"
            f'<text x="{_f(label_w + w + 4)}" y="{y + bar - 5}" class="lb">{escape(text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def burndown(
    points: Sequence[tuple[float, Num]],
    *,
    limit: Num,
    warn_at: float,
    projected: Num | None,
    now_x: float,
    title: str,
    fmt: Callable[[Num], str],
    start_label: str,
    end_label: str,
    width: int = 300,
    height: int = 130,
) -> str:
    """Cumulative spend (steps, x in [0, 1] of the window) against the limit, the warning line, and a
    dashed projection from now to the window's end at the current rate."""
    left, right, top, bottom = 8, 8, 8, 20
    pw, ph = width - left - right, height - top - bottom
    top_v = max(float(limit), max((float(v) for _, v in points), default=0.0), float(projected or 0)) * 1.08
    top_v = top_v or 1.0

    def xy(x: float, v: float) -> tuple[float, float]:
        return left + pw * min(max(x, 0.0), 1.0), top + ph - ph * v / top_v

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#f7f8fa"/>'
    ]
    limit_d = Decimal(str(limit))
    for line_v, colour, dash, name in (
        (limit_d, "#c8453c", "6 3", "limit"),
        ((limit_d * Decimal(str(warn_at))).normalize(), "#e0a339", "2 3", "warn"),
    ):
        _, y = xy(0, float(line_v))
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_f(y)}" y2="{_f(y)}" stroke="{colour}" '
            f'stroke-dasharray="{dash}"><title>{name} {escape(fmt(line_v))}</title></line>'
        )
    path: list[str] = []
    last_v = 0.0
    for x, amount in points:
        v = float(amount)
        px, py = xy(x, v)
        if path:
            path.append(f"L{_f(px)},{_f(xy(0, last_v)[1])}")
        path.append(("M" if not path else "L") + f"{_f(px)},{_f(py)}")
        last_v = v
    nx, ny = xy(now_x, last_v)
    path.append(f"L{_f(nx)},{_f(ny)}")
    out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    if projected is not None:
        ex, ey = xy(1.0, float(projected))
        out.append(
            f'<line x1="{_f(nx)}" y1="{_f(ny)}" x2="{_f(ex)}" y2="{_f(ey)}" stroke="{PALETTE[0]}" '
            f'stroke-dasharray="4 3"><title>projected {escape(fmt(projected))} at the window end'
            "</title></line>"
        )
    out.append(
        f'<text x="{left}" y="{height - 5}" class="ax">{escape(start_label)}</text>'
        f'<text x="{left + pw}" y="{height - 5}" text-anchor="end" class="ax">{escape(end_label)}'
        "</text></svg>"
    )
    return "".join(out)


__all__ = ["PALETTE", "burndown", "color", "hbars", "legend", "nice_max", "stacked_bars", "swatch", "ticks"]
