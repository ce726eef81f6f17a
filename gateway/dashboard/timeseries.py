"""Time windows and buckets shared by every chart, so spend, denials and latency line up on one axis.

Why integer microseconds: the ledger stores ``ts_us``; bucketing in SQL as ``(ts_us + offset) / size``
keeps each bucket's sum exactly the sum of its rows (no float drift), and the audit's ISO timestamps
are converted to the same integers before they are placed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from ..ledger.store import DAY_US, US, from_us, to_us

HOUR_US = 3_600 * US
WEEK_US = 7 * DAY_US
#: Range key -> length; "all" spans the data.
RANGES: dict[str, dt.timedelta | None] = {
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "90d": dt.timedelta(days=90),
    "all": None,
}
DEFAULT_RANGE = "30d"
_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_when(text: str) -> dt.datetime:
    """``YYYY-MM-DD[THH:MM[:SS]]`` as UTC; ValueError on anything else."""
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)")


def iso_us(ts: str) -> int:
    """An audit timestamp (``...Z``) as epoch microseconds."""
    return to_us(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")))


def audit_ts(when: dt.datetime) -> str:
    """The audit log's fixed-width text form, for range filters that compare as text."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Window:
    """What the user asked to see: ``[since, until)`` in UTC (None = open) and the instant of the view."""

    key: str
    since: dt.datetime | None
    until: dt.datetime | None
    now: dt.datetime

    @property
    def end(self) -> dt.datetime:
        return self.until or self.now

    def label(self) -> str:
        a = self.since.strftime("%Y-%m-%d %H:%M") if self.since else "the beginning"
        b = self.until.strftime("%Y-%m-%d %H:%M") if self.until else "now"
        return f"{a} .. {b} UTC"

    def params(self) -> dict[str, str]:
        """Query parameters that reproduce this window."""
        if self.key != "custom":
            return {"range": self.key}
        out = {"range": "custom"}
        if self.since:
            out["since"] = self.since.strftime("%Y-%m-%dT%H:%M")
        if self.until:
            out["until"] = self.until.strftime("%Y-%m-%dT%H:%M")
        return out


def parse_window(params: Mapping[str, str], now: dt.datetime) -> Window:
    """``range=24h|7d|30d|90d|all`` or ``since=...&until=...``; ValueError names the bad parameter."""
    since_s, until_s = params.get("since", "").strip(), params.get("until", "").strip()
    if since_s or until_s or params.get("range") == "custom":
        since = parse_when(since_s) if since_s else None
        until = parse_when(until_s) if until_s else None
        if since and until and until <= since:
            raise ValueError("until must be after since")
        return Window("custom", since, until, now)
    key = params.get("range", DEFAULT_RANGE)
    if key not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    length = RANGES[key]
    return Window(key, None if length is None else now - length, None, now)


@dataclass(frozen=True)
class Buckets:
    """Bucket ``b`` covers ``[b * size - offset, (b + 1) * size - offset)`` microseconds."""

    size_us: int
    offset_us: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def index(self, ts_us: int) -> int:
        return (ts_us + self.offset_us) // self.size_us

    def start_us(self, b: int) -> int:
        return b * self.size_us - self.offset_us

    def label(self, b: int) -> str:
        t = from_us(self.start_us(b))
        if self.size_us < DAY_US:
            return t.strftime("%m-%d %H:00")
        if self.size_us == DAY_US:
            return t.strftime("%Y-%m-%d")
        return "week of " + t.strftime("%Y-%m-%d")

    @property
    def unit(self) -> str:
        return {HOUR_US: "hour", 6 * HOUR_US: "6 hours", DAY_US: "day", WEEK_US: "week"}.get(
            self.size_us, f"{self.size_us // US} s"
        )


def buckets_for(start_us: int, end_us: int) -> Buckets:
    """About 24-120 buckets for any span: hours, 6 hours, days or (Monday-aligned) weeks."""
    span = max(end_us - start_us, 1)
    if span <= 2 * DAY_US:
        size, offset = HOUR_US, 0
    elif span <= 10 * DAY_US:
        size, offset = 6 * HOUR_US, 0
    elif span <= 120 * DAY_US:
        size, offset = DAY_US, 0
    else:
        size, offset = WEEK_US, 3 * DAY_US  # 1970-01-01 was a Thursday: shift so weeks start Monday
    b = Buckets(size, offset, 0, 0)
    return Buckets(size, offset, b.index(start_us), b.index(max(end_us - 1, start_us)))


__all__ = ["RANGES", "Buckets", "Window", "audit_ts", "buckets_for", "iso_us", "parse_when", "parse_window"]
