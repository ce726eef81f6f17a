"""The policy file format (version 1) and its published JSON Schema.

A policy file is reviewed by people who are not Python programmers, so the model is strict
(``extra="forbid"`` everywhere: a misspelt key is an error with a line number, never a silently
ignored rule) and versioned (``version: 1`` is required; a future format gets a new number).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .rules import RuleId, RuleSpec

FORMAT_VERSION = 1
SCHEMA_ID = "https://diffusion-gateway.dev/schemas/policy-v1.json"


class PolicyFile(BaseModel):
    """One YAML policy file. Files compose in order; see docs/policy.md for the precedence."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="diffusion-gateway policy file")

    version: Literal[1] = Field(description="Policy format version. Required; this gateway reads 1.")
    name: str = Field(default="", max_length=200, description="Human name of this pack.")
    description: str = Field(default="", description="What the pack is for and who owns it.")
    disable: tuple[RuleId, ...] = Field(
        default=(), description="Ids of rules from earlier files to switch off (not allowed for final rules)."
    )
    rules: tuple[RuleSpec, ...] = Field(default=(), description="Rules, each with an id and a kind.")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file (draft 2020-12), as ``gateway policy schema`` prints it."""
    schema = PolicyFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def json_schema_text() -> str:
    """The exact text of ``policies/schema.json`` (a test keeps the file in step with the model)."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


__all__ = ["FORMAT_VERSION", "PolicyFile", "json_schema", "json_schema_text"]
