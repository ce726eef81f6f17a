"""The OpenAI-compatible images server: a thin Starlette shell over :class:`~gateway.AsyncGateway`.

Every image request goes through the same core as a Python call (policy, routing, budgets,
provenance, audit); the server only authenticates the key, turns the wire format into a request and a
context, and turns the result or the error back into OpenAI's shapes. It never calls a backend.

Routes are a list, middleware is composition, and every exception (the gateway's, Starlette's, an
unexpected one) goes through the one handler in :mod:`gateway.server.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ..client import AsyncGateway
from ..config import Settings
from ..types import GenerationResult
from . import errors
from .errors import BadRequest, InvalidApiKey, NotAvailable
from .keys import ApiKey, KeyStore
from .metrics import MetricsMiddleware, PrometheusMetrics
from .scope import CallInfo, KeyPolicy, ObservedAudit, current
from .wire import ServerSettings, accepts_keyword, images_response, parse_body, resolve

T = TypeVar("T")
ADMIN_KEY_ENV = "GATEWAY_ADMIN_KEY"
_PROBE = "a handwritten 7"  # a neutral prompt for listing the routes a key's policy allows


@dataclass
class ServerState:
    gateway: AsyncGateway
    keys: KeyStore
    options: ServerSettings
    metrics: PrometheusMetrics
    tracer: trace.Tracer
    closers: tuple[Callable[[], None], ...] = ()
    ready: bool = True


def _state(request: Request) -> ServerState:
    return cast(ServerState, request.app.state.gateway_server)


def response_headers(request: Request) -> dict[str, str]:
    """``x-request-id`` (the gateway's request id once it has one), cost, audit seq and route."""
    call: CallInfo | None = getattr(request.state, "call", None)
    rid = (call.request_id if call else None) or getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex
    result: GenerationResult | None = getattr(request.state, "result", None)
    extra = {}
    if result is not None and getattr(result, "replayed", False):
        extra["x-gateway-replayed"] = "true"  # an Idempotency-Key repeat: nothing was paid again
    return {
        **extra,
        "x-request-id": rid,
        "x-gateway-cost-usd": str(result.cost_usd) if result is not None else "0",
        "x-gateway-audit-seq": str(call.audit_seq) if call and call.audit_seq is not None else "",
        "x-gateway-route": f"{result.provider}/{result.model}"
        if result
        else (call.route if call else "") or "",
    }


async def _blocking(blocking: bool, fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn) if blocking else fn()


async def authenticate(request: Request) -> ApiKey:
    """``Authorization: Bearer <key>`` or ``api-key: <key>`` (Azure's header), checked against the store."""
    auth = request.headers.get("authorization", "")
    presented = request.headers.get("api-key", "")  # Azure-style clients send only this one
    if not presented and auth[:7].lower() == "bearer ":
        presented = auth[7:].strip()
    if not presented:
        raise InvalidApiKey("missing API key: send 'Authorization: Bearer <key>' or 'api-key: <key>'")
    st = _state(request)
    key = await _blocking(st.keys.blocking_io, lambda: st.keys.authenticate(presented))
    if key is None:
        raise InvalidApiKey("invalid or revoked API key")
    return key


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


async def _govern(request: Request, key: ApiKey, run: Callable[[], Any], route: str) -> JSONResponse:
    """Run one gateway call as the key, under a server span whose parent is the caller's traceparent."""
    st = _state(request)
    info = CallInfo(key)
    request.state.call = info
    parent = propagate.extract(dict(request.headers))
    attrs = {"http.request.method": request.method, "http.route": route, "gateway.key": key.name}
    token = current.set(info)
    try:
        with st.tracer.start_as_current_span(
            f"{request.method} {route}", context=parent, kind=SpanKind.SERVER, attributes=attrs,
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            try:
                result: GenerationResult = await run()
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)  # the message stays out of spans
                span.set_status(trace.StatusCode.ERROR)
                raise
    finally:
        current.reset(token)
    request.state.result = result
    return JSONResponse(images_response(result), headers=response_headers(request))


def _idempotency(request: Request, fn: Any) -> dict[str, Any]:
    value = request.headers.get("idempotency-key")
    if value and accepts_keyword(fn, "idempotency_key"):
        return {"idempotency_key": value[:256]}
    return {}


async def generations(request: Request) -> Response:
    key = await authenticate(request)
    st = _state(request)
    body = parse_body(await _json(request))
    gw = st.gateway
    options, context = resolve(body, key, gw._core.catalog, st.options.aliases)
    options.update(_idempotency(request, gw.generate))
    return await _govern(
        request, key, lambda: gw.generate(body.prompt, context=context, **options), "/v1/images/generations"
    )


async def edits(request: Request) -> Response:
    key = await authenticate(request)
    st = _state(request)
    gw = st.gateway
    edit = getattr(gw, "edit", None)
    if edit is None:
        raise NotAvailable("image edits are not available in this gateway version")
    try:
        form = await request.form(max_files=17, max_part_size=4 * 1024 * 1024)
    except Exception:
        raise BadRequest(
            "the body must be multipart/form-data with image, prompt and optional mask"
        ) from None
    try:
        files = [f for f in (*form.getlist("image"), *form.getlist("image[]")) if isinstance(f, UploadFile)]
        if not files:
            raise BadRequest("an edit needs at least one image part ('image' or 'image[]')", param="image")
        images = tuple([await f.read() for f in files])
        mask_part = form.get("mask")
        mask = await mask_part.read() if isinstance(mask_part, UploadFile) else None
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    finally:
        await form.close()
    body = parse_body(fields)
    options, context = resolve(body, key, gw._core.catalog, st.options.aliases, edit=True)
    options.update(_idempotency(request, edit))
    return await _govern(
        request,
        key,
        lambda: edit(images, body.prompt, mask=mask, context=context, **options),
        "/v1/images/edits",
    )


async def models(request: Request) -> Response:
    """The routes this key's policy lets it use (for each of its use cases), plus its aliases."""
    key = await authenticate(request)
    st = _state(request)
    ids: dict[str, str] = {}
    for use_case in key.use_cases:
        plan = st.gateway.explain(_PROBE, context=key.context(use_case))
        if not plan.decision.allowed:
            continue
        for cand in plan.routes.candidates:
            if cand.stage != "policy":
                ids.setdefault(cand.route.key, cand.route.provider)
    for alias, use_case in st.options.aliases.items():
        if use_case in key.use_cases:
            ids.setdefault(alias, "gateway")
    data = [{"id": i, "object": "model", "created": 0, "owned_by": owner} for i, owner in ids.items()]
    return JSONResponse({"object": "list", "data": data}, headers=response_headers(request))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers=response_headers(request))


