"""The witness contract and the quorum that every checkpoint must reach.

Why witnesses: the log and its checkpoints live on a host whose operator (or intruder, or a backup
restore) can rewrite both and re-sign them. A witness is storage that host cannot rewrite: another
database written through an INSERT-only role, an Object Lock bucket, a timestamping authority. Each
signed tree head is handed to every witness; ``gateway audit verify`` then requires the local log to
reproduce every head a witness holds, so cutting the tail or rewriting the middle is caught by the
first witness that saw the old head.

A witness only ever *adds* heads. Submitting the same head twice is fine (idempotent); a different
root for a size it already holds is a :class:`WitnessConflict`: someone signed two histories.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...errors import AuditWriteError
from ..note import NoteError, TreeHead, parse_note
from ..redact import redact

_log = logging.getLogger("gateway.audit.witness")
NOTES_FILE = "notes.jsonl"
GAPS_FILE = "witness-gaps.jsonl"


class WitnessError(Exception):
    """A witness could not be reached or refused the head (an outage, a missing table, a bad bucket)."""


class WitnessConflict(WitnessError):
    """A witness already holds a *different* root for this origin and size: two histories were signed."""


class WitnessQuorumError(AuditWriteError):
    """Fewer witnesses than the quorum accepted a checkpoint; raised when witnesses are required."""


@dataclass(frozen=True, slots=True)
class WitnessedHead:
    """One head as a witness holds it: the note, and when the witness says it received it."""

    size: int
    root: bytes
    note: bytes
    received: str = ""
    evidence: str = ""  # what backs it beyond storage (e.g. "rfc3161 token, genTime ...")

    @classmethod
    def from_note(cls, note: bytes, received: str = "", evidence: str = "") -> WitnessedHead:
        head, _ = parse_note(note)
        return cls(head.size, head.root, note, received, evidence)


def origin_key(origin: str) -> str:
    """A path- and key-safe name for an origin (which may hold slashes)."""
    return hashlib.sha256(origin.encode()).hexdigest()[:24]


class Witness(abc.ABC):
    """Somewhere a tree head goes that the log's own host cannot rewrite."""

    scheme: ClassVar[str] = ""
    #: Shown by ``witness status`` and verify; set by kinds that prove little (the dev directory).
    warning: ClassVar[str] = ""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def name(self) -> str:
        """The URL without credentials: safe to print, and how reports name this witness."""
        return redact(self.url)

    @abc.abstractmethod
    def submit(self, head: TreeHead, note: bytes) -> None:
        """Store ``note`` (idempotent). WitnessConflict for a different root at a held size."""

    @abc.abstractmethod
    def heads(self, origin: str) -> list[WitnessedHead]:
        """Every head held for ``origin``, any order. WitnessError if the witness cannot be read."""

    def latest(self, origin: str) -> WitnessedHead | None:
        held = self.heads(origin)
        return max(held, key=lambda h: h.size) if held else None

    def close(self) -> None:  # noqa: B027 - most witnesses hold no connection between calls
        """Release connections."""

    @staticmethod
    def check_same(head: TreeHead, held: bytes, where: str) -> None:
        """Raise WitnessConflict unless the already-held note says the same root."""
        try:
            old, _ = parse_note(held)
        except NoteError as exc:
            raise WitnessConflict(f"{where}: holds an unreadable head for size {head.size}: {exc}") from None
        if old.root != head.root:
            raise WitnessConflict(
                f"{where}: already holds a different root for size {head.size} "
                f"({old.root.hex()[:16]}... vs {head.root.hex()[:16]}...): the log was rewritten"
            )


WitnessFactory = Callable[[str, Path], Witness]
_KINDS: dict[str, WitnessFactory] = {}


def register_witness(scheme: str, factory: WitnessFactory) -> None:
    """Make ``scheme://...`` URLs open with ``factory(url, state_dir)`` (a registry, not a switch)."""
    _KINDS[scheme] = factory


def open_witness(url: str, state_dir: Path) -> Witness:
    from ...errors import ConfigError
    from . import builtin  # noqa: F401  (registers the shipped kinds)

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    factory = _KINDS.get(scheme)
    if factory is None:
        kinds = ", ".join(sorted(_KINDS))
        raise ConfigError(f"unsupported audit witness {redact(url)!r}: use one of {kinds}")
    return factory(url, state_dir)


