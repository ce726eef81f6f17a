"""The archive's one small interface: content-addressed bytes plus a JSON metadata document each.

Why content-addressed: an auditor holds a sha256 from the audit log and must get back exactly those
bytes, from any host, years later. Addressing objects by their hash makes every write idempotent (the
same image stored twice is one object), makes corruption detectable on read (the bytes must hash to
their name) and needs no index beside the store itself.

A store keeps three kinds of things under one root:

``objects/<sha256>``          the bytes, never rewritten once present;
``meta/<sha256>.json``        what the gateway knew when it stored them (kind, mime, size, request ids,
                              team, ``stored_us`` / ``last_put_us``), rewritten on every put (so a
                              repeat keeps the object alive for another retention window);
``refs/<name>.json``          small named documents (result-cache entries) that point at objects.

Durability: an object is on disk before the result that names it is returned (a local store
fsyncs the file and its folder; :meth:`Archive.sync` lets the caller overlap that wait with the audit
log's own fsync). Metadata is written atomically but not fsynced: it is an index of what the audit log
already holds durably (each output's sha256, request id, team, time), so a power loss costs at most the
newest entries' retention clock (an object without metadata is never pruned, and ``archive verify``
rebuilds its metadata from the audit record that named it), never an object or an audit fact. That
saves one fsync per image.

Implementations only move bytes (:class:`LocalStore`, :class:`~gateway.archive.s3.S3Store`); the
checks and the metadata rules live in :class:`Archive` so every store behaves the same.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import GatewayError, UsageError
from ..types import atomic_write, fsync_folder, fsync_paths

Kind = Literal["output", "input", "quarantined"]
KINDS: tuple[str, ...] = ("output", "input", "quarantined")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_REF = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,40}/[0-9a-f]{16,64}$")
US = 1_000_000


class ArchiveError(GatewayError):
    """The archive could not store or return an object (exit 1: the caller cannot fix it)."""


class NotArchived(UsageError):
    """No object with that sha256 is in the archive (exit 2: the caller asked for something absent)."""


def check_sha(sha256: str) -> str:
    s = sha256.strip().lower()
    if not _SHA.match(s):
        raise UsageError(f"not a sha256 (64 hex digits): {sha256!r}")
    return s


def _us(now: dt.datetime) -> int:
    return int(now.timestamp() * US)


class BlobStore(abc.ABC):
    """Where bytes live. Keys are relative paths like ``objects/ab...``; values are opaque bytes."""

    url: str = ""
    blocking_io: bool = False  # True: the async client calls this store from a worker thread

    @abc.abstractmethod
    def write(self, key: str, data: bytes, *, immutable: bool = False, durable: bool = True) -> None:
        """Store ``data`` at ``key`` (atomically: readers see all of it or nothing); with
        ``durable=False`` it need not survive a power loss until :meth:`sync` is called for it."""

    def sync(self, keys: Iterable[str]) -> None:  # noqa: B027 - stores durable on write need nothing
        """Make ``keys`` written with ``durable=False`` durable (a no-op where writes always are)."""

    @abc.abstractmethod
    def read(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None when absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (absent is fine)."""

    @abc.abstractmethod
    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (e.g. ``meta/``), in no particular order."""

    def close(self) -> None:  # noqa: B027 - optional hook: most stores hold no connections
        """Release connections (nothing to do for most stores)."""


class LocalStore(BlobStore):
    """A directory (default: ``$GATEWAY_HOME/archive``); objects fan out by the first hash bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()
        root.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()  # fan-out folders known to exist

    def _path(self, key: str) -> Path:
        top, _, name = key.partition("/")
        return self.root / top / name[:2] / name if top in ("objects", "meta") else self.root / key

    def write(self, key: str, data: bytes, *, immutable: bool = False, durable: bool = True) -> None:
        path = self._path(key)
        if immutable and path.exists():
            return
        folder = path.parent
        known = folder in self._folders
        if not known:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)  # bounded: objects/ and meta/ fan out into 256 folders each
        try:
            atomic_write(path, data, sync=durable, mkdir=False)
        except FileNotFoundError:  # the folder went away under us (a prune, a manual clean-up)
            if not known:
                raise
            self._folders.discard(folder)
            return self.write(key, data, immutable=immutable, durable=durable)
        if durable:
            fsync_folder(path.parent)

    def sync(self, keys: Iterable[str]) -> None:
        fsync_paths(self._path(k) for k in keys)

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        top = prefix.rstrip("/")
        base = self.root / top
        if not base.is_dir():
            return
        for p in base.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                rel = p.relative_to(base)
                # objects/meta fan out into two-letter folders that are not part of the key
                name = rel.name if top in ("objects", "meta") else rel.as_posix()
                yield f"{top}/{name}"


