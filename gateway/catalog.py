"""Provider cards: what each model costs and promises, as reviewed YAML data.

A card file describes one backend's models. Every price and term carries ``source`` and ``as_of`` so
finance and legal can check it. A *route* is one (backend, model) pair from a card; routing filters and
ranks routes, the backend registry turns a route's backend name into code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._yaml import load_model
from .editing import EditCapabilities
from .errors import ConfigError
from .types import SCHEDULERS, Indemnity, Scheduler

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Sourced(BaseModel):
    """Every fact on a card says where it comes from and when it was read."""

    model_config = _STRICT
    source: str = Field(min_length=1)
    as_of: dt.date


class Licence(Sourced):
    name: str
    commercial_use: bool
    notes: str = ""


class IndemnityTerms(Sourced):
    level: Indemnity
    scope: str = ""


class TrainingData(Sourced):
    disclosed: bool
    summary: str = ""


class ProvenanceBehaviour(Sourced):
    watermark: bool = False
    c2pa: bool = False


class Moderation(Sourced):
    provider_side: bool
    notes: str = ""


class FineTune(Sourced):
    """A fine-tuned model: which base, which adapter, trained on which dataset (by manifest digest).

    ``kind: adapter`` routes are made from signed adapter files (gateway/finetune/registry.py);
    ``kind: remote`` cards are written by hand for a provider-side fine-tune (a Replicate trained
    version, a Bedrock custom model) and point at the dataset manifest the company keeps.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="What adapter= selects.")
    kind: Literal["adapter", "remote"] = "remote"
    base_model: str
    base_model_sha256: str | None = None
    dataset_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="Merkle root of the dataset manifest.")
    dataset_name: str = ""
    dataset_manifest: str | None = Field(default=None, description="Where the manifest is kept (path/URL).")
    owner: str = ""
    adapter_sha256: str | None = None
    signed: bool = False
    signer: str | None = None
    problem: str | None = Field(default=None, description="Why the signature did not verify, if it did not.")


class ImageTier(BaseModel):
    """A per-image price for outputs up to ``max_pixels`` at ``quality``."""

    model_config = _STRICT
    usd: Decimal = Field(ge=0)
    max_pixels: int | None = None
    quality: str = "standard"


class TokenPrices(BaseModel):
    """USD per 1M tokens, by kind (what OpenAI's ``usage`` and Gemini's ``usageMetadata`` count)."""

    model_config = _STRICT
    text_input: Decimal = Field(ge=0)
    image_input: Decimal = Field(default=Decimal(0), ge=0)
    image_output: Decimal = Field(ge=0)
    text_output: Decimal = Field(default=Decimal(0), ge=0)


class ExpectedTokens(BaseModel):
    """Output image tokens one image costs at ``quality`` up to ``max_pixels``: the estimate's basis.

    An upper bound on purpose (the budget reserves it); the settle uses the counts the provider returns.
    """

    model_config = _STRICT
    quality: str = "standard"
    max_pixels: int | None = None
    output_image_tokens: int = Field(ge=0)


class Pricing(Sourced):
    """One of four billing units: per image (tiers), per second of named hardware, per device-hour, or
    per token (``usd_per_million_tokens`` with ``expected_tokens`` for the estimate; ``per_image``, when
    given, is the fallback for a response that reports no token usage)."""

    unit: Literal["image", "second", "hour", "token"]
    per_image: tuple[ImageTier, ...] = ()
    usd_per_second: Decimal | None = Field(default=None, ge=0)
    hardware: str | None = None
    usd_per_hour: Decimal | None = Field(default=None, ge=0)
    usd_per_million_tokens: TokenPrices | None = None
    expected_tokens: tuple[ExpectedTokens, ...] = ()
    expected_seconds: float = Field(default=10.0, gt=0, description="Conservative default per call.")

    @model_validator(mode="after")
    def _unit_has_price(self) -> Pricing:
        need = {"image": bool(self.per_image), "second": self.usd_per_second is not None,
                "hour": self.usd_per_hour is not None,
                "token": self.usd_per_million_tokens is not None and bool(self.expected_tokens)}  # fmt: skip
        if not need[self.unit]:
            field = {"image": "per_image", "second": "usd_per_second", "hour": "usd_per_hour",
                     "token": "usd_per_million_tokens and expected_tokens"}[self.unit]  # fmt: skip
            raise ValueError(f"unit {self.unit!r} needs {field}")
        return self


EditCapabilities.model_rebuild(_types_namespace={"Pricing": Pricing})  # its edit price is a Pricing


