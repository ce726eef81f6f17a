"""The identity of a base model: one digest over its weight, config and tokenizer files.

An adapter is only meaningful on the exact weights it was trained against; loading one onto other
weights silently produces garbage (or a different brand look). The digest is SHA-256 over the canonical
JSON of ``{relative path: sha256}`` for every file of the pipeline folder except documentation
(``*.md``), the training log (``training.json``) and dot files, so editing a model card does not orphan
adapters but any change to what the model computes does.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

_SKIP_NAMES = frozenset({"training.json"})


def _files(path: Path) -> list[Path]:
    out = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if p.suffix.lower() in (".md", ".pyc") or p.name in _SKIP_NAMES:
            continue
        out.append(p)
    return out


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=32)
def _digest(path: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    root = Path(path)
    listing = {p.relative_to(root).as_posix(): _file_sha256(p) for p in _files(root)}
    return hashlib.sha256(json.dumps(listing, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_digest(path: str | Path) -> str:
    """Digest of the pipeline folder at ``path`` (cached while no file's size or mtime changes)."""
    root = Path(path).resolve()
    stamp = tuple(
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in _files(root)
    )
    if not stamp:
        raise FileNotFoundError(f"{root}: no model files")
    return _digest(str(root), stamp)


__all__ = ["model_digest"]
