"""The evidence of a request: its audit records, its result, its log line, and what a failure leaves.

Split from :mod:`gateway.core` along the line between deciding and recording: the core plans and
moves money; this mixin writes down what happened (every attempt audited, paid outputs of a failed
request quarantined before the failure is recorded, secrets never in a message).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import quarantine
from .backends.base import BackendCall, BackendResult
from .catalog import Route
from .errors import (
    AuditWriteError,
    BudgetExceeded,
    GatewayError,
    InvalidRequestError,
    NoEligibleRoute,
    PolicyDenied,
    ProvidersFailed,
)
from .finetune.provenance import fine_tune_provenance
from .outputs import Processed
from .preflight import Missing, MissingExtra, needs_text
from .run import Plan, _Run
from .types import Decision, GenerationResult

if TYPE_CHECKING:
    from .archive.keeper import Keeper
    from .audit import AuditLog
    from .config import Settings
    from .core import _Core

_log = logging.getLogger("gateway.client")


class _Evidence:
    """Audit records and results for :class:`gateway.core._Core` (a mixin: it needs the core's
    settings, keeper, audit log and extras check)."""

    settings: Settings
    keeper: Keeper
    audit: AuditLog

    def missing_extras(self, route: Route, decision: Decision) -> list[Missing]:
        raise NotImplementedError  # the core's

    def record(self, run: _Run, event: str, **fields: Any) -> dict[str, Any]:
        p, ctx = run.plan, run.plan.context
        rec: dict[str, Any] = {
            "event": event,
            "request_id": p.request_id,
            "team": ctx.team,
            "project": ctx.project,
            "use_case": ctx.use_case,
            "user": ctx.user,
            "tags": list(ctx.tags),
            "trace_id": run.trace.trace_id,
            "span_id": run.trace.span_id,
            "decision": p.decision.to_dict(),
            "prompt_sha256": hashlib.sha256(p.request.prompt.encode()).hexdigest(),
            "prompt_len": len(p.request.prompt),
            "n": p.request.n,
            "seed": p.request.seed,
        }
        if p.decision.capture_prompt:
            rec["prompt"] = p.request.prompt
        if p.request.images:
            from .inputs import edit_record

            rec.update(edit_record(p.request, p.inputs))
        rec.update(fields)
        run.records.append(rec)
        return rec

    def begin(self, run: _Run) -> None:
        """Raise (with an audit record queued) if the plan denies or has nowhere to go."""
        plan = run.plan
        run.trace.decision(plan.decision)
        if plan.routes.ranked:
            run.trace.routed(plan.routes.ranked[0].route.provider, plan.routes.ranked[0].route.model)
        if not plan.decision.allowed:
            self.record(run, "denied")
            raise PolicyDenied(
                "denied by policy: " + "; ".join(plan.decision.reasons or plan.decision.rule_ids),
                rule_ids=plan.decision.rule_ids,
                decision=plan.decision,
            )
        if not plan.routes.ranked:
            dropped = [f"{c.route.key}: {c.reason}" for c in plan.routes.candidates if c.stage != "hint"]
            msg = "no eligible route:\n  " + "\n  ".join(dropped or ["no provider card matches the request"])
            self.record(run, "failed", error_type="NoEligibleRoute")
            self._raise_missing_extras(plan)
            if any(c.stage == "backend" for c in plan.routes.candidates):
                # A backend refused the request as asked (e.g. a prompt tiny-digits cannot draw).
                raise InvalidRequestError(msg)
            raise NoEligibleRoute(msg)

    def _raise_missing_extras(self, plan: Plan) -> None:
        """No route left and some were dropped for a missing extra: installing it is the fix (exit 2)."""
        found: dict[str, list[Missing]] = {}
        for c in plan.routes.candidates:
            if c.stage == "backend" and (missing := self.missing_extras(c.route, plan.decision)):
                found[c.route.key] = missing
        if found:
            detail = "; ".join(f"{key} needs {needs_text(m)}, not installed" for key, m in found.items())
            raise MissingExtra([m for ms in found.values() for m in ms], detail=detail)

    def finish(
        self,
        run: _Run,
        route: Route,
        call: BackendCall,
        result: BackendResult,
        processed: Processed,
        cost: Decimal,
    ) -> GenerationResult:
        p = run.plan
        images = tuple(processed.images)
        if processed.quarantined:  # held by an output check: paid for, so kept on disk for review
            held = [int(q["index"]) for q in processed.quarantined]
            kept = quarantine.keep(self.settings.home, p.request_id, result.images, indices=held,
                                   reason="held by an output check", meta=_kept_meta(route))  # fmt: skip
            for q, (_, path, digest) in zip(processed.quarantined, kept.files, strict=True):
                q.update(path=str(path), sha256=digest)
        for q in processed.quarantined:
            self.record(run, "quarantined", provider=route.provider, model=route.model, **q)
        self.record(
            run,
            "request",
            provider=route.provider,
            model=route.model,
            route_key=route.key,
            cost_usd=str(cost),
            estimated_cost_usd=str(run.estimated),
            image_sha256s=[img.sha256 for img in images],
            watermark=[img.watermark for img in images],
            c2pa=[img.c2pa for img in images],
            attempts=[a.to_dict() for a in run.attempts],
            quarantined=len(processed.quarantined),
            **_fine_tune_field(route, result.metadata),
        )
        return GenerationResult(
            request_id=p.request_id,
            images=images,
            provider=route.provider,
            model=route.model,
            seed=result.seed
            if result.seed is not None
            else (call.request.seed if route.card.capabilities.seed else None),
            cost_usd=cost,
            estimated_cost_usd=run.estimated,
            latency_s=time.perf_counter() - run.started,
            decision=p.decision,
            attempts=tuple(run.attempts),
            trace_id=run.trace.trace_id,
            quarantined=tuple(processed.quarantined),
            metadata=dict(result.metadata),
        )

    def all_failed(self, run: _Run) -> ProvidersFailed:
        lines = [f"{a.provider}/{a.model}: {a.outcome}: {a.error}" for a in run.attempts]
        self.record(run, "failed", error_type="ProvidersFailed", attempts=[a.to_dict() for a in run.attempts])
        return ProvidersFailed("every eligible route failed:\n  " + "\n  ".join(lines), attempts=run.attempts)

    def log_outcome(self, run: _Run, result: GenerationResult | None, exc: BaseException | None) -> None:
        """One structured line per request (stdlib logging: the application decides where it goes;
        ``gateway.audit.configure_logging`` renders it as JSON with trace ids and secrets scrubbed)."""
        ctx = run.plan.context
        fields: dict[str, Any] = {
            "request_id": run.plan.request_id,
            "team": ctx.team,
            "use_case": ctx.use_case,
            "attempts": len(run.attempts),
        }
        if result is not None:
            fields.update(
                route=f"{result.provider}/{result.model}",
                cost_usd=str(result.cost_usd),
                images=len(result.images),
                latency_s=round(result.latency_s, 6),
                audit_seq=result.audit_seq,
            )
            _log.info("generate ok", extra=fields)
        else:
            fields["error_type"] = type(exc).__name__
            _log.warning("generate failed: %s", type(exc).__name__, extra=fields)


def _kept_meta(route: Route) -> dict[str, Any]:
    return {"provider": route.provider, "model": route.model, "route_key": route.key}


def _keep_paid(core: _Core, run: _Run, exc: BaseException) -> dict[str, Any] | None:
    """Quarantine the raw outputs of a paid call whose request failed, and say where in ``exc``."""
    if run.paid is None:
        return None
    route, result = run.paid
    try:
        why = f"{type(exc).__name__}: {_safe_message(exc)}"
        kept = quarantine.keep(core.settings.home, run.plan.request_id, result.images, reason=why,
                               meta=_kept_meta(route))  # fmt: skip
    except OSError as write_exc:
        _tell(exc, f"{len(result.images)} paid output image(s) could NOT be quarantined: {write_exc}")
        return {"error": type(write_exc).__name__}
    _tell(exc, kept.describe())
    out = kept.to_dict()
    archived = core.keeper.keep_failed(run, result.images, why)  # auditors fetch them by hash too
    if archived:
        out["archive"] = archived
    return out


def _tell(exc: BaseException, note: str) -> None:
    """Add ``note`` to the message the caller sees (``detail`` where the message is an install line)."""
    if isinstance(exc, MissingExtra):
        exc.detail = f"{exc.detail}; {note}"
    elif exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} ({note})", *exc.args[1:])
    else:
        exc.args = (note, *exc.args)


def _audit_failure(core: _Core, run: _Run, exc: BaseException) -> None:
    """Write what happened to a request that did not succeed. An audit failure here is re-raised.

    Paid outputs go to quarantine first, so that even a failing audit write cannot lose them.
    """
    from .ledger.idempotency import KeyTaken

    kept = _keep_paid(core, run, exc)
    if isinstance(exc, AuditWriteError | KeyTaken):  # a lost key race moved no money: it waits, then replays
        return
    last = run.records[-1] if run.records else None
    if last is not None and last["event"] in ("denied", "failed"):
        last.setdefault("error_type", type(exc).__name__)
    else:
        core.record(run, "failed", error_type=type(exc).__name__, error=_safe_message(exc),
                    attempts=[a.to_dict() for a in run.attempts])  # fmt: skip
    if isinstance(exc, PolicyDenied):
        run.records[-1]["event"] = "denied"
        run.records[-1]["rule_ids"] = list(exc.rule_ids)
    if isinstance(exc, BudgetExceeded):
        run.records[-1]["event"] = "budget_refused"
    if kept is not None:
        run.records[-1]["quarantine"] = kept
    try:
        core.audit.append_many(run.records)
    except AuditWriteError as audit_exc:
        if kept is not None and "dir" in kept:
            _tell(audit_exc, f"paid outputs of the failed request kept in {kept['dir']}")
        raise


def _fine_tune_field(route: Route, metadata: Mapping[str, Any]) -> dict[str, Any]:
    ft = fine_tune_provenance(route, metadata)
    return {"fine_tune": dict(ft)} if ft else {}


def _safe_message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, GatewayError) else type(exc).__name__


def _cost_evidence(route: Route, result: BackendResult) -> dict[str, Any]:
    """What the settled cost was computed from (token counts, or the per-image fallback), for audit."""
    from .ledger.tokens import cost_basis, usage_tokens

    basis = cost_basis(route, result.usage)
    out: dict[str, Any] = {"cost_basis": basis}
    tokens = usage_tokens(result.usage)
    if tokens:
        out["tokens"] = tokens
    if basis == "per_image_fallback":
        out["cost_note"] = "the response reported no token usage: the card's per-image price was charged"
    return out
