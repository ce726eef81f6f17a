"""Read-side of the SQL ledger: counter lookups and recomputation, budget status, history, reports.

Split from ``_sql.py`` (the write path) so each stays readable; both stores inherit both. Reads run in
one snapshot (``_read``) and take no locks.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from ..types import Budget
from .migrations import TOKEN_COLUMNS
from .pricing import MICRO, from_micros
from .store import (
    DAY_US,
    EPOCH,
    REPORT_DIMENSIONS,
    CounterDrift,
    CounterKey,
    Ledger,
    Usage,
    budget_key,
    scope_matches,
    status_of,
    to_us,
    window_end_us,
    windows,
)

T = TypeVar("T")
Row = tuple[Any, ...]
Query = Callable[[str, Sequence[Any]], list[Row]]

_COLUMN = {"team": "team", "project": "project", "use_case": "use_case", "user": "user_name"}
_DIM_SQL = {
    **_COLUMN,
    "provider": "provider",
    "model": "model",
    "route": "route_key",
    "day": f"ts_us / {DAY_US}",
}
_SUMS = (  # (spent, reserved, requests): the order Usage takes
    "SUM(CASE WHEN status IN ('settled', 'expired') THEN actual_micros ELSE 0 END), "
    "SUM(CASE WHEN status = 'reserved' THEN estimated_micros ELSE 0 END), COUNT(*)"
)
_COUNTER_COLS = "period, window_start, scope, scope_value, spent_micros, reserved_micros, requests"
# SQL below is assembled only from these constants and whitelisted column names (hence the S608 noqa);
# every value travels as a bound parameter.
_HISTORY = 200  # settled calls that expected_seconds looks back on
_MIN_HISTORY = 3


def _usage(row: Row) -> Usage:
    return Usage(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))


class SqlReads(Ledger):
    """Queries every SQL store answers the same way; subclasses supply ``_read``."""

    @abc.abstractmethod
    def _read(self, fn: Callable[[Query], T]) -> T: ...

    def _counters(self, q: Query, stamps: Iterable[int]) -> dict[CounterKey, Usage]:
        """Every counter whose window contains one of ``stamps`` (all scopes; callers filter)."""
        pairs = sorted({(p, s) for ts in stamps for p, s in windows(ts).items()})
        if not pairs:
            return {}
        where = " OR ".join(["(period = ? AND window_start = ?)"] * len(pairs))
        rows = q(f"SELECT {_COUNTER_COLS} FROM ledger_counters WHERE {where}", [x for p in pairs for x in p])  # noqa: S608
        return {(r[0], int(r[1]), r[2], r[3]): _usage(r[4:]) for r in rows}

    def _recompute(self, q: Query, key: CounterKey) -> Usage:
        """A counter's figures from the request rows (used to create counters, and by ``verify``)."""
        period, start, scope, value = key
        end = window_end_us(period, start)
        where, params = "ts_us >= ?", [start]
        if end is not None:
            where, params = where + " AND ts_us < ?", [start, end]
        if scope == "org":
            return _usage(q(f"SELECT {_SUMS} FROM ledger_requests WHERE {where}", params)[0])  # noqa: S608
        col = _COLUMN[scope]
        total = Usage()
        for row in q(f"SELECT {col}, {_SUMS} FROM ledger_requests WHERE {where} GROUP BY {col}", params):  # noqa: S608
            if scope_matches(scope, value, {scope: row[0]}):
                total = total + _usage(row[1:])
        return total

    def budget_status(self, budgets: Sequence[Budget], now: dt.datetime) -> list[Any]:
        now_us = to_us(now)

        def tx(q: Query) -> list[Any]:
            seen = self._counters(q, [now_us])
            out = []
            for b in budgets:
                key = budget_key(b, now_us)
                usage = seen[key] if key in seen else self._recompute(q, key)
                out.append(status_of(b, usage, now_us))
            return out

        return self._read(tx)

    def expected_seconds(self, route_key: str) -> float | None:
        rows = self._read(
            lambda q: q(
                "SELECT COALESCE(billed_seconds, latency_s) FROM ledger_requests WHERE route_key = ?"
                " AND status = 'settled' AND images > 0 ORDER BY ts_us DESC LIMIT ?",
                (route_key, _HISTORY),
            )
        )
        values = sorted(float(r[0]) for r in rows if r[0] is not None)
        if len(values) < _MIN_HISTORY:
            return None
        return values[min(len(values) - 1, -(-9 * len(values) // 10) - 1)]  # nearest-rank p90

    def recorded_budgets(self) -> list[Budget]:
        rows = self._read(
            lambda q: q(
                "SELECT id, scope, scope_value, period, limit_micros, warn_at FROM ledger_budgets"
                " ORDER BY id",
                (),
            )
        )
        return [Budget(id=r[0], scope=r[1], scope_value=r[2], period=r[3], limit_usd=from_micros(int(r[4])),
                       warn_at=float(r[5])) for r in rows]  # fmt: skip

    def verify(self) -> list[CounterDrift]:
        def tx(q: Query) -> list[CounterDrift]:
            drift = []
            for r in q(f"SELECT {_COUNTER_COLS} FROM ledger_counters ORDER BY 1, 2, 3, 4", ()):  # noqa: S608
                key: CounterKey = (r[0], int(r[1]), r[2], r[3])
                stored, recomputed = _usage(r[4:]), self._recompute(q, key)
                if stored != recomputed:
                    drift.append(CounterDrift(key, stored, recomputed))
            return drift

        return self._read(tx)

    def report(
        self, *, by: Sequence[str], since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        bad = [d for d in by if d not in REPORT_DIMENSIONS]
        if bad:
            raise ValueError(f"cannot group by {bad}; choose from {list(REPORT_DIMENSIONS)}")
        dims = list(dict.fromkeys(by))
        where, params = "ts_us >= ?", [to_us(since) if since else 0]
        if until is not None:
            where, params = where + " AND ts_us < ?", [*params, to_us(until)]
        sel = "".join(f"{_DIM_SQL[d]}, " for d in dims)
        group = (" GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims)))) if dims else ""
        order = (" ORDER BY " + ", ".join(str(i + 1) for i in range(len(dims)))) if dims else ""
        spend_sql = (
            f"SELECT {sel}COUNT(*),"  # noqa: S608
            " SUM(CASE WHEN status = 'settled' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN status = 'released' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN status = 'expired' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN status = 'reserved' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN status = 'settled' THEN images ELSE 0 END),"
            " SUM(CASE WHEN status IN ('settled', 'expired') THEN actual_micros ELSE 0 END),"
            " SUM(CASE WHEN status = 'reserved' THEN estimated_micros ELSE 0 END),"
            " SUM(CASE WHEN status = 'settled' THEN estimated_micros ELSE 0 END),"
            " SUM(CASE WHEN status = 'settled' THEN actual_micros ELSE 0 END),"
            " SUM(CASE WHEN status = 'settled' THEN ABS(actual_micros - estimated_micros) ELSE 0 END),"
            " SUM(CASE WHEN status = 'settled' THEN latency_s ELSE 0 END)"
            f" FROM ledger_requests WHERE {where}{group}{order}"
        )
        refusal_sql = f"SELECT {sel}COUNT(*) FROM ledger_refusals WHERE {where}{group}"  # noqa: S608
        token_sql = (
            f"SELECT {sel}SUM(input_text_tokens), SUM(input_image_tokens), SUM(output_image_tokens),"  # noqa: S608
            f" SUM(output_text_tokens) FROM ledger_requests WHERE status = 'settled' AND {where}"
            f" AND COALESCE(input_text_tokens, input_image_tokens, output_image_tokens, output_text_tokens)"
            f" IS NOT NULL{group}"
        )

        def tx(q: Query) -> tuple[list[Row], list[Row], list[Row]]:
            return q(spend_sql, params), q(refusal_sql, params), q(token_sql, params)

        spend, refused, token_rows = self._read(tx)
        n = len(dims)
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in spend:
            rows[tuple(r[:n])] = _report_row(dims, r[:n], [int(x or 0) for x in r[n:-1]], float(r[-1] or 0.0))
        for r in refused:
            key = tuple(r[:n])
            if int(r[n] or 0) == 0:
                continue
            if key not in rows:
                rows[key] = _report_row(dims, r[:n], [0] * 11, 0.0)
            rows[key]["refused"] = int(r[n])
        for r in token_rows:  # token-priced routes only: their counts next to the dollars
            key = tuple(r[:n])
            if key in rows:
                counts = zip(TOKEN_COLUMNS, r[n:], strict=True)
                rows[key]["tokens"] = {name: int(v or 0) for name, v in counts}
        return [rows[k] for k in sorted(rows, key=lambda k: tuple(str(x) for x in k))]


def _report_row(
    dims: Sequence[str], values: Sequence[Any], m: Sequence[int], latency_sum: float
) -> dict[str, Any]:
    (requests, settled, released, expired, in_flight, images, spent, reserved, est_settled, act_settled,
     abs_err) = m  # fmt: skip
    row: dict[str, Any] = {}
    for d, v in zip(dims, values, strict=True):
        row[d] = (EPOCH + dt.timedelta(days=int(v))).date().isoformat() if d == "day" else v
    err = act_settled - est_settled
    row.update(
        requests=requests,
        settled=settled,
        released=released,
        expired=expired,
        in_flight=in_flight,
        refused=0,
        images=images,
        spent_usd=from_micros(spent),
        reserved_usd=from_micros(reserved),
        estimated_usd=from_micros(est_settled),
        usd_per_image=_per(act_settled, images),
        estimate_error_usd=from_micros(err),
        estimate_error_pct=(Decimal(err * 100) / Decimal(est_settled)).quantize(Decimal("0.01"))
        if est_settled
        else None,
        mean_abs_error_usd=_per(abs_err, settled),
        avg_latency_s=round(latency_sum / settled, 6) if settled else None,
    )
    return row


def _per(micros: int, count: int) -> Decimal | None:
    """An average in dollars, rounded half-even to the micro-dollar; None when there is nothing to divide."""
    return (from_micros(micros) / count).quantize(MICRO) if count else None
