"""Routing: catalogue routes -> drop the ineligible (one reason each) -> rank by a strategy.

Pure: no network, and no clock reads it is not given (``today``, ``now``), so ``gateway explain`` can
show the exact plan the gateway would follow without spending anything. Eligibility is a tuple of
small rule functions; a new constraint is one more function in :data:`ELIGIBILITY`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from . import quality_routing
from .catalog import Catalog, Route
from .editing import edit_eligibility
from .ledger.pricing import estimate_cost
from .types import INDEMNITY_ORDER, Decision, ImageRequest, QualityFloor, RouteConstraints, atomic_write

Strategy = Literal["cheapest", "fastest", "priority", "weighted", "cheapest_meeting_quality"]
STRATEGIES: tuple[str, ...] = ("cheapest", "fastest", "priority", "weighted", "cheapest_meeting_quality")


@dataclass(frozen=True, slots=True)
class RoutingInput:
    """Everything an eligibility rule may look at."""

    route: Route
    request: ImageRequest
    constraints: RouteConstraints
    today: dt.date


Rule = Callable[[RoutingInput], str | None]


def _any_glob(value: str, globs: Sequence[str]) -> bool:
    return any(fnmatchcase(value, g) for g in globs)


def _hint(x: RoutingInput) -> str | None:
    r = x.request
    if r.provider and not fnmatchcase(x.route.provider, r.provider):
        return f"not the requested provider {r.provider!r}"
    if r.model and not (fnmatchcase(x.route.model, r.model) or fnmatchcase(x.route.key, r.model)):
        return f"not the requested model {r.model!r}"
    return None


def _adapter_hint(x: RoutingInput) -> str | None:
    """Fine-tuned routes serve requests that ask for them (``adapter=``, ``model=``) or that a policy
    sends to them (``require_adapter``); a plain request never lands on a brand model by accident."""
    ft, r = x.route.card.fine_tune, x.request
    if r.adapter is not None:
        return None if ft is not None and ft.name == r.adapter else f"not the requested adapter {r.adapter!r}"
    if ft is not None and x.constraints.require_adapter is None and not r.model:
        return f"fine-tuned route (adapter {ft.name!r}): ask for it with adapter={ft.name!r}"
    return None


def _adapter_policy(x: RoutingInput) -> str | None:
    ft, c = x.route.card.fine_tune, x.constraints
    if c.require_adapter is not None and (ft is None or not _any_glob(ft.name, c.require_adapter)):
        return f"policy requires an adapter matching {list(c.require_adapter)}"
    if ft is not None and ft.kind == "adapter" and c.require_signed_adapters and not ft.signed:
        return f"adapter {ft.name!r} is not validly signed: {ft.problem or 'no signature'}"
    return None


def _providers(x: RoutingInput) -> str | None:
    c, p = x.constraints, x.route.provider
    if c.allowed_providers is not None and not _any_glob(p, c.allowed_providers):
        return f"policy allows providers {list(c.allowed_providers)} only"
    if _any_glob(p, c.denied_providers):
        return f"policy denies provider {p!r}"
    return None


def _models(x: RoutingInput) -> str | None:
    c, names = x.constraints, (x.route.model, x.route.key)
    if c.allowed_models is not None and not any(_any_glob(n, c.allowed_models) for n in names):
        return f"policy allows models {list(c.allowed_models)} only"
    if any(_any_glob(n, c.denied_models) for n in names):
        return f"policy denies model {x.route.model!r}"
    return None


def _regions(x: RoutingInput) -> str | None:
    allowed = x.constraints.allowed_regions
    if allowed is not None and not any(_any_glob(r, allowed) for r in x.route.card.regions):
        return f"regions {list(x.route.card.regions)} are outside the allowed {list(allowed)}"
    return None


def _licence(x: RoutingInput) -> str | None:
    lic = x.route.card.licence
    if x.constraints.commercial_use_required and not lic.commercial_use:
        return f"licence {lic.name} does not allow commercial use"
    return None


def _indemnity(x: RoutingInput) -> str | None:
    need, have = x.constraints.min_indemnity, x.route.card.indemnity.level
    if INDEMNITY_ORDER[have] < INDEMNITY_ORDER[need]:
        return f"indemnity {have!r} is below the required {need!r}"
    return None


def _disclosure(x: RoutingInput) -> str | None:
    if x.constraints.training_data_disclosure_required and not x.route.card.training_data.disclosed:
        return "training data is not disclosed"
    return None


def _lifecycle(x: RoutingInput) -> str | None:
    state, eol = x.route.lifecycle(x.today), x.route.card.end_of_life
    if state == "end_of_life" and x.constraints.exclude_end_of_life:
        return f"end of life since {eol.isoformat()}" if eol else "end of life"
    if state == "legacy" and x.constraints.exclude_legacy:
        return "legacy model" + (f" (end of life {eol.isoformat()})" if eol else "")
    return None


def _capabilities(x: RoutingInput) -> str | None:
    cap, r, d = x.route.card.capabilities, x.request, x.route.card.defaults
    w, h = r.width or d.width, r.height or d.height
    if r.n > cap.max_images:
        return f"at most {cap.max_images} image(s) per call, {r.n} asked"
    if cap.sizes is not None and (w, h) not in cap.sizes:
        return f"size {w}x{h} is not one of the model's sizes"
    if not (cap.min_side <= w <= cap.max_side and cap.min_side <= h <= cap.max_side):
        return f"size {w}x{h} is outside {cap.min_side}..{cap.max_side} per side"
    if w % cap.multiple_of or h % cap.multiple_of:
        return f"size {w}x{h} is not a multiple of {cap.multiple_of}"
    if cap.max_pixels is not None and w * h > cap.max_pixels:
        return f"size {w}x{h} exceeds {cap.max_pixels} pixels"
    unsupported = [name for name, asked, ok in (
        ("negative_prompt", r.negative_prompt, cap.negative_prompt),
        ("steps", r.steps, cap.steps),
        ("guidance_scale", r.guidance_scale, cap.guidance),
    ) if asked is not None and not ok]  # fmt: skip
    # No seed check: the gateway draws a seed for every request, so a card without seeds (the OpenAI
    # Images API) reports ``seed: null`` in the result instead of being dropped for a seed nobody asked.
    if unsupported:
        return f"does not accept {', '.join(unsupported)}"
    if r.scheduler is not None and r.scheduler not in cap.schedulers:
        return f"scheduler {r.scheduler!r} not supported (has {list(cap.schedulers) or 'none'})"
    return None


def _quality(x: RoutingInput) -> str | None:
    """A card that cannot honour the asked quality is dropped (see :mod:`gateway.quality`)."""
    from .quality import quality_reason

    reason = quality_reason(x.route.card, x.request.quality)
    return None if reason is None else f"quality: {reason}"


# (stage, rule). Order matters only for which reason is shown: the first failing rule names the drop.
# The stage tells callers what kind of problem it was ("backend" = the backend itself refused the
# request as asked, e.g. a prompt the model cannot draw: a usage error rather than an outage).
ELIGIBILITY: tuple[tuple[str, Rule], ...] = (
    ("hint", _hint),
    ("hint", _adapter_hint),
    ("policy", _providers),
    ("policy", _models),
    ("policy", _regions),
    ("policy", _licence),
    ("policy", _indemnity),
    ("policy", _disclosure),
    ("policy", _lifecycle),
    ("policy", _adapter_policy),
    ("capability", _capabilities),
    ("capability", _quality),
    ("capability", edit_eligibility),
    ("policy", lambda x: quality_routing.floor_reason(x)),  # min_quality floors (measured, per steps)
)


# ------------------------------------------------------------------------ stats and breaker


class RouteStats:
    """Observed latency per route: an exponentially weighted mean, persisted as a small JSON file.

    Many processes may share the file; each merges on save and the last write wins, which is fine
    for a ranking hint (the ledger, not this file, is what must be exact).
    """

    def __init__(self, path: Path | None = None, alpha: float = 0.2) -> None:
        self.path = path
        self.alpha = alpha
        self._lock = threading.Lock()
        self._ewma: dict[str, float] = {}
        self._count: dict[str, int] = {}
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                self._ewma = {k: float(v["latency_s"]) for k, v in raw.items()}
                self._count = {k: int(v["n"]) for k, v in raw.items()}
            except (ValueError, KeyError, TypeError, OSError):
                self._ewma, self._count = {}, {}

    def latency(self, key: str) -> float | None:
        return self._ewma.get(key)

    def observe(self, key: str, seconds: float) -> None:
        with self._lock:
            old = self._ewma.get(key)
            self._ewma[key] = seconds if old is None else old + self.alpha * (seconds - old)
            self._count[key] = self._count.get(key, 0) + 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {k: {"latency_s": v, "n": self._count.get(k, 0)} for k, v in sorted(self._ewma.items())}

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = json.dumps(self.snapshot(), indent=1).encode()
        try:
            atomic_write(self.path, data)
        except OSError:  # stats are a hint; never fail a request over them
            return


@dataclass
class _BreakerState:
    failures: int = 0
    opened_at: float | None = None


class CircuitBreaker:
    """Skip a route after ``threshold`` consecutive failures; let one call through after ``cooldown_s``.

    States: closed (counting failures) -> open (skipped) -> half-open (one trial after the cool-down;
    success closes, failure re-opens). Time comes from the caller, so tests need no sleeping.
    """

    def __init__(self, threshold: int = 3, cooldown_s: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._state: dict[str, _BreakerState] = {}
        self._lock = threading.Lock()

    def state(self, key: str, now: float) -> Literal["closed", "open", "half-open"]:
        s = self._state.get(key)
        if s is None or s.opened_at is None:
            return "closed"
        return "half-open" if now - s.opened_at >= self.cooldown_s else "open"

    def record_success(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)

    def record_failure(self, key: str, now: float) -> None:
        with self._lock:
            s = self._state.setdefault(key, _BreakerState())
            s.failures += 1
            if s.failures >= self.threshold or s.opened_at is not None:
                s.opened_at = now  # a failed half-open trial re-opens for a full cool-down

    def snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        return {k: {"state": self.state(k, now), "failures": s.failures} for k, s in self._state.items()}


# ------------------------------------------------------------------------ the plan


@dataclass(frozen=True, slots=True)
class Candidate:
    route: Route
    reason: str | None  # None = eligible
    estimate_usd: Decimal | None = None
    expected_latency_s: float | None = None
    stage: str | None = None  # which check dropped it: hint, policy, capability, cost, breaker, backend
    trade: Mapping[str, Any] | None = None  # steps, cost per image, measured quality (explain)

    @property
    def eligible(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route.key,
            "provider": self.route.provider,
            "model": self.route.model,
            "eligible": self.eligible,
            "reason": self.reason,
            "stage": self.stage,
            "estimate_usd": None if self.estimate_usd is None else str(self.estimate_usd),
            "expected_latency_s": self.expected_latency_s,
            "indemnity": self.route.card.indemnity.level,
            "licence": self.route.card.licence.name,
            **(dict(self.trade) if self.trade else {}),
        }


@dataclass(frozen=True)
class RoutePlan:
    """Every candidate (kept or dropped, with reasons) and the eligible ones in ranked order."""

    strategy: str
    candidates: tuple[Candidate, ...]
    ranked: tuple[Candidate, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "ranked": [c.route.key for c in self.ranked],
            "candidates": [c.to_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class RoutingOptions:
    strategy: Strategy = "cheapest"
    priority: tuple[str, ...] = ()  # globs over route keys, first = preferred
    weights: Mapping[str, float] = field(default_factory=lambda: {"cost": 0.5, "latency": 0.5})


def plan_routes(
    catalog: Catalog,
    request: ImageRequest,
    decision: Decision,
    *,
    today: dt.date,
    now: float,
    options: RoutingOptions | None = None,
    stats: RouteStats | None = None,
    breaker: CircuitBreaker | None = None,
    backend_check: Callable[[Route, ImageRequest], str | None] | None = None,
    expected_seconds: Callable[[str], float | None] | None = None,
    cache: RouteCache | None = None,
) -> RoutePlan:
    """Filter and rank ``catalog`` for ``request`` under ``decision``'s constraints.

    ``expected_seconds(route_key)`` gives billed-time history (the ledger's) for time-billed routes;
    without it, the observed latency or the card's conservative default is used. ``cache`` keeps the
    pure part of each route's verdict (see :class:`RouteCache`); the plan is the same with or without.
    """
    opts = options or RoutingOptions()
    out: list[Candidate] = []
    static = cache.lookup(catalog, request, decision.constraints, today) if cache is not None else None
    fixed_parts: list[_Static | None] = list(static) if static is not None else [None] * len(catalog)
    for route, fixed in zip(catalog, fixed_parts, strict=True):
        if fixed is None:
            fixed = _static_part(route, request, decision.constraints, today)
        stage, reason, est, trade = fixed
        latency = stats.latency(route.key) if stats else None
        if latency is None:
            latency = route.card.pricing.expected_seconds
        if reason is None and trade is None:  # time-billed: the estimate follows observed times
            try:
                hist = (expected_seconds(route.key) if expected_seconds else None) or latency
                est = estimate_cost(route, request, hist)
            except ValueError as exc:
                stage, reason = "capability", str(exc)
        cap = decision.constraints.max_cost_usd
        if reason is None and est is not None and cap is not None and est > cap:
            stage, reason = "cost", f"estimated ${est} exceeds the policy's max cost ${cap}"
        if reason is None and breaker is not None and breaker.state(route.key, now) == "open":
            stage, reason = "breaker", "circuit open after repeated failures"
        if reason is None and backend_check is not None:
            reason = backend_check(route, request)
            stage = "backend" if reason else None
        if trade is None:
            trade = quality_routing.trade(route, request, est)
        out.append(Candidate(route, reason, est, latency, stage, trade))
    eligible = [c for c in out if c.eligible]
    c = decision.constraints
    if c.strategy is not None and c.strategy != opts.strategy:  # a policy chose this scope's strategy
        opts = RoutingOptions(c.strategy, opts.priority, opts.weights)  # type: ignore[arg-type]
    ranked = rank(eligible, opts, request=request, floors=c.min_quality)
    return RoutePlan(opts.strategy, tuple(out), tuple(ranked))


#: A route's verdict that depends only on the card, the request's shape, the constraints and the day:
#: (stage, reason, estimate, trade). ``trade`` is None when the estimate must be made live (time-billed).
_Static = tuple[str | None, str | None, Decimal | None, Mapping[str, Any] | None]


def _static_part(
    route: Route, request: ImageRequest, constraints: RouteConstraints, today: dt.date
) -> _Static:
    x = RoutingInput(route, request, constraints, today)
    stage, reason = next(((st, r) for st, rule in ELIGIBILITY if (r := rule(x)) is not None), (None, None))
    if reason is not None:
        return stage, reason, None, quality_routing.trade(route, request, None)
    if route.card.pricing.unit != "image":
        return None, None, None, None
    try:
        est = estimate_cost(route, request, None)
    except ValueError as exc:
        return "capability", str(exc), None, quality_routing.trade(route, request, None)
    return None, None, est, quality_routing.trade(route, request, est)


# Request fields that can change a route's verdict: all but the prompt text and the seed (new fields
# join the key by themselves). Edits and provider extras are not cached (bytes, free-form dicts).
_SHAPE_FIELDS = tuple(
    f for f in ImageRequest.model_fields if f not in ("prompt", "seed", "negative_prompt", "extras", "images")
)


class RouteCache:
    """The pure part of routing (eligibility rules, per-image estimates, explain's trade rows) per
    (catalogue, request shape, policy constraints, day). Everything that moves (observed latency,
    billed-time history, the breaker, backend checks, extras) is still evaluated per request.

    Why: 30-odd cards x 14 rules x every request was the largest share of planning, and for a given
    policy and request shape the answer never changes. A new catalogue object empties the cache.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self._catalog: Catalog | None = None
        self._entries: dict[tuple[Any, ...], list[_Static]] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def lookup(
        self, catalog: Catalog, request: ImageRequest, constraints: RouteConstraints, today: dt.date
    ) -> list[_Static] | None:
        if request.images or request.extras:
            return None
        key = (request.negative_prompt is not None, constraints, today,
               *(getattr(request, f) for f in _SHAPE_FIELDS))  # fmt: skip
        try:
            hit = self._entries.get(key) if self._catalog is catalog else None
        except TypeError:  # an unhashable field value: plan without the cache
            return None
        if hit is not None:
            return hit
        value = [_static_part(route, request, constraints, today) for route in catalog]
        with self._lock:
            if self._catalog is not catalog:
                self._catalog, self._entries = catalog, {}
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = value
        return value


def rank(
    candidates: list[Candidate],
    opts: RoutingOptions,
    *,
    request: ImageRequest | None = None,
    floors: tuple[QualityFloor, ...] = (),
) -> list[Candidate]:
    """Order eligible candidates by the strategy; ties broken by route key (deterministic)."""

    def cost(c: Candidate) -> float:
        return float(c.estimate_usd if c.estimate_usd is not None else math.inf)

    def latency(c: Candidate) -> float:
        return c.expected_latency_s if c.expected_latency_s is not None else math.inf

    def priority(c: Candidate) -> int:
        return next(
            (i for i, g in enumerate(opts.priority) if fnmatchcase(c.route.key, g)), len(opts.priority)
        )

    def weighted(c: Candidate) -> float:
        costs = [cost(x) for x in candidates]
        lats = [latency(x) for x in candidates]
        return opts.weights.get("cost", 0.5) * _norm(cost(c), costs) + opts.weights.get(
            "latency", 0.5
        ) * _norm(latency(c), lats)

    keys: dict[str, Callable[[Candidate], Any]] = {
        "cheapest": lambda c: (cost(c), latency(c)),
        "fastest": lambda c: (latency(c), cost(c)),
        "priority": lambda c: (priority(c), cost(c)),
        "weighted": weighted,
        "cheapest_meeting_quality": lambda c: (
            quality_routing.rank_key(c, request, floors) if request is not None else (cost(c), latency(c))
        ),
    }
    key = keys[opts.strategy]
    return sorted(candidates, key=lambda c: (key(c), c.route.key))


def _norm(v: float, values: list[float]) -> float:
    finite = [x for x in values if math.isfinite(x)]
    if not finite or not math.isfinite(v):
        return 1.0
    lo, hi = min(finite), max(finite)
    return 0.0 if hi == lo else (v - lo) / (hi - lo)


def default_stats_path(home: Path) -> Path:
    return home / "route_stats.json"


def env_today() -> dt.date:
    """Today's date, overridable by ``GATEWAY_TODAY`` (YYYY-MM-DD) for reproducible explains."""
    raw = os.environ.get("GATEWAY_TODAY")
    return dt.date.fromisoformat(raw) if raw else dt.date.today()
