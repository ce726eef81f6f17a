"""Spans, metrics and logs of a request, checked with the SDK's in-memory exporter and reader."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.audit import Telemetry, configure_from_env, get_logger
from gateway.errors import BackendUnavailable, ConfigError, PolicyDenied
from gateway.types import (
    Attempt,
    Budget,
    Context,
    Decision,
    GeneratedImage,
    GenerationResult,
    ImageRequest,
    ProvenanceRequirements,
)

SECRET = "r8_" + "K9q" * 12 + "z"
PROMPT = "a lighthouse at dusk, oil painting"


class Otel:
    """In-memory span exporter and metric reader, or the given SDK providers."""

    def __init__(
        self, *, capture_prompt: bool = False, tp: Any = None, mp: Any = None, step_spans: bool = True
    ) -> None:
        self.spans = InMemorySpanExporter()
        if tp is None:
            tp = TracerProvider()
            tp.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        mp = mp or MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(tp, mp, capture_prompt=capture_prompt, step_spans=step_spans)

    def finished(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.spans.get_finished_spans()}

    def metrics(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = list(m.data.data_points)
        return out


def result(provider: str = "bedrock", model: str = "amazon.titan-image-generator-v2:0") -> GenerationResult:
    images = tuple(
        GeneratedImage(data=bytes([i]) * 16, width=64, height=64, watermark="provider", c2pa="signed")
        for i in range(2)
    )
    return GenerationResult(
        request_id="req-1",
        images=images,
        provider=provider,
        model=model,
        seed=7,
        cost_usd=Decimal("0.016"),
        estimated_cost_usd=Decimal("0.016"),
        latency_s=0.2,
        decision=Decision(allowed=True),
        attempts=(Attempt(provider, model, "ok", 0.1),),
        audit_seq=12,
    )


REQUEST = ImageRequest(prompt=PROMPT, n=2, seed=7, negative_prompt="blurry")
CONTEXT = Context(team="ml", project="brand", use_case="marketing", user="ana")
ALLOW = Decision(
    allowed=True,
    rule_ids=("indemnity-required",),
    policy_hash="ph1",
    provenance=ProvenanceRequirements(watermark_required=True),
    budgets=(Budget("b-ml", "team", "ml", "month", Decimal(100)),),
)


def run_success(otel: Otel) -> str | None:
    with otel.telemetry.request(REQUEST, CONTEXT, "req-1") as rt:
        with rt.step("policy"):
            rt.decision(ALLOW)
        with rt.step("routing"):
            rt.routed("bedrock", "amazon.titan-image-generator-v2:0")
        with rt.step("ledger.reserve", route="bedrock/titan", estimated_cost_usd=Decimal("0.016")):
            pass
        with rt.attempt(
            "bedrock", "amazon.titan-image-generator-v2:0", "https://bedrock-runtime.us-east-1.x"
        ):
            pass
        with rt.step("outputs") as out:
            out.set(watermark="provider", c2pa="signed", images=2)
        rt.finish(result=result(), budget_remaining={"b-ml": Decimal("99.984")})
    return rt.trace_id


def test_a_request_is_one_genai_span_with_child_steps() -> None:
    otel = Otel()
    trace_id = run_success(otel)
    spans = otel.spans.get_finished_spans()
    root = next(s for s in spans if s.parent is None)
    assert root.name == "generate_content amazon.titan-image-generator-v2:0"
    assert root.kind == SpanKind.CLIENT
    a = root.attributes or {}
    assert a["gen_ai.operation.name"] == "generate_content"
    assert a["gen_ai.provider.name"] == "aws.bedrock"
    assert a["gen_ai.request.model"] == "amazon.titan-image-generator-v2:0"
    assert a["gen_ai.output.type"] == "image"
    assert (a["gen_ai.request.seed"], a["gen_ai.request.choice.count"]) == (7, 2)
    assert a["gateway.decision"] == "allow"
    assert a["gateway.policy.rule_ids"] == ("indemnity-required",)
    assert a["gateway.budget.scope"] == ("team:ml",)
    assert (a["gateway.cost.actual_usd"], a["gateway.cost.estimated_usd"]) == ("0.016", "0.016")
    assert (a["gateway.watermark"], a["gateway.c2pa"], a["gateway.audit.seq"]) == ("provider", "signed", 12)
    assert a["gateway.provenance.watermark_required"] is True
    assert "error.type" not in a
    assert format(root.context.trace_id, "032x") == trace_id
    children = {s.name: s for s in spans if s.parent is not None}
    assert set(children) == {"policy", "routing", "ledger.reserve", "outputs", root.name}
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children.values())
    assert all(s.context.trace_id == root.context.trace_id for s in spans)
    assert (children["ledger.reserve"].attributes or {})["gateway.estimated_cost_usd"] == "0.016"
    attempt = children[root.name]
    assert attempt.kind == SpanKind.CLIENT
    att = attempt.attributes or {}
    assert (att["server.address"], att["server.port"]) == ("bedrock-runtime.us-east-1.x", 443)
    assert att["gen_ai.provider.name"] == "aws.bedrock"


def test_steps_are_events_on_the_request_span_by_default() -> None:
    otel = Otel(step_spans=False)

    def failing_request() -> None:
        with otel.telemetry.request(REQUEST, CONTEXT, "req-e") as rt:
            with rt.step("ledger.reserve", route="bedrock/titan", estimated_cost_usd=Decimal("0.016")):
                pass
            with rt.step("outputs") as out:
                out.set(images=2)
                raise RuntimeError(f"decoder broke; Authorization: Bearer {SECRET}")

    with pytest.raises(RuntimeError):
        failing_request()
    (root,) = otel.spans.get_finished_spans()  # one span: the steps did not make their own
    events = {e.name: dict(e.attributes or {}) for e in root.events}
    assert events["ledger.reserve"]["gateway.estimated_cost_usd"] == "0.016"
    span_ms = ((root.end_time or 0) - (root.start_time or 0)) / 1e6
    step_ms = events["ledger.reserve"]["gateway.step.duration_ms"]
    assert isinstance(step_ms, float) and 0 <= step_ms <= span_ms + 0.001  # timed inside its request
    assert events["outputs"]["gateway.images"] == 2
    assert events["outputs"]["error.type"] == "RuntimeError"
    assert SECRET not in json.dumps(events)
    assert (root.attributes or {})["error.type"] == "RuntimeError"


def test_metrics_duration_images_cost_and_budget() -> None:
    otel = Otel()
    run_success(otel)
    m = otel.metrics()
    (duration,) = m["gen_ai.client.operation.duration"]
    assert duration.count == 1
    assert dict(duration.attributes) == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": "amazon.titan-image-generator-v2:0",
    }
    (images,) = m["gateway.images.generated"]
    assert images.value == 2
    assert images.attributes["gateway.team"] == "ml"
    (cost,) = m["gateway.cost.usd"]
    assert cost.value == pytest.approx(0.016)
    (budget,) = m["gateway.budget.remaining.usd"]
    assert (budget.value, dict(budget.attributes)) == (pytest.approx(99.984), {"gateway.budget.id": "b-ml"})


def test_a_denial_counts_each_rule_and_marks_the_span_failed() -> None:
    otel = Otel()
    deny = Decision(allowed=False, rule_ids=("no-brands", "no-faces"), reasons=(f"token {SECRET} seen",))
    with otel.telemetry.request(REQUEST, CONTEXT, "req-2") as rt:
        rt.decision(deny)
        rt.finish(error=PolicyDenied("denied", rule_ids=deny.rule_ids))
    (root,) = otel.spans.get_finished_spans()
    assert root.name == "generate_content"
    assert root.status.status_code == StatusCode.ERROR
    assert (root.attributes or {})["error.type"] == "PolicyDenied"
    assert (root.attributes or {})["gen_ai.provider.name"] == "diffusion_gateway"
    m = otel.metrics()
    denials = {p.attributes["gateway.policy.rule_id"]: p.value for p in m["gateway.policy.denials"]}
    assert denials == {"no-brands": 1, "no-faces": 1}
    assert m["gen_ai.client.operation.duration"][0].attributes["error.type"] == "PolicyDenied"
    assert "gateway.images.generated" not in m


def test_a_failed_attempt_then_a_fallback_renames_the_span_to_the_model_that_served() -> None:
    otel = Otel()
    with otel.telemetry.request(REQUEST, CONTEXT, "req-3") as rt:
        rt.routed("replicate", "flux-schnell")
        with pytest.raises(BackendUnavailable), rt.attempt("replicate", "flux-schnell", "127.0.0.1:8750"):
            raise BackendUnavailable(
                f"503 from upstream; Authorization: Bearer {SECRET}", provider="replicate"
            )
        with rt.attempt("local", "tiny-digits", None):
            pass
        rt.finish(result=result("local", "tiny-digits"))
    spans = otel.spans.get_finished_spans()
    failed = next(s for s in spans if s.name == "generate_content flux-schnell")
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "BackendUnavailable"
    assert (failed.attributes or {})["server.port"] == 8750
    assert SECRET not in (failed.status.description or "")
    assert SECRET not in json.dumps([dict(e.attributes or {}) for e in failed.events])
    local = next(s for s in spans if s.name == "generate_content tiny-digits" and s.parent is not None)
    assert local.kind == SpanKind.INTERNAL  # the in-process model
    root = next(s for s in spans if s.parent is None)
    assert root.name == "generate_content tiny-digits"
    assert (root.attributes or {})["gen_ai.provider.name"] == "local"


def test_an_exception_escaping_the_request_finishes_it_as_an_error() -> None:
    otel = Otel()
    with (
        pytest.raises(RuntimeError),
        otel.telemetry.request(REQUEST, CONTEXT, "req-4") as rt,
        rt.step("outputs"),
    ):
        raise RuntimeError("decoder broke")
    spans = otel.finished()
    assert spans["outputs"].status.status_code == StatusCode.ERROR
    assert (spans["generate_content"].attributes or {})["error.type"] == "RuntimeError"
    assert otel.metrics()["gen_ai.client.operation.duration"][0].count == 1
    rt.finish(error=RuntimeError("again"))  # a second finish is a no-op
    assert otel.metrics()["gen_ai.client.operation.duration"][0].count == 1


def test_prompts_stay_out_of_spans_unless_opted_in() -> None:
    otel = Otel()
    run_success(otel)
    dump = json.dumps([dict(s.attributes or {}) for s in otel.spans.get_finished_spans()])
    assert PROMPT not in dump
    assert "blurry" not in dump
    root = next(s for s in otel.spans.get_finished_spans() if s.parent is None)
    assert (root.attributes or {})["gateway.prompt.length"] == len(PROMPT)
    assert len((root.attributes or {})["gateway.prompt.sha256"]) == 64
    for otel in (Otel(capture_prompt=True), Otel()):
        with otel.telemetry.request(
            REQUEST.model_copy(update={"prompt": f"{PROMPT} {SECRET}"}), CONTEXT, "r"
        ) as rt:
            rt.decision(Decision(allowed=True, capture_prompt=True))  # a policy can opt in too
        (span,) = otel.spans.get_finished_spans()
        messages = json.loads(str((span.attributes or {})["gen_ai.input.messages"]))
        assert messages[0]["parts"][0]["content"].startswith(PROMPT)
        assert messages[0]["parts"][1] == {"type": "text", "content": "blurry", "name": "negative_prompt"}
        assert SECRET not in json.dumps(messages)


def test_without_an_sdk_the_telemetry_is_a_silent_no_op() -> None:
    telemetry = Telemetry()  # the global providers; none configured in tests
    with telemetry.request(REQUEST, CONTEXT, "r") as rt:
        rt.decision(ALLOW)
        with rt.attempt("local", "tiny-digits", None) as span:
            span.set(note="x")
        rt.finish(result=result())
    assert rt.trace_id is None


def test_configure_from_env_console_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    tp, mp = configure_from_env(
        set_global=False, environ={"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}
    )
    assert tp is not None
    assert mp is None
    run_success(Otel(tp=tp))
    tp.force_flush()
    tp.shutdown()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "generate_content" in captured.err
    assert configure_from_env(set_global=False, environ={}) == (None, None)
    assert configure_from_env(set_global=False, environ={"OTEL_SDK_DISABLED": "true"}) == (None, None)
    with pytest.raises(ConfigError, match="zipkin"):
        configure_from_env(set_global=False, environ={"OTEL_TRACES_EXPORTER": "zipkin"})


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A loopback OTLP/HTTP endpoint that records what it is sent."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()


def test_otlp_export_from_the_standard_variables(
    collector: tuple[str, list[tuple[str, bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    tp, mp = configure_from_env(
        set_global=False, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_SERVICE_NAME": "image-api"}
    )
    assert tp is not None
    assert mp is not None
    run_success(Otel(tp=tp, mp=mp))
    tp.force_flush()
    mp.force_flush()
    tp.shutdown()
    mp.shutdown()
    paths = {p for p, _ in received}
    assert {"/v1/traces", "/v1/metrics"} <= paths
    traces = b"".join(body for p, body in received if p == "/v1/traces")
    assert b"generate_content amazon.titan-image-generator-v2:0" in traces
    assert b"image-api" in traces
    assert PROMPT.encode() not in traces


# --------------------------------------------------------------------------- logs


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in stream.getvalue().splitlines()]


def test_logs_are_json_with_trace_ids_and_hashed_prompts(log_stream: io.StringIO) -> None:
    otel = Otel()
    with otel.telemetry.request(REQUEST, CONTEXT, "req-9") as rt:
        get_logger("gateway.client").info("generate", prompt=PROMPT, request_id="req-9")
    (line,) = lines(log_stream)
    assert (line["event"], line["level"], line["logger"]) == ("generate", "info", "gateway.client")
    assert (line["trace_id"], line["span_id"]) == (rt.trace_id, rt.span_id)
    assert "prompt" not in line
    assert line["prompt_len"] == len(PROMPT)
    assert line["timestamp"].endswith("Z")


def test_logged_exceptions_and_values_are_scrubbed(
    log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    log = get_logger()
    try:
        raise BackendUnavailable(f"connect failed: https://user:{aws_secret}@bedrock.local token={SECRET}")
    except BackendUnavailable:
        log.exception("backend failed", headers={"Authorization": f"Bearer {SECRET}"}, api_key="abc123456")
    logging.getLogger("gateway.audit").error("checkpoint failed: %s", f"key {aws_secret}")
    text = log_stream.getvalue()
    assert SECRET not in text
    assert aws_secret not in text
    assert "abc123456" not in text
    first, second = lines(log_stream)
    assert "BackendUnavailable" in first["exception"]
    assert "[REDACTED]" in first["exception"]
    assert (second["logger"], second["level"]) == ("gateway.audit", "error")
    assert second["event"] == "checkpoint failed: key [REDACTED]"
