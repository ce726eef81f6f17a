"""structlog wiring: one JSON object per line on stderr, with trace ids, hashed prompts, no secrets.

Why a processor chain: each concern is one small callable (structlog's own design), so an application
that already configures structlog can take :func:`build_processors` and keep its renderer, or drop
:func:`scrub_processor` into its chain. The order matters and is fixed here: exceptions are rendered
to text *before* scrubbing, so a secret inside an exception message or traceback is scrubbed too.

stdout stays free for ``--json`` results; logs go to stderr.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import IO, Any, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .redact import redact, redact_value

_PROMPT_KEYS = ("prompt", "negative_prompt")
_HANDLER_NAME = "diffusion-gateway"


def add_trace_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id``/``span_id`` (hex) of the current OpenTelemetry span, when there is one."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def prompt_processor(capture_prompt: bool = False) -> Processor:
    """Replace ``prompt``/``negative_prompt`` values by their sha256 and length unless capture is on."""

    def process(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        for key in _PROMPT_KEYS:
            value = event_dict.get(key)
            if not isinstance(value, str) or capture_prompt:
                continue
            del event_dict[key]
            event_dict[f"{key}_sha256"] = hashlib.sha256(value.encode()).hexdigest()
            event_dict[f"{key}_len"] = len(value)
        return event_dict

    return process


def scrub_processor(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Render any exception to text, then scrub secrets from every value (keys named like secrets too)."""
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    else:
        event_dict.pop("exc_info", None)
    scrubbed: EventDict = redact_value(dict(event_dict))
    return scrubbed


def _json_default(value: Any) -> Any:
    return redact(str(value))


def build_processors(*, capture_prompt: bool = False, json_output: bool = True) -> list[Processor]:
    """The gateway's chain, renderer included (JSON lines, or a console renderer for humans)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
        prompt_processor(capture_prompt),
        structlog.processors.StackInfoRenderer(),
        scrub_processor,
        renderer,
    ]


def _dumps(obj: Any, **_kw: Any) -> str:
    return json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":"))


class _StderrFactory:
    """Resolve the stream at first use, so a test harness that swaps ``sys.stderr`` still sees logs."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream

    def __call__(self, *_args: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(file=cast(TextIO, self._stream or sys.stderr))


def configure_logging(
    level: str | int = "INFO",
    *,
    stream: IO[str] | None = None,
    capture_prompt: bool = False,
    json_output: bool = True,
    stdlib: bool = True,
) -> None:
    """Configure structlog (global, as structlog is) for the gateway; safe to call more than once.

    With ``stdlib=True`` records sent to the standard ``logging`` logger ``gateway`` (and its children)
    go through the same chain, so nothing the SDK logs escapes scrubbing.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    processors = build_processors(capture_prompt=capture_prompt, json_output=json_output)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrFactory(stream),
        cache_logger_on_first_use=False,
    )
    if stdlib:
        _configure_stdlib(numeric, stream, processors)


def _configure_stdlib(level: int, stream: IO[str] | None, processors: list[Processor]) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder: the SDK logs through stdlib ``logging`` with ``extra=`` fields (a library must not
        # configure output); those fields become keys of the JSON line here.
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), *processors[:-2]],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors[-2:]],
    )
    handler = _LazyStreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    logger = logging.getLogger("gateway")
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class _LazyStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed or sys.stderr
        super().emit(record)


def get_logger(name: str = "gateway", **initial: Any) -> Any:
    """A structlog logger bound with ``logger=name`` (and any initial key/values)."""
    return structlog.get_logger(name).bind(logger=name, **initial)


Processors = list[Callable[[WrappedLogger, str, MutableMapping[str, Any]], Any]]

__all__ = [
    "add_trace_context",
    "build_processors",
    "configure_logging",
    "get_logger",
    "prompt_processor",
    "scrub_processor",
]
