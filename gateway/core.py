"""The request core: planning (pure) and the bookkeeping around each attempt.

Everything the sync and async shells in :mod:`gateway.client` share lives here, so the shells differ
only in how they wait on the backend, the stores and the CPU-bound output step (httpx's design: one
pure core, thin I/O twins). Nothing in this module waits on I/O except the store calls the shells
schedule through it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from .backends.base import Backend, BackendCall, BackendResult
from .backends.registry import builtin_target, create_backend
from .catalog import Catalog, Route
from .config import Settings
from .errors import (
    BackendError,
    BackendTimeout,
    GatewayError,
    ReservationExhausted,
)
from .evidence import _cost_evidence, _Evidence
from .finetune.provenance import fine_tune_provenance
from .ledger.pricing import actual_cost
from .ledger.timebill import WorkHistory, expected_seconds, seconds_for, time_billed, work_units
from .outputs import OutputStep, Processed
from .preflight import Missing, extra_for, from_import_error, missing_for
from .preflight import reason as missing_reason
from .retry import RetryPolicy
from .routing import (
    CircuitBreaker,
    RouteCache,
    RoutePlan,
    RouteStats,
    RoutingOptions,
    default_stats_path,
    env_today,
    plan_routes,
)
from .run import Plan, _Run
from .types import Attempt, Context, Decision, ImageRequest

if TYPE_CHECKING:
    from .archive import Archive
    from .audit import AuditLog, Telemetry
    from .inputs import InputImage
    from .ledger import Ledger, Reservation
    from .policy import PolicySet
    from .provenance import Provenance

T = TypeVar("T")
_log = logging.getLogger("gateway.client")
_CONTEXT_FIELDS = frozenset(Context.model_fields)
_INLINE_OUTPUT_BYTES = 1 << 20  # PNG chunk checks of up to 1 MB take well under a millisecond


class _Core(_Evidence):
    """Planning and the bookkeeping around each attempt; no waiting on I/O happens here. What gets
    written down (audit records, results, log lines) lives in :class:`gateway.evidence._Evidence`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        policy: PolicySet | None = None,
        catalog: Catalog | None = None,
        ledger: Ledger | None = None,
        audit: AuditLog | None = None,
        provenance: Provenance | None = None,
        telemetry: Telemetry | None = None,
        backends: Mapping[str, Backend] | None = None,
        archive: Archive | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        from .audit.configure import audit_from_settings
        from .ledger import open_ledger
        from .policy import PolicySet

        s = self.settings = settings or Settings.load()
        s.home.mkdir(parents=True, exist_ok=True)
        self.policy = policy or PolicySet.load(s.policy_paths)
        self.catalog = catalog or Catalog.load(s.provider_paths)
        self.ledger = ledger or open_ledger(s.resolved_ledger_url)
        self.audit = audit or audit_from_settings(s)
        if provenance is None:
            from .provenance import Provenance

            provenance = Provenance(s.home, s.provenance)
        self.provenance = provenance
        if catalog is None:  # registered adapters (signed LoRA files in home/adapters) become routes
            from .finetune.registry import with_adapters
            from .finetune.signing import trust_bundle

            self.catalog = with_adapters(self.catalog, s.home, trust_bundle(provenance.keys))
        self.telemetry = telemetry or _default_telemetry(s)
        self.outputs = OutputStep(
            self.policy,
            self.provenance,
            watermark_remote=bool(s.provenance.get("watermark_remote", True)),
            c2pa_remote=bool(s.provenance.get("c2pa_remote", True)),
        )
        r = s.retry
        self.retry = retry or RetryPolicy(
            max_attempts=r.max_attempts,
            base_backoff_s=r.backoff_s,
            max_backoff_s=r.max_backoff_s,
            max_retry_after_s=r.max_retry_after_s,
        )
        self.routing = RoutingOptions(s.routing.strategy, s.routing.priority, s.routing.weights)
        self.stats = RouteStats(default_stats_path(s.home))
        self.work = WorkHistory(s.home / "work_history.json")
        self.breaker = CircuitBreaker(s.routing.breaker_threshold, s.routing.breaker_cooldown_s)
        self.route_cache = RouteCache()
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.monotonic = monotonic
        self.sleep, self.asleep = sleep, asleep  # injected so tests never wait on retry backoff
        self._backends: dict[str, Backend] = dict(backends or {})
        self._backend_lock = threading.Lock()
        self._last_stats_save = monotonic()
        from .archive import open_archive
        from .archive.keeper import Keeper

        self.keeper = Keeper(self, archive if archive is not None else open_archive(s))

    # -------------------------------------------------------------- planning (pure)

    def backend(self, name: str) -> Backend:
        with self._backend_lock:
            b = self._backends.get(name)
            if b is None:
                b = self._backends[name] = create_backend(name, dict(self.settings.backend_options(name)))
            return b

    def build(
        self, prompt_or_request: str | ImageRequest, options: dict[str, Any]
    ) -> tuple[ImageRequest, Context]:
        ctx_fields = {k: options.pop(k) for k in list(options) if k in _CONTEXT_FIELDS}
        context = Context.build(options.pop("context", None), **ctx_fields)
        request = ImageRequest.build(prompt_or_request, **options)
        if request.seed is None:
            request = request.model_copy(update={"seed": secrets.randbelow(2**32)})
        return request, context

    def call_for(self, route: Route, request: ImageRequest, request_id: str) -> BackendCall:
        """Fill the card's defaults into the request: what this route will actually be asked."""
        d = route.card.defaults
        resolved = request.model_copy(
            update={
                "width": request.width or d.width,
                "height": request.height or d.height,
                "steps": request.steps or d.steps,
                "guidance_scale": d.guidance_scale
                if request.guidance_scale is None
                else request.guidance_scale,
                "scheduler": request.scheduler or d.scheduler,
                "quality": _sent_quality(route, request),
            }
        )
        opts = route.card.options
        return BackendCall(resolved, route.model, opts, self.settings.timeout_s, request_id)

    def missing_extras(self, route: Route, decision: Decision) -> list[Missing]:
        """Optional modules this route would need for ``decision`` that are not installed (pure)."""
        c2pa = self.outputs.signs_c2pa(decision, local=route.provider == "local")
        given = self._backends.get(route.provider)  # a backend passed in brings its own imports
        kind = f"{type(given).__module__}:{type(given).__name__}"
        own = given is None or kind == builtin_target(route.provider)
        return missing_for(route.provider if own else "", c2pa=c2pa)

    def _check(self, route: Route, request: ImageRequest, decision: Decision | None = None) -> str | None:
        if decision is not None and (missing := self.missing_extras(route, decision)):
            return missing_reason(missing)
        try:
            backend = self.backend(route.provider)
        except GatewayError as exc:
            return str(exc)
        return backend.check(self.call_for(route, request, ""))

    def plan(
        self, request: ImageRequest, context: Context, request_id: str | None = None, trace: Any = None
    ) -> Plan:
        inputs: tuple[InputImage, ...] = ()
        with _step(trace, "policy"):
            if request.images:  # an edit: its inputs are checked before anything else (gateway.inputs)
                from .inputs import govern_inputs

                inputs, decision = govern_inputs(self.policy, self.provenance, request, context)
            else:
                decision = self.policy.evaluate(request, context)
        with _step(trace, "routing"):
            routes = self._routes(request, decision)
        return Plan(request_id or uuid.uuid4().hex, request, context, decision, routes, inputs)

    def _routes(self, request: ImageRequest, decision: Decision) -> RoutePlan:
        return plan_routes(
            self.catalog,
            request,
            decision,
            today=env_today(),
            now=self.monotonic(),
            options=self.routing,
            stats=self.stats,
            breaker=self.breaker,
            backend_check=lambda route, req: self._check(route, req, decision),
            expected_seconds=lambda key: self._expected_seconds(key, request),
            cache=self.route_cache,
        )

    def _expected_seconds(self, key: str, request: ImageRequest) -> float | None:
        """Billed seconds to reserve for on a time-billed route: scales with images x steps."""
        route = self.catalog.get(key)
        if route is None or not time_billed(route):
            return None
        return expected_seconds(route, request, self.work.samples(key))

    def bound(self, call: BackendCall, route: Route, reserved: Decimal, decision: Decision) -> BackendCall:
        """Hand a time-billed call the billed seconds its reservation pays for (its spending limit).

        Only when a budget is in scope: the deadline exists to keep a hard stop hard, and a request no
        budget limits has nothing to protect, so a busy host never cuts its run short.
        """
        if not time_billed(route) or not decision.budgets:
            return call
        from dataclasses import replace

        return replace(call, max_billed_s=seconds_for(route, reserved))

    # -------------------------------------------------------------- evidence helpers

    # -------------------------------------------------------------- money (the stores' calls)

    def reserve(self, run: _Run, route: Route, estimate: Decimal) -> Reservation:
        """Reserve for this attempt. A fallback gets its own ledger id (``{request_id}.{n}``): each
        attempt's money is reserved, settled or released on its own."""
        d, n = run.plan.decision, len(run.attempts)
        return self.ledger.reserve(
            request_id=run.plan.request_id if n == 0 else f"{run.plan.request_id}.{n}",
            context=run.plan.context,
            budgets=d.budgets,
            rate_limits=d.rate_limits,
            amount_usd=estimate,
            route_key=route.key,
            now=self.clock(),
            claim=run.claim if n == 0 else None,
        )

    def settle_ok(self, res: Reservation, route: Route, result: BackendResult, cost: Decimal) -> None:
        u = result.usage
        self.ledger.settle(
            res,
            actual_usd=cost,
            provider=route.provider,
            model=route.model,
            images=u.images,
            latency_s=u.elapsed_s,
            billed_seconds=u.predict_time_s,
            now=self.clock(),
            **_ledger_tokens(u),
        )

    def settle_failure(self, res: Reservation, exc: BackendError, route: Route) -> None:
        """A timed-out create may still be billed: keep its estimate as spent; release anything else."""
        if isinstance(exc, BackendTimeout):
            self.ledger.settle(
                res,
                actual_usd=res.amount_usd,
                provider=route.provider,
                model=route.model,
                images=0,
                latency_s=0.0,
                now=self.clock(),
            )
        else:
            self.ledger.release(res, reason=type(exc).__name__, now=self.clock())

    def release_cancelled(self, res: Reservation) -> None:
        self.ledger.release(res, reason="cancelled", now=self.clock())

    def budget_remaining(self, decision: Decision) -> dict[str, Decimal]:
        """Remaining money per budget in scope, for the budget-remaining metric."""
        if not decision.budgets:
            return {}
        statuses = self.ledger.budget_status(decision.budgets, self.clock())
        return {st.budget.id: st.remaining_usd for st in statuses}

    def attempt_failed(
        self, run: _Run, route: Route, exc: BackendError, started: float, retries: int
    ) -> None:
        latency = time.perf_counter() - started
        if not isinstance(exc, ReservationExhausted):  # the budget's stop is not the route's fault
            self.breaker.record_failure(route.key, self.monotonic())
        elif time_billed(route):  # it needed more than its reservation: the next estimate learns that
            self.work.observe_stopped(
                route.key, work_units(route, run.plan.request), seconds_for(route, run.estimated)
            )
        name = type(exc).__name__
        charged = run.estimated if isinstance(exc, BackendTimeout) else None  # kept as spent (settle_failure)
        run.attempts.append(Attempt(route.provider, route.model, name, latency, str(exc), retries, charged))
        self.record(run, "attempt", provider=route.provider, model=route.model, route_key=route.key,
                    outcome=name, error=str(exc), latency_s=round(latency, 6), retries=retries)  # fmt: skip

    def attempt_ok(
        self, run: _Run, route: Route, result: BackendResult, started: float, retries: int
    ) -> Decimal:
        latency = time.perf_counter() - started
        self.breaker.record_success(route.key)
        self.stats.observe(route.key, result.usage.elapsed_s or latency)
        run.attempts.append(Attempt(route.provider, route.model, "ok", latency, None, retries))
        run.paid = (route, result)
        cost = actual_cost(route, run.plan.request, result.usage)
        extra: dict[str, Any] = {}
        if time_billed(route):
            billed = result.usage.predict_time_s
            units = work_units(route, run.plan.request)
            self.work.observe(route.key, units, billed if billed is not None else result.usage.elapsed_s)
        if cost > run.estimated:  # the reservation bounds spend: settle at it, keep the provider's figure
            extra = {"cost_capped": True, "uncapped_cost_usd": str(cost), "reserved_usd": str(run.estimated)}
            cost = run.estimated
        self.record(run, "attempt", provider=route.provider, model=route.model, route_key=route.key,
                    outcome="ok", latency_s=round(latency, 6), retries=retries, cost_usd=str(cost),
                    provider_request_id=result.usage.provider_request_id, **extra,
                    **_cost_evidence(route, result))  # fmt: skip
        return cost

    def outputs_inline(self, run: _Run, route: Route, result: BackendResult) -> bool:
        """Step 5 is trivial for this result (format checks of under 1 MB of images, see
        :meth:`OutputStep.trivial`): cheap enough for the event loop."""
        if sum(len(b) for b in result.images) > _INLINE_OUTPUT_BYTES:
            return False
        local, wm = route.provider == "local", route.card.provenance.watermark
        return self.outputs.trivial(run.plan.decision, run.plan.context, local=local, provider_watermark=wm)

    def process_outputs(self, run: _Run, route: Route, result: BackendResult) -> Processed:
        """Step 5 (CPU-bound: the async shell runs it in a worker thread)."""
        from .provenance import ProvenanceInfo

        p = run.plan
        info = ProvenanceInfo(
            request_id=p.request_id,
            provider=route.provider,
            model=route.model,
            seed=p.request.seed,
            prompt_sha256=hashlib.sha256(p.request.prompt.encode()).hexdigest(),
            fine_tune=fine_tune_provenance(route, result.metadata),
            inputs=tuple((i.data, i.mime, i.sha256) for i in p.inputs if i.role == "image"),
            edit_mode=p.request.mode,
        )
        try:
            processed = self.outputs.process(
                result.images,
                decision=p.decision,
                context=p.context,
                info=info,
                local=route.provider == "local",
                metadata=dict(result.metadata),
                provider_watermark=route.card.provenance.watermark,
            )
        except ModuleNotFoundError as exc:  # planning checks extras; this is the last guard
            if extra_for(exc.name or "") == "all":
                raise
            raise from_import_error(exc, context=f"{route.key} outputs") from exc
        self.keeper.keep_quarantined(run, result.images, processed.quarantined)
        return processed

    def maybe_save_stats(self) -> None:
        now = self.monotonic()
        if now - self._last_stats_save > 5.0:
            self._last_stats_save = now
            self.stats.save()
            self.work.save()

    def close(self) -> None:
        self.stats.save()
        self.work.save()
        for b in self._backends.values():
            b.close()
        self.ledger.close()
        self.audit.close()
        self.keeper.close()
        if self.keeper.archive is not None:
            self.keeper.archive.close()

    async def aclose(self) -> None:
        """The async shell's close: backends with async clients (OpenAI, Gemini) close their pools on
        the loop that opened them, then everything else as :meth:`close`."""
        for b in list(self._backends.values()):
            await b.aclose()
        self.close()


