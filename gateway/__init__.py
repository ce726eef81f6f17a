"""diffusion-gateway: governed image generation with diffusion models.

``from gateway import Gateway``; ``Gateway().generate("a handwritten 7")``. Attributes are imported on
first use (PEP 562), so ``import gateway`` stays light and the CLI starts fast: nothing here pulls
torch, diffusers, boto3, replicate or c2pa.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Gateway": "gateway.client",
    "AsyncGateway": "gateway.client",
    "Plan": "gateway.run",
    "Settings": "gateway.config",
    "ImageRequest": "gateway.types",
    "Context": "gateway.types",
    "Decision": "gateway.types",
    "GenerationResult": "gateway.types",
    "GeneratedImage": "gateway.types",
    "Attempt": "gateway.types",
    "Backend": "gateway.backends.base",
    "BackendCall": "gateway.backends.base",
    "BackendResult": "gateway.backends.base",
    "Usage": "gateway.backends.base",
    "MockBackend": "gateway.backends.mock",
    "register_backend": "gateway.backends.registry",
    "GatewayError": "gateway.errors",
    "UsageError": "gateway.errors",
    "InvalidRequestError": "gateway.errors",
    "ConfigError": "gateway.errors",
    "PolicyDenied": "gateway.errors",
    "BudgetExceeded": "gateway.errors",
    "ProvidersFailed": "gateway.errors",
    "NoEligibleRoute": "gateway.errors",
    "BackendError": "gateway.errors",
    "ContentFiltered": "gateway.errors",
    "RateLimited": "gateway.errors",
    "AuditWriteError": "gateway.errors",
    "VerificationFailed": "gateway.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from .backends.base import Backend, BackendCall, BackendResult, Usage
    from .backends.mock import MockBackend
    from .backends.registry import register_backend
    from .client import AsyncGateway, Gateway
    from .config import Settings
    from .errors import (
        AuditWriteError,
        BackendError,
        BudgetExceeded,
        ConfigError,
        ContentFiltered,
        GatewayError,
        InvalidRequestError,
        NoEligibleRoute,
        PolicyDenied,
        ProvidersFailed,
        RateLimited,
        UsageError,
        VerificationFailed,
    )
    from .run import Plan
    from .types import Attempt, Context, Decision, GeneratedImage, GenerationResult, ImageRequest


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
