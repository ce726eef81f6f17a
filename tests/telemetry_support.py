"""OpenTelemetry SDK providers wired to in-memory exporters, for tests that search spans and metrics."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.audit import Telemetry


def in_memory_telemetry() -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    """A :class:`Telemetry` whose finished spans and metrics stay readable in memory."""
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    return Telemetry(tp, MeterProvider(metric_readers=[reader])), spans, reader
