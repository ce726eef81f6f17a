"""Gateway and AsyncGateway: plan, then execute. With gateway.core, the only code that knows every step.

One request::

    1 policy   -> Decision           (pure)        \
    2 routing  -> ranked routes      (pure)         > the Plan; `explain` stops here
    3 estimate -> cost per route     (pure)        /
    for each ranked route (first, then fallbacks):
        reserve the estimate (atomic, every budget in scope)   -- BudgetExceeded stops here
        call the backend with its retry policy                  -- release on failure, try next route
        validate outputs, output checks, watermark + C2PA
        settle the reservation to the actual cost
    audit (hash-chained, fail closed), span + metrics, route stats

All logic that is not I/O lives in :class:`gateway.core._Core` (and what it writes down in
:mod:`gateway.evidence`); the sync and async shells differ
only in how they wait on the backend, the stores and the CPU-bound output step.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .archive.keeper import Job, given_seed
from .config import Settings
from .core import _Core
from .errors import BackendError, UsageError
from .evidence import _audit_failure
from .ledger.idempotency import KeyTaken
from .run import Plan, _falls_back, _Run, _with_seq
from .types import EditMode, GenerationResult, ImageRequest

T = TypeVar("T")


class Gateway:
    """Synchronous client. ``Gateway()`` runs on the embedded default; see :meth:`from_config`.

    Components (policy, catalog, ledger, audit, provenance, telemetry, backends) can be passed in to
    replace the ones built from settings, which is how tests and embedding applications compose it.
    """

    def __init__(self, settings: Settings | None = None, **components: Any) -> None:
        self._core = _Core(settings, **components)

    @classmethod
    def from_config(cls, path: str | Path | None = None, **components: Any) -> Gateway:
        return cls(Settings.load(path), **components)

    @property
    def settings(self) -> Settings:
        return self._core.settings

    def explain(self, prompt_or_request: str | ImageRequest, **options: Any) -> Plan:
        """Steps 1-3 only: the decision, every candidate with its reason, the ranking and estimates."""
        request, context = self._core.build(prompt_or_request, dict(options))
        return self._core.plan(request, context)

    def generate(
        self, prompt_or_request: str | ImageRequest, *, idempotency_key: str | None = None, **options: Any
    ) -> GenerationResult:
        """Generate images; raises a :class:`~gateway.errors.GatewayError` subclass on any refusal.

        With ``idempotency_key``, a repeat of the same request (same team) returns the original result
        (``replayed=True``) and pays nothing; a concurrent repeat waits for the first one.
        """
        core = self._core
        seed = given_seed(prompt_or_request, options)
        request, context = core.build(prompt_or_request, dict(options))
        job = core.keeper.job(request, context, idempotency_key, seed)
        deadline = time.monotonic() + core.settings.idempotency.wait_s
        while True:
            kind, doc = core.keeper.step(job)
            if kind == "wait":
                if time.monotonic() > deadline:
                    raise UsageError(f"idempotency key {idempotency_key!r} is still in progress elsewhere")
                core.sleep(core.settings.idempotency.poll_s)
                continue
            try:
                return self._generate(request, context, seed, job, doc)
            except KeyTaken:
                continue  # another request claimed the key first: wait for its result

    def _generate(
        self, request: ImageRequest, context: Any, seed: int | None, job: Job | None, doc: Any
    ) -> GenerationResult:
        core = self._core
        request_id = uuid.uuid4().hex
        with core.telemetry.request(request, context, request_id) as trace:
            run = _Run(core.plan(request, context, request_id, trace), trace, time.perf_counter())
            run.claim, run.seed_given = core.keeper.claim(job, request_id), seed
            try:
                if job is not None and doc is not None:
                    result = core.keeper.replay(run, job, doc)
                else:
                    core.begin(run)
                    result = core.keeper.cached(run) or self._execute(run)
                    result = core.keeper.keep(run, result)
                seqs = core.audit.append_many(run.records)
                run.records = []  # written: a failure from here on audits only its own record
                core.keeper.durable(run)  # the archive's fsync ran beside the audit append
                if doc is None:  # a replay keeps the original's audit_seq; its own record follows it
                    result = _with_seq(result, seqs[-1])
                    core.keeper.complete(run, result)
                remaining = core.budget_remaining(run.plan.decision)
                trace.finish(result=result, budget_remaining=remaining)
                core.log_outcome(run, result, None)
                return result
            except BaseException as exc:
                core.keeper.abandon(run)
                _audit_failure(core, run, exc)
                trace.finish(error=exc)
                core.log_outcome(run, None, exc)
                raise
            finally:
                core.maybe_save_stats()

    def edit(
        self,
        image_or_images: Any,
        prompt: str,
        *,
        mask: Any = None,
        strength: float | None = None,
        mode: EditMode | None = None,
        **options: Any,
    ) -> GenerationResult:
        """Edit input image(s) (bytes, paths, GeneratedImage or PIL images) under the same governance
        as :meth:`generate`; the inputs are checked (decode-safety, provenance, ``input_image`` rules,
        classifiers) before anything is reserved. See docs/editing.md."""
        from .inputs import edit_options

        return self.generate(prompt, **edit_options(image_or_images, mask, strength, mode, options))

    def _execute(self, run: _Run) -> GenerationResult:
        core, plan = self._core, run.plan
        for cand in plan.routes.ranked[: core.settings.routing.max_routes]:
            route = cand.route
            if core.breaker.state(route.key, core.monotonic()) == "open":
                continue
            call = core.call_for(route, plan.request, plan.request_id)
            estimate = cand.estimate_usd or Decimal(0)
            with run.trace.step("ledger.reserve", route=route.key):
                res = core.reserve(run, route, estimate)
            run.estimated = estimate
            call = core.bound(call, route, estimate, plan.decision)
            retries = 0

            def on_retry(_exc: BaseException, _n: int) -> None:
                nonlocal retries
                retries += 1

            started = time.perf_counter()
            try:
                with run.trace.attempt(route.provider, route.model, route.card.options.get("server_address")):
                    backend = core.backend(route.provider)
                    result = core.retry.run(
                        partial(backend.generate, call), sleep=core.sleep, on_retry=on_retry
                    )
            except BackendError as exc:
                core.settle_failure(res, exc, route)
                core.attempt_failed(run, route, exc, started, retries)
                if _falls_back(exc):
                    continue
                raise
            except BaseException:
                core.release_cancelled(res)
                raise
            cost = core.attempt_ok(run, route, result, started, retries)
            try:
                with run.trace.step("outputs"):
                    processed = core.process_outputs(run, route, result)
            finally:
                core.settle_ok(res, route, result, cost)
            return core.finish(run, route, call, result, processed, cost)
        raise core.all_failed(run)

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGateway:
    """The asyncio twin of :class:`Gateway`: same plan, same evidence, awaits the I/O.

    HTTP backends are awaited natively; the local backend runs torch in its own bounded pool; the
    CPU-bound output step (classifier, watermark, C2PA) runs in a worker thread; stores that do
    network I/O (PostgreSQL) are called in a thread, SQLite inline (tens of microseconds).
    """

    def __init__(self, settings: Settings | None = None, **components: Any) -> None:
        self._core = _Core(settings, **components)

    @classmethod
    def from_config(cls, path: str | Path | None = None, **components: Any) -> AsyncGateway:
        return cls(Settings.load(path), **components)

    @property
    def settings(self) -> Settings:
        return self._core.settings

    def explain(self, prompt_or_request: str | ImageRequest, **options: Any) -> Plan:
        request, context = self._core.build(prompt_or_request, dict(options))
        return self._core.plan(request, context)

    async def _store(self, blocking: bool, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn) if blocking else fn()

    async def generate(
        self, prompt_or_request: str | ImageRequest, *, idempotency_key: str | None = None, **options: Any
    ) -> GenerationResult:
        core = self._core
        seed = given_seed(prompt_or_request, options)
        request, context = core.build(prompt_or_request, dict(options))
        job = core.keeper.job(request, context, idempotency_key, seed)
        deadline = time.monotonic() + core.settings.idempotency.wait_s
        while True:
            kind, doc = await self._store(core.keeper.blocking_io, partial(core.keeper.step, job))
            if kind == "wait":
                if time.monotonic() > deadline:
                    raise UsageError(f"idempotency key {idempotency_key!r} is still in progress elsewhere")
                await core.asleep(core.settings.idempotency.poll_s)
                continue
            try:
                return await self._generate(request, context, seed, job, doc)
            except KeyTaken:
                continue  # another request claimed the key first: wait for its result

    async def _generate(
        self, request: ImageRequest, context: Any, seed: int | None, job: Job | None, doc: Any
    ) -> GenerationResult:
        core, keeper = self._core, self._core.keeper
        request_id = uuid.uuid4().hex
        with core.telemetry.request(request, context, request_id) as trace:
            # An edit's input checks (decoding, C2PA) are CPU work: keep them off the event loop.
            plan_fn = partial(core.plan, request, context, request_id, trace)
            plan = await asyncio.to_thread(plan_fn) if request.images else plan_fn()
            run = _Run(plan, trace, time.perf_counter())
            run.claim, run.seed_given = keeper.claim(job, request_id), seed
            blocking = keeper.blocking_io
            try:
                if job is not None and doc is not None:
                    result = await asyncio.to_thread(keeper.replay, run, job, doc)
                else:
                    core.begin(run)
                    hit = await asyncio.to_thread(keeper.cached, run)
                    result = hit if hit is not None else await self._execute(run)
                    result = await asyncio.to_thread(
                        keeper.keep, run, result
                    )  # file writes; fsync runs aside
                seqs = await core.audit.aappend_many(run.records)  # group-committed with its peers
                run.records = []  # written: a failure from here on audits only its own record
                await keeper.adurable(run)  # the archive's fsync ran beside the audit append
                if doc is None:  # a replay keeps the original's audit_seq; its own record follows it
                    result = _with_seq(result, seqs[-1])
                    await self._store(blocking, partial(keeper.complete, run, result))
                remaining = core.budget_remaining(run.plan.decision)
                trace.finish(result=result, budget_remaining=remaining)
                core.log_outcome(run, result, None)
                return result
            except BaseException as exc:
                await asyncio.shield(self._store(blocking, partial(keeper.abandon, run)))
                _audit_failure(core, run, exc)
                trace.finish(error=exc)
                core.log_outcome(run, None, exc)
                raise
            finally:
                core.maybe_save_stats()

    async def edit(
        self,
        image_or_images: Any,
        prompt: str,
        *,
        mask: Any = None,
        strength: float | None = None,
        mode: EditMode | None = None,
        **options: Any,
    ) -> GenerationResult:
        """The awaited twin of :meth:`Gateway.edit`."""
        from .inputs import edit_options

        return await self.generate(prompt, **edit_options(image_or_images, mask, strength, mode, options))

    async def _execute(self, run: _Run) -> GenerationResult:
        core, plan = self._core, run.plan
        blocking = core.ledger.blocking_io
        for cand in plan.routes.ranked[: core.settings.routing.max_routes]:
            route = cand.route
            if core.breaker.state(route.key, core.monotonic()) == "open":
                continue
            call = core.call_for(route, plan.request, plan.request_id)
            estimate = cand.estimate_usd or Decimal(0)
            with run.trace.step("ledger.reserve", route=route.key):
                res = await self._store(blocking, partial(core.reserve, run, route, estimate))
            run.estimated = estimate
            call = core.bound(call, route, estimate, plan.decision)
            retries = 0

            def on_retry(_exc: BaseException, _n: int) -> None:
                nonlocal retries
                retries += 1

            backend = core.backend(route.provider)
            started = time.perf_counter()
            try:
                with run.trace.attempt(route.provider, route.model, route.card.options.get("server_address")):
                    result = await core.retry.arun(
                        partial(backend.agenerate, call), sleep=core.asleep, on_retry=on_retry
                    )
            except BackendError as exc:
                await self._store(blocking, partial(core.settle_failure, res, exc, route))
                core.attempt_failed(run, route, exc, started, retries)
                if _falls_back(exc):
                    continue
                raise
            except BaseException:  # cancellation included: give the money back, then propagate
                await asyncio.shield(self._store(blocking, partial(core.release_cancelled, res)))
                raise
            cost = core.attempt_ok(run, route, result, started, retries)
            try:
                with run.trace.step("outputs"):
                    if core.outputs_inline(run, route, result):  # format checks only: no thread hop
                        processed = core.process_outputs(run, route, result)
                    else:
                        processed = await asyncio.to_thread(core.process_outputs, run, route, result)
            finally:
                await self._store(blocking, partial(core.settle_ok, res, route, result, cost))
            return core.finish(run, route, call, result, processed, cost)
        raise core.all_failed(run)

    async def aclose(self) -> None:
        await self._core.aclose()

    async def __aenter__(self) -> AsyncGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
