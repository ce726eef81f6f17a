"""A small threaded HTTP/1.1 server for the loopback fakes, with fault injection.

Two details decide whether a Python fake is fast enough to benchmark against: ``TCP_NODELAY`` on every
accepted socket, and each response written with one ``sendall`` (status line, headers and body in one
buffer). Without them a client that sends its request in two segments waits ~40 ms per call on
delayed ACKs (Nagle meets delayed ACK).

Faults are queued with :meth:`FakeServer.inject` and consumed by the next matching requests. The
``slow`` fault waits on an event rather than sleeping, so :meth:`FakeServer.release` or stopping the
server ends it at once and no test waits for the delay.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it (headers with lower-case names)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    kind: str = ""  # what the fake took it for: "create", "poll", "invoke", "file" ...
    fault: str | None = None  # the fault injected into its answer, if any
    info: Mapping[str, Any] = field(default_factory=dict)  # fake-specific facts (region, model id ...)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> list[FormPart]:
        """The parts of a ``multipart/form-data`` body, in order (ValueError if it is not one)."""
        return parse_multipart(self.headers.get("content-type", ""), self.body)


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part of a multipart form: a field (``filename`` None) or a file with its declared type."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def parse_multipart(content_type: str, body: bytes) -> list[FormPart]:
    """Parse ``multipart/form-data`` with the standard library's MIME parser (as a server would)."""
    import email.parser
    import email.policy

    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError(f"not a multipart/form-data body (Content-Type {content_type!r})")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise ValueError("multipart body without parts")
    parts: list[FormPart] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a form part without a name")
        payload = part.get_payload(decode=True)
        declared = part.get("content-type")
        parts.append(FormPart(name, payload if isinstance(payload, bytes) else b"",
                              part.get_filename(), str(declared) if declared else None))  # fmt: skip
    return parts


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = JSON

    @classmethod
    def json(
        cls, status: int, data: Any, headers: Mapping[str, str] | None = None, content_type: str = JSON
    ) -> Reply:
        return cls(
            status, json.dumps(data, separators=(",", ":")).encode(), dict(headers or {}), content_type
        )


class Reset:
    """Answer by resetting the connection (RST, no response bytes)."""


@dataclass
class Fault:
    name: str
    remaining: int
    params: dict[str, Any]

    @property
    def on(self) -> str:
        return str(self.params.get("on", "default"))


class FaultQueue:
    """Faults waiting to be applied, in injection order; thread-safe."""

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(known)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, name: str, times: int, params: dict[str, Any]) -> None:
        if name not in self.known:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(self.known))}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(Fault(name, times, params))

    def take(self, kind: str, default_on: Mapping[str, str]) -> Fault | None:
        """The first queued fault that targets a request of ``kind``; consumes one of its ``times``."""
        with self._lock:
            for fault in self._faults:
                target = fault.params.get("on") or default_on.get(fault.name, "any")
                if target in (kind, "any"):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return Fault(fault.name, 1, dict(fault.params))
            return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(f.name, f.remaining) for f in self._faults]


@functools.lru_cache(maxsize=64)
def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A real PNG of ``width x height``: a gradient tinted by ``seed`` (outputs differ per seed)."""
    from PIL import Image

    grad = Image.linear_gradient("L").resize((width, height))
    tint = Image.new("L", (width, height), seed % 256)
    img = Image.merge("RGB", (grad, tint, grad.transpose(Image.Transpose.ROTATE_180)))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# The faults the token-priced image APIs' fakes (OpenAI, Gemini) both inject.
IMAGE_API_FAULTS = frozenset(
    {"rate_limit", "server_error", "moderation", "slow", "reset", "malformed_json", "truncated_base64",
     "no_usage"}
)  # fmt: skip


def retry_headers(fault: Fault) -> tuple[float, dict[str, str]]:
    """A ``rate_limit`` fault's delay and the headers that say it (``retry-after-ms`` and ``retry-after``)."""
    after = float(fault.params.get("retry_after", 1))
    return after, {"retry-after-ms": str(int(after * 1000)), "retry-after": str(max(1, round(after)))}