# ------------------------------------------------------------------ shared shell helpers


def _ledger_tokens(usage: Any) -> dict[str, Any]:
    """``tokens=`` for the ledger's settle, only when the provider reported counts (keeps the call
    identical for every other route)."""
    from .ledger.tokens import usage_tokens

    tokens = usage_tokens(usage)
    return {"tokens": tokens} if tokens else {}


def _sent_quality(route: Route, request: ImageRequest) -> str | None:
    """The provider's word for the asked quality (routing already dropped cards that cannot honour it)."""
    from .quality import provider_quality

    try:
        return provider_quality(route.card, request.quality)
    except ValueError:
        return request.quality


def _default_telemetry(s: Settings) -> Telemetry:
    """Providers from the standard OTEL_* variables; without an exporter, a bare SDK tracer still
    gives every result and audit record a real trace id (spans are then created but not exported)."""
    import os

    from .audit import Telemetry, configure_from_env

    tp, mp = configure_from_env()
    if tp is None and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
        from opentelemetry.sdk.trace import TracerProvider

        tp = TracerProvider()
    t = s.telemetry
    capture, steps = bool(t.get("capture_prompt", False)), bool(t.get("step_spans", False))
    return Telemetry(tp, mp, capture_prompt=capture, step_spans=steps)


def _step(trace: Any, name: str) -> Any:
    from contextlib import nullcontext

    return nullcontext() if trace is None else trace.step(name)
