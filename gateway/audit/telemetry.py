"""OpenTelemetry for one generate call: a GenAI-convention span tree and the gateway's metrics.

Span tree of a request (names and attributes follow the GenAI semantic conventions; ours use the one
prefix ``gateway.``)::

    generate_content {model}        CLIENT   gen_ai.operation.name=generate_content, gen_ai.provider.name,
    |                                        gen_ai.request.model, gen_ai.output.type=image,
    |                                        gen_ai.request.seed, gen_ai.request.choice.count, error.type,
    |                                        gateway.decision, gateway.policy.rule_ids, gateway.cost.*, ...
    |   events: policy / routing / ledger.reserve / outputs  (RequestTrace.step; with their
    |           duration in gateway.step.duration_ms; child INTERNAL spans with ``step_spans=True``)
    `-- generate_content {model}    CLIENT (INTERNAL for the in-process model): one per backend attempt,
                                             server.address/port when remote

Steps are span *events* by default: a span costs a context switch, an id, a processor round and an
exporter record, which for four sub-millisecond bookkeeping steps was a quarter of the gateway's own
time; an event on the request span keeps the step's name, duration, attributes and error.
``telemetry.step_spans: true`` in gateway.yaml (``Telemetry(step_spans=True)``) restores child spans.

Metrics: ``gen_ai.client.operation.duration`` (s), ``gateway.images.generated``, ``gateway.cost.usd``
(by provider, model, team), ``gateway.policy.denials`` (by rule), ``gateway.budget.remaining.usd``.
Money is Decimal everywhere in the gateway; the cost and budget instruments get ``float(Decimal)``
at this boundary only, because OTel instruments take int or float and dashboards want dollars.

Privacy: the prompt never goes into a span unless ``capture_prompt`` (or the policy decision) opts in;
its sha256 and length always do. Every string attribute and error message is secret-scrubbed.
Providers are parameters: pass an SDK ``TracerProvider``/``MeterProvider`` (tests use in-memory ones);
``None`` means the global ones, which :func:`configure_from_env` sets from the standard OTEL_* vars.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .canonical import canonical_json
from .redact import redact

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from ..types import Context, Decision, GenerationResult, ImageRequest

OPERATION = "generate_content"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
#: Our backend names -> gen_ai.provider.name well-known values; others pass through unchanged.
PROVIDER_NAMES: Mapping[str, str] = {"bedrock": "aws.bedrock"}
#: The GenAI conventions' advisory buckets for gen_ai.client.operation.duration.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
PREFIX = "gateway."
_NAMESPACES = (PREFIX, "gen_ai.", "server.", "error.", "url.", "http.")
_DEFAULT_PORTS: Mapping[str, int] = {"https": 443, "http": 80}


def _hex_ids(span: trace.Span) -> tuple[str | None, str | None]:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _value(v: Any) -> Any:
    """An attribute value OTel accepts; strings scrubbed, Decimal exact as text, structures as JSON."""
    if isinstance(v, bool | int | float):
        return v
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, list | tuple | set | frozenset):
        items = list(v)
        if all(isinstance(i, str) for i in items):
            return tuple(redact(i) for i in items)
        if all(isinstance(i, bool) for i in items) or all(
            isinstance(i, int) and not isinstance(i, bool) for i in items
        ):
            return tuple(items)
    try:
        return redact(canonical_json(v))
    except (TypeError, ValueError):
        return redact(str(v))


def _attributes(attrs: Mapping[str, Any], prefix: str = PREFIX) -> dict[str, Any]:
    """Names become ``gateway.<name>`` unless already in a convention's namespace (gen_ai., server., ...)."""
    out: dict[str, Any] = {}
    for key, v in attrs.items():
        if v is None:
            continue
        out[key if key.startswith(_NAMESPACES) else prefix + key] = _value(v)
    return out


def _error_type(exc: BaseException) -> str:
    return type(exc).__qualname__


def _server(address: str | None) -> dict[str, Any]:
    if not address:
        return {}
    parts = urlsplit(address if "://" in address else f"//{address}")
    out: dict[str, Any] = {"server.address": parts.hostname or address}
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    if port is not None:
        out["server.port"] = port
    return out