def truncate(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(8, int(len(data) * keep))]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # keep the fakes quiet
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if headers.get("connection", "").lower() == "close":
            self.close_connection = True
        answer = self.server.fake._dispatch(self.command, self.path, headers, body)
        if isinstance(answer, Reset):
            self._reset()
            return
        self._send(answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815

    def _send(self, reply: Reply) -> None:
        reason = (
            HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else "Status"
        )
        lines = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {len(reply.body)}"]
        if reply.body or reply.status >= 400:
            lines.append(f"Content-Type: {reply.content_type}")
        lines += [f"{k}: {v}" for k, v in reply.headers.items()]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + reply.body)  # one piece: one sendall
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # SO_LINGER 0: close sends RST, not FIN
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that went away mid-answer is normal under fault injection


class FakeServer:
    """Base of the loopback fakes: a real HTTP server on 127.0.0.1 in a daemon thread.

    Use as a context manager (or ``start()``/``stop()``). ``requests`` logs every request received,
    ``inject(fault, times=1, **params)`` queues a fault, ``release()`` ends pending ``slow`` answers.
    """

    FAULTS: ClassVar[frozenset[str]] = frozenset()
    DEFAULT_ON: ClassVar[Mapping[str, str]] = {}
    GENERIC_FAULTS: ClassVar[frozenset[str]] = frozenset({"slow", "reset"})

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.requests: list[RecordedRequest] = []
        self.faults = FaultQueue(self.FAULTS)
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._server = _Server((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        self._release.set()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # wake handler threads blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    # ------------------------------------------------------------------ faults

    def inject(self, fault: str, times: int = 1, **params: Any) -> None:
        """Make the next ``times`` matching requests fail with ``fault``.

        ``on=`` picks which requests a fault hits (``"any"`` for all); each fake documents its kinds
        and defaults. ``slow`` takes ``delay`` (seconds, default 30), ``rate_limit`` takes
        ``retry_after`` (seconds, default 1).
        """
        self.faults.add(fault, times, params)

    def release(self) -> None:
        """End every ``slow`` answer now (they then answer normally, to a client that has gone)."""
        self._release.set()
        self._release = threading.Event()

    def clear(self) -> None:
        """Forget queued faults and the request log."""
        self.faults.clear()
        with self._lock:
            self.requests.clear()

    def requests_of(self, kind: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.kind == kind]

    # ------------------------------------------------------------------ dispatch

    def _control(self, method: str, body: bytes) -> Reply:
        """``/__fake__/faults``: inject (POST ``{"fault", "times", ...params}``), list (GET), clear (DELETE).

        Lets a test in another process or language drive a fake started with ``python -m gateway.testing``.
        """
        if method == "GET":
            return Reply.json(200, {"pending": self.faults.pending(), "requests": len(self.requests)})
        if method == "DELETE":
            self.faults.clear()
            return Reply(204)
        try:
            spec = json.loads(body or b"{}")
            params = {k: v for k, v in spec.items() if k not in ("fault", "times")}
            self.inject(str(spec["fault"]), int(spec.get("times", 1)), **params)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return Reply.json(400, {"message": f"bad fault spec: {exc}"})
        return Reply.json(201, {"pending": self.faults.pending()})

    def _dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | Reset:
        if path.split("?")[0] == "/__fake__/faults":
            return self._control(method, body)
        kind, info = self.classify(method, path, headers)
        fault = self.faults.take(kind, self.DEFAULT_ON) if kind else None
        record = RecordedRequest(method, path, headers, body, kind, fault.name if fault else None, info)
        with self._lock:
            self.requests.append(record)
        if fault is not None and fault.name == "slow":
            self._release.wait(float(fault.params.get("delay", 30.0)))
            fault = None
        if fault is not None and fault.name == "reset":
            return Reset()
        try:
            return self.handle(record, fault)
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hung client
            return Reply.json(500, {"message": f"fake server error: {type(exc).__name__}: {exc}"})

    def classify(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        """The request's kind (what faults target) and facts to record."""
        raise NotImplementedError

    def handle(self, request: RecordedRequest, fault: Fault | None) -> Reply | Reset:
        raise NotImplementedError
