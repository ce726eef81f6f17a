"""Read policy files and compose them, turning every problem into ``FILE:LINE: message``.

Precedence (documented in docs/policy.md, tested in tests/test_policy_compose.py):

1. Files are applied in the order given: organisation default first, then team overrides.
2. A rule whose ``id`` already exists *replaces* the earlier rule (in the earlier rule's position).
3. ``disable: [id, ...]`` switches earlier rules off. An unknown id is an error (a typo in a
   security file must be loud).
4. A rule marked ``final: true`` can be neither replaced nor disabled by a later file.
5. The same id twice inside one file is an error.

Everything left is evaluated together; how matching rules combine is in effects.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from .._yaml import Loc, line_for, load_yaml, validation_error
from ..errors import ConfigError
from .model import PolicyFile
from .rules import KIND_NAMES, RuleBase


@dataclass(frozen=True)
class LoadedFile:
    source: str
    model: PolicyFile
    lines: dict[Loc, int]

    def line(self, *loc: str | int) -> int:
        return line_for(self.lines, loc)


@dataclass(frozen=True)
class Placed:
    """A rule with the file and line it came from (for error messages and ``policy check``)."""

    rule: RuleBase
    source: str
    line: int


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read policy file: {exc.__class__.__name__}"
        raise ConfigError(msg, file=str(path), line=1) from None


MAX_EXPANDED_NODES = 100_000


def _expanded_size(text: str) -> int:
    """How many nodes the document has once YAML aliases are expanded (computed without expanding:
    a few lines of ``&a [*b, *b, ...]`` can otherwise stand for billions of nodes)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 0  # load_yaml reports the syntax error with its line
    memo: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = memo.get(id(node))
        if known is not None:
            return known
        memo[id(node)] = 1  # a cycle counts once; PyYAML refuses recursive aliases anyway
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1 + sum(size(c) for c in children)
        memo[id(node)] = min(total, MAX_EXPANDED_NODES + 1)
        return memo[id(node)]

    return size(root) if root is not None else 0


def parse(text: str, source: str) -> LoadedFile:
    """Validate one file's text. Never raises anything but ConfigError."""
    try:
        if "&" in text and "*" in text and _expanded_size(text) > MAX_EXPANDED_NODES:
            msg = f"the document expands to more than {MAX_EXPANDED_NODES} values through YAML aliases"
            raise ConfigError(msg, file=source, line=1)
        data, lines = load_yaml(text, source)
    except RecursionError:
        raise ConfigError("YAML nesting is too deep", file=source, line=1) from None
    except yaml.YAMLError as exc:  # e.g. a control character: PyYAML's reader fails before parsing
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        raise ConfigError(
            f"YAML error: {getattr(exc, 'reason', None) or exc}", file=source, line=line
        ) from None
    if data is None:
        raise ConfigError("policy file is empty (expected 'version: 1' and 'rules:')", file=source, line=1)
    if not isinstance(data, dict):
        raise ConfigError("a policy file is a mapping with 'version' and 'rules'", file=source, line=1)
    _add_kind_locations(data, lines, source)
    try:
        model = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, lines, source) from None
    except RecursionError:
        raise ConfigError("policy data is nested too deeply", file=source, line=1) from None
    return LoadedFile(source, model, lines)


def _add_kind_locations(data: dict[object, object], lines: dict[Loc, int], source: str) -> None:
    """pydantic puts the discriminator value in error paths (``rules.3.blocklist.terms.2``); map those
    paths to the same lines as the YAML paths (``rules.3.terms.2``) so errors name the exact line."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return
    kinds: dict[int, str] = {}
    for i, r in enumerate(rules):
        if isinstance(r, dict) and not isinstance(r.get("kind"), str):
            names = ", ".join(KIND_NAMES)
            line = line_for(lines, ("rules", i, "kind") if "kind" in r else ("rules", i))
            msg = f"rules.{i}.kind: every rule needs a kind, one of: {names}"
            raise ConfigError(msg, file=source, line=line)
        if isinstance(r, dict):
            kinds[i] = r["kind"]
    for loc, line in list(lines.items()):
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] in kinds:
            lines.setdefault(("rules", loc[1], kinds[loc[1]], *loc[2:]), line)


def load_file(path: str | Path, text: str | None = None) -> LoadedFile:
    return parse(read_text(path) if text is None else text, str(path))


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory stands for its ``*.yaml`` files in name order."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    return out


def compose(files: Sequence[LoadedFile]) -> list[Placed]:
    """Apply the precedence rules above; return the effective rules in evaluation order."""
    effective: dict[str, Placed] = {}
    for f in files:
        for i, rid in enumerate(f.model.disable):
            line = f.line("disable", i)
            if rid not in effective:
                raise ConfigError(f"disable: no earlier rule has id {rid!r}", file=f.source, line=line)
            _not_final(effective[rid], "disabled", f.source, line)
            del effective[rid]
        seen: dict[str, int] = {}
        for i, rule in enumerate(f.model.rules):
            line = f.line("rules", i, "id")
            if rule.id in seen:
                msg = f"rules.{i}.id: duplicate rule id {rule.id!r} (first defined on line {seen[rule.id]})"
                raise ConfigError(msg, file=f.source, line=line)
            seen[rule.id] = line
            if rule.id in effective:
                _not_final(effective[rule.id], "overridden", f.source, line)
            effective[rule.id] = Placed(rule, f.source, line)
    return list(effective.values())


def _not_final(earlier: Placed, verb: str, source: str, line: int) -> None:
    if earlier.rule.final:
        where = f"{earlier.source}:{earlier.line}"
        msg = f"rule {earlier.rule.id!r} is final (set in {where}) and cannot be {verb}"
        raise ConfigError(msg, file=source, line=line)


__all__ = ["LoadedFile", "Placed", "compose", "expand", "load_file", "parse", "read_text"]
