"""Rule kinds. Each kind is one pydantic model (its YAML shape, with ``extra="forbid"``) whose
``compile()`` returns a :class:`CompiledRule`: small callables the engine chains, in the spirit of
structlog's processors. A rule contributes in one (or more) of three ways:

``check(evaluation, me) -> reason | None``
    request-dependent (prompt text, sizes, classifiers); a reason denies (or, with ``monitor: true``,
    is only reported on an allowed decision).
``effect(builder, context)``
    static: route constraints, provenance, budgets, rate limits, privacy. Computed once per distinct
    Context and cached, so the hot path never re-merges them.
``output``
    an image classifier run by ``PolicySet.check_outputs`` after generation.

A new kind is one class below plus its name in :data:`KINDS`; nothing else changes (the engine, the
loader, the JSON Schema and the CLI pick it up from there).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..types import Budget, Context, ImageRequest, Indemnity, QualityFloor, RateLimit, Scheduler
from . import classifiers
from .effects import DecisionBuilder
from .normalize import Analysis, Hit, Term, TermIndex, analyze, deobfuscate, parse_term, phrase_pattern
from .scope import CompiledScope, Glob, Scope

if TYPE_CHECKING:
    from ..inputs import InputImage

ScopeLevel = Literal["org", "team", "project", "use_case", "user"]
RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
RuleId = Annotated[str, Field(pattern=RULE_ID)]


class Evaluation:
    """Per-request state shared by every check: the prompt is analysed once, on first need."""

    __slots__ = ("_analysis", "_hits", "_index", "context", "inputs", "request")

    def __init__(
        self, request: ImageRequest, context: Context, index: TermIndex, inputs: tuple[InputImage, ...] = ()
    ) -> None:
        self.request = request
        self.context = context
        self.inputs = inputs  # an edit's checked input images (gateway.inputs), for input_image rules
        self._index = index
        self._analysis: Analysis | None = None
        self._hits: dict[int, list[Hit]] | None = None

    @property
    def analysis(self) -> Analysis:
        if self._analysis is None:
            self._analysis = analyze(self.request.prompt)
        return self._analysis

    def hits(self, owner: int) -> list[Hit]:
        """Blocklist hits of the rule at position ``owner`` (the shared index is searched once)."""
        if self._hits is None:
            grouped: dict[int, list[Hit]] = defaultdict(list)
            for hit in self._index.hits(self.analysis):
                grouped[hit.owner].append(hit)
            self._hits = grouped
        return self._hits.get(owner, [])


Check = Callable[[Evaluation, int], str | None]
Effect = Callable[[DecisionBuilder, Context], None]


@dataclass(frozen=True, slots=True)
class OutputCheck:
    classifier: str
    threshold: float
    action: Literal["deny", "quarantine"]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    kind: str
    scope: CompiledScope
    check: Check | None = None
    effect: Effect | None = None
    output: OutputCheck | None = None
    terms: tuple[Term, ...] = ()
    monitor: bool = False


# ----------------------------------------------------------------------------- base classes


class RuleBase(BaseModel):
    """Fields every rule has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RuleId = Field(description="Unique across the composed policy; a later file reusing it overrides.")
    kind: str
    description: str = Field(default="", description="Why the rule exists (shown to reviewers).")
    when: Scope = Field(default_factory=Scope, description="Apply only to matching requests (all if empty).")
    unless: Scope | None = Field(default=None, description="...except requests matching this scope.")
    final: bool = Field(default=False, description="Later files may not override or disable this rule.")

    def compile(self) -> CompiledRule:
        raise NotImplementedError

    def _compiled(self, **parts: Any) -> CompiledRule:
        return CompiledRule(self.id, self.kind, CompiledScope.build(self.when, self.unless), **parts)


