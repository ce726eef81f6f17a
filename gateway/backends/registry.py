"""Backend registry: names map to factories, never to branches of an if/elif.

Lookup order: explicit :func:`register_backend` calls, then the ``diffusion_gateway.backends`` entry
point group (third-party packages), then the built-ins below (imported lazily, so ``import gateway``
never pulls torch, boto3 or replicate).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import UsageError
from .base import Backend

BackendFactory = Callable[..., Backend]

_BUILTIN: dict[str, str] = {
    "local": "gateway.backends.local:LocalBackend",
    "replicate": "gateway.backends.replicate:ReplicateBackend",
    "bedrock": "gateway.backends.bedrock:BedrockBackend",
    "mock": "gateway.backends.mock:MockBackend",
    "openai": "gateway.backends.openai_images:OpenAIBackend",
    "azure-openai": "gateway.backends.openai_images:AzureOpenAIBackend",
    "google-gemini": "gateway.backends.gemini:GeminiBackend",
    "google-vertex": "gateway.backends.gemini:VertexGeminiBackend",
}
# The pip extra that brings each built-in backend's client (named in "missing dependency" errors).
_EXTRAS: dict[str, str] = {
    "local": "local",
    "replicate": "replicate",
    "bedrock": "bedrock",
    "openai": "openai",
    "azure-openai": "openai",
    "google-gemini": "google",
    "google-vertex": "google",
}
_registered: dict[str, BackendFactory] = {}

ENTRY_POINT_GROUP = "diffusion_gateway.backends"


def register_backend(name: str, factory: BackendFactory) -> None:
    """Register (or replace) the factory for backend ``name``; ``factory(**options)`` makes one."""
    _registered[name] = factory


def unregister_backend(name: str) -> None:
    _registered.pop(name, None)


def available_backends() -> list[str]:
    names = set(_BUILTIN) | set(_registered)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def builtin_target(name: str) -> str | None:
    """``module:Class`` of the built-in backend ``name`` (None for others), for preflight checks."""
    return _BUILTIN.get(name)


def backend_factory(name: str) -> BackendFactory:
    """Resolve ``name`` to a factory, importing its module only now."""
    if name in _registered:
        return _registered[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        factory: BackendFactory = ep.load()
        return factory
    target = _BUILTIN.get(name)
    if target is None:
        raise UsageError(f"unknown backend {name!r}; known: {', '.join(available_backends())}")
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # an optional extra is not installed
        extra = _EXTRAS.get(name, "all")
        raise UsageError(
            f"backend {name!r} needs an optional dependency ({exc.name}); "
            f"install it with: pip install 'diffusion-gateway[{extra}]'"
        ) from None
    factory = getattr(mod, attr)
    return factory


def create_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    return backend_factory(name)(**(options or {}))
