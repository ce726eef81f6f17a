"""Backends: how to call a model (code). Provider cards say what it costs and promises (data)."""

from .base import Backend, BackendCall, BackendResult, Usage
from .mock import MockBackend
from .registry import available_backends, backend_factory, create_backend, register_backend

__all__ = [
    "Backend",
    "BackendCall",
    "BackendResult",
    "MockBackend",
    "Usage",
    "available_backends",
    "backend_factory",
    "create_backend",
    "register_backend",
]
