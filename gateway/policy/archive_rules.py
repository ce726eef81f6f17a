"""Rule kinds for the output archive and the result cache (registered in :data:`rules.KINDS`).

They shape no Decision field: the archive's keeper reads them directly (:func:`cache_rule_for`,
:func:`archive_off_allowed`) for the request's context, so the core Decision stays as it was and the
policy hash still covers them (any change to a rule changes the hash, which is part of every cache key).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from ..types import Context
from .rules import CompiledRule, RuleBase
from .scope import CompiledScope


class CacheRule(RuleBase):
    """Serve exact repeats of seeded requests from the archive for the use cases in scope.

    A later matching rule overrides an earlier one. ``across_teams: true`` lets one team's cached
    output serve another team's identical request (off by default: a team never sees another's).
    """

    kind: Literal["cache"]
    enabled: bool = True
    ttl_s: float | None = Field(default=None, gt=0, description="Entry lifetime; default from gateway.yaml.")
    across_teams: bool = False

    def compile(self) -> CompiledRule:
        return self._compiled()


class ArchiveRule(RuleBase):
    """Whether requests in scope may run with the archive switched off (``archive: {url: off}``)."""

    kind: Literal["archive"]
    allow_off: bool = False

    def compile(self) -> CompiledRule:
        return self._compiled()


def _matching(rules: Iterable[RuleBase], kind: type[RuleBase], ctx: Context) -> list[RuleBase]:
    return [r for r in rules if isinstance(r, kind) and _scope(r).matches(ctx)]


# Compiled once per rule object (rules are immutable once loaded; the rule is kept with its scope so
# the id cannot be reused while the entry lives): the keeper asks on every request.
_SCOPES: dict[int, tuple[RuleBase, CompiledScope]] = {}


def _scope(rule: RuleBase) -> CompiledScope:
    hit = _SCOPES.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    if len(_SCOPES) > 4096:
        _SCOPES.clear()
    scope = CompiledScope.build(rule.when, rule.unless)
    _SCOPES[id(rule)] = (rule, scope)
    return scope


def cache_rule_for(rules: Iterable[RuleBase], ctx: Context) -> CacheRule | None:
    """The last matching ``cache`` rule (later rules override earlier ones), or None."""
    found = _matching(rules, CacheRule, ctx)
    last = found[-1] if found else None
    return last if isinstance(last, CacheRule) else None


def archive_off_allowed(rules: Iterable[RuleBase], ctx: Context) -> str | None:
    """The id of the last matching ``archive`` rule if it allows the archive off, else None."""
    found = _matching(rules, ArchiveRule, ctx)
    last = found[-1] if found else None
    return last.id if isinstance(last, ArchiveRule) and last.allow_off else None


__all__ = ["ArchiveRule", "CacheRule", "archive_off_allowed", "cache_rule_for"]
