"""How the static parts of many matching rules combine into one Decision.

The rule is "at least as strict as every matching rule", field by field, so adding a rule can only
narrow what is allowed (overriding a rule *by id* in a later file is how a team loosens anything):

=============================  ==========================================================
field                          combination
=============================  ==========================================================
allowed_providers/models/      intersection of the glob lists (what every rule allows;
regions                        fails closed to the provable part when globs overlap oddly)
denied_providers/models        union
commercial_use_required,       any rule that sets ``true`` wins
training_data_disclosure_...,
exclude_legacy, watermark_...
exclude_end_of_life,           ``true`` if any rule sets it; ``false`` only if every rule
require_signed_adapters        that mentions it says ``false`` (default ``true``)
require_adapter                intersection of the glob lists (like allowed_models)
min_indemnity                  the highest level (none < capped < uncapped)
max_cost_usd                   the lowest cap
min_quality                    every floor; the highest value per metric
strategy                       the last matching rule's (a preference, not a limit)
on_missing (provenance)        ``deny`` beats ``quarantine``
capture_prompt                 ``true`` only if some rule opts in and none says ``false``
budgets, rate_limits           all of them (each is its own counter)
=============================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..types import INDEMNITY_ORDER, Budget, ProvenanceRequirements, RateLimit, RouteConstraints
from .scope import intersect_globs


def _intersect(a: Any, b: Any) -> Any:
    return intersect_globs(a, b)


def _union(a: Any, b: Any) -> Any:
    return tuple(dict.fromkeys((*a, *b)))


def _or(a: Any, b: Any) -> Any:
    return bool(a or b)


def _max_indemnity(a: Any, b: Any) -> Any:
    return a if INDEMNITY_ORDER[a] >= INDEMNITY_ORDER[b] else b


def _min(a: Any, b: Any) -> Any:
    return min(a, b)


def _deny_wins(a: Any, b: Any) -> Any:
    return "deny" if "deny" in (a, b) else a


def _floors(a: Any, b: Any) -> Any:
    """Quality floors: all of them, the highest value per metric (a stricter floor only narrows)."""
    best: dict[str, Any] = {}
    for f in (*a, *b):
        have = best.get(f.metric)
        if have is None or f.value > have.value or (f.value == have.value and f.unmeasured == "exclude"):
            best[f.metric] = f
    return tuple(best.values())


def _last(a: Any, b: Any) -> Any:
    """A preference, not a limit: the later (more specific, composed-after) rule's choice wins."""
    return b


Merge = Callable[[Any, Any], Any]

ROUTE_MERGE: dict[str, Merge] = {
    "allowed_providers": _intersect,
    "denied_providers": _union,
    "allowed_models": _intersect,
    "denied_models": _union,
    "allowed_regions": _intersect,
    "commercial_use_required": _or,
    "min_indemnity": _max_indemnity,
    "training_data_disclosure_required": _or,
    "exclude_legacy": _or,
    "exclude_end_of_life": _or,
    "max_cost_usd": _min,
    "require_adapter": _intersect,
    "require_signed_adapters": _or,
    "min_quality": _floors,
    "strategy": _last,
}
PROVENANCE_MERGE: dict[str, Merge] = {
    "watermark_required": _or,
    "c2pa_required": _or,
    "on_missing": _deny_wins,
}


class DecisionBuilder:
    """Collects what the matching static rules contribute; :meth:`build` applies the defaults."""

    __slots__ = ("applied", "budgets", "capture", "provenance", "rate_limits", "route")

    def __init__(self) -> None:
        self.route: dict[str, Any] = {}
        self.provenance: dict[str, Any] = {}
        self.budgets: list[Budget] = []
        self.rate_limits: list[RateLimit] = []
        self.capture: list[bool] = []
        self.applied: list[str] = []

    @staticmethod
    def _merge(into: dict[str, Any], table: dict[str, Merge], fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if value is None:
                continue
            into[name] = table[name](into[name], value) if name in into else value

    def constrain(self, **fields: Any) -> None:
        self._merge(self.route, ROUTE_MERGE, fields)

    def require(self, **fields: Any) -> None:
        self._merge(self.provenance, PROVENANCE_MERGE, fields)

    def constraints(self) -> RouteConstraints:
        fields = dict(self.route)
        if "max_cost_usd" in fields:
            fields["max_cost_usd"] = Decimal(fields["max_cost_usd"])
        return RouteConstraints(**fields)

    def provenance_requirements(self) -> ProvenanceRequirements:
        return ProvenanceRequirements(**self.provenance)

    def capture_prompt(self) -> bool:
        return bool(self.capture) and all(self.capture)


__all__ = ["PROVENANCE_MERGE", "ROUTE_MERGE", "DecisionBuilder"]
