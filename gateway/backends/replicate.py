"""Replicate backend on the official ``replicate`` client, with the gateway owning time, retries and files.

The client builds the requests and parses predictions (``predictions.create``,
``models.predictions.create``, ``predictions.get``/``cancel``, the ``Prediction`` model). Where it falls
short, a thin subclass takes over the transport and httpx is used directly:

* its transport retries GETs on 429/503/504 with a real ``time.sleep`` (up to 10 times), stacking under
  our own retry layer and ignoring the call's deadline: the subclass supplies plain httpx clients;
* ``ReplicateError`` drops the response headers, so ``Retry-After`` is lost: we raise from the response;
* it has no per-call deadline: every request's timeouts are capped by what is left of ``call.timeout_s``;
* ``FileOutput.read()`` sends the API token to the file host: outputs are fetched by
  :mod:`._download` with a credential-free client, allowed hosts only, size cap and image checks.

Flow: create with ``Prefer: wait=N`` (N fits inside the deadline), poll ``GET /v1/predictions/{id}``
until final, download the outputs. Once a prediction exists it is never re-created here: transient poll
failures are retried as GETs, and on timeout or asyncio cancellation the prediction is cancelled. A
create whose outcome is unknown (timeout or lost connection after sending, 502/504, an unreadable 201
without an id) raises the non-retryable :class:`BackendTimeout`, because resending it may start a
second billed prediction; a 429 on create was never accepted and raises the retryable ``RateLimited``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from replicate.__about__ import __version__ as replicate_version
from replicate.prediction import Prediction

from ..errors import (
    AuthenticationError,
    BackendError,
    BackendTimeout,
    BadResponse,
    ContentFiltered,
    InvalidBackendRequest,
    RateLimited,
    ReservationExhausted,
)
from ..retry import RetryPolicy
from ._download import DEFAULT_MAX_BYTES, DownloadPolicy, download_client_kwargs, shared_ssl_context
from ._replicate_http import (
    DEADLINE,
    FILTER_PATTERN,
    GatewayReplicateClient,
    HTTPStatusError,
    Phase,
    map_error,
)
from ._replicate_inputs import PROVIDER, ModelRef, build_input, parse_ref, resolve_family
from ._wire import redact
from .base import Backend, BackendCall, BackendResult, Usage

DEFAULT_BASE_URL = "https://api.replicate.com"
FINAL = frozenset({"succeeded", "failed", "canceled"})

_SEED_IN_LOGS = re.compile(r"(?:using|random)\s+seed:?\s*(\d+)", re.I)
_ID_IN_BODY = re.compile(r'"id"\s*:\s*"([A-Za-z0-9]{6,64})"')


class PredictionFailed(BadResponse):
    """The prediction ran and failed (or was cancelled elsewhere). Not retried: the run may be billed
    and usually fails the same way again; the gateway falls back to the next route instead."""

    retryable = False


@dataclass
class _Run:
    """One generate call in flight."""

    call: BackendCall
    ref: ModelRef
    input: dict[str, Any]
    seed_key: str | None
    private_keys: frozenset[str]
    started: float
    deadline: float
    prediction_id: str | None = None
    final: bool = False
    cancelled: bool | None = None  # None: not attempted
    max_billed_s: float | None = None  # what the reservation pays for (time-billed models)
    last_waiting: float = 0.0  # when the prediction was last seen not yet running ("starting")
    billed_from: float | None = None  # the earliest it can have started running (billing starts then)


class ReplicateBackend(Backend):
    """Replicate predictions for ``owner/name`` (official, per image) and ``owner/name:version`` models."""

    name = "replicate"

    def __init__(
        self,
        api_token: str | None = None,
        base_url: str | None = None,
        allowed_hosts: Sequence[str] | None = None,
        max_download_bytes: int = DEFAULT_MAX_BYTES,
        poll_interval_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        prefer_wait_s: int | None = 60,
        max_poll_failures: int = 5,
        cancel_timeout_s: float = 5.0,
        download_grace_s: float = 5.0,
        download_retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        **_: Any,
    ) -> None:
        self._clock = clock  # injected (with ``sleep``) so tests can run predictions in virtual time
        self._token = api_token or os.environ.get("REPLICATE_API_TOKEN") or None
        self.base_url = (base_url or os.environ.get("REPLICATE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.downloads = DownloadPolicy.build(
            allowed_hosts, self.base_url, max_bytes=max_download_bytes, provider=PROVIDER
        )
        self.poll_interval_s = poll_interval_s
        self.prefer_wait_s = prefer_wait_s
        self.max_poll_failures = max_poll_failures
        self.cancel_timeout_s = cancel_timeout_s
        self.download_grace_s = download_grace_s
        self.download_retry = download_retry or RetryPolicy(
            max_attempts=3, base_backoff_s=0.2, max_backoff_s=2.0
        )
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._files: httpx.Client | None = None
        self._ahttp: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None
        self._afiles: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None
        self._replicate = GatewayReplicateClient(self.base_url, self._api_client, self._api_aclient)

    # ------------------------------------------------------------------ clients

    def _api_kwargs(self) -> dict[str, Any]:
        from .. import __version__

        agent = f"diffusion-gateway/{__version__} replicate-python/{replicate_version}"
        return {
            "base_url": self.base_url,
            "headers": {"Authorization": f"Bearer {self._token}", "User-Agent": agent},
            "timeout": httpx.Timeout(30.0, connect=5.0),
            "verify": shared_ssl_context(),
        }

    def _api_client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(**self._api_kwargs())
            return self._http

    def _file_client(self) -> httpx.Client:
        with self._lock:
            if self._files is None:
                self._files = httpx.Client(**download_client_kwargs())
            return self._files

    def _api_aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._ahttp is None or self._ahttp[0] is not loop:
            self._ahttp = (loop, httpx.AsyncClient(**self._api_kwargs()))
        return self._ahttp[1]

    def _file_aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._afiles is None or self._afiles[0] is not loop:
            self._afiles = (loop, httpx.AsyncClient(**download_client_kwargs()))
        return self._afiles[1]

    def close(self) -> None:
        for client in (self._http, self._files):
            if client is not None:
                client.close()
        self._http = self._files = None

    async def aclose(self) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        for pair in (self._ahttp, self._afiles):
            if pair is not None and pair[0] is loop:
                await pair[1].aclose()
        self._ahttp = self._afiles = None

    # ------------------------------------------------------------------ pure core

    def check(self, call: BackendCall) -> str | None:
        if not self._token:
            return "no Replicate API token (set REPLICATE_API_TOKEN)"
        try:
            parse_ref(call.model)
            build_input(call)
        except InvalidBackendRequest as exc:
            return str(exc)
        return None

    def _start(self, call: BackendCall) -> _Run:
        if not self._token:
            raise AuthenticationError("no Replicate API token (set REPLICATE_API_TOKEN)", provider=PROVIDER)
        fam = resolve_family(call.options)
        now = self._clock()
        return _Run(
            call=call,
            ref=parse_ref(call.model),
            input=build_input(call),
            seed_key=fam.seed,
            private_keys=frozenset(k for k in (fam.prompt, fam.negative_prompt) if k),
            started=now,
            deadline=now + call.timeout_s,
            max_billed_s=call.max_billed_s,
            last_waiting=now,
        )

    def _observe(self, run: _Run, pred: Prediction) -> None:
        """Track when billing can have started: not before the last sighting of ``starting``."""
        if pred.status == "starting":
            run.last_waiting = self._clock()
        elif run.billed_from is None:
            run.billed_from = run.last_waiting

    def _left(self, run: _Run) -> tuple[float, bool]:
        """Seconds until the first deadline, and whether it is the billed-time one (the reservation's).

        Billed time is bounded from the conservative start estimate, so the prediction is cancelled no
        later than ``max_billed_s`` after it can have started running: its ``predict_time`` cannot
        pass what was reserved by more than the cancel's round trip (a settle above it is capped).
        """
        now = self._clock()
        left, billed = run.deadline - now, False
        if run.max_billed_s is not None and run.billed_from is not None:
            until = run.billed_from + run.max_billed_s - now
            if until < left:
                left, billed = until, True
        return left, billed

    def _wait_header(self, run: _Run) -> int:
        """``Prefer: wait=N`` with N chosen so the server answers before our deadline (0: no header)."""
        if not self.prefer_wait_s:
            return 0
        n = int(min(self.prefer_wait_s, run.deadline - self._clock() - 2.0))
        if run.max_billed_s is not None:  # answer before the billed-time deadline, to be able to cancel
            n = min(n, int(run.max_billed_s - 1.0))
        return n if n >= 1 else 0

    def _error(self, exc: BaseException, phase: Phase) -> BackendError:
        return map_error(exc, phase, (self._token,))

    def _after_create_error(self, run: _Run, exc: BaseException) -> None:
        """A 201 with a broken body may still name the prediction: keep its id and poll it."""
        doc = getattr(exc, "doc", None)
        m = _ID_IN_BODY.search(doc) if isinstance(doc, str) else None
        if m is None:
            raise self._error(exc, "create") from None
        run.prediction_id = m.group(1)

    def _created(self, run: _Run, pred: Prediction) -> Prediction:
        run.prediction_id = pred.id
        run.final = pred.status in FINAL
        self._observe(run, pred)
        return pred

    def _poll_delay(self, failures: int, err: BackendError | None) -> float:
        if err is not None and isinstance(err, RateLimited) and err.retry_after is not None:
            return max(err.retry_after, self.poll_interval_s)
        return float(min(self.poll_interval_s * 2.0**failures, 5.0))

    def _poll_failed(self, run: _Run, exc: BaseException, failures: int) -> BackendError | None:
        """None to keep polling after a transient GET failure; else the error to raise (after cancel)."""
        err = self._error(exc, "poll")
        if isinstance(err, AuthenticationError | InvalidBackendRequest):
            return err
        if failures >= self.max_poll_failures:
            return BackendTimeout(
                f"Replicate prediction {run.prediction_id}: lost track after {failures} failed polls ({err})",
                provider=PROVIDER,
            )
        return None

    def _timed_out(self, run: _Run, billed: bool = False) -> BackendTimeout:
        if billed:
            state = {True: "cancelled", False: "cancel failed", None: "not cancelled"}[run.cancelled]
            return ReservationExhausted(
                f"Replicate prediction {run.prediction_id} reached the {run.max_billed_s:.3g}s of billed time"
                f" its reservation pays for ({state})",
                provider=PROVIDER,
            )
        if run.prediction_id is None:
            return BackendTimeout(
                f"Replicate create got no answer within {run.call.timeout_s:g}s; "
                "the prediction may have started and is not re-sent",
                provider=PROVIDER,
            )
        state = {True: "cancelled", False: "cancel failed", None: "not cancelled"}[run.cancelled]
        return BackendTimeout(
            f"Replicate prediction {run.prediction_id} not finished within {run.call.timeout_s:g}s ({state})",
            provider=PROVIDER,
        )

    def _outputs(self, run: _Run, pred: Prediction) -> list[str]:
        """The output URLs of a final prediction, or the typed error it ended in."""
        if pred.status == "failed":
            text = redact(str(pred.error or "prediction failed"), (self._token,))
            cls = ContentFiltered if FILTER_PATTERN.search(text) else PredictionFailed
            raise cls(f"Replicate prediction {pred.id} failed: {text}", provider=PROVIDER)
        if pred.status == "canceled":
            raise PredictionFailed(f"Replicate prediction {pred.id} was canceled", provider=PROVIDER)
        out = pred.output
        urls = [out] if isinstance(out, str) else out if isinstance(out, list) else None
        if not urls or not all(isinstance(u, str) for u in urls):
            raise BadResponse(f"Replicate prediction {pred.id} returned no image URLs", provider=PROVIDER)
        if len(urls) < run.call.request.n:
            raise BadResponse(
                f"Replicate prediction {pred.id} returned {len(urls)} of {run.call.request.n} images",
                provider=PROVIDER,
            )
        return urls

    def _download_timeout(self, run: _Run) -> float:
        """Outputs are already paid for: give them a short grace past the deadline rather than lose them."""
        return max(run.deadline - self._clock(), 0.0) + self.download_grace_s

    def _result(self, run: _Run, pred: Prediction, urls: list[str], images: list[bytes]) -> BackendResult:
        metrics = pred.metrics or {}
        predict = metrics.get("predict_time")
        seed = run.input.get(run.seed_key) if run.seed_key else None
        if seed is None:
            m = _SEED_IN_LOGS.search(pred.logs or "")
            seed = int(m.group(1)) if m else None
        return BackendResult(
            images=tuple(images),
            usage=Usage(
                images=len(images),
                elapsed_s=self._clock() - run.started,
                predict_time_s=float(predict) if isinstance(predict, int | float) else None,
                hardware=run.call.options.get("hardware"),
                provider_request_id=pred.id,
            ),
            seed=seed if isinstance(seed, int) else None,
            metadata={
                "prediction_id": pred.id,
                "model": run.ref.model,
                "version": run.ref.version or pred.version,
                "billing": run.ref.billing,
                "status": pred.status,
                "input": {k: v for k, v in run.input.items() if k not in run.private_keys},
                "output_hosts": sorted({self.downloads.describe(u) for u in urls}),
            },
        )

    # ------------------------------------------------------------------ sync

    def generate(self, call: BackendCall) -> BackendResult:
        run = self._start(call)
        token = DEADLINE.set(run.deadline)
        try:
            pred = self._create(run)
            pred = self._poll(run, pred)
            urls = self._outputs(run, pred)
            images = [self._fetch(run, url) for url in urls]
            return self._result(run, pred, urls, images)
        finally:
            DEADLINE.reset(token)

    def _create(self, run: _Run) -> Prediction | None:
        wait, inp = self._wait_header(run), run.input
        try:
            if run.ref.version:
                pred = self._replicate.predictions.create(version=run.ref.version, input=inp, wait=wait)
            else:
                pred = self._replicate.models.predictions.create(
                    model=(run.ref.owner, run.ref.name), input=inp, wait=wait
                )
        except (HTTPStatusError, httpx.HTTPError, ValueError) as exc:
            self._after_create_error(run, exc)
            return None
        return self._created(run, pred)

    def _poll(self, run: _Run, pred: Prediction | None) -> Prediction:
        failures, last = 0, None
        while pred is None or pred.status not in FINAL:
            left, billed = self._left(run)
            if left <= 0:
                self._cancel(run)
                raise self._timed_out(run, billed)
            if pred is not None or failures:
                self._sleep(min(self._poll_delay(failures, last), left))
            try:
                pred = self._replicate.predictions.get(str(run.prediction_id))
                self._observe(run, pred)
                failures, last = 0, None
            except (HTTPStatusError, httpx.HTTPError, ValueError) as exc:
                failures += 1
                last = self._error(exc, "poll")
                fatal = self._poll_failed(run, exc, failures)
                if fatal is not None:
                    if not isinstance(fatal, AuthenticationError):
                        self._cancel(run)
                    raise fatal from None
        run.final = True
        return pred

    def _cancel(self, run: _Run) -> None:
        if run.prediction_id is None or run.final:
            return
        token = DEADLINE.set(time.monotonic() + self.cancel_timeout_s)
        try:
            self._replicate.predictions.cancel(run.prediction_id)
            run.cancelled = True
        except (HTTPStatusError, httpx.HTTPError, ValueError):
            run.cancelled = False
        finally:
            DEADLINE.reset(token)

    def _fetch(self, run: _Run, url: str) -> bytes:
        client = self._file_client()
        return self.download_retry.run(
            lambda: self.downloads.fetch(client, url, timeout_s=self._download_timeout(run)),
            sleep=self._sleep,
        )

    # ------------------------------------------------------------------ async

    async def agenerate(self, call: BackendCall) -> BackendResult:
        run = self._start(call)
        token = DEADLINE.set(run.deadline)
        try:
            try:
                async with asyncio.timeout(call.timeout_s):
                    pred = await self._acreate(run)
                    pred = await self._apoll(run, pred)
            except TimeoutError:
                await self._acancel(run)
                raise self._timed_out(run) from None
            except asyncio.CancelledError:
                await self._acancel_shielded(run)
                raise
            urls = self._outputs(run, pred)
            images = [await self._afetch(run, url) for url in urls]
            return self._result(run, pred, urls, images)
        finally:
            DEADLINE.reset(token)

    async def _acreate(self, run: _Run) -> Prediction | None:
        wait, inp = self._wait_header(run), run.input
        try:
            if run.ref.version:
                pred = await self._replicate.predictions.async_create(
                    version=run.ref.version, input=inp, wait=wait
                )
            else:
                pred = await self._replicate.models.predictions.async_create(
                    model=(run.ref.owner, run.ref.name), input=inp, wait=wait
                )
        except (HTTPStatusError, httpx.HTTPError, ValueError) as exc:
            self._after_create_error(run, exc)
            return None
        return self._created(run, pred)

    async def _apoll(self, run: _Run, pred: Prediction | None) -> Prediction:
        failures, last = 0, None
        while pred is None or pred.status not in FINAL:
            left, billed = self._left(run)
            if left <= 0:
                await self._acancel(run)
                raise self._timed_out(run, billed)
            if pred is not None or failures:
                await self._async_sleep(min(self._poll_delay(failures, last), left))
            try:
                pred = await self._replicate.predictions.async_get(str(run.prediction_id))
                self._observe(run, pred)
                failures, last = 0, None
            except (HTTPStatusError, httpx.HTTPError, ValueError) as exc:
                failures += 1
                last = self._error(exc, "poll")
                fatal = self._poll_failed(run, exc, failures)
                if fatal is not None:
                    if not isinstance(fatal, AuthenticationError):
                        await self._acancel(run)
                    raise fatal from None
        run.final = True
        return pred

    async def _acancel(self, run: _Run) -> None:
        if run.prediction_id is None or run.final:
            return
        token = DEADLINE.set(time.monotonic() + self.cancel_timeout_s)
        try:
            async with asyncio.timeout(self.cancel_timeout_s):
                await self._replicate.predictions.async_cancel(run.prediction_id)
            run.cancelled = True
        except (HTTPStatusError, httpx.HTTPError, ValueError, TimeoutError):
            run.cancelled = False
        finally:
            DEADLINE.reset(token)

    async def _acancel_shielded(self, run: _Run) -> None:
        """On task cancellation: still cancel the prediction, bounded, even if cancelled again meanwhile."""
        if run.prediction_id is None or run.final:
            return
        task = asyncio.ensure_future(self._acancel(run))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def _afetch(self, run: _Run, url: str) -> bytes:
        client = self._file_aclient()
        return await self.download_retry.arun(
            lambda: self.downloads.afetch(client, url, timeout_s=self._download_timeout(run)),
            sleep=self._async_sleep,
        )


__all__ = ["FILTER_PATTERN", "PredictionFailed", "ReplicateBackend"]