async def readyz(request: Request) -> Response:
    """Ready when both stores answer (and the server is not shutting down)."""
    st = _state(request)
    ok = st.ready
    if ok:
        try:
            await _blocking(True, lambda: st.keys.list())
            audit = st.gateway._core.audit
            await _blocking(True, audit.head)
        except Exception:
            ok = False
    status = 200 if ok else 503
    return JSONResponse(
        {"status": "ready" if ok else "unavailable"}, status, headers=response_headers(request)
    )


async def metrics(request: Request) -> Response:
    st = _state(request)
    return Response(
        st.metrics.render(), media_type=st.metrics.content_type, headers=response_headers(request)
    )


ROUTES: list[BaseRoute] = [
    Route("/v1/images/generations", generations, methods=["POST"]),
    Route("/v1/images/edits", edits, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]


def create_app(
    settings: Settings | None = None,
    *,
    admin_key: str | None = None,
    keys: KeyStore | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    **components: Any,
) -> Starlette:
    """The ASGI app. ``components`` go to :class:`AsyncGateway` (``backends=``, ``ledger=`` ...), the
    policy and audit log wrapped so keys' budgets and names reach the decision and every record.

    ``admin_key`` (default ``$GATEWAY_ADMIN_KEY``) mounts the read-only dashboard under
    ``/dashboard``; without one there is no dashboard.
    """
    from ..audit import Telemetry, configure_from_env
    from ..audit.configure import audit_from_settings
    from ..policy import PolicySet

    s = settings or Settings.load()
    options = _server_settings(s)
    prom = PrometheusMetrics()
    if tracer_provider is None:
        tracer_provider = configure_from_env()[0]
        if tracer_provider is None and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
            from opentelemetry.sdk.trace import TracerProvider

            tracer_provider = TracerProvider()
    capture = bool(s.telemetry.get("capture_prompt", False))
    steps = bool(s.telemetry.get("step_spans", False))
    components.setdefault(
        "telemetry", Telemetry(tracer_provider, prom.provider, capture_prompt=capture, step_spans=steps)
    )
    policy = components.pop("policy", None) or PolicySet.load(s.policy_paths)
    audit = components.pop("audit", None) or audit_from_settings(s)
    s.home.mkdir(parents=True, exist_ok=True)
    gateway = AsyncGateway(s, policy=KeyPolicy(policy), audit=ObservedAudit(audit), **components)
    keystore = keys or KeyStore(s.resolved_ledger_url, cache_s=options.key_cache_s)
    tracer = trace.get_tracer("diffusion-gateway.server", tracer_provider=tracer_provider)
    routes = list(ROUTES)
    closers: list[Callable[[], None]] = []
    admin = admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV) or None
    if admin:
        dashboard, close_dashboard = _dashboard(s, admin)
        routes.append(Mount("/dashboard", app=dashboard))
        closers.append(close_dashboard)
    state = ServerState(gateway, keystore, options, prom, tracer, tuple(closers))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # uvicorn calls this after in-flight requests have finished (or been cancelled, which
            # releases their reservations): now the stores can close.
            state.ready = False
            await gateway.aclose()
            for close in (keystore.close, *state.closers, prom.shutdown):
                close()

    handlers: dict[Any, Any] = {Exception: errors.handle}
    from starlette.exceptions import HTTPException

    handlers[HTTPException] = errors.handle
    from ..errors import GatewayError

    handlers[GatewayError] = errors.handle
    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=prom)],
        exception_handlers=handlers,
        lifespan=lifespan,
        max_body_size=options.max_body_bytes,
    )
    app.state.gateway_server = state
    return app