class CheckRule(RuleBase):
    monitor: bool = Field(default=False, description="Report matches on allowed decisions, do not deny.")
    message: str | None = Field(default=None, description="Reason shown on denial instead of the default.")

    def _compiled_check(self, check: Check, **parts: Any) -> CompiledRule:
        return self._compiled(check=check, monitor=self.monitor, **parts)


def _term(raw: str) -> str:
    parse_term(raw)
    return raw


def _phrase(raw: str) -> str:
    phrase_pattern(raw)
    return raw


def _regex(raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return raw


BlockTerm = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_term)]
AllowPhrase = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_phrase)]
Pattern = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_regex)]


def _text_name(name: str) -> str:
    classifiers.entry(name, "text")
    return name


def _image_name(name: str) -> str:
    classifiers.entry(name, "image")
    return name


TextName = Annotated[str, AfterValidator(_text_name)]
ImageName = Annotated[str, AfterValidator(_image_name)]
Threshold = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def _globs_re(globs: tuple[str, ...]) -> re.Pattern[str]:
    from fnmatch import translate

    return re.compile("|".join(translate(g) for g in globs) or r"(?!)")


def _one_regex(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """All patterns as one alternation (one search per text); separately if they cannot be joined
    (e.g. a pattern with inline global flags must stay at the start of its own regex)."""
    try:
        return (re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE),)
    except re.error:
        return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def _allow_regex(allow: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(phrase_pattern(a) for a in allow)) if allow else None


def _outside(hits: list[Hit], allowed: re.Pattern[str] | None, text: str) -> list[Hit]:
    if allowed is None or not hits:
        return hits
    spans = [m.span() for m in allowed.finditer(text)]
    return [h for h in hits if not any(a <= h.start and h.end <= b for a, b in spans)]


# ----------------------------------------------------------------------------- prompt checks


class Blocklist(CheckRule):
    """Deny prompts containing any of ``terms`` as whole words after normalisation (see normalize.py).

    ``word*`` also matches words starting with ``word``; ``*word`` words ending with it. ``allow``
    lists phrases whose words never count ("chicken breast", "naked eye").
    """

    kind: Literal["blocklist"]
    terms: tuple[BlockTerm, ...] = Field(min_length=1)
    allow: tuple[AllowPhrase, ...] = ()

    def compile(self) -> CompiledRule:
        allowed = _allow_regex(self.allow)
        message = self.message

        def check(ev: Evaluation, me: int) -> str | None:
            hits = ev.hits(me)
            if not hits:
                return None
            hits = _outside(hits, allowed, ev.analysis.text)
            if not hits:
                return None
            found = list(dict.fromkeys(h.term for h in hits))
            return message or "prompt contains blocked term " + ", ".join(repr(t) for t in found[:3])

        return self._compiled_check(check, terms=tuple(parse_term(t) for t in self.terms))


class Regex(CheckRule):
    """Deny prompts matching any pattern (Python ``re``), searched in the normalised text and in its
    de-obfuscated form (or in the raw prompt with ``target: raw``)."""

    kind: Literal["regex"]
    patterns: tuple[Pattern, ...] = Field(min_length=1)
    allow: tuple[AllowPhrase, ...] = ()
    target: Literal["normalized", "raw"] = "normalized"

    @model_validator(mode="after")
    def _allow_needs_normalized(self) -> Regex:
        if self.allow and self.target == "raw":
            raise ValueError("allow phrases apply to normalized text: drop them or use target: normalized")
        return self

    def compile(self) -> CompiledRule:
        pats = _one_regex(self.patterns)
        allowed = _allow_regex(self.allow)
        raw, message = self.target == "raw", self.message

        def check(ev: Evaluation, me: int) -> str | None:
            if raw:
                texts: tuple[str, ...] = (ev.request.prompt,)
            else:
                text = ev.analysis.text
                if allowed is not None:
                    text = allowed.sub(lambda m: " " * len(m.group()), text)
                    texts = (text, deobfuscate(text)) if ev.analysis.variants else (text,)
                else:
                    deob = ev.analysis.deobfuscated
                    texts = (text,) if deob is text else (text, deob)
            for p in pats:
                if any(p.search(t) for t in texts):
                    return message or "prompt matches a blocked pattern"
            return None

        return self._compiled_check(check)


