"""Quarantine: where paid outputs go when the request cannot hand them to the caller.

Why a folder and not a retry: once a backend has returned images the money is spent. If a later step
fails (an output check, the watermark, C2PA signing, the ledger settle, the audit write) the caller gets
an error, but the bytes they paid for must not vanish with it. They are written here exactly as the
provider returned them, one atomic file each plus a ``manifest.json``, under
``$GATEWAY_HOME/quarantine/<request_id>/``; the audit record (or, when the audit write itself failed,
the error message) names the files. Images held back by an output classifier land here as well, for
review. Nothing here deletes anything: clearing the folder is an operator's decision.

The module is deliberately tiny and free of gateway state, so an archive store can call
:func:`keep` (or read the folder) without knowing the request flow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .types import atomic_write

FOLDER = "quarantine"
_EXT = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"RIFF", ".webp"))
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Kept:
    """What :func:`keep` wrote: the folder, and one (index, path, sha256) per image."""

    folder: Path
    files: tuple[tuple[int, Path, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.folder),
            "files": [{"index": i, "path": str(p), "sha256": h} for i, p, h in self.files],
        }

    def describe(self) -> str:
        n = len(self.files)
        return f"{n} paid output image{'s' if n != 1 else ''} kept in {self.folder}"


def folder_for(home: Path, request_id: str) -> Path:
    return Path(home) / FOLDER / (_SAFE.sub("_", request_id) or "request")


def _ext(data: bytes) -> str:
    return next((ext for magic, ext in _EXT if data.startswith(magic)), ".bin")


def keep(
    home: Path,
    request_id: str,
    images: Sequence[bytes],
    *,
    indices: Sequence[int] | None = None,
    reason: str,
    meta: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> Kept:
    """Write ``images`` (raw provider bytes) atomically under ``home``; return what was written.

    ``indices`` keeps only those outputs (e.g. the ones a classifier held). Files that already exist
    for the request (a second failure on the same request) are overwritten with the same bytes.
    """
    folder = folder_for(home, request_id)
    chosen = range(len(images)) if indices is None else indices
    files = []
    for i in chosen:
        data = images[i]
        path = atomic_write(folder / f"{i}{_ext(data)}", data)
        files.append((i, path, hashlib.sha256(data).hexdigest()))
    kept = Kept(folder, tuple(files))
    manifest = {
        "request_id": request_id,
        "reason": reason,
        "ts": (now or dt.datetime.now(dt.UTC)).isoformat(),
        **dict(meta or {}),
        "files": kept.to_dict()["files"],
    }
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    return kept


__all__ = ["FOLDER", "Kept", "folder_for", "keep"]
