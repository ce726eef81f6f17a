"""Prometheus ``/metrics`` from the OpenTelemetry meter, plus the HTTP server's own two instruments.

The gateway's instruments (``gen_ai.client.operation.duration``, ``gateway.cost.usd``, ...) are
OpenTelemetry; the well-known bridge is ``opentelemetry-exporter-prometheus``, a metric reader that
renders them in a ``prometheus_client`` registry on each scrape. Each app gets its own registry, so
several apps in one process (tests) never mix series. With several workers each process answers for
itself (a scrape reaches one of them): for one merged view, export OTLP to a Collector instead
(``examples/observability/``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class PrometheusMetrics:
    """A meter provider whose reader is a private Prometheus registry."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(registry=self.registry)
        self.provider = MeterProvider(metric_readers=[self._reader])
        meter = self.provider.get_meter("diffusion-gateway.server")
        self.requests = meter.create_counter(
            "gateway.server.requests", unit="{request}", description="HTTP requests answered"
        )
        self.duration = meter.create_histogram(
            "http.server.request.duration", unit="s", description="HTTP server request duration"
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()


class MetricsMiddleware:
    """Counts every HTTP response by route template and status (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: PrometheusMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            attrs = {
                "http.request.method": scope.get("method", ""),
                "http.route": getattr(route, "path", "") or "unmatched",
                "http.response.status_code": status,
            }
            self.metrics.requests.add(1, attrs)
            self.metrics.duration.record(time.perf_counter() - started, attrs)


__all__ = ["MetricsMiddleware", "PrometheusMetrics"]
