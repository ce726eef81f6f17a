"""The dataset spec: what to generate, how many, how to split it, and what it may cost.

A spec is YAML reviewed like a policy file (``gateway dataset schema`` prints its JSON Schema; a bad
value is a ``FILE:LINE:`` error, exit 2). Everything that defines an item (model, prompts, seed,
context, images per request) goes into the spec digest; counts, the budget and quality gates do not,
so raising a count or a budget extends a build instead of invalidating it.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._yaml import load_model

_STRICT = ConfigDict(extra="forbid", frozen=True)
_NAME = r"^[A-Za-z0-9_.:@/+-]{1,128}$"
_LABEL = r"^[A-Za-z0-9_.-]{1,64}$"


class ClassSpec(BaseModel):
    """One label: its prompts (cycled per request) and how many images it should have."""

    model_config = _STRICT
    label: str = Field(pattern=_LABEL, description="Folder-safe label, e.g. '7' or 'cat'.")
    prompts: tuple[str, ...] = Field(min_length=1, description="Cycled: request j uses prompts[j % len].")
    count: int = Field(ge=1, le=10_000_000, description="Images wanted for this label.")
    negative_prompt: str | None = Field(default=None, max_length=4000)

    @field_validator("prompts")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not p.strip() for p in v):
            raise ValueError("prompts must not be empty")
        return v


class ContextSpec(BaseModel):
    model_config = _STRICT
    team: str = Field(default="default", pattern=_NAME)
    project: str | None = Field(default=None, pattern=_NAME, description="Default: dataset-<name>.")
    use_case: str = Field(default="synthetic-data", pattern=_NAME)
    user: str = Field(default="dataset-builder", pattern=_NAME)


class QualitySpec(BaseModel):
    """Optional gates: dropped items stay paid and listed, and are never bought again."""

    model_config = _STRICT
    dedupe_hamming: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Drop an image whose perceptual hash is this close to a kept one.",
    )
    hook: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function(png_bytes, item_dict) -> float score; kept when >= min_score.",
    )
    min_score: float = 0.0


class DatasetSpec(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    model: str = Field(pattern=_NAME)
    provider: str | None = Field(default=None, pattern=_NAME)
    adapter: str | None = Field(default=None, pattern=_NAME)
    steps: int | None = Field(default=None, ge=1, le=1000)
    width: int | None = Field(default=None, ge=64, le=4096)
    height: int | None = Field(default=None, ge=64, le=4096)
    classes: tuple[ClassSpec, ...] = Field(min_length=1)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    split: dict[str, float] = Field(default_factory=lambda: {"train": 1.0})
    images_per_request: int = Field(default=1, ge=1, le=16)
    budget_usd: Decimal | None = Field(default=None, ge=0)
    context: ContextSpec = ContextSpec()
    quality: QualitySpec = QualitySpec()

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(w <= 0 for w in v.values()) or abs(sum(v.values()) - 1.0) > 1e-9:
            raise ValueError("split weights must be positive and sum to 1")
        if any(not k.replace("_", "").replace("-", "").isalnum() for k in v):
            raise ValueError("split names must be folder-safe")
        return v

    @model_validator(mode="after")
    def _unique_labels(self) -> DatasetSpec:
        labels = [c.label for c in self.classes]
        if len(set(labels)) != len(labels):
            raise ValueError("class labels must be unique")
        return self

    @property
    def project(self) -> str:
        return self.context.project or f"dataset-{self.name}"

    def item_fields(self) -> dict[str, Any]:
        """What defines the items (and so the digest): everything but counts, budget and gates."""
        return {
            "name": self.name,
            "model": self.model,
            "provider": self.provider,
            "adapter": self.adapter,
            "steps": self.steps,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "split": self.split,
            "images_per_request": self.images_per_request,
            "context": {**self.context.model_dump(), "project": self.project},
            "classes": [
                {"label": c.label, "prompts": list(c.prompts), "negative_prompt": c.negative_prompt}
                for c in self.classes
            ],
        }

    @property
    def digest(self) -> str:
        blob = json.dumps(self.item_fields(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def total_images(self) -> int:
        return sum(c.count for c in self.classes)


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a spec; a bad file is a ConfigError with ``FILE:LINE:``."""
    return load_model(DatasetSpec, path)


def spec_schema() -> dict[str, Any]:
    schema = DatasetSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "diffusion-gateway dataset spec"
    return schema


__all__ = ["ClassSpec", "DatasetSpec", "load_spec", "spec_schema"]