def _server_settings(s: Settings) -> ServerSettings:
    from pydantic import ValidationError

    from ..errors import ConfigError

    try:
        return ServerSettings.model_validate(s.server)
    except ValidationError as exc:
        raise ConfigError(f"invalid server settings: {exc.errors()[0]['msg']}") from None


def _dashboard(s: Settings, admin_key: str) -> tuple[Any, Callable[[], None]]:
    from ..dashboard import create_app as dashboard_app
    from ..dashboard import open_sources
    from ..routing import default_stats_path

    sources = open_sources(
        s.resolved_ledger_url,
        s.resolved_audit_url,
        checkpoint_dir=s.home / "checkpoints",
        route_stats=default_stats_path(s.home),
        breaker_threshold=s.routing.breaker_threshold,
        breaker_cooldown_s=s.routing.breaker_cooldown_s,
    )
    from ..archive import open_archive
    from ..errors import GatewayError

    try:
        sources.archive = open_archive(s)  # thumbnails on record pages
    except GatewayError as exc:
        sources.notices.append(f"archive: {exc}")
    return dashboard_app(sources, host="0.0.0.0", token=admin_key), sources.close  # noqa: S104


def app_from_env() -> Starlette:
    """uvicorn factory for ``--workers N``: each worker process builds its app from the environment
    (``GATEWAY_SERVER_CONFIG`` is the config file ``gateway serve --config`` was given)."""
    path = os.environ.get("GATEWAY_SERVER_CONFIG") or None
    return create_app(Settings.load(path))


__all__ = ["ADMIN_KEY_ENV", "ROUTES", "ServerState", "app_from_env", "authenticate", "create_app"]
