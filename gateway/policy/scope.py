"""Who a rule applies to: globs over the request's Context (team, project, use case, user, tags).

Matching is case-sensitive (Context names are identifiers, and ``Marketing`` vs ``marketing`` is a
typo a reviewer should see, not something we silently merge). Every field given must match (AND);
within a field any glob may match (OR); ``tags`` matches when any context tag matches any glob.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import translate
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..types import Context

_GLOB_META = frozenset("*?[")


def _as_tuple(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


Glob = Annotated[str, Field(min_length=1, max_length=256)]
Globs = Annotated[
    tuple[Glob, ...],
    BeforeValidator(_as_tuple, json_schema_input_type=str | list[Glob]),
    Field(min_length=1),
]


class Scope(BaseModel):
    """Globs over the request context. An empty scope matches every request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    team: Globs | None = Field(default=None, description="Team name glob(s), e.g. 'growth-*'.")
    project: Globs | None = Field(default=None, description="Project glob(s).")
    use_case: Globs | None = Field(default=None, description="Use-case glob(s), e.g. 'marketing'.")
    user: Globs | None = Field(default=None, description="User glob(s), e.g. '*@contractor.example'.")
    tags: Globs | None = Field(default=None, description="Matches when any request tag matches a glob.")

    def is_empty(self) -> bool:
        return not self.model_fields_set or all(getattr(self, f) is None for f in type(self).model_fields)


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_META for c in pattern)


class _Globs:
    """Literal names compare with ``in``; only real globs pay for a regex."""

    __slots__ = ("literals", "regex")

    def __init__(self, globs: Sequence[str]) -> None:
        self.literals = frozenset(g for g in globs if not is_glob(g))
        pats = [translate(g) for g in globs if is_glob(g)]
        self.regex = re.compile("|".join(f"(?:{p})" for p in pats)) if pats else None

    def match(self, value: str) -> bool:
        return value in self.literals or (self.regex is not None and self.regex.match(value) is not None)


@dataclass(frozen=True, slots=True)
class CompiledScope:
    """A Scope (plus an optional ``unless`` scope) turned into a fast predicate over Context."""

    fields: tuple[tuple[str, _Globs], ...]
    tags: _Globs | None
    unless: CompiledScope | None = None

    @classmethod
    def build(cls, when: Scope, unless: Scope | None = None) -> CompiledScope:
        fields = tuple(
            (name, _Globs(globs))
            for name in ("team", "project", "use_case", "user")
            if (globs := getattr(when, name)) is not None
        )
        tags = _Globs(when.tags) if when.tags is not None else None
        neg = cls.build(unless) if unless is not None and not unless.is_empty() else None
        return cls(fields, tags, neg)

    @property
    def universal(self) -> bool:
        return not self.fields and self.tags is None and self.unless is None

    def matches(self, ctx: Context) -> bool:
        for name, globs in self.fields:
            if not globs.match(getattr(ctx, name)):
                return False
        if self.tags is not None and not any(self.tags.match(t) for t in ctx.tags):
            return False
        # An empty ``unless`` would exclude everything; build() drops it instead.
        return not (self.unless is not None and self.unless.matches(ctx))


def glob_subset(narrow: str, wide: str) -> bool:
    """True only when every name ``narrow`` matches is provably matched by ``wide``.

    Sound, not complete: it answers False when unsure, so intersecting allow-lists fails closed.
    """
    from fnmatch import fnmatchcase

    if narrow == wide or wide == "*":
        return True
    if not is_glob(narrow):
        return fnmatchcase(narrow, wide)
    if wide.endswith("*") and not is_glob(wide[:-1]):
        stem = narrow[: min((narrow.index(c) for c in _GLOB_META if c in narrow), default=len(narrow))]
        return stem.startswith(wide[:-1])
    return False


def intersect_globs(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    """Globs matching what both ``a`` and ``b`` allow, as far as :func:`glob_subset` can prove it."""
    out: dict[str, None] = {}
    for x in a:
        for y in b:
            if glob_subset(x, y):
                out[x] = None
            elif glob_subset(y, x):
                out[y] = None
    return tuple(out)


__all__ = ["CompiledScope", "Scope", "glob_subset", "intersect_globs", "is_glob"]
