"""``MockBackend(fn)``: a backend whose behaviour is a plain function, for users' own tests.

Like ``httpx.MockTransport``: ``fn`` receives the :class:`BackendCall` and returns a
:class:`BackendResult`, a list of images (PNG bytes or PIL images), or raises a BackendError to
simulate a failure. With no ``fn`` it returns flat grey PNGs of the requested size.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .base import Backend, BackendCall, BackendResult, Usage

MockResult = BackendResult | Sequence[Any]
MockFn = Callable[[BackendCall], MockResult | Awaitable[MockResult]]


def solid_png(width: int, height: int, value: int = 128) -> bytes:
    """A flat PNG of the given size (mode RGB)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


class MockBackend(Backend):
    """A backend driven by a function; counts its calls in ``calls``."""

    name = "mock"

    def __init__(self, fn: MockFn | None = None, **_options: Any) -> None:
        self._fn = fn
        self.calls: list[BackendCall] = []

    def _default(self, call: BackendCall) -> BackendResult:
        r = call.request
        w, h = r.width or 256, r.height or 256
        return BackendResult(
            images=tuple(solid_png(w, h) for _ in range(r.n)),
            usage=Usage(images=r.n, elapsed_s=0.0),
            seed=r.seed,
        )

    def _finish(self, call: BackendCall, out: MockResult, started: float) -> BackendResult:
        if isinstance(out, BackendResult):
            return out
        images = tuple(_encode(x) for x in out)
        return BackendResult(
            images=images,
            usage=Usage(images=len(images), elapsed_s=time.perf_counter() - started),
            seed=call.request.seed,
        )

    def generate(self, call: BackendCall) -> BackendResult:
        self.calls.append(call)
        started = time.perf_counter()
        if self._fn is None:
            return self._default(call)
        out = self._fn(call)
        if asyncio.iscoroutine(out):
            out.close()
            raise TypeError("MockBackend: an async fn can only be used with AsyncGateway")
        return self._finish(call, out, started)  # type: ignore[arg-type]

    async def agenerate(self, call: BackendCall) -> BackendResult:
        self.calls.append(call)
        started = time.perf_counter()
        if self._fn is None:
            return self._default(call)
        out = self._fn(call)
        if asyncio.iscoroutine(out) or isinstance(out, Awaitable):
            out = await out
        return self._finish(call, out, started)


def _encode(x: Any) -> bytes:
    if isinstance(x, bytes | bytearray):
        return bytes(x)
    buf = io.BytesIO()
    x.save(buf, format="PNG")
    return buf.getvalue()
