"""Request, decision and result models.

Inputs (:class:`ImageRequest`, :class:`Context`) are strict pydantic models: a bad value is refused
with a message that names the field, before any policy, routing or money is involved. Decisions and
results are frozen dataclasses built by the gateway itself, never parsed from users, so they stay cheap
on the hot path.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Scheduler = Literal["ddpm", "ddim", "dpm++", "euler", "euler-ancestral", "lcm",
                    "tcd", "ddim-trailing", "euler-trailing"]  # fmt: skip
SCHEDULERS: tuple[str, ...] = ("ddpm", "ddim", "dpm++", "euler", "euler-ancestral", "lcm",
                               "tcd", "ddim-trailing", "euler-trailing")  # fmt: skip
Indemnity = Literal["none", "capped", "uncapped"]
INDEMNITY_ORDER: Mapping[str, int] = {"none": 0, "capped": 1, "uncapped": 2}

_NAME = r"^[A-Za-z0-9_.:@/+-]{1,128}$"
MAX_SIDE = 4096
MIN_SIDE = 64
MAX_IMAGES = 16
MAX_INPUT_IMAGES = 16
EditMode = Literal["img2img", "inpaint", "outpaint", "variation"]
EDIT_MODES: tuple[str, ...] = ("img2img", "inpaint", "outpaint", "variation")
_Encoded = Annotated[bytes, Strict()]  # never coerced from str: a path string is not an image


class ImageRequest(BaseModel):
    """What to generate. Unset optional fields mean "the model's default" (from its provider card)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, max_length=4000, description="What to draw.")
    negative_prompt: str | None = Field(default=None, max_length=4000)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES, description="Number of images.")
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    steps: int | None = Field(default=None, ge=1, le=1000)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    scheduler: Scheduler | None = None
    provider: str | None = Field(default=None, pattern=_NAME, description="Narrow routing to a backend.")
    model: str | None = Field(default=None, pattern=_NAME, description="Narrow routing to a model id.")
    extras: dict[str, Any] = Field(default_factory=dict, description="Provider-specific inputs.")
    quality: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="low | medium | high | auto, or a provider's own word (standard, premium, hd); "
        "each provider card maps it, and routing drops the cards that cannot honour it.",
    )
    adapter: str | None = Field(
        default=None, pattern=_NAME, description="A registered fine-tune (LoRA adapter) by name."
    )
    # Edits (docs/editing.md): encoded input images, a mask (white or alpha 0 = repaint), strength.
    images: tuple[_Encoded, ...] = Field(
        default=(), max_length=MAX_INPUT_IMAGES, repr=False, description="Encoded input images."
    )
    mask: _Encoded | None = Field(default=None, repr=False, description="White (or alpha 0) = repaint.")
    strength: float | None = Field(
        default=None, ge=0.0, le=1.0, allow_inf_nan=False, description="How far an edit moves."
    )
    mode: EditMode | None = Field(default=None, description="Inferred: a mask means inpaint, else img2img.")

    @model_validator(mode="after")
    def _edit_fields(self) -> ImageRequest:
        if not self.images:
            given = [k for k, v in (("mask", self.mask), ("strength", self.strength), ("mode", self.mode))
                     if v is not None]  # fmt: skip
            if given:
                raise ValueError(f"{', '.join(given)} need input images (an edit)")
            return self
        if self.mode is None:
            object.__setattr__(self, "mode", "inpaint" if self.mask is not None else "img2img")
        if self.mode in ("inpaint", "outpaint") and self.mask is None and "mask_prompt" not in self.extras:
            raise ValueError(f"mode {self.mode!r} needs a mask")
        return self

    @property
    def is_edit(self) -> bool:
        """True when the request carries input images (an edit rather than a generation)."""
        return bool(self.images)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be empty")
        return v

    @classmethod
    def build(cls, prompt_or_request: str | ImageRequest, **options: Any) -> ImageRequest:
        """Accept a prompt or a request plus keyword overrides; raise a typed, readable error."""
        try:
            if isinstance(prompt_or_request, ImageRequest):
                if not options:
                    return prompt_or_request
                return cls.model_validate({**prompt_or_request.model_dump(), **options})
            return cls.model_validate({"prompt": prompt_or_request, **options})
        except ValidationError as exc:
            raise InvalidRequestError(_readable(exc, "request")) from None


