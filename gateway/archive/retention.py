"""Retention: delete archived objects past ``archive.retention_days``, each deletion audited first.

Why audit before deleting: an auditor must be able to tell "deleted by retention on date D" from
"lost". The record is committed before the object goes; if the process dies in between, the next
prune finds the object still expired and deletes it (a second record says so), so no deletion is
ever unrecorded. Cache entries past their TTL and expired idempotency keys are cleared on the way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .store import Archive, ArchivedObject, Kind

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..ledger import Ledger


@dataclass
class PruneReport:
    deleted: list[ArchivedObject] = field(default_factory=list)
    cache_entries: int = 0
    keys: int = 0
    uploaded: int = 0  # objects moved from the local spool into the archive
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "deleted": [{"sha256": o.sha256, "kind": o.kind, "size": o.size, "last_put_us": o.last_put_us}
                        for o in self.deleted],
            "deleted_count": len(self.deleted),
            "deleted_bytes": sum(o.size for o in self.deleted),
            "cache_entries_removed": self.cache_entries,
            "idempotency_keys_removed": self.keys,
            "spool_uploaded": self.uploaded,
            "dry_run": self.dry_run,
        }  # fmt: skip


def prune(
    archive: Archive,
    audit: AuditLog,
    *,
    now: dt.datetime,
    retention_days: float | None = None,
    ledger: Ledger | None = None,
    dry_run: bool = False,
) -> PruneReport:
    days = archive.retention_days if retention_days is None else retention_days
    if days is None:
        raise UsageError("no retention configured: set archive.retention_days or pass --older-than-days")
    report = PruneReport(dry_run=dry_run)
    report.deleted = archive.expired(now, days)
    if dry_run:
        return report
    for obj in report.deleted:
        audit.append({
            "event": "archive_deleted", "sha256": obj.sha256, "kind": obj.kind, "size": obj.size,
            "mime": obj.mime, "team": obj.team, "request_ids": list(obj.request_ids[:10]),
            "stored_us": obj.stored_us, "last_put_us": obj.last_put_us, "reason": "retention",
            "retention_days": days, "archive": archive.url,
        })  # fmt: skip
        archive.delete(obj.sha256)
    for key in archive.expired_refs(now):
        archive.store.delete(key)
        report.cache_entries += 1
    if ledger is not None:
        report.keys = ledger.prune_keys(now)
    return report


def flush_spool(spool: Archive, archive: Archive) -> int:
    """Upload what a failed remote write left in the local spool (metadata kept), then drop it there."""
    moved = 0
    for obj in list(spool.objects()):
        data = spool.get(obj.sha256)
        old = archive.head(obj.sha256)
        kind: Kind = (
            "quarantined" if obj.kind == "quarantined" else "input" if obj.kind == "input" else "output"
        )
        when = dt.datetime.fromtimestamp(obj.last_put_us / 1e6, dt.UTC)
        rid = obj.request_ids[0] if obj.request_ids else ""
        archive.put(
            data, kind=kind, mime=obj.mime, request_id=rid, team=obj.team, now=when, extra=dict(obj.extra)
        )
        if old is None and archive.get(obj.sha256) != data:  # pragma: no cover - a store that lies
            continue
        spool.delete(obj.sha256)
        moved += 1
    return moved


@dataclass
class Coverage:
    """Every image the audit log names, checked against the archive (``gateway archive verify``)."""

    checked: int = 0
    deleted: int = 0  # named, but removed later by an audited retention deletion
    missing: list[tuple[int, str]] = field(default_factory=list)  # (audit seq, sha256)
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    reindexed: int = 0  # objects whose (unsynced) metadata a power loss took, rebuilt from the audit

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "deleted_by_retention": self.deleted,
                "reindexed": self.reindexed,
                "missing": [{"seq": s, "sha256": h} for s, h in self.missing],
                "corrupt": [{"seq": s, "sha256": h} for s, h in self.corrupt]}  # fmt: skip


def _named(rec: Mapping[str, Any]) -> list[str]:
    names = [*(rec.get("image_sha256s") or ()), *(rec.get("input_sha256s") or ())]
    if rec.get("event") == "quarantined" and rec.get("sha256"):
        names.append(rec["sha256"])
    return [n for n in names if isinstance(n, str)]


def coverage(
    archive: Archive, records: Iterable[Mapping[str, Any]], spool: Archive | None = None
) -> Coverage:
    """Fetch every image the audit records name and check its bytes (each distinct hash once)."""
    from .store import ArchiveError, NotArchived

    named: dict[str, int] = {}
    namers: dict[str, Mapping[str, Any]] = {}
    deleted: set[str] = set()
    for rec in records:
        if rec.get("event") == "archive_deleted" and isinstance(rec.get("sha256"), str):
            deleted.add(rec["sha256"])
        for sha in _named(rec):
            if sha not in named:
                named[sha], namers[sha] = int(rec.get("seq", 0)), rec
    out = Coverage()
    for sha, seq in named.items():
        out.checked += 1
        for store in (archive, spool):
            if store is None:
                continue
            try:
                data = store.get(sha)
                if store.head(sha) is None:
                    _reindex(store, sha, data, namers[sha])
                    out.reindexed += 1
                break
            except NotArchived:
                continue
            except ArchiveError:
                out.corrupt.append((seq, sha))
                break
        else:
            if sha in deleted:
                out.deleted += 1
            else:
                out.missing.append((seq, sha))
    return out


def _reindex(archive: Archive, sha: str, data: bytes, rec: Mapping[str, Any]) -> None:
    """Rebuild an object's metadata from the audit record that first named it (see the durability
    note in :mod:`.store`): the audit log is the durable statement of who stored what, and when."""
    from ..outputs import sniff

    kind: Kind = (
        "quarantined" if rec.get("event") == "quarantined"
        else "input" if sha in (rec.get("input_sha256s") or ()) else "output"
    )  # fmt: skip
    ts = rec.get("ts")
    try:
        when = dt.datetime.fromisoformat(str(ts)) if ts else dt.datetime.now(dt.UTC)
    except ValueError:
        when = dt.datetime.now(dt.UTC)
    archive.put(data, kind=kind, mime=sniff(data) or "application/octet-stream",
                request_id=str(rec.get("request_id") or ""), team=str(rec.get("team") or ""), now=when,
                extra={"reindexed_from_seq": rec.get("seq")})  # fmt: skip
