"""What one request is while it runs: its plan (steps 1-3, pure) and the bookkeeping of its attempts.

Shared by :mod:`gateway.core` (which makes and updates them), :mod:`gateway.evidence` (which turns
them into audit records and results) and the two shells in :mod:`gateway.client`.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .backends.base import BackendResult
from .catalog import Route
from .errors import AuthenticationError, BackendError, BackendTimeout, BadResponse
from .routing import RoutePlan
from .types import Attempt, Context, Decision, GenerationResult, ImageRequest

if TYPE_CHECKING:
    from .audit import RequestTrace
    from .inputs import InputImage
    from .ledger.idempotency import KeyClaim

# Errors after which another route may be tried: the call was not accepted, the route is broken for
# us (bad credentials), or it answered with something unusable (a failed prediction, a bad file).
# A content filter or an invalid request is the request's problem: trying elsewhere would be
# shopping for a more permissive provider, so it stops.
FALLBACK_ON: tuple[type[BackendError], ...] = (AuthenticationError, BackendTimeout, BadResponse)


def _falls_back(exc: BackendError) -> bool:
    return exc.retryable or isinstance(exc, FALLBACK_ON)


@dataclass(frozen=True)
class Plan:
    """Steps 1-3 for one request: what the gateway would do, computed without I/O or spending."""

    request_id: str
    request: ImageRequest
    context: Context
    decision: Decision
    routes: RoutePlan
    inputs: tuple[InputImage, ...] = ()  # an edit's checked input images (gateway.inputs)

    def to_dict(self) -> dict[str, Any]:
        ranked = self.routes.ranked
        return {
            "request_id": self.request_id,
            "decision": {
                **self.decision.to_dict(),
                "constraints": _constraints_dict(self.decision),
            },
            "routing": self.routes.to_dict(),
            "route": ranked[0].route.key if ranked else None,
            "estimate_usd": str(ranked[0].estimate_usd) if ranked else None,
            "seed": self.request.seed,
        }


def _constraints_dict(decision: Decision) -> dict[str, Any]:
    c = decision.constraints
    return {
        "min_indemnity": c.min_indemnity,
        "commercial_use_required": c.commercial_use_required,
        "allowed_providers": c.allowed_providers,
        "allowed_regions": c.allowed_regions,
        "exclude_legacy": c.exclude_legacy,
        "watermark_required": decision.provenance.watermark_required,
        "c2pa_required": decision.provenance.c2pa_required,
    }


@dataclass
class _Run:
    """Mutable bookkeeping of one execution (attempts so far, audit records to write)."""

    plan: Plan
    trace: RequestTrace
    started: float
    attempts: list[Attempt] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    estimated: Decimal = Decimal(0)
    claim: KeyClaim | None = None  # idempotency key, claimed with the first reservation
    seed_given: int | None = None  # the caller's own seed (the result cache needs one)
    paid: tuple[Route, BackendResult] | None = None  # a backend returned images: they are paid for
    spooled: list[str] = field(default_factory=list)  # archive errors that sent outputs to the spool
    archive_sync: Future[None] | None = None  # the archive's fsync, overlapping the audit append


def _with_seq(result: GenerationResult, seq: int) -> GenerationResult:
    from dataclasses import replace

    return replace(result, audit_seq=seq)
