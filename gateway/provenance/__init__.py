"""Provenance on every image: our keyed invisible watermark, C2PA manifests, and verification.

Importing this package is cheap (no numpy, c2pa or Pillow until a stamp or a verify runs), so
``import gateway`` stays fast. See docs/provenance.md for the payload, the threshold arithmetic and the
measured robustness table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._model import ProvenanceInfo, Stamped

if TYPE_CHECKING:
    from .core import Provenance, verify_image
    from .keys import ProvenanceSettings
    from .verify import VerifyPolicy, VerifyReport, WatermarkResult

__all__ = [
    "Provenance",
    "ProvenanceInfo",
    "ProvenanceSettings",
    "Stamped",
    "VerifyPolicy",
    "VerifyReport",
    "WatermarkResult",
    "verify_image",
]

_LAZY = {
    "Provenance": "core",
    "verify_image": "core",
    "ProvenanceSettings": "keys",
    "VerifyPolicy": "verify",
    "VerifyReport": "verify",
    "WatermarkResult": "verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.provenance' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