class Context(BaseModel):
    """Who asks and why: the scope that policies and budgets match on."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    team: str = Field(default="default", pattern=_NAME)
    project: str = Field(default="default", pattern=_NAME)
    use_case: str = Field(default="general", pattern=_NAME)
    user: str = Field(default="anonymous", pattern=_NAME)
    tags: tuple[str, ...] = ()

    @classmethod
    def build(cls, context: Context | Mapping[str, Any] | None = None, **fields: Any) -> Context:
        """Merge a context (or mapping) with keyword fields; unset (None) keywords are ignored."""
        base: dict[str, Any] = {}
        if isinstance(context, Context):
            base = context.model_dump()
        elif context is not None:
            base = dict(context)
        base.update({k: v for k, v in fields.items() if v is not None})
        try:
            return cls.model_validate(base)
        except ValidationError as exc:
            raise InvalidRequestError(_readable(exc, "context")) from None


def _readable(exc: ValidationError, what: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or what
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class QualityFloor:
    """A policy's minimum measured quality (e.g. class_consistency >= 0.95) for the routes it may use.

    ``unmeasured`` says what happens to a route whose card records no figure for ``metric``:
    ``exclude`` (the floor is a hard requirement) or ``rank_last`` (usable, but after every route
    known to meet the floor; for packs that prefer measured models without banning the rest).
    """

    metric: str
    value: float
    unmeasured: Literal["exclude", "rank_last"] = "exclude"


@dataclass(frozen=True, slots=True)
class RouteConstraints:
    """What the policy allows routing to pick; routing drops every route that breaks one."""

    allowed_providers: tuple[str, ...] | None = None  # globs; None = any
    denied_providers: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] | None = None
    denied_models: tuple[str, ...] = ()
    allowed_regions: tuple[str, ...] | None = None
    commercial_use_required: bool = False
    min_indemnity: Indemnity = "none"
    training_data_disclosure_required: bool = False
    exclude_legacy: bool = False
    exclude_end_of_life: bool = True
    max_cost_usd: Decimal | None = None
    require_adapter: tuple[str, ...] | None = None  # globs over adapter names; None = no adapter needed
    require_signed_adapters: bool = True
    min_quality: tuple[QualityFloor, ...] = ()  # every floor must hold (gateway/quality_routing.py)
    strategy: str | None = None  # a policy's routing strategy for its scope (overrides the settings)


@dataclass(frozen=True, slots=True)
class ProvenanceRequirements:
    """What every returned image must carry; the gateway adds its own marks where it can."""

    watermark_required: bool = False
    c2pa_required: bool = False
    on_missing: Literal["quarantine", "deny"] = "quarantine"


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit in scope for a request (the policy defines them, the ledger enforces them)."""

    id: str
    scope: Literal["org", "team", "project", "use_case", "user"]
    scope_value: str  # e.g. the team name; "*" for org
    period: Literal["day", "week", "month", "total"]
    limit_usd: Decimal
    warn_at: float = 0.8  # fraction of the limit


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` generate calls per ``per`` window for a scope (the ledger counts them)."""

    id: str
    scope: Literal["org", "team", "project", "use_case", "user"]
    scope_value: str
    requests: int
    per: Literal["minute", "hour", "day"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict on one request: deny with every matching rule, or allow with constraints."""

    allowed: bool
    rule_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    constraints: RouteConstraints = field(default_factory=RouteConstraints)
    provenance: ProvenanceRequirements = field(default_factory=ProvenanceRequirements)
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    policy_hash: str = ""
    capture_prompt: bool = False
    inputs: tuple[Mapping[str, Any], ...] = ()  # an edit's inputs: hashes, formats, what provenance says

    def to_dict(self) -> dict[str, Any]:
        out = {
            "allowed": self.allowed,
            "rule_ids": list(self.rule_ids),
            "reasons": list(self.reasons),
            "policy_hash": self.policy_hash,
        }
        if self.inputs:
            out["inputs"] = [dict(i) for i in self.inputs]
        return out


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class GeneratedImage:
    """One output image, PNG-encoded. ``metadata`` says how it was made (native size, upscaling)."""

    data: bytes
    width: int
    height: int
    mime: str = "image/png"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    watermark: str = "absent"  # "embedded" | "provider" | "absent"
    c2pa: str = "absent"  # "signed" | "provider" | "absent"

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def pil(self) -> PILImage:
        """Decode into a PIL image (Pillow is a core dependency)."""
        from PIL import Image

        img = Image.open(io.BytesIO(self.data))
        img.load()
        return img

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves a half-written image."""
        return atomic_write(Path(path), self.data)

    def _repr_png_(self) -> bytes | None:
        return self.data if self.mime == "image/png" else None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One backend call: the route tried and how it ended."""

    provider: str
    model: str
    outcome: str  # "ok" or the error class name
    latency_s: float
    error: str | None = None
    retries: int = 0
    charged_usd: Decimal | None = None  # what a failed attempt kept as spent (a timed-out or stopped run)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "latency_s": round(self.latency_s, 6),
            "error": self.error,
            "retries": self.retries,
        }


@dataclass(frozen=True)
class GenerationResult:
    """Everything a caller (and an auditor) needs to know about one generate call."""

    request_id: str
    images: tuple[GeneratedImage, ...]
    provider: str
    model: str
    seed: int | None
    cost_usd: Decimal
    estimated_cost_usd: Decimal
    latency_s: float
    decision: Decision
    attempts: tuple[Attempt, ...] = ()
    trace_id: str | None = None
    audit_seq: int | None = None
    quarantined: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    replayed: bool = False  # an idempotency-key repeat: the original result, nothing paid again
    cache_hit: bool = False  # served from the result cache at cost 0, re-stamped as a new output

    @property
    def image(self) -> GeneratedImage:
        """The first image (most calls ask for one)."""
        return self.images[0]

    def save(self, directory: str | os.PathLike[str], stem: str | None = None) -> list[Path]:
        """Write every image as ``{stem}-{i}.png`` under ``directory``; returns the paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        base = stem or self.request_id
        return [img.save(d / f"{base}-{i}.{_EXT.get(img.mime, 'bin')}") for i, img in enumerate(self.images)]

    def to_dict(self, paths: list[Path] | None = None) -> dict[str, Any]:
        """The JSON object ``gateway generate --json`` prints."""
        images = []
        for i, img in enumerate(self.images):
            images.append(
                {
                    "path": str(paths[i]) if paths else None,
                    "sha256": img.sha256,
                    "width": img.width,
                    "height": img.height,
                    "watermark": img.watermark,
                    "c2pa": img.c2pa,
                }
            )
        return {
            "request_id": self.request_id,
            "images": images,
            "provider": self.provider,
            "model": self.model,
            "seed": self.seed,
            "cost_usd": str(self.cost_usd),
            "estimated_cost_usd": str(self.estimated_cost_usd),
            "latency_s": round(self.latency_s, 6),
            "trace_id": self.trace_id,
            "audit_seq": self.audit_seq,
            "watermark": _summary(img.watermark for img in self.images),
            "c2pa": _summary(img.c2pa for img in self.images),
            "decision": self.decision.to_dict(),
            "attempts": [a.to_dict() for a in self.attempts],
            "quarantined": [dict(q) for q in self.quarantined],
            "metadata": dict(self.metadata),
            "replayed": self.replayed,
            "cache_hit": self.cache_hit,
        }

    def _repr_html_(self) -> str:
        import base64

        tags = "".join(
            f'<img src="data:{img.mime};base64,{base64.b64encode(img.data).decode()}" '
            f'width="{min(img.width, 256)}" style="margin:2px"/>'
            for img in self.images
        )
        caption = html.escape(f"{self.provider}/{self.model} seed={self.seed} cost=${self.cost_usd}")
        return f"<div>{tags}<div><code>{caption}</code></div></div>"


_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _summary(values: Any) -> str:
    vals = set(values)
    if not vals:
        return "none"
    return vals.pop() if len(vals) == 1 else "mixed"


@contextmanager
def atomic_writer(
    path: Path, mode: str = "wb", *, sync: bool = True, mkdir: bool = True
) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit fsync and rename it over ``path``.

    Readers see the old file or the whole new one, never half of it; on error the temp file goes.
    ``sync=False`` skips the fsync: still atomic against a crashed process (the rename is), but a
    power loss may leave the old file; for indexes that can be rebuilt, or files :func:`fsync_paths`
    makes durable later (off the caller's critical path). ``mkdir=False``: the caller knows the
    folder exists (a store writing thousands of files skips a syscall per file).
    """
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes, *, sync: bool = True, mkdir: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, sync=sync, mkdir=mkdir) as fh:
        fh.write(data)
    return path


def fsync_paths(paths: Iterable[Path]) -> None:
    """Make files written with ``sync=False`` durable: fsync each file, then each parent folder once
    (the folder holds the renamed entry; without it a power loss may forget the name)."""
    folders: dict[Path, None] = {}
    for path in paths:
        _fsync(path, os.O_RDONLY)
        folders[path.parent] = None
    for folder in folders:
        fsync_folder(folder)


def fsync_folder(folder: Path) -> None:
    """fsync a folder, so the names renamed into it survive a power loss."""
    _fsync(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
