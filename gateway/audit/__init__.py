"""Evidence: a tamper-evident audit log, OpenTelemetry GenAI traces and metrics, scrubbed JSON logs.

``open_audit(url)`` gives an :class:`AuditLog` on SQLite (``sqlite:///path``) or PostgreSQL
(``postgresql://...``); :class:`Telemetry` turns one request into a span tree and metrics;
:func:`configure_logging` wires structlog to JSON with trace ids and secret scrubbing.

Nothing heavy is imported here: psycopg, cryptography and the OpenTelemetry SDK load when first used.
"""

from __future__ import annotations

from .canonical import canonical_bytes, canonical_json
from .checkpoints import Checkpoint, CheckpointStore
from .logs import configure_logging, get_logger, scrub_processor
from .redact import redact, redact_value, register_secret
from .store import AuditLog, open_audit
from .telemetry import RequestTrace, StepSpan, Telemetry, configure_from_env
from .verify import AuditVerifyReport

__all__ = [
    "AuditLog",
    "AuditVerifyReport",
    "Checkpoint",
    "CheckpointStore",
    "RequestTrace",
    "StepSpan",
    "Telemetry",
    "canonical_bytes",
    "canonical_json",
    "configure_from_env",
    "configure_logging",
    "get_logger",
    "open_audit",
    "redact",
    "redact_value",
    "register_secret",
    "scrub_processor",
]
