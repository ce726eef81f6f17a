"""The ``training_data`` rule kind: which files a fine-tune may learn from.

Unlike the other kinds it says nothing about one image request; it is read when a training run
starts (``gateway train lora``), against the run's dataset manifest. Keeping it in the same policy files
means the people who review prompt and routing rules also review what brand models are trained on,
with the same scoping (``when: {team: brand-*}``), ids, overrides and ``final`` protection.

A file passes a rule when its effective licence (the per-file override, else the dataset's) is one of
``allowed_licences`` (SPDX ids, compared case-insensitively; ``proprietary`` means owned data), its
source matches none of ``deny_sources`` (globs), and, with ``require_owner``, the dataset names an
owner. A refusal lists every offending file with the rule that refused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import Field

from ..errors import PolicyDenied
from ..types import Context
from .rules import CompiledRule, RuleBase
from .scope import Glob

if TYPE_CHECKING:
    from .engine import PolicySet

PROPRIETARY = "proprietary"


class _File(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def licence(self) -> str: ...
    @property
    def source(self) -> str: ...


class _Dataset(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def files(self) -> Sequence[_File]: ...


class TrainingData(RuleBase):
    """Licences and sources a training dataset's files must have (checked when training starts)."""

    kind: Literal["training_data"]
    allowed_licences: tuple[str, ...] | None = Field(
        default=None, description="SPDX ids or 'proprietary' (case-insensitive); None = any licence."
    )
    require_owner: bool = Field(default=False, description="The dataset must name its owner.")
    deny_sources: tuple[Glob, ...] = Field(default=(), description="Source globs never trained on.")
    message: str | None = None

    def compile(self) -> CompiledRule:
        return self._compiled()  # no request-time part: see check_training_data

    def violations(self, dataset: _Dataset) -> list[str]:
        """One line per offending file (or one for the dataset): ``path: why``."""
        out: list[str] = []
        if self.require_owner and not dataset.owner.strip():
            out.append(f"dataset {dataset.name!r}: no owner named (require_owner)")
        allowed = {x.casefold() for x in self.allowed_licences} if self.allowed_licences is not None else None
        for f in dataset.files:
            why = []
            if allowed is not None and f.licence.casefold() not in allowed:
                why.append(f"licence {f.licence!r} is not allowed")
            if f.source and any(fnmatchcase(f.source, g) for g in self.deny_sources):
                why.append(f"source {f.source!r} is denied")
            if why:
                out.append(f"{f.path}: {'; '.join(why)}")
        return out


@dataclass(frozen=True)
class TrainingVerdict:
    allowed: bool
    rule_ids: tuple[str, ...]
    violations: tuple[tuple[str, str], ...]  # (rule id, "path: why")
    checked: tuple[str, ...]  # ids of the rules that applied

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "rule_ids": list(self.rule_ids),
            "checked": list(self.checked),
            "violations": [{"rule_id": r, "file": v} for r, v in self.violations],
        }


def evaluate_training_data(policy: PolicySet, dataset: _Dataset, context: Context) -> TrainingVerdict:
    """Every ``training_data`` rule in scope for ``context``, applied to every file."""
    found: list[tuple[str, str]] = []
    checked: list[str] = []
    for rule in policy.rules:
        if not isinstance(rule, TrainingData) or not rule.compile().scope.matches(context):
            continue
        checked.append(rule.id)
        found += [(rule.id, v) for v in rule.violations(dataset)]
    ids = tuple(dict.fromkeys(r for r, _ in found))
    return TrainingVerdict(not found, ids, tuple(found), tuple(checked))


def check_training_data(
    policy: PolicySet, dataset: _Dataset, context: Context, *, show: int = 50
) -> TrainingVerdict:
    """Raise :class:`PolicyDenied` (exit 3) listing the files, or return the passing verdict."""
    v = evaluate_training_data(policy, dataset, context)
    if not v.allowed:
        lines = [f"[{rid}] {what}" for rid, what in v.violations[:show]]
        more = len(v.violations) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        raise PolicyDenied(
            f"training on dataset {dataset.name!r} denied by policy ({len(v.violations)} problem(s)):\n  "
            + "\n  ".join(lines),
            rule_ids=v.rule_ids,
        )
    return v


__all__ = ["PROPRIETARY", "TrainingData", "TrainingVerdict", "check_training_data", "evaluate_training_data"]
