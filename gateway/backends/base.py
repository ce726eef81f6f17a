"""The backend contract: turn a resolved request into encoded images and a usage record.

Modelled on httpx's transports: a backend is a tiny class with a sync and an async method and nothing
else. Backends know nothing of policy, budgets, audit or provenance; they raise a
:class:`~gateway.errors.BackendError` subclass on failure and the gateway decides what happens next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..types import ImageRequest


@dataclass(frozen=True, slots=True)
class BackendCall:
    """One call to one backend.

    ``request`` already carries resolved values (seed, width, height, and the card's defaults for
    steps/guidance/scheduler where the caller left them unset). ``options`` are the provider card's
    backend options for this model (region, input family, hardware, local path ...).
    """

    request: ImageRequest
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = 120.0
    request_id: str = ""
    # Time-billed routes: the billed seconds the reservation pays for. A backend stops the run (local:
    # between denoising steps; Replicate: cancels the prediction) rather than bill past it.
    max_billed_s: float | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """What the call consumed, as the provider reported it; the ledger settles cost from this."""

    images: int
    elapsed_s: float
    predict_time_s: float | None = None  # provider-measured compute seconds (Replicate metrics)
    hardware: str | None = None
    provider_request_id: str | None = None  # prediction id, AWS request id
    # Token counts as the provider reported them (OpenAI ``usage``, Gemini ``usageMetadata``); None when
    # the response said nothing, in which case token-priced cards fall back to their per-image price.
    input_text_tokens: int | None = None
    input_image_tokens: int | None = None
    output_image_tokens: int | None = None
    output_text_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class BackendResult:
    """Encoded images exactly as the provider returned them (PNG/JPEG/WebP bytes) plus usage."""

    images: tuple[bytes, ...]
    usage: Usage
    seed: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Backend:
    """Base class for backends. Subclasses implement both methods; neither may block the other's world.

    ``check`` is a pure, no-I/O hook run while planning (and by ``gateway explain``): a backend that
    can tell from the request alone that it cannot serve it returns the reason, so routing drops the
    route before anything is reserved.
    """

    name: ClassVar[str] = "base"

    def check(self, call: BackendCall) -> str | None:
        """Return why this backend cannot serve ``call``, or None. Must not do I/O."""
        return None

    def generate(self, call: BackendCall) -> BackendResult:
        raise NotImplementedError(f"{type(self).__name__} has no sync generate")

    async def agenerate(self, call: BackendCall) -> BackendResult:
        raise NotImplementedError(f"{type(self).__name__} has no async generate")

    def close(self) -> None:
        """Release clients, pools and loaded models."""

    async def aclose(self) -> None:
        self.close()
