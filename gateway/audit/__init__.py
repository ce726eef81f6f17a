"""Evidence: a tamper-evident audit log, OpenTelemetry GenAI traces and metrics, scrubbed JSON logs.

``open_audit(url)`` gives an :class:`AuditLog` on SQLite (``sqlite:///path``) or PostgreSQL
(``postgresql://...``); :class:`Telemetry` turns one request into a span tree and metrics;
:func:`configure_logging` wires structlog to JSON with trace ids and secret scrubbing.

Names load on first use (PEP 562), so the client's ``from gateway.audit import open_audit`` does not
pay for structlog (and the rich import it drags in); psycopg, cryptography and the OpenTelemetry SDK
load only inside the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "AuditLog": "store",
    "open_audit": "store",
    "AuditVerifyReport": "verify",
    "Checkpoint": "checkpoints",
    "CheckpointStore": "checkpoints",
    "RequestTrace": "telemetry",
    "StepSpan": "telemetry",
    "Telemetry": "telemetry",
    "configure_from_env": "telemetry",
    "configure_logging": "logs",
    "get_logger": "logs",
    "scrub_processor": "logs",
    "build_processors": "logs",
    "canonical_bytes": "canonical",
    "canonical_json": "canonical",
    "merkle": "",
}

# Imported eagerly (light: re and os only) so the package attribute ``redact`` is the function, not
# the submodule of the same name that the import system would otherwise bind there.
from .redact import redact, redact_value, register_secret  # noqa: E402

__all__ = [
    "AuditLog",
    "AuditVerifyReport",
    "Checkpoint",
    "CheckpointStore",
    "RequestTrace",
    "StepSpan",
    "Telemetry",
    "build_processors",
    "canonical_bytes",
    "canonical_json",
    "configure_from_env",
    "configure_logging",
    "get_logger",
    "merkle",
    "open_audit",
    "redact",
    "redact_value",
    "register_secret",
    "scrub_processor",
]

if TYPE_CHECKING:
    from . import merkle
    from .canonical import canonical_bytes, canonical_json
    from .checkpoints import Checkpoint, CheckpointStore
    from .logs import build_processors, configure_logging, get_logger, scrub_processor
    from .store import AuditLog, open_audit
    from .telemetry import RequestTrace, StepSpan, Telemetry, configure_from_env
    from .verify import AuditVerifyReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.audit' has no attribute {name!r}")
    mod = importlib.import_module(f"{__name__}.{module or name}")
    value = mod if not module else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
