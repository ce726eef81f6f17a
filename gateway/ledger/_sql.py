"""The ledger algorithm once, in SQL both SQLite and PostgreSQL speak; the stores only add transactions.

A store supplies ``_write(fn)`` / ``_read(fn)`` (run ``fn(q)`` in a transaction, ``q(sql, params)``
returning rows, ``?`` placeholders) and, where the engine needs it, row locking. Invariants this module
keeps, and :meth:`SqlLedger.verify` checks:

* every counter equals the sum of the request rows in its window that its scope covers;
* a transaction changes counters only for rows it changes, and always every counter that covers them
  (including counters of budgets the calling process does not know: another host's policy may);
* counters are locked in one global order (sorted keys), after request rows, so writers never deadlock
  on each other's order.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from ..errors import BudgetExceeded, GatewayError, RateLimitExceeded
from ..types import Budget, Context, RateLimit
from ._reads import _COUNTER_COLS, Query, SqlReads, T
from .idempotency import IdempotencyKeys, KeyClaim, claim_in_tx
from .migrations import TOKEN_COLUMNS
from .pricing import from_micros, to_micros
from .store import (
    DAY_US,
    US,
    CounterKey,
    Reservation,
    Usage,
    _Plan,
    budget_key,
    budgets_in_scope,
    check,
    context_fields,
    contribution,
    counter_covers,
    from_us,
    rate_key,
    rate_limits_in_scope,
    refusal,
    to_us,
)

_KEY_MATCH = "(period = ? AND window_start = ? AND scope = ? AND scope_value = ?)"
_SWEEP_EVERY_US = US  # expired leases are swept by at most one reserve per second (see _sweep_due)
_PRUNE_AFTER_US = 2 * DAY_US  # minute/hour counters only serve rate limits of the current window


class NeedInit(Exception):
    """Raised inside a write transaction when counters must be created under a stronger lock first."""

    def __init__(self, keys: set[CounterKey]) -> None:
        self.keys = keys
        super().__init__(f"{len(keys)} counters to initialise")


@dataclass(frozen=True, slots=True)
class _Ask:
    request_id: str
    context: Context
    ctx: Mapping[str, str]
    budgets: Sequence[Budget]
    rate_limits: Sequence[RateLimit]
    amount: int
    route_key: str
    now_us: int
    expires_us: int
    claim: KeyClaim | None = None


@dataclass(frozen=True, slots=True)
class _Expired:
    ctx: Mapping[str, str]
    ts_us: int
    estimated: int


def split_route(route_key: str) -> tuple[str, str]:
    provider, _, model = route_key.partition("/")
    return provider, model or route_key


def _figures(d: Usage) -> tuple[int, int, int]:
    return d.spent, d.reserved, d.requests


class SqlLedger(IdempotencyKeys, SqlReads):
    """Shared implementation. Subclasses provide transactions, locking and duplicate-key detection."""

    inline_init: ClassVar[bool] = True  # False: counters are created in their own, exclusive transaction
    for_update: ClassVar[str] = ""  # " FOR UPDATE" where the engine locks rows (PostgreSQL)
    group_updates: ClassVar[bool] = True  # False: update counters one by one, in key order

    def __init__(self) -> None:
        self._seen_budgets: dict[str, Budget] = {}
        self._expired_at_us: int | None = None  # the (ledger-clock) time of this handle's last sweep

    def _sweep_due(self, now_us: int) -> bool:
        """Whether a reserve should sweep expired leases now: at most once per second of ledger time.

        Expiry moves an estimate from *reserved* to *spent* at the same amount, and every budget check
        counts spent + reserved, so a sweep a second late changes no verdict; it saves the sweep's
        UPDATE on all but one reserve per second. ``reconcile`` always sweeps.
        """
        last = self._expired_at_us
        return last is None or not 0 <= now_us - last < _SWEEP_EVERY_US

    # ----------------------------------------------------------------- store hooks

    @abc.abstractmethod
    def _write(self, fn: Callable[[Query], T]) -> T: ...

    def _init_write(self, fn: Callable[[Query], T]) -> T:
        """The transaction that creates counters; PostgreSQL takes a table lock first."""
        return self._write(fn)

    @abc.abstractmethod
    def _is_duplicate(self, exc: BaseException) -> bool: ...

    def _lock(
        self, q: Query, keys: Sequence[CounterKey], seen: Mapping[CounterKey, Usage]
    ) -> dict[CounterKey, Usage]:
        """Current values of ``keys``, locked until commit. SQLite's write lock already covers them."""
        return {k: seen[k] for k in keys}

    # ----------------------------------------------------------------- reserve

    def reserve(
        self,
        *,
        request_id: str,
        context: Context,
        budgets: Sequence[Budget],
        rate_limits: Sequence[RateLimit],
        amount_usd: Decimal,
        route_key: str,
        now: dt.datetime,
        lease_s: float = 900.0,
        claim: KeyClaim | None = None,
    ) -> Reservation:
        if amount_usd < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount_usd})")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        now_us = to_us(now)
        ctx = context_fields(context)
        ask = _Ask(
            request_id=request_id,
            context=context,
            ctx=ctx,
            budgets=budgets_in_scope(budgets, ctx),
            rate_limits=rate_limits_in_scope(rate_limits, ctx),
            amount=to_micros(amount_usd),
            route_key=route_key,
            now_us=now_us,
            expires_us=now_us + round(lease_s * US),
            claim=claim,
        )
        for _ in range(5):
            sweep = self._sweep_due(now_us)
            try:
                outcome = self._write(lambda q, sweep=sweep: self._reserve_tx(q, ask, sweep=sweep))  # type: ignore[misc]
            except NeedInit as need:
                self._init_write(lambda q, keys=need.keys: self._init_counters(q, keys))  # type: ignore[misc]
                continue
            except Exception as exc:
                if self._is_duplicate(exc):
                    return self._existing(ask)
                raise
            if sweep:  # committed (a refusal commits too): the next second's reserves may skip it
                self._expired_at_us = now_us
            if isinstance(outcome, BudgetExceeded):
                raise outcome
            self._seen_budgets.update((b.id, b) for b in ask.budgets)
            return outcome
        raise GatewayError("ledger: budget counters could not be initialised (concurrent schema changes?)")

    def _reserve_tx(self, q: Query, a: _Ask, *, sweep: bool = True) -> Reservation | BudgetExceeded:
        expired = self._expire(q, a.now_us) if sweep else []
        wanted = {budget_key(b, a.now_us) for b in a.budgets} | {rate_key(r, a.now_us) for r in a.rate_limits}
        seen = self._counters(q, [a.now_us, *(e.ts_us for e in expired)])
        missing = wanted - seen.keys()
        if missing:
            if not self.inline_init:
                raise NeedInit(missing)
            self._init_counters(q, missing)
            seen.update(self._counters(q, [a.now_us]))
        plan = self._expiry_plan(expired, seen)
        mine = [k for k in seen if counter_covers(k, a.ctx, a.now_us)]
        current = self._lock(q, sorted(set(plan.deltas) | set(mine)), seen)
        after_expiry = {k: u + plan.deltas.get(k, Usage()) for k, u in current.items()}
        reasons, refused, retry_after, warned = check(
            a.budgets, a.rate_limits, after_expiry, a.amount, a.now_us
        )
        if reasons:
            self._apply(q, plan)
            err = refusal(reasons, refused, retry_after, a.budgets)
            self._record_refusal(q, a, "rate" if isinstance(err, RateLimitExceeded) else "budget", refused)
            return err
        for k in mine:
            plan.add(k, Usage(reserved=a.amount, requests=1))
        self._apply(q, plan)
        if a.claim is not None:  # raises KeyTaken: this whole transaction rolls back
            claim_in_tx(q, a.claim, a.now_us)
        provider, model = split_route(a.route_key)
        c = a.ctx
        q(
            "INSERT INTO ledger_requests (request_id, status, ts_us, expires_us, team, project, use_case,"
            " user_name, route_key, provider, model, estimated_micros) VALUES (?, 'reserved', ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?)",
            (a.request_id, a.now_us, a.expires_us, c["team"], c["project"], c["use_case"], c["user"],
             a.route_key, provider, model, a.amount),
        )  # fmt: skip
        self._remember_budgets(q, a.budgets, a.now_us)
        return Reservation(
            request_id=a.request_id,
            amount_usd=from_micros(a.amount),
            route_key=a.route_key,
            context=a.context,
            reserved_at=from_us(a.now_us),
            expires_at=from_us(a.expires_us),
            budget_ids=tuple(b.id for b in a.budgets),
            warnings=tuple(warned),
        )

    def _existing(self, a: _Ask) -> Reservation:
        """A second reserve of the same request id: return the first if it is the same ask, else refuse."""
        rows = self._read(
            lambda q: q(
                "SELECT status, estimated_micros, route_key, ts_us, expires_us FROM ledger_requests"
                " WHERE request_id = ?",
                (a.request_id,),
            )
        )
        status, est, route_key, ts_us, expires_us = rows[0]
        if status != "reserved" or int(est) != a.amount or route_key != a.route_key:
            raise GatewayError(f"ledger: request id {a.request_id!r} was already used ({status})")
        return Reservation(
            request_id=a.request_id,
            amount_usd=from_micros(int(est)),
            route_key=route_key,
            context=a.context,
            reserved_at=from_us(int(ts_us)),
            expires_at=from_us(int(expires_us)),
            budget_ids=tuple(b.id for b in a.budgets),
        )

    # ----------------------------------------------------------------- settle / release / expire

    def settle(
        self,
        reservation: Reservation,
        *,
        actual_usd: Decimal,
        provider: str,
        model: str,
        images: int,
        latency_s: float,
        now: dt.datetime,
        billed_seconds: float | None = None,
        tokens: Mapping[str, int] | None = None,
    ) -> None:
        if actual_usd < 0 or images < 0:
            raise ValueError("actual_usd and images must not be negative")
        actual, now_us = to_micros(actual_usd), to_us(now)

        def tx(q: Query) -> None:
            if self._finish(q, reservation.request_id, "settled", actual):
                q(
                    "UPDATE ledger_requests SET status = 'settled', actual_micros = ?, settled_us = ?,"
                    " provider = ?, model = ?, images = ?, latency_s = ?, billed_seconds = ?, reason = NULL"
                    " WHERE request_id = ?",
                    (
                        actual,
                        now_us,
                        provider,
                        model,
                        images,
                        latency_s,
                        billed_seconds,
                        reservation.request_id,
                    ),
                )
                if tokens:
                    counts = [tokens.get(c) for c in TOKEN_COLUMNS]
                    q(
                        "UPDATE ledger_requests SET input_text_tokens = ?, input_image_tokens = ?,"
                        " output_image_tokens = ?, output_text_tokens = ? WHERE request_id = ?",
                        (*counts, reservation.request_id),
                    )

        self._write(tx)

    def release(self, reservation: Reservation, *, reason: str, now: dt.datetime) -> None:
        now_us = to_us(now)

        def tx(q: Query) -> None:
            if self._finish(q, reservation.request_id, "released", 0):
                q(
                    "UPDATE ledger_requests SET status = 'released', actual_micros = 0, settled_us = ?,"
                    " reason = ? WHERE request_id = ?",
                    (now_us, reason[:500], reservation.request_id),
                )

        self._write(tx)

    def _finish(self, q: Query, request_id: str, new_status: str, actual: int) -> bool:
        """Move counters from the row's current state to ``new_status``; False when there is nothing to do.

        A settled row is final (a repeated settle of the same amount is a no-op, so a retry after a lost
        commit acknowledgement is safe; a different amount is refused). An expired row can still settle
        or release: its process was slow, not dead.
        """
        rows = q(
            "SELECT status, ts_us, team, project, use_case, user_name, estimated_micros, actual_micros"  # noqa: S608
            f" FROM ledger_requests WHERE request_id = ?{self.for_update}",
            (request_id,),
        )
        if not rows:
            raise GatewayError(f"ledger has no reservation {request_id!r}")
        status, ts_us, team, project, use_case, user, est, act = rows[0]
        if status == "settled":
            if new_status == "settled" and int(act) != actual:
                raise GatewayError(f"ledger: {request_id!r} was already settled at ${from_micros(int(act))}")
            return False
        if status == new_status == "released":
            return False
        old = contribution(status, int(est), None if act is None else int(act))
        new = contribution(new_status, int(est), actual)
        delta = Usage(new.spent - old.spent, new.reserved - old.reserved, 0)
        ctx = {"team": team, "project": project, "use_case": use_case, "user": user}
        plan = _Plan()
        for key in self._counters(q, [int(ts_us)]):
            if counter_covers(key, ctx, int(ts_us)):
                plan.add(key, delta)
        self._apply(q, plan)
        return True

    def _expire(self, q: Query, now_us: int) -> list[_Expired]:
        rows = q(
            "UPDATE ledger_requests SET status = 'expired', actual_micros = estimated_micros, settled_us = ?,"
            " reason = 'lease expired' WHERE status = 'reserved' AND expires_us <= ?"
            " RETURNING ts_us, team, project, use_case, user_name, estimated_micros",
            (now_us, now_us),
        )
        return [
            _Expired({"team": r[1], "project": r[2], "use_case": r[3], "user": r[4]}, int(r[0]), int(r[5]))
            for r in rows
        ]

    @staticmethod
    def _expiry_plan(expired: Iterable[_Expired], seen: Iterable[CounterKey]) -> _Plan:
        plan = _Plan()
        keys = list(seen)
        for e in expired:
            for key in keys:
                if counter_covers(key, e.ctx, e.ts_us):
                    plan.add(key, Usage(spent=e.estimated, reserved=-e.estimated))
        return plan

    def reconcile(self, now: dt.datetime) -> int:
        now_us = to_us(now)

        def tx(q: Query) -> int:
            expired = self._expire(q, now_us)
            seen = self._counters(q, [e.ts_us for e in expired])
            self._apply(q, self._expiry_plan(expired, seen))
            q(
                "DELETE FROM ledger_counters WHERE period IN ('minute', 'hour') AND window_start < ?",
                (now_us - _PRUNE_AFTER_US,),
            )
            return len(expired)

        return self._write(tx)

    # ----------------------------------------------------------------- counters

    def _apply(self, q: Query, plan: _Plan) -> None:
        """Add each counter's delta: one UPDATE per key in key order (row locks in one global order),
        or, where the store already holds an exclusive lock (SQLite), one UPDATE per distinct delta."""
        set_ = (
            "UPDATE ledger_counters SET spent_micros = spent_micros + ?,"
            " reserved_micros = reserved_micros + ?, requests = requests + ? WHERE "
        )
        todo = sorted((k, d) for k, d in plan.deltas.items() if d != Usage())
        if not self.group_updates:
            for key, d in todo:
                q(
                    set_ + "period = ? AND window_start = ? AND scope = ? AND scope_value = ?",
                    (*_figures(d), *key),
                )
            return
        groups: dict[Usage, list[CounterKey]] = {}
        for key, d in todo:
            groups.setdefault(d, []).append(key)
        for d, keys in groups.items():
            where = " OR ".join([_KEY_MATCH] * len(keys))  # OR of PK lookups: SQLite searches the index
            q(set_ + where, [*_figures(d), *(x for k in keys for x in k)])

    def _init_counters(self, q: Query, keys: Iterable[CounterKey]) -> None:
        for key in sorted(keys):
            u = self._recompute(q, key)
            q(
                f"INSERT INTO ledger_counters ({_COUNTER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (period, window_start, scope, scope_value) DO NOTHING",
                (*key, u.spent, u.reserved, u.requests),
            )

    def _remember_budgets(self, q: Query, budgets: Sequence[Budget], now_us: int) -> None:
        for b in budgets:
            if self._seen_budgets.get(b.id) == b:
                continue
            q(
                "INSERT INTO ledger_budgets (id, scope, scope_value, period, limit_micros, warn_at,"
                " updated_us) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " scope = excluded.scope, scope_value = excluded.scope_value, period = excluded.period,"
                " limit_micros = excluded.limit_micros, warn_at = excluded.warn_at,"
                " updated_us = excluded.updated_us",
                (b.id, b.scope, b.scope_value, b.period, to_micros(b.limit_usd), b.warn_at, now_us),
            )

    def _record_refusal(self, q: Query, a: _Ask, kind: str, limit_ids: Sequence[str]) -> None:
        provider, model = split_route(a.route_key)
        c = a.ctx
        q(
            "INSERT INTO ledger_refusals (request_id, ts_us, team, project, use_case, user_name, route_key,"
            " provider, model, amount_micros, kind, limit_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (a.request_id, a.now_us, c["team"], c["project"], c["use_case"], c["user"], a.route_key,
             provider, model, a.amount, kind, ",".join(limit_ids)),
        )  # fmt: skip
