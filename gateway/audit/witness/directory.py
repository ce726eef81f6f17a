"""``dir:///path``: heads as write-once files in a folder. For development and tests only.

It proves little: whoever can write the folder can delete or replace the files, and in a default
setup that is the same user who runs the gateway. It exists so the witness flow can be tried without
a second database, and it says so loudly wherever it is used.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..checkpoints import create_exclusive
from ..note import TreeHead
from .base import Witness, WitnessedHead, WitnessError, origin_key


class DirectoryWitness(Witness):
    scheme = "dir"
    warning = (
        "dir:// witnesses are for development only: anyone who can write that folder can rewrite "
        "the heads, so it detects accidents, not an attacker on this host"
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        self.root = Path(unquote(parts.netloc + parts.path)).expanduser()

    def _folder(self, origin: str) -> Path:
        return self.root / origin_key(origin)

    def submit(self, head: TreeHead, note: bytes) -> None:
        path = self._folder(head.origin) / f"{head.size:020d}.note"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                create_exclusive(path, note, mode=0o444)
            held = path.read_bytes()
        except OSError as exc:
            raise WitnessError(f"{self.name}: {exc}") from None
        if held != note:
            self.check_same(head, held, self.name)

    def heads(self, origin: str) -> list[WitnessedHead]:
        folder = self._folder(origin)
        if not folder.exists():
            return []
        out = []
        for p in sorted(folder.glob("*.note")):
            when = dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.append(WitnessedHead.from_note(p.read_bytes(), when))
        return out