@dataclass(frozen=True, slots=True)
class ArchivedObject:
    """One object's metadata (what ``meta/<sha>.json`` holds)."""

    sha256: str
    size: int
    mime: str
    kind: str
    stored_us: int
    last_put_us: int
    request_ids: tuple[str, ...]
    team: str
    extra: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: bytes) -> ArchivedObject:
        d = json.loads(data)
        return cls(
            sha256=d["sha256"],
            size=int(d["size"]),
            mime=d.get("mime", "application/octet-stream"),
            kind=d.get("kind", "output"),
            stored_us=int(d["stored_us"]),
            last_put_us=int(d.get("last_put_us", d["stored_us"])),
            request_ids=tuple(d.get("request_ids", ())),
            team=d.get("team", ""),
            extra=d.get("extra", {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "mime": self.mime,
            "kind": self.kind,
            "stored_us": self.stored_us,
            "last_put_us": self.last_put_us,
            "request_ids": list(self.request_ids),
            "team": self.team,
            "extra": dict(self.extra),
        }


_MAX_REQUEST_IDS = 50  # an often-repeated image keeps its first and latest requests, not all of them


class Archive:
    """Content-addressed output store over any :class:`BlobStore`; the checks every store shares."""

    def __init__(self, store: BlobStore, *, retention_days: float | None = None) -> None:
        self.store = store
        self.retention_days = retention_days

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def blocking_io(self) -> bool:
        return self.store.blocking_io

    def put(
        self,
        data: bytes,
        *,
        kind: Kind,
        mime: str,
        request_id: str,
        team: str,
        now: dt.datetime,
        extra: Mapping[str, Any] | None = None,
        defer_sync: bool = False,
    ) -> str:
        """Store ``data`` (once) and its metadata (refreshed); return its sha256.

        ``defer_sync=True`` leaves the object's fsync to a later :meth:`sync` of the returned sha256s,
        which the caller must finish before it hands the result out (the request core runs it beside
        the audit append, so the two disk waits overlap instead of adding up)."""
        if kind not in KINDS:
            raise ValueError(f"unknown archive kind {kind!r}")
        sha = hashlib.sha256(data).hexdigest()
        now_us = _us(now)
        old = self.head(sha)
        if old is None or not self.store.exists(f"objects/{sha}"):
            # New content (no metadata yet): write without an existence probe, which saves S3 a round
            # trip; rewriting identical bytes under their own hash is harmless.
            self.store.write(f"objects/{sha}", data, durable=not defer_sync)
        ids = tuple(dict.fromkeys((*(old.request_ids if old else ()), request_id)))
        if len(ids) > _MAX_REQUEST_IDS:
            ids = (*ids[:1], *ids[-(_MAX_REQUEST_IDS - 1) :])
        meta = ArchivedObject(
            sha256=sha,
            size=len(data),
            mime=mime,
            kind=old.kind if old and old.kind == "output" else kind,  # an output stays an output
            stored_us=old.stored_us if old else now_us,
            last_put_us=now_us,
            request_ids=ids,
            team=old.team if old else team,
            extra={**(old.extra if old else {}), **(extra or {})},
        )
        # An index of facts the audit log holds durably: atomic, not fsynced (module docstring).
        meta_doc = json.dumps(meta.to_dict(), sort_keys=True).encode()
        self.store.write(f"meta/{sha}.json", meta_doc, durable=False)
        return sha

    def sync(self, sha256s: Iterable[str]) -> None:
        """Make objects put with ``defer_sync=True`` durable; an OS error becomes an ArchiveError."""
        try:
            self.store.sync(f"objects/{check_sha(s)}" for s in sha256s)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ArchiveError(f"archive {self.url}: could not make objects durable: {why}") from None

    def get(self, sha256: str) -> bytes:
        """The exact bytes stored under ``sha256``; raises if absent or if they do not hash back."""
        sha = check_sha(sha256)
        data = self.store.read(f"objects/{sha}")
        if data is None:
            raise NotArchived(f"{sha} is not in the archive at {self.url}")
        if hashlib.sha256(data).hexdigest() != sha:
            raise ArchiveError(f"archived object {sha} is corrupt: its bytes hash to something else")
        return data

    def head(self, sha256: str) -> ArchivedObject | None:
        raw = self.store.read(f"meta/{check_sha(sha256)}.json")
        return None if raw is None else ArchivedObject.from_json(raw)

    def has(self, sha256: str) -> bool:
        return self.store.exists(f"objects/{check_sha(sha256)}")

    def objects(self) -> Iterator[ArchivedObject]:
        for key in self.store.keys("meta/"):
            raw = self.store.read(key)
            if raw is not None:
                yield ArchivedObject.from_json(raw)

    # ------------------------------------------------------------------ named documents (cache)

    def put_ref(self, name: str, doc: Mapping[str, Any]) -> None:
        if not _REF.match(name):
            raise ValueError(f"bad archive ref name {name!r}")
        self.store.write(f"refs/{name}.json", json.dumps(doc, sort_keys=True, default=str).encode())

    def get_ref(self, name: str) -> dict[str, Any] | None:
        if not _REF.match(name):
            raise ValueError(f"bad archive ref name {name!r}")
        raw = self.store.read(f"refs/{name}.json")
        return None if raw is None else dict(json.loads(raw))

    # ------------------------------------------------------------------ retention

    def expired(self, now: dt.datetime, retention_days: float | None = None) -> list[ArchivedObject]:
        """Objects whose last store is older than the retention window (none when retention is unset)."""
        days = self.retention_days if retention_days is None else retention_days
        if days is None:
            return []
        cutoff = _us(now) - int(days * 86_400 * US)
        return sorted((o for o in self.objects() if o.last_put_us < cutoff), key=lambda o: o.last_put_us)

    def delete(self, sha256: str) -> None:
        sha = check_sha(sha256)
        self.store.delete(f"objects/{sha}")
        self.store.delete(f"meta/{sha}.json")

    def expired_refs(self, now: dt.datetime) -> list[str]:
        """Cache entries past their own ``expires_us`` (their images follow the object retention)."""
        now_us, out = _us(now), []
        for key in self.store.keys("refs/"):
            raw = self.store.read(key)
            if raw is None:
                continue
            try:
                expires = int(json.loads(raw).get("expires_us", 0))
            except (ValueError, AttributeError):
                expires = 0
            if expires and expires <= now_us:
                out.append(key)
        return out

    def close(self) -> None:
        self.store.close()