class StepSpan:
    """A child span handle: add attributes, or mark it failed (scrubbed message, no stack trace)."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set(self, **attributes: Any) -> None:
        self.span.set_attributes(_attributes(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute under its full name (``gen_ai.response.id``, ``gateway.route``)."""
        if value is not None:
            self.span.set_attribute(key, _value(value))

    def error(self, exc: BaseException) -> None:
        message = redact(str(exc))
        self.span.set_attribute("error.type", _error_type(exc))
        self.span.set_status(Status(StatusCode.ERROR, message[:512] or _error_type(exc)))
        self.span.add_event("exception", {"exception.type": _error_type(exc), "exception.message": message})


class StepEvent:
    """A step recorded as one event on the request span: same interface as :class:`StepSpan`."""

    __slots__ = ("attributes", "name", "span")

    def __init__(self, span: trace.Span, name: str, attributes: dict[str, Any]) -> None:
        self.span, self.name, self.attributes = span, name, attributes

    def set(self, **attributes: Any) -> None:
        self.attributes.update(_attributes(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        if value is not None:
            self.attributes[key] = _value(value)

    def error(self, exc: BaseException) -> None:
        self.attributes["error.type"] = _error_type(exc)
        self.attributes["exception.message"] = redact(str(exc))[:512]


class RequestTrace:
    """The span of one generate call; created by :meth:`Telemetry.request`."""

    def __init__(
        self, telemetry: Telemetry, span: trace.Span, request: ImageRequest, context: Context, request_id: str
    ) -> None:
        self._t = telemetry
        self.span = span
        self.request = request
        self.context = context
        self.request_id = request_id
        self.trace_id, self.span_id = _hex_ids(span)
        self.provider: str | None = request.provider
        self.model: str | None = request.model
        self._started = time.perf_counter()
        self._attempts = 0
        self._finished = False

    def _child(self, name: str, kind: SpanKind, attributes: Mapping[str, Any]) -> Any:
        return self._t.tracer.start_as_current_span(
            name,
            context=trace.set_span_in_context(self.span),
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    @contextmanager
    def step(self, name: str, **attributes: Any) -> Iterator[StepSpan | StepEvent]:
        """One step (policy, routing, ledger.reserve, outputs, ...): an event on the request span, or
        a child span when the telemetry was made with ``step_spans=True``."""
        attrs = _attributes(attributes) if attributes else {}
        if not self._t.step_spans:
            handle = StepEvent(self.span, name, attrs)
            started = time.perf_counter()
            try:
                yield handle
            except BaseException as exc:
                handle.error(exc)
                raise
            finally:
                attrs["gateway.step.duration_ms"] = round((time.perf_counter() - started) * 1e3, 3)
                self.span.add_event(name, attrs)
            return
        with self._child(name, SpanKind.INTERNAL, attrs) as span:
            step = StepSpan(span)
            try:
                yield step
            except BaseException as exc:
                step.error(exc)
                raise

    @contextmanager
    def attempt(self, provider: str, model: str, server_address: str | None) -> Iterator[StepSpan]:
        """A child span per backend call: CLIENT for a remote provider, INTERNAL for in-process models."""
        self._attempts += 1
        attrs = {
            **self._genai(provider, model),
            **_server(server_address),
            "gateway.provider": provider,
            "gateway.attempt.number": self._attempts,
        }
        kind = SpanKind.CLIENT if server_address else SpanKind.INTERNAL
        with self._child(f"{OPERATION} {model}", kind, attrs) as span:
            handle = StepSpan(span)
            try:
                yield handle
            except BaseException as exc:
                handle.error(exc)
                raise

    def _genai(self, provider: str | None, model: str | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.output.type": "image",
            "gen_ai.request.choice.count": self.request.n,
            "gen_ai.provider.name": PROVIDER_NAMES.get(provider, provider)
            if provider
            else "diffusion_gateway",
        }
        if model:
            attrs["gen_ai.request.model"] = model
        if self.request.seed is not None:
            attrs["gen_ai.request.seed"] = self.request.seed
        return attrs

    def decision(self, decision: Decision) -> None:
        """Record the policy verdict; count a denial once per matching rule."""
        self.span.set_attributes(
            {
                "gateway.decision": "allow" if decision.allowed else "deny",
                "gateway.policy.rule_ids": tuple(decision.rule_ids),
                "gateway.policy.hash": decision.policy_hash,
                "gateway.budget.scope": tuple(f"{b.scope}:{b.scope_value}" for b in decision.budgets),
                "gateway.provenance.watermark_required": decision.provenance.watermark_required,
                "gateway.provenance.c2pa_required": decision.provenance.c2pa_required,
                "gateway.route.min_indemnity": decision.constraints.min_indemnity,
            }
        )
        if decision.capture_prompt:
            self._t._capture(self.span, self.request)
        if not decision.allowed:
            scope = {"gateway.team": self.context.team, "gateway.use_case": self.context.use_case}
            for rule in decision.rule_ids or ("unspecified",):
                self._t.denials.add(1, {"gateway.policy.rule_id": rule, **scope})

    def routed(self, provider: str, model: str) -> None:
        """The chosen route: rename the span ``generate_content {model}`` and set the provider."""
        self.provider, self.model = provider, model
        self.span.update_name(f"{OPERATION} {model}")
        self.span.set_attributes(
            {
                "gen_ai.provider.name": PROVIDER_NAMES.get(provider, provider),
                "gen_ai.request.model": model,
                "gateway.provider": provider,
            }
        )

    def finish(
        self,
        *,
        result: GenerationResult | None = None,
        error: BaseException | None = None,
        budget_remaining: Mapping[str, Decimal] | None = None,
    ) -> None:
        """Close the books on the request: span attributes, duration, images, cost, errors. Once only."""
        if self._finished:
            return
        self._finished = True
        t, span = self._t, self.span
        if result is not None:
            if (result.provider, result.model) != (self.provider, self.model):
                self.routed(result.provider, result.model)  # a fallback route served it
            images = result.images
            span.set_attributes(
                _attributes(
                    {
                        "gen_ai.response.model": result.model,
                        "gen_ai.request.seed": result.seed,
                        "cost.actual_usd": result.cost_usd,
                        "cost.estimated_usd": result.estimated_cost_usd,
                        "images.count": len(images),
                        "images.sha256": [img.sha256 for img in images],
                        "watermark": _summary(img.watermark for img in images),
                        "c2pa": _summary(img.c2pa for img in images),
                        "attempts": len(result.attempts),
                        "quarantined": len(result.quarantined),
                        "audit.seq": result.audit_seq,
                    }
                )
            )
            usage = {**self._metric_attrs(), "gateway.team": self.context.team}
            t.images.add(len(images), usage)
            t.cost.add(float(result.cost_usd), usage)
        if error is not None:
            StepSpan(span).error(error)
        for budget_id, remaining in (budget_remaining or {}).items():
            t.budget_remaining.set(float(remaining), {"gateway.budget.id": budget_id})
        if budget_remaining:
            span.set_attribute("gateway.budget.ids", tuple(budget_remaining))
        duration_attrs = self._metric_attrs()
        if error is not None:
            duration_attrs["error.type"] = _error_type(error)
        t.duration.record(time.perf_counter() - self._started, duration_attrs)

    def _metric_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER_NAMES.get(self.provider, self.provider)
            if self.provider
            else "diffusion_gateway",
        }
        if self.model:
            attrs["gen_ai.request.model"] = self.model
        return attrs


def _summary(values: Any) -> str:
    vals = set(values)
    return "none" if not vals else vals.pop() if len(vals) == 1 else "mixed"


class Telemetry:
    """Makes :class:`RequestTrace` objects; holds the tracer and the metric instruments."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        capture_prompt: bool = False,
        step_spans: bool = False,
    ) -> None:
        from .. import __version__

        self.capture_prompt = capture_prompt
        self.step_spans = step_spans
        self.tracer = trace.get_tracer(
            "diffusion-gateway", __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter("diffusion-gateway", __version__, meter_provider, schema_url=SCHEMA_URL)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.images = meter.create_counter(
            "gateway.images.generated", unit="{image}", description="Images returned"
        )
        self.cost = meter.create_counter(
            "gateway.cost.usd", unit="USD", description="Settled cost of requests"
        )
        self.denials = meter.create_counter(
            "gateway.policy.denials", unit="{request}", description="Requests denied, by rule"
        )
        self.budget_remaining = meter.create_gauge(
            "gateway.budget.remaining.usd", unit="USD", description="Budget left after the request"
        )

    @contextmanager
    def request(self, request: ImageRequest, context: Context, request_id: str) -> Iterator[RequestTrace]:
        """The span of one generate call; ``finish`` is called for you if the block exits without it."""
        rt_attrs: dict[str, Any] = {
            "gateway.request_id": request_id,
            "gateway.team": context.team,
            "gateway.project": context.project,
            "gateway.use_case": context.use_case,
            "gateway.user": context.user,
            "gateway.prompt.sha256": hashlib.sha256(request.prompt.encode()).hexdigest(),
            "gateway.prompt.length": len(request.prompt),
        }
        if context.tags:
            rt_attrs["gateway.tags"] = tuple(context.tags)
        name = f"{OPERATION} {request.model}" if request.model else OPERATION
        with self.tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False
        ) as span:
            rt = RequestTrace(self, span, request, context, request_id)
            span.set_attributes({**rt._genai(request.provider, request.model), **_attributes(rt_attrs)})
            if self.capture_prompt:
                self._capture(span, request)
            try:
                yield rt
            except BaseException as exc:
                rt.finish(error=exc)
                raise
            rt.finish()

    def _capture(self, span: trace.Span, request: ImageRequest) -> None:
        """Opted in: the prompt as ``gen_ai.input.messages`` (scrubbed of secrets all the same)."""
        parts = [{"type": "text", "content": redact(request.prompt)}]
        if request.negative_prompt:
            parts.append(
                {"type": "text", "content": redact(request.negative_prompt), "name": "negative_prompt"}
            )
        span.set_attribute("gen_ai.input.messages", json.dumps([{"role": "user", "parts": parts}]))


_configured: tuple[Any, Any] | None = None


def configure_from_env(
    *, set_global: bool = True, environ: Mapping[str, str] | None = None
) -> tuple[TracerProvider | None, MeterProvider | None]:
    """Build SDK providers from the standard OTEL_* variables (once per process) and make them global.

    ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: comma lists of ``otlp``, ``console``, ``none``.
    Unset means ``otlp`` when an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set, else ``none`` (an SDK should not
    spray connection errors at a collector nobody runs). Console output goes to stderr, so stdout stays
    clean for ``--json``. ``OTEL_SDK_DISABLED=true`` turns it all off. The OTLP exporter (HTTP/protobuf)
    reads its own endpoint, headers and timeout variables from ``os.environ`` (``environ`` only steers
    the choices made here); install it with ``diffusion-gateway[otlp]``.
    """
    global _configured
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None, None
    if _configured is not None and set_global:
        return _configured
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = env.get("OTEL_SERVICE_NAME")
    named_elsewhere = "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    attrs = (
        {"service.name": name} if name else {} if named_elsewhere else {"service.name": "diffusion-gateway"}
    )
    resource = Resource.create(attrs)
    tp: TracerProvider | None = None
    mp: MeterProvider | None = None
    span_exporters = [_exporter("traces", name) for name in _exporter_names(env, "TRACES")]
    if span_exporters:
        tp = TracerProvider(resource=resource)
        for exp in span_exporters:
            tp.add_span_processor(BatchSpanProcessor(exp))
    metric_exporters = [_exporter("metrics", name) for name in _exporter_names(env, "METRICS")]
    if metric_exporters:
        readers: list[MetricReader] = [PeriodicExportingMetricReader(e) for e in metric_exporters]
        mp = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        if tp is not None:
            trace.set_tracer_provider(tp)
        if mp is not None:
            metrics.set_meter_provider(mp)
        _configured = (tp, mp)
    return tp, mp


def _exporter_names(env: Mapping[str, str], signal: str) -> list[str]:
    raw = env.get(f"OTEL_{signal}_EXPORTER")
    if raw is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        raw = "otlp" if endpoint else "none"
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [n for n in names if n != "none"]


def _exporter(signal: str, name: str) -> Any:
    from ..errors import ConfigError

    if name == "console":
        if signal == "traces":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter(out=sys.stderr)
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=sys.stderr)
    if name == "otlp":
        try:
            if signal == "traces":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                return OTLPSpanExporter()
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter()
        except ImportError:
            raise ConfigError(
                "OTEL_*_EXPORTER=otlp needs the OTLP exporter: pip install 'diffusion-gateway[otlp]'"
            ) from None
    raise ConfigError(
        f"unsupported OTEL_{signal.upper()}_EXPORTER value {name!r} (use otlp, console or none)"
    )


__all__ = ["RequestTrace", "StepEvent", "StepSpan", "Telemetry", "configure_from_env"]
