"""An OpenAI-compatible images server over the same governed core (``gateway serve``).

Apps in any language point their OpenAI client at it (``base_url=http://host:8080/v1``) with a key
from ``gateway api-keys create``; each request then runs through policy, routing, budgets, provenance
and audit exactly as a Python call would. ``create_app()`` gives the Starlette app (for tests or your
own ASGI server); :mod:`gateway.server.keys` holds the key store. Starlette and uvicorn come with the
``server`` extra and load only when the server is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "create_app": "gateway.server.app",
    "KeyStore": "gateway.server.keys",
    "ApiKey": "gateway.server.keys",
    "serve": "gateway.server.run",
}

if TYPE_CHECKING:
    from .app import create_app
    from .keys import ApiKey, KeyStore
    from .run import serve


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["ApiKey", "KeyStore", "create_app", "serve"]