_WARNED: set[str] = set()  # witness URLs already warned about in this process


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WitnessSet:
    """The configured witnesses, the quorum a head must reach, and the local record of notes and gaps.

    ``state_dir`` (the checkpoint folder) keeps every note this log signed (``notes.jsonl``) so a head a
    witness missed can be re-sent unchanged, and ``witness-gaps.jsonl`` so a best-effort gap is
    visible and retried at the next checkpoint.
    """

    def __init__(
        self,
        witnesses: Sequence[Witness],
        *,
        quorum: int | None = None,
        best_effort: bool = False,
        state_dir: Path,
    ) -> None:
        from ...errors import ConfigError

        self.witnesses = tuple(witnesses)
        self.quorum = len(self.witnesses) if quorum is None else quorum
        if not 0 <= self.quorum <= len(self.witnesses):
            raise ConfigError(
                f"audit_witness_quorum must be between 0 and {len(self.witnesses)} (the number of "
                f"witnesses), got {self.quorum}"
            )
        self.best_effort = best_effort
        self.state_dir = state_dir
        for w in self.witnesses:
            if w.warning and w.name not in _WARNED:
                _WARNED.add(w.name)
                _log.warning("%s: %s", w.name, w.warning)

    def __bool__(self) -> bool:
        return bool(self.witnesses)

    # ------------------------------------------------------------------ local state

    def _append(self, name: str, entry: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def notes(self) -> dict[int, bytes]:
        """size -> note for every head this log signed (from ``notes.jsonl``)."""
        path = self.state_dir / NOTES_FILE
        out: dict[int, bytes] = {}
        if not path.exists():
            return out
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
                out[int(d["size"])] = str(d["note"]).encode()
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def pending(self) -> set[str]:
        """Names of witnesses whose last recorded outcome is a gap."""
        path = self.state_dir / GAPS_FILE
        state: dict[str, bool] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                    state[str(d["witness"])] = bool(d.get("resolved"))
                except (ValueError, KeyError, TypeError):
                    continue
        return {name for name, resolved in state.items() if not resolved}

    # ------------------------------------------------------------------ writing

    def submit(self, head: TreeHead, note: bytes) -> list[str]:
        """Hand one head to every witness; returns the names that accepted it.

        A conflict always fails (fail closed, whatever the mode): it means a second history exists.
        Below the quorum: :class:`WitnessQuorumError` unless best-effort, where the gap is recorded.
        """
        self._append(NOTES_FILE, {"size": head.size, "note": note.decode(), "ts": _now()})
        return self._deliver(head, note, self.witnesses)

    def _deliver(self, head: TreeHead, note: bytes, targets: Sequence[Witness]) -> list[str]:
        pending = self.pending()
        accepted: list[str] = []
        failures: list[str] = []
        for w in targets:
            try:
                w.submit(head, note)
            except WitnessConflict as exc:
                raise AuditWriteError(f"audit witness conflict: {redact(str(exc))}") from None
            except Exception as exc:  # an outage of one witness must not hide the others' answers
                msg = f"{w.name}: {type(exc).__name__}: {redact(str(exc))}"
                failures.append(msg)
                self._append(GAPS_FILE, {"witness": w.name, "size": head.size, "error": msg, "ts": _now()})
                continue
            accepted.append(w.name)
            if w.name in pending:
                resolved = {"witness": w.name, "size": head.size, "resolved": True, "ts": _now()}
                self._append(GAPS_FILE, resolved)
        if len(accepted) < self.quorum:
            detail = (
                f"checkpoint of size {head.size} reached {len(accepted)} of the {self.quorum} witnesses "
                f"required: {'; '.join(failures)}"
            )
            if not self.best_effort:
                raise WitnessQuorumError(detail)
            _log.warning("audit witnesses are best-effort; gap recorded: %s", detail)
        return accepted

    def retry_gaps(self) -> None:
        """Re-send the latest signed head to witnesses with a recorded gap (called at each checkpoint)."""
        pending = self.pending()
        notes = self.notes()
        if not pending or not notes:
            return
        size = max(notes)
        head, _ = parse_note(notes[size])
        targets = [w for w in self.witnesses if w.name in pending]
        if targets:
            # the quorum is judged on the checkpoint itself, not on a retry of an old one
            with contextlib.suppress(WitnessQuorumError):
                self._deliver(head, notes[size], targets)

    def push(self, origin: str) -> dict[str, list[int]]:
        """Send every signed head a witness lacks (newer than its latest); returns sizes sent per witness."""
        notes = self.notes()
        sent: dict[str, list[int]] = {}
        for w in self.witnesses:
            latest = w.latest(origin)
            have = latest.size if latest else -1
            sent[w.name] = []
            for size in sorted(s for s in notes if s > have):
                head, _ = parse_note(notes[size])
                if head.origin != origin:
                    continue
                try:
                    w.submit(head, notes[size])
                except WitnessConflict as exc:
                    raise AuditWriteError(f"audit witness conflict: {redact(str(exc))}") from None
                sent[w.name].append(size)
            if sent[w.name] and w.name in self.pending():
                self._append(GAPS_FILE, {"witness": w.name, "size": max(sent[w.name]), "resolved": True})
        return sent

    def close(self) -> None:
        for w in self.witnesses:
            with contextlib.suppress(Exception):  # closing is best effort by nature
                w.close()


__all__ = [
    "Witness",
    "WitnessConflict",
    "WitnessError",
    "WitnessQuorumError",
    "WitnessSet",
    "WitnessedHead",
    "open_witness",
    "origin_key",
    "register_witness",
]