class Capabilities(BaseModel):
    model_config = _STRICT
    min_side: int = 64
    max_side: int = 4096
    multiple_of: int = 1
    max_pixels: int | None = None
    sizes: tuple[tuple[int, int], ...] | None = None  # exact sizes only, when the model has a list
    max_images: int = 1
    seed: bool = True
    negative_prompt: bool = True
    steps: bool = False
    guidance: bool = False
    schedulers: tuple[Scheduler, ...] = ()
    # Request quality word (low|medium|high|auto or a provider's word) -> the word this model takes.
    # None: the model has no quality choice and honours only ``auto`` (its default).
    qualities: dict[str, str] | None = None
    edit: EditCapabilities | None = None  # what it can do with input images (gateway/editing.py)


class Defaults(BaseModel):
    model_config = _STRICT
    width: int = 1024
    height: int = 1024
    steps: int | None = None
    guidance_scale: float | None = None
    scheduler: Scheduler | None = None
    quality: str | None = None  # the provider word used when the request sets none (None: send none)


class QualityRecord(Sourced):
    """A measured quality figure for one step setting (``steps``/``scheduler`` None = the defaults).

    Written from a benchmark run (``source`` names it); routing reads it against a policy's
    ``min_quality`` floor. ``expected_seconds`` (optional) is the measured time per image at this
    setting: ``cheapest_meeting_quality`` ranks time-billed routes by it (every candidate measured by
    the same run), and ``explain`` shows it as the measured cost per image.
    """

    metric: str = Field(min_length=1, description="e.g. class_consistency (higher is better)")
    value: float
    steps: int | None = Field(default=None, ge=1)
    scheduler: Scheduler | None = None
    expected_seconds: float | None = Field(default=None, gt=0)


class ModelCard(BaseModel):
    model_config = _STRICT
    id: str = Field(min_length=1, description="The backend's model id.")
    name: str
    status: Literal["active", "legacy", "end_of_life"] = "active"
    end_of_life: dt.date | None = None
    regions: tuple[str, ...] = ("local",)
    licence: Licence
    indemnity: IndemnityTerms
    training_data: TrainingData
    provenance: ProvenanceBehaviour
    moderation: Moderation
    pricing: Pricing
    capabilities: Capabilities = Capabilities()
    defaults: Defaults = Defaults()
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the backend as-is.")
    fine_tune: FineTune | None = Field(default=None, description="Set for fine-tuned models (adapters).")
    quality: tuple[QualityRecord, ...] = Field(default=(), description="Measured quality per step setting.")


class ProviderCard(BaseModel):
    model_config = _STRICT
    schema_version: Literal[1] = 1
    provider: str = Field(pattern=r"^[a-z0-9_-]+$", description="Backend name in the registry.")
    name: str
    models: tuple[ModelCard, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ProviderCard:
        ids = [m.id for m in self.models]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate model ids: {sorted(dup)}")
        return self


class Route:
    """One (backend, model) pair, with its card. Hashable by key ``provider/model``."""

    __slots__ = ("__dict__", "card", "provider")

    def __init__(self, provider: str, card: ModelCard) -> None:
        self.provider = provider
        self.card = card

    @property
    def model(self) -> str:
        return self.card.id

    @cached_property
    def key(self) -> str:
        return f"{self.provider}/{self.card.id}"

    def lifecycle(self, today: dt.date) -> str:
        """The state as of ``today``: active, legacy or end_of_life (an EOL date in the past wins)."""
        if self.card.status == "end_of_life" or (self.card.end_of_life and today >= self.card.end_of_life):
            return "end_of_life"
        return self.card.status

    def __repr__(self) -> str:
        return f"Route({self.key})"


class Catalog:
    """All routes from a set of card files, in a stable order (file name, then card order)."""

    def __init__(self, cards: Iterable[ProviderCard]) -> None:
        self.cards = tuple(cards)
        self.routes: tuple[Route, ...] = tuple(Route(c.provider, m) for c in self.cards for m in c.models)
        keys = [r.key for r in self.routes]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ConfigError(f"route defined twice across provider cards: {sorted(dup)}")
        self._by_key = {r.key: r for r in self.routes}

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)

    def get(self, key: str) -> Route | None:
        return self._by_key.get(key)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Catalog:
        files: list[Path] = []
        for p in map(Path, paths):
            files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
        return cls(load_model(ProviderCard, f) for f in files)

    @classmethod
    def default(cls) -> Catalog:
        return cls.load([default_data_dir("providers")])


def default_data_dir(kind: Literal["providers", "policies"]) -> Path:
    """The shipped ``providers/`` or ``policies/`` folder: inside the wheel, or the source checkout."""
    packaged = Path(str(resources.files("gateway").joinpath("_data", kind)))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / kind


__all__ = ["SCHEDULERS", "Catalog", "ModelCard", "ProviderCard", "Route", "default_data_dir"]
