"""What each page shows, as plain data: cost, budgets, audit list, one record, providers.

Kept apart from HTML so the figures can be tested against the ledger directly and the same views
feed both the live dashboard and the offline report. Every money figure stays ``Decimal`` or integer
micro-dollars here; only the SVG layer turns amounts into pixel positions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..audit.merkle import inclusion_proof, verify_inclusion
from ..audit.merkle import root as merkle_root
from ..audit.verify import AuditVerifyReport, as_bytes
from ..ledger.pricing import from_micros
from ..ledger.store import BudgetStatus, scope_matches, to_us, window_end_us
from .stores import AuditFilter, AuditReader, _LedgerQueries
from .timeseries import Buckets, Window, audit_ts, buckets_for, iso_us

DIMENSIONS: tuple[str, ...] = ("team", "project", "use_case", "provider", "model", "user")
MAX_SERIES = 7  # the rest of a chart's series is summed into "other"
PAGE_SIZE = 50


@dataclass
class Sources:
    """The stores a view reads, each optional: a missing one becomes a notice, not an error page."""

    ledger: _LedgerQueries | None = None
    audit: AuditReader | None = None
    route_stats: Path | None = None
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 30.0
    notices: list[str] = field(default_factory=list)
    archive: Any = None  # gateway.archive.Archive: thumbnails on record pages

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self.audit is not None:
            self.audit.close()
        if self.archive is not None:
            self.archive.close()


@dataclass(frozen=True)
class Series:
    """A stacked chart: bucket labels and (name, one value per bucket) pairs, largest first."""

    buckets: Buckets | None
    labels: list[str]
    series: list[tuple[str, list[Decimal]]]


def _stack(buckets: Buckets, points: Iterable[tuple[int, str, Decimal]]) -> Series:
    """Sum (bucket, name, value) points into series; keep the biggest MAX_SERIES, fold the rest."""
    grid: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * buckets.count)
    for b, name, value in points:
        if buckets.first <= b <= buckets.last:
            grid[name][b - buckets.first] += value
    ranked = sorted(grid.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    keep = ranked[:MAX_SERIES]
    rest = ranked[MAX_SERIES:]
    if rest:
        other = [sum((v[i] for _, v in rest), Decimal(0)) for i in range(buckets.count)]
        keep.append((f"other ({len(rest)})", other))
    labels = [buckets.label(b) for b in range(buckets.first, buckets.last + 1)]
    return Series(buckets, labels, keep)


def _chart_span(window: Window, first_us: int | None) -> tuple[int, int]:
    end = to_us(window.end)
    start = (
        to_us(window.since) if window.since else (first_us if first_us is not None else end - 86_400_000_000)
    )
    return start, max(end, start + 1)


# --------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class BudgetView:
    status: BudgetStatus
    start_us: int
    end_us: int | None
    now_us: int
    points: list[tuple[int, Decimal]]  # (time, cumulative spend incl. what is reserved now)
    projected_usd: Decimal | None  # at the window's end at the current rate (None for total budgets)

    @property
    def state(self) -> str:
        return "exhausted" if self.status.exhausted else "warn" if self.status.warn else "ok"


@dataclass(frozen=True)
class CostView:
    window: Window
    dim: str
    totals: dict[str, Any]
    rows: list[dict[str, Any]]
    spend: Series
    budgets: list[BudgetView]
    by_model: list[dict[str, Any]]
    top_users: list[dict[str, Any]]
    top_projects: list[dict[str, Any]]


def _spent(row: Mapping[str, Any]) -> Decimal:
    return Decimal(row.get("spent_usd") or 0)


def cost_view(src: Sources, window: Window, dim: str) -> CostView | None:
    """Spend in the window, grouped by ``dim``; budgets in their current windows at ``window.now``."""
    led = src.ledger
    if led is None:
        return None
    if dim not in DIMENSIONS:
        raise ValueError(f"group by one of {', '.join(DIMENSIONS)}")
    since, until = window.since, window.until
    totals = led.report(by=[], since=since, until=until)
    rows = sorted(led.report(by=[dim], since=since, until=until), key=lambda r: (-_spent(r), str(r[dim])))
    span = led.span_us()
    start, end = _chart_span(window, span[0] if span else None)
    buckets = buckets_for(start, end)
    points = [
        (b, name, from_micros(spent))
        for b, name, spent, _ in led.spend_series(dim, start, end, buckets.size_us, buckets.offset_us)
    ]
    by_model = sorted(led.report(by=["model"], since=since, until=until), key=lambda r: -_spent(r))
    users = sorted(led.report(by=["user"], since=since, until=until), key=lambda r: -_spent(r))[:10]
    projects = sorted(led.report(by=["project"], since=since, until=until), key=lambda r: -_spent(r))[:10]
    budgets = [
        _budget_view(led, s, window.now) for s in led.budget_status(led.recorded_budgets(), window.now)
    ]
    return CostView(
        window=window,
        dim=dim,
        totals=totals[0] if totals else {},  # one row even when empty (an aggregate)
        rows=rows,
        spend=_stack(buckets, points),
        budgets=budgets,
        by_model=by_model,
        top_users=users,
        top_projects=projects,
    )


def _budget_view(led: _LedgerQueries, status: BudgetStatus, now: dt.datetime) -> BudgetView:
    """Cumulative spend through the budget's current window, and where it heads at this rate."""
    b = status.budget
    now_us = to_us(now)
    if status.window_start is not None:
        start = to_us(status.window_start)
    else:
        span = led.span_us()
        start = span[0] if span else now_us
    end = window_end_us(b.period, start) if status.window_start is not None else None
    buckets = buckets_for(start, now_us + 1)
    rows = led.scope_series(b.scope, start, now_us + 1, buckets.size_us, buckets.offset_us)
    per_bucket: dict[int, int] = defaultdict(int)
    for bucket, value, spent, reserved in rows:
        if scope_matches(b.scope, b.scope_value, {b.scope: value}):
            per_bucket[bucket] += spent + reserved
    points: list[tuple[int, Decimal]] = [(start, Decimal(0))]
    running = 0
    for bucket in sorted(per_bucket):
        running += per_bucket[bucket]
        points.append((min(buckets.start_us(bucket + 1), now_us), from_micros(running)))
    used = status.spent_usd + status.reserved_usd
    projected = None
    if end is not None and now_us > start:
        projected = (used * Decimal(end - start) / Decimal(now_us - start)).quantize(Decimal("0.01"))
    return BudgetView(status, start, end, now_us, points, projected)


