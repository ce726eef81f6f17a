"""The dashboard as a small Starlette application: GET-only, server-rendered, read-only.

Starlette does the ASGI work (parsing the scope, headers and query, lifespan, sending); this module
keeps only what is the dashboard's own, as one pure function from :class:`Request` to
:class:`Response` (``DashboardApp.handle``), which the tests call directly. Safety is in the shape:
only GET and HEAD exist; every response carries a strict Content-Security-Policy (no script at all)
and no-store caching; the Host header must be a loopback name unless the server was started with a
token (so a DNS-rebinding page cannot read a local dashboard); with a token, a request needs
``Authorization: Bearer`` or the session cookie that a one-time ``?token=`` visit sets (the token
then leaves the address bar at once). Mounted under a prefix (``/dashboard`` in ``gateway serve``),
its links and cookie follow the mount point.

Store reads block (SQLite, psycopg), so each request is rendered in a worker thread and the event
loop only moves bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route

from .audit_pages import audit_page, record_page
from .html import CSP, e, shell
from .pages import Links, cost_page, providers_page
from .report import notices, render_report_html
from .timeseries import parse_window
from .views import Sources, audit_view, cost_view, providers_view, record_view

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

COOKIE = "gateway_dashboard"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_AUDIT_FILTERS = ("event", "team", "use_case", "provider", "model", "request_id")
_RECORD = re.compile(r"^/audit/(\d{1,18})$")
_ARCHIVED = re.compile(r"^/archive/([0-9a-f]{64})$")
_log = logging.getLogger("gateway.dashboard")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # below the mount point
    query: dict[str, str]
    headers: dict[str, str]
    root: str = ""  # the mount point ("" at the top of its own server)


def _html(status: int, title: str, body: str, now: dt.datetime, active: str = "", root: str = "") -> Response:
    return Response(status, shell(title, body, active=active, generated=now, root=root).encode())


def _error(status: int, message: str, now: dt.datetime, root: str = "") -> Response:
    body = f'<h1>{status}</h1><div class="banner bad">{e(message)}</div>'
    return _html(status, str(status), body, now, root=root)


class DashboardApp:
    """ASGI callable. ``token=None`` serves anyone who can reach it, so bind it to loopback only."""

    def __init__(
        self,
        sources: Sources,
        *,
        token: str | None = None,
        allowed_hosts: frozenset[str] | None = LOOPBACK_HOSTS,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.sources = sources
        self._token = token
        self._session = (
            hmac.new(token.encode(), b"gateway-dashboard-session", hashlib.sha256).hexdigest()
            if token
            else ""
        )
        self.allowed_hosts = allowed_hosts
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

        self._app = Starlette(routes=[Route("/{path:path}", self._endpoint)], lifespan=self._lifespan)

    # ------------------------------------------------------------------ ASGI (Starlette)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            return  # not offered; returning closes the connection
        await self._app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(self.sources.close)

    async def _endpoint(self, request: HTTPRequest) -> HTTPResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        path = request.url.path[len(root) :] if request.url.path.startswith(root) else request.url.path
        req = Request(
            request.method.upper(),
            path or "/",
            dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()},
            root,
        )
        resp = await run_in_threadpool(self.handle, req)
        out = HTTPResponse(b"" if req.method == "HEAD" else resp.body, resp.status)
        out.raw_headers = self._headers(resp)  # exactly ours (HEAD keeps the GET's length)
        return out

    @staticmethod
    def _headers(resp: Response) -> list[tuple[bytes, bytes]]:
        base = [
            ("content-type", resp.content_type),
            ("content-length", str(len(resp.body))),
            ("content-security-policy", CSP),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
        ]
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in [*base, *resp.headers]]

    # ------------------------------------------------------------------ requests

    def handle(self, req: Request) -> Response:
        """One request to one response; never raises (a failure is a 500 page naming the error type)."""
        now = self.clock()
        host = _host(req.headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return _error(421, f"this dashboard answers to {', '.join(sorted(self.allowed_hosts))} only", now)
        if req.method not in ("GET", "HEAD"):
            resp = _error(405, "the dashboard is read-only: GET and HEAD only", now)
            resp.headers.append(("allow", "GET, HEAD"))
            return resp
        denied = self._authorize(req, now)
        if denied is not None:
            return denied
        try:
            return self._route(req, now)
        except ValueError as exc:
            return _error(400, str(exc), now, req.root)
        except Exception as exc:
            _log.exception("dashboard: %s %s failed", req.method, req.path)
            return _error(500, f"internal error ({type(exc).__name__}); see the server log", now)

    def _authorize(self, req: Request, now: dt.datetime) -> Response | None:
        if not self._token:
            return None
        given = req.query.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                return self._login(now, "wrong token")
            rest = {k: v for k, v in req.query.items() if k != "token"}
            from .html import qs

            cookie = f"{COOKIE}={self._session}; HttpOnly; SameSite=Strict; Path={req.root or '/'}"
            location = req.root + req.path + qs(rest)
            return Response(303, b"", headers=[("location", location), ("set-cookie", cookie)])
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(
            auth[7:].strip().encode(), self._token.encode()
        ):
            return None
        if hmac.compare_digest(
            _cookie(req.headers.get("cookie", ""), COOKIE).encode(), self._session.encode()
        ):
            return None
        return self._login(now, "")

    @staticmethod
    def _login(now: dt.datetime, problem: str) -> Response:
        note = f'<div class="banner bad">{e(problem)}</div>' if problem else ""
        form = (
            '<form class="filters" method="get"><label>token<input name="token" type="password" '
            'autocomplete="off" size="40"></label><button>Open</button></form>'
        )
        resp = _html(401, "Token required", f"<h1>This dashboard needs its token</h1>{note}{form}", now)
        resp.headers.append(("www-authenticate", 'Bearer realm="gateway-dashboard"'))
        return resp

    def _route(self, req: Request, now: dt.datetime) -> Response:
        src, path, q = self.sources, req.path, req.query
        if path == "/healthz":
            return Response(200, b"ok\n", "text/plain; charset=utf-8")
        if path == "/favicon.ico":
            return Response(204)
        top = notices(src)
        if path in ("/", "/cost"):
            window = parse_window(q, now)
            view = cost_view(src, window, q.get("by", "team"))
            body = cost_page(view) if view is not None else "<h1>Cost</h1>"
            return _html(200, "Cost", top + body, now, "cost", req.root)
        if path == "/audit":
            window = parse_window(q, now)
            filters = {k: q[k] for k in _AUDIT_FILTERS if q.get(k)}
            before = int(q["before"]) if q.get("before", "").isdigit() else None
            aview = audit_view(src, window, filters, before)
            links = Links(live=True, root=req.root)
            body = audit_page(aview, links) if aview is not None else "<h1>Audit</h1>"
            return _html(200, "Audit", top + body, now, "audit", req.root)
        match = _RECORD.match(path)
        if match:
            rview = record_view(src, int(match.group(1)))
            if rview is None:
                return _error(404, f"no audit record {match.group(1)}", now, req.root)
            page = record_page(rview, Links(live=True, root=req.root, thumbs=src.archive is not None))
            return _html(200, f"Record {rview.seq}", top + page, now, "audit", req.root)
        archived = _ARCHIVED.match(path)
        if archived:
            return _archived_image(src, archived.group(1), now)
        if path == "/providers":
            window = parse_window(q, now)
            return _html(
                200, "Providers", top + providers_page(providers_view(src, window), window), now, "providers",
                req.root,
            )  # fmt: skip
        if path == "/report.html":
            window = parse_window(q, now)
            name = f"gateway-report-{now:%Y%m%d-%H%M}.html"
            return Response(
                200,
                render_report_html(src, window).encode(),
                headers=[("content-disposition", f'attachment; filename="{name}"')],
            )
        return _error(404, f"nothing at {path}", now, req.root)


_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})


def _archived_image(src: Sources, sha256: str, now: dt.datetime) -> Response:
    """An archived output by its sha256 (same origin: the page still fetches nothing external)."""
    if src.archive is None:
        return _error(404, "no archive configured", now)
    from ..errors import GatewayError

    try:
        data = src.archive.get(sha256)
        meta = src.archive.head(sha256)
    except GatewayError as exc:
        return _error(404, str(exc), now)
    mime = meta.mime if meta is not None and meta.mime in _IMAGE_TYPES else "application/octet-stream"
    return Response(200, data, mime, headers=[("content-disposition", f'inline; filename="{sha256[:16]}"')])


def _host(header: str) -> str:
    """The host name of a Host header, without port or IPv6 brackets."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return ""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    import ipaddress

    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(
    sources: Sources,
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> DashboardApp:
    """The app for a server bound to ``host``: loopback needs no token; any other address does."""
    from ..errors import UsageError

    if not is_loopback(host) and not token:
        raise UsageError(f"binding the dashboard to {host} exposes it beyond this machine: give it a --token")
    allowed = LOOPBACK_HOSTS if is_loopback(host) and not token else None
    return DashboardApp(sources, token=token, allowed_hosts=allowed, clock=clock)


__all__ = ["DashboardApp", "Request", "Response", "create_app", "is_loopback"]
