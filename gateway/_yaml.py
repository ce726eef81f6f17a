"""Load YAML into pydantic models with errors that point at ``FILE:LINE: field: message``.

Policies, provider cards and gateway.yaml are written by people (legal, finance, security); a bad file
must name the line to fix, never print a traceback. PyYAML's composer gives every node a start mark, so
we keep a map from field path to line while building plain Python data, then translate pydantic's
error locations through that map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent override is how policies get misread)."""


MAX_VALUES = 100_000  # aliases can make a few lines expand exponentially ("billion laughs")


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_VALUES


def _construct(
    node: yaml.Node, loader: yaml.SafeLoader, lines: dict[Loc, int], loc: Loc, budget: _Budget
) -> Any:
    budget.left -= 1
    if budget.left < 0:
        raise ConfigError(f"document expands past {MAX_VALUES} values (alias bomb?)", line=1)
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        loader.flatten_mapping(node)
        merged = len(node.value) - explicit  # flatten_mapping puts merged pairs first
        out: dict[Any, Any] = {}
        for i, (key_node, value_node) in enumerate(node.value):
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError("mapping keys must be scalars", line=key_node.start_mark.line + 1)
            if key in out:
                if i < merged:
                    continue  # an earlier merge source wins over a later one (YAML merge semantics)
                if not _from_merge(out, key, i, merged):
                    raise ConfigError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
            child = (*loc, key if isinstance(key, str | int) else str(key))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, loader, lines, child, budget)
            if i < merged:
                _MERGED.setdefault(id(out), set()).add(key)
        _MERGED.pop(id(out), None)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loader, lines, (*loc, i), budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


_MERGED: dict[int, set[Any]] = {}


def _from_merge(out: dict[Any, Any], key: Any, i: int, merged: int) -> bool:
    """An explicit key may override one that came in through ``<<:``; two explicit ones may not."""
    return i >= merged and key in _MERGED.get(id(out), set())


def load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML document; return the data and a map from path to 1-based line number."""
    loader: _UniqueKeyLoader | None = None
    try:
        loader = _UniqueKeyLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Loc, int] = {}
        return _construct(node, loader, lines, (), _Budget()), lines
    except ConfigError as exc:
        raise ConfigError(_strip_prefix(str(exc)), file=source, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"YAML syntax error: {exc.problem or exc}", file=source, line=line) from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        raise ConfigError(
            f"YAML error: {getattr(exc, 'reason', None) or exc}", file=source, line=line
        ) from None
    except RecursionError:
        raise ConfigError("YAML nesting is too deep", file=source, line=1) from None
    finally:
        if loader is not None:
            loader.dispose()


def _strip_prefix(msg: str) -> str:
    return msg.split(": ", 1)[1] if msg[:1].isdigit() and ": " in msg else msg


def line_for(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of the deepest known ancestor of ``loc`` (pydantic may point below what YAML had)."""
    for cut in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:cut]))
        if line is not None:
            return line
    return 1


def validation_error(exc: ValidationError, lines: dict[Loc, int], source: str) -> ConfigError:
    """Turn pydantic's first error into ``FILE:LINE: field.path: message`` (others appended)."""
    errs = exc.errors(include_url=False)
    first = errs[0]
    loc: Loc = tuple(p for p in first["loc"] if isinstance(p, str | int))
    line = line_for(lines, loc)
    msgs = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in errs[:5]]
    more = f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""
    return ConfigError("; ".join(msgs) + more, file=source, line=line)


def load_model(model: type[M], path: str | Path, *, text: str | None = None) -> M:
    """Read ``path`` (or ``text`` labelled with it) into ``model``; any problem is a ConfigError."""
    source = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read file: {exc.__class__.__name__}", file=source, line=1) from None
    data, lines = load_yaml(text, source)
    if data is None:
        raise ConfigError("file is empty", file=source, line=1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, lines, source) from None