# --------------------------------------------------------------------------- audit


def summary(values: Any) -> str:
    """``["embedded", "embedded"]`` -> "embedded x2"; mixed lists name each state; nothing -> ""."""
    if not isinstance(values, list) or not values:
        return ""
    counts = Counter(str(v) for v in values)
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(counts.items()))


def row_summary(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The list columns of one record (a record's own fields, nothing derived from elsewhere)."""
    decision = rec.get("decision") if isinstance(rec.get("decision"), dict) else {}
    assert isinstance(decision, dict)
    rules = rec.get("rule_ids") or decision.get("rule_ids") or []
    route = rec.get("route_key") or "/".join(str(x) for x in (rec.get("provider"), rec.get("model")) if x)
    allowed = decision.get("allowed")
    return {
        "seq": rec.get("seq"),
        "ts": str(rec.get("ts") or ""),
        "event": str(rec.get("event") or ""),
        "team": rec.get("team") or "",
        "use_case": rec.get("use_case") or "",
        "route": route,
        "decision": "allow" if allowed is True else "deny" if allowed is False else "",
        "rule_ids": [str(r) for r in rules] if isinstance(rules, list) else [str(rules)],
        "cost_usd": rec.get("cost_usd"),
        "watermark": summary(rec.get("watermark")),
        "c2pa": summary(rec.get("c2pa")),
        "request_id": rec.get("request_id") or "",
        "outcome": rec.get("outcome") or rec.get("error_type") or "",
    }


@dataclass(frozen=True)
class AuditListView:
    window: Window
    filters: dict[str, str]
    facets: dict[str, list[str]]
    total: int
    rows: list[dict[str, Any]]
    next_before: int | None
    verify: AuditVerifyReport
    size: int
    denials: Series
    quarantined: list[dict[str, Any]]


def audit_filter(window: Window, filters: Mapping[str, str]) -> AuditFilter:
    return AuditFilter(
        equals=tuple((k, v) for k, v in sorted(filters.items()) if v),
        since_ts=audit_ts(window.since) if window.since else None,
        until_ts=audit_ts(window.until) if window.until else None,
    )


def audit_view(
    src: Sources, window: Window, filters: Mapping[str, str], before: int | None, limit: int = PAGE_SIZE
) -> AuditListView | None:
    log = src.audit
    if log is None:
        return None
    flt = audit_filter(window, filters)
    recs = log.page(flt, before=before, limit=limit + 1)
    more = len(recs) > limit
    recs = recs[:limit]
    in_window = audit_filter(window, {})
    span = log.ts_span()
    start, end = _chart_span(window, iso_us(span[0]) if span else None)
    buckets = buckets_for(start, end)
    denial_points: list[tuple[int, str, Decimal]] = []
    for rec in log.events(["denied"], in_window):
        for rule in row_summary(rec)["rule_ids"] or ["(no rule id)"]:
            denial_points.append((buckets.index(iso_us(str(rec["ts"]))), rule, Decimal(1)))
    quarantined = [row_summary(r) | _quarantine_fields(r) for r in log.events(["quarantined"], in_window)]
    return AuditListView(
        window=window,
        filters=dict(filters),
        facets=log.facets(),
        total=log.count(flt),
        rows=[row_summary(r) for r in recs],
        next_before=int(recs[-1]["seq"]) if more and recs else None,
        verify=log.verify_cached(),
        size=log.head()[0],
        denials=_stack(buckets, denial_points),
        quarantined=quarantined[-PAGE_SIZE:][::-1],
    )


def _quarantine_fields(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {"rule_id": rec.get("rule_id"), "reason": rec.get("reason"), "score": rec.get("score")}


@dataclass(frozen=True)
class RecordView:
    record: dict[str, Any]
    seq: int
    size: int
    hash_ok: bool  # the stored bytes hash to the stored entry hash
    link_ok: bool  # prev_hash is the entry hash of seq - 1 (genesis for seq 1)
    proof: dict[str, Any]  # RFC 6962 inclusion in the current tree, checked
    sealed: dict[str, Any] | None  # inclusion in the smallest signed checkpoint that covers seq, checked
    verify: AuditVerifyReport
    related: list[dict[str, Any]]


def record_view(src: Sources, seq: int) -> RecordView | None:
    log = src.audit
    if log is None:
        return None
    row = log.raw(seq)
    if row is None:
        return None
    _, entry_hash, body = row
    record = json.loads(as_bytes(body))
    flat_rec: dict[str, Any] = dict(record.get("record") or {})
    flat_rec.update(seq=seq, ts=record.get("ts"), prev_hash=record.get("prev_hash"), entry_hash=entry_hash)
    hash_ok = hashlib.sha256(b"\x00" + body).hexdigest() == entry_hash
    prev = log.raw(seq - 1) if seq > 1 else None
    link_ok = record.get("prev_hash") == (prev[1] if prev else "0" * 64)
    leaves = log.leaf_hashes()
    proof = _proof(leaves, seq, len(leaves), None)
    cps, _problems = log.checkpoints.read_all(log.log_id)
    covering = sorted((c for c in cps if c.size >= seq), key=lambda c: c.size)
    sealed = None
    if covering:
        cp = covering[0]
        sealed = _proof(leaves, seq, cp.size, bytes.fromhex(cp.root)) | {
            "checkpoint_ts": cp.ts,
            "key_id": cp.key_id,
            "checkpoint_size": cp.size,
        }
    rid = flat_rec.get("request_id")
    related = []
    if rid:
        same = AuditFilter(equals=(("request_id", str(rid)),))
        related = [row_summary(r) for r in log.page(same, before=None, limit=100)][::-1]
    return RecordView(
        flat_rec, seq, len(leaves), hash_ok, link_ok, proof, sealed, log.verify_cached(), related
    )


def _proof(leaves: Sequence[bytes], seq: int, size: int, expected_root: bytes | None) -> dict[str, Any]:
    """Inclusion of leaf ``seq`` in the tree of the first ``size`` leaves, verified against a root."""
    if not 1 <= seq <= min(size, len(leaves)):
        return {"size": size, "root": "", "path": [], "ok": False}
    tree = leaves[:size]
    path = inclusion_proof(tree, seq - 1)
    root = expected_root if expected_root is not None else merkle_root(tree)
    ok = verify_inclusion(leaves[seq - 1], seq - 1, size, path, root)
    return {"size": size, "root": root.hex(), "path": [p.hex() for p in path], "ok": ok}


# --------------------------------------------------------------------------- providers


@dataclass(frozen=True)
class RouteView:
    route: str
    attempts: int
    ok: int
    errors: dict[str, int]
    p50_s: float | None
    p95_s: float | None
    ewma_s: float | None
    ewma_n: int
    breaker: str
    consecutive_failures: int
    last_error: str
    last_seen: str
    spent_usd: Decimal

    @property
    def error_rate(self) -> float:
        return (self.attempts - self.ok) / self.attempts if self.attempts else 0.0


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, -(-int(q * 100) * len(s) // 100) - 1))]  # nearest rank


def providers_view(src: Sources, window: Window) -> list[RouteView]:
    """Per route: attempts, error rate and latency from the audit; EWMA from route_stats.json;
    breaker state replayed from the attempts (breakers live in each process; this is what the
    evidence implies with the configured threshold and cool-down)."""
    from ..routing import CircuitBreaker

    stats = _route_stats(src.route_stats)
    spend: dict[str, Decimal] = {}
    if src.ledger is not None:
        for r in src.ledger.report(by=["route"], since=window.since, until=window.until):
            spend[str(r["route"])] = _spent(r)
    by_route: dict[str, list[tuple[str, str, float | None]]] = defaultdict(list)
    if src.audit is not None:
        for ts, route, outcome, latency in src.audit.attempts(audit_filter(window, {})):
            by_route[route].append((ts, outcome, latency))
    breaker = CircuitBreaker(src.breaker_threshold, src.breaker_cooldown_s)
    now_s = to_us(window.now) / 1e6
    out = []
    for route in sorted(set(by_route) | set(stats) | set(spend)):
        recs = by_route.get(route, [])
        ok_lat = [lat for _, outcome, lat in recs if outcome == "ok" and lat is not None]
        failed = [(ts, outcome) for ts, outcome, _ in recs if outcome != "ok"]
        for ts, outcome, _ in recs:
            if outcome == "ok":
                breaker.record_success(route)
            else:
                breaker.record_failure(route, iso_us(ts) / 1e6)
        snap = breaker.snapshot(now_s).get(route, {"failures": 0})
        ewma = stats.get(route, {})
        out.append(
            RouteView(
                route=route,
                attempts=len(recs),
                ok=len(recs) - len(failed),
                errors=dict(Counter(outcome for _, outcome in failed)),
                p50_s=_pct(ok_lat, 0.5),
                p95_s=_pct(ok_lat, 0.95),
                ewma_s=ewma.get("latency_s"),
                ewma_n=int(ewma.get("n", 0)),
                breaker=breaker.state(route, now_s),
                consecutive_failures=int(snap["failures"]),
                last_error=failed[-1][1] if failed else "",
                last_seen=recs[-1][0] if recs else "",
                spent_usd=spend.get(route, Decimal(0)),
            )
        )
    return out


def _route_stats(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None or not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {str(k): {"latency_s": float(v["latency_s"]), "n": float(v["n"])} for k, v in raw.items()}
    except (ValueError, KeyError, TypeError, OSError, AttributeError):
        return {}


__all__ = [
    "DIMENSIONS",
    "AuditListView",
    "BudgetView",
    "CostView",
    "RecordView",
    "RouteView",
    "Series",
    "Sources",
    "audit_view",
    "cost_view",
    "providers_view",
    "record_view",
    "row_summary",
]
