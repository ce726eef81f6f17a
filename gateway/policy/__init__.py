"""Policy engine: YAML policy files -> a composed PolicySet -> a Decision per request.

Importing this package is cheap (pydantic models and the standard library only); classifiers load
their models on first use. See docs/policy.md for the file format, precedence and measured costs.
"""

from __future__ import annotations

from .classifiers import register_classifier, unregister_classifier
from .engine import OutputFinding, PolicySet
from .model import PolicyFile, json_schema, json_schema_text
from .normalize import analyze, fold

__all__ = [
    "OutputFinding",
    "PolicyFile",
    "PolicySet",
    "analyze",
    "fold",
    "json_schema",
    "json_schema_text",
    "register_classifier",
    "unregister_classifier",
]