class PromptClassifier(CheckRule):
    """Deny prompts a text classifier scores at or above ``threshold`` (loaded on first use)."""

    kind: Literal["prompt_classifier"]
    classifier: TextName = Field(description="A registered text classifier, e.g. 'profanity'.")
    threshold: Threshold = 0.9

    def compile(self) -> CompiledRule:
        _require(self.classifier, "text")
        name, threshold, message = self.classifier, self.threshold, self.message

        def check(ev: Evaluation, me: int) -> str | None:
            score = classifiers.text_classifier(name).scores([ev.analysis.deobfuscated])[0]
            if score >= threshold:
                return message or f"prompt classifier {name!r} scored {score:.2f} (threshold {threshold})"
            return None

        return self._compiled_check(check)


class Limits(CheckRule):
    """Deny requests that ask for more than the limits. Values the request leaves unset take the
    model's default from its provider card and are bounded by the card's capabilities instead."""

    kind: Literal["limits"]
    max_images: int | None = Field(default=None, ge=1)
    max_width: int | None = Field(default=None, ge=1)
    max_height: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1, description="width x height")
    schedulers: tuple[Scheduler, ...] | None = Field(default=None, description="Allowed schedulers.")
    min_steps: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    max_guidance_scale: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_prompt_chars: int | None = Field(default=None, ge=1)
    allowed_extras: tuple[Glob, ...] | None = Field(
        default=None, description="Provider-specific input keys allowed (globs); [] forbids all extras."
    )
    denied_extras: tuple[Glob, ...] = Field(
        default=(), description="Provider-specific input keys refused (globs), e.g. disable_safety_checker."
    )

    @model_validator(mode="after")
    def _sane(self) -> Limits:
        if self.min_steps is not None and self.max_steps is not None and self.min_steps > self.max_steps:
            raise ValueError("min_steps is greater than max_steps")
        return self

    def compile(self) -> CompiledRule:
        lim, message = self, self.message
        allowed_re = _globs_re(self.allowed_extras) if self.allowed_extras is not None else None
        denied_re = _globs_re(self.denied_extras) if self.denied_extras else None

        def check(ev: Evaluation, me: int) -> str | None:
            r, bad = ev.request, []
            if lim.max_images is not None and r.n > lim.max_images:
                bad.append(f"n={r.n} exceeds {lim.max_images} images")
            if lim.max_width is not None and r.width is not None and r.width > lim.max_width:
                bad.append(f"width {r.width} exceeds {lim.max_width}")
            if lim.max_height is not None and r.height is not None and r.height > lim.max_height:
                bad.append(f"height {r.height} exceeds {lim.max_height}")
            w, h = r.width, r.height
            if lim.max_pixels is not None and w is not None and h is not None and w * h > lim.max_pixels:
                bad.append(f"{r.width}x{r.height} exceeds {lim.max_pixels} pixels")
            if lim.schedulers is not None and r.scheduler is not None and r.scheduler not in lim.schedulers:
                bad.append(f"scheduler {r.scheduler!r} is not one of {list(lim.schedulers)}")
            if r.steps is not None and lim.min_steps is not None and r.steps < lim.min_steps:
                bad.append(f"steps {r.steps} below {lim.min_steps}")
            if r.steps is not None and lim.max_steps is not None and r.steps > lim.max_steps:
                bad.append(f"steps {r.steps} exceeds {lim.max_steps}")
            g = r.guidance_scale
            if lim.max_guidance_scale is not None and g is not None and g > lim.max_guidance_scale:
                bad.append(f"guidance_scale {g} exceeds {lim.max_guidance_scale}")
            if lim.max_prompt_chars is not None and len(r.prompt) > lim.max_prompt_chars:
                bad.append(f"prompt is {len(r.prompt)} characters, limit {lim.max_prompt_chars}")
            if r.extras and (allowed_re is not None or denied_re is not None):
                keys = sorted(
                    k
                    for k in r.extras
                    if (allowed_re is not None and not allowed_re.match(k))
                    or (denied_re is not None and denied_re.match(k))
                )
                if keys:
                    bad.append(f"extras {keys} are not allowed")
            if not bad:
                return None
            return message or "request exceeds limits: " + "; ".join(bad)

        return self._compiled_check(check)


# ----------------------------------------------------------------------------- static effects


class MinQuality(BaseModel):
    """``min_quality: {metric: class_consistency, value: 0.95}``: see gateway/quality_routing.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str = Field(min_length=1)
    value: float = Field(allow_inf_nan=False)
    unmeasured: Literal["exclude", "rank_last"] = "exclude"


RoutingStrategy = Literal["cheapest", "fastest", "priority", "weighted", "cheapest_meeting_quality"]


class Route(RuleBase):
    """Constraints routing must respect (see gateway/routing.py). Unset fields contribute nothing."""

    kind: Literal["route"]
    allowed_providers: tuple[Glob, ...] | None = None
    denied_providers: tuple[Glob, ...] | None = None
    allowed_models: tuple[Glob, ...] | None = Field(default=None, description="Model ids or provider/model.")
    denied_models: tuple[Glob, ...] | None = None
    allowed_regions: tuple[Glob, ...] | None = Field(default=None, description="e.g. ['eu-*', 'local']")
    commercial_use_required: bool | None = None
    min_indemnity: Indemnity | None = Field(default=None, description="none < capped < uncapped")
    training_data_disclosure_required: bool | None = None
    exclude_legacy: bool | None = None
    exclude_end_of_life: bool | None = None
    max_cost_usd: Decimal | None = Field(default=None, ge=0, description="Per request, estimated.")
    require_adapter: tuple[Glob, ...] | None = Field(
        default=None, description="Only fine-tuned routes whose adapter name matches, e.g. ['brand-*']."
    )
    require_signed_adapters: bool | None = Field(
        default=None, description="Adapter routes must carry a valid gateway signature (default true)."
    )
    min_quality: MinQuality | None = Field(default=None, description="A floor on cards' measured quality.")
    strategy: RoutingStrategy | None = Field(default=None, description="Routing strategy in this scope.")

    def compile(self) -> CompiledRule:
        fields = self.model_dump(include=set(_ROUTE_FIELDS) - {"min_quality"}, exclude_none=True)
        if self.min_quality is not None:
            q = self.min_quality
            fields["min_quality"] = (QualityFloor(q.metric, q.value, q.unmeasured),)

        def effect(b: DecisionBuilder, ctx: Context) -> None:
            b.constrain(**fields)

        return self._compiled(effect=effect)


_ROUTE_FIELDS = tuple(f for f in Route.model_fields if f not in RuleBase.model_fields)


class Provenance(RuleBase):
    """Marks every returned image must carry (the gateway adds its own where a provider's lack them)."""

    kind: Literal["provenance"]
    watermark_required: bool | None = None
    c2pa_required: bool | None = None
    on_missing: Literal["quarantine", "deny"] | None = None

    def compile(self) -> CompiledRule:
        names = {"watermark_required", "c2pa_required", "on_missing"}
        fields = self.model_dump(include=names, exclude_none=True)

        def effect(b: DecisionBuilder, ctx: Context) -> None:
            b.require(**fields)

        return self._compiled(effect=effect)


def _scope_value(ctx: Context, level: ScopeLevel) -> str:
    return "*" if level == "org" else str(getattr(ctx, level))


class BudgetRule(RuleBase):
    """A spending limit per ``scope`` (one counter per team, per user...; ``org`` = one in total)."""

    kind: Literal["budget"]
    scope: ScopeLevel
    period: Literal["day", "week", "month", "total"]
    limit_usd: Decimal = Field(ge=0, allow_inf_nan=False)
    warn_at: float = Field(default=0.8, gt=0, le=1, allow_inf_nan=False)

    def compile(self) -> CompiledRule:
        spec = self

        def effect(b: DecisionBuilder, ctx: Context) -> None:
            value = _scope_value(ctx, spec.scope)
            b.budgets.append(Budget(spec.id, spec.scope, value, spec.period, spec.limit_usd, spec.warn_at))

        return self._compiled(effect=effect)


class RateLimitRule(RuleBase):
    """At most ``requests`` generate calls per ``per`` window, counted per ``scope``."""

    kind: Literal["rate_limit"]
    scope: ScopeLevel
    requests: int = Field(ge=1)
    per: Literal["minute", "hour", "day"]

    def compile(self) -> CompiledRule:
        spec = self

        def effect(b: DecisionBuilder, ctx: Context) -> None:
            value = _scope_value(ctx, spec.scope)
            b.rate_limits.append(RateLimit(spec.id, spec.scope, value, spec.requests, spec.per))

        return self._compiled(effect=effect)


class Privacy(RuleBase):
    """Whether the audit record may keep the prompt text (default: only its SHA-256)."""

    kind: Literal["privacy"]
    capture_prompt: bool

    def compile(self) -> CompiledRule:
        capture = self.capture_prompt

        def effect(b: DecisionBuilder, ctx: Context) -> None:
            b.capture.append(capture)

        return self._compiled(effect=effect)


# ----------------------------------------------------------------------------- outputs


class OutputClassifier(RuleBase):
    """Score every generated image; at or above ``threshold`` quarantine it (kept out of the result and
    audited) or deny the whole request. Runs only when a rule in scope asks for it."""

    kind: Literal["output_classifier"]
    classifier: ImageName = Field(description="A registered image classifier, e.g. 'nsfw'.")
    threshold: Threshold = 0.8
    action: Literal["deny", "quarantine"] = "quarantine"

    def compile(self) -> CompiledRule:
        _require(self.classifier, "image")
        return self._compiled(output=OutputCheck(self.classifier, self.threshold, self.action))


def _require(name: str, kind: classifiers.ClassifierKind) -> None:
    found = classifiers.entry(name, kind)
    missing = found.missing()
    if missing is not None:
        raise ValueError(
            f"classifier {name!r} needs the Python module {missing!r}: "
            f"pip install 'diffusion-gateway[{found.extra}]'"
        )


from .archive_rules import ArchiveRule, CacheRule  # noqa: E402 - they subclass RuleBase above
from .training_data import TrainingData  # noqa: E402 - same

KINDS: tuple[type[RuleBase], ...] = (
    Blocklist, Regex, PromptClassifier, Limits, Route, Provenance, BudgetRule, RateLimitRule, Privacy,
    OutputClassifier, CacheRule, ArchiveRule, TrainingData,
)  # fmt: skip

KIND_NAMES: tuple[str, ...] = tuple(str(get_args(k.model_fields["kind"].annotation)[0]) for k in KINDS)

# Kinds defined in their own modules on the bases above (imported last: they import this module).
from .input_rules import InputImageRule  # noqa: E402

KINDS = (*KINDS, InputImageRule)
KIND_NAMES = tuple(str(get_args(k.model_fields["kind"].annotation)[0]) for k in KINDS)

if TYPE_CHECKING:
    RuleSpec = RuleBase
else:
    RuleSpec = Annotated[Union[KINDS], Field(discriminator="kind")]  # noqa: UP007

__all__ = ["KINDS", "KIND_NAMES", "CompiledRule", "Evaluation", "OutputCheck", "RuleBase", "RuleSpec"]
