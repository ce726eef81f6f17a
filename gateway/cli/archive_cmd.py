"""``gateway archive``: fetch an archived output by sha256, list, and apply retention.

Which archive: ``archive.url`` of ``--config`` (default ``$GATEWAY_HOME/archive``). ``get`` writes the
exact stored bytes (checked against the sha256 on the way out); ``prune`` deletes objects older than
the retention window and writes one audit record per deletion before deleting it.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click


def _settings(config: str | None) -> Any:
    from ..config import Settings

    return Settings.load(config)


def _archive(settings: Any) -> Any:
    from ..archive import open_archive
    from ..errors import UsageError

    archive = open_archive(settings)
    if archive is None:
        raise UsageError("the archive is off in this configuration (archive.url: off)")
    return archive


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@click.group()
def archive() -> None:
    """The content-addressed output archive (every returned image, quarantined image and edit input)."""


@archive.command("get")
@click.argument("sha256")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), required=True, help="Where to write the bytes."
)
@click.option("--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml")
@click.option("--json", "as_json", is_flag=True)
def get(sha256: str, out: str, config: str | None, as_json: bool) -> None:
    """Write the archived object SHA256 to --out, byte for byte."""
    from ..types import atomic_write

    store = _archive(_settings(config))
    try:
        data = store.get(sha256)
        meta = store.head(sha256)
    finally:
        store.close()
    path = atomic_write(Path(out), data)
    info = {"sha256": sha256.lower(), "size": len(data), "out": str(path),
            "kind": meta.kind if meta else None, "mime": meta.mime if meta else None}  # fmt: skip
    if as_json:
        _emit(info)
    else:
        click.echo(str(path))


@archive.command("ls")
@click.option("--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml")
@click.option("--json", "as_json", is_flag=True)
def ls(config: str | None, as_json: bool) -> None:
    """List archived objects (sha256, kind, size, request ids)."""
    store = _archive(_settings(config))
    try:
        objs = sorted(store.objects(), key=lambda o: o.stored_us)
    finally:
        store.close()
    if as_json:
        _emit({"archive": store.url, "objects": [o.to_dict() for o in objs]})
        return
    for o in objs:
        click.echo(f"{o.sha256}  {o.kind:11s} {o.size:>9d}  {','.join(o.request_ids[:3])}")


@archive.command("prune")
@click.option("--older-than-days", "days", type=float, help="Override archive.retention_days.")
@click.option("--dry-run", is_flag=True, help="List what would go; delete nothing.")
@click.option("--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml")
@click.option("--json", "as_json", is_flag=True)
def prune_cmd(days: float | None, dry_run: bool, config: str | None, as_json: bool) -> None:
    """Delete objects past the retention window; each deletion is recorded in the audit log first."""
    from ..archive import Archive, LocalStore
    from ..archive.keeper import SPOOL_DIR
    from ..archive.retention import flush_spool, prune
    from ..audit import open_audit
    from ..ledger import open_ledger

    settings = _settings(config)
    store = _archive(settings)
    audit = open_audit(settings.resolved_audit_url, checkpoint_dir=settings.home / "checkpoints")
    ledger = open_ledger(settings.resolved_ledger_url)
    try:
        uploaded = 0
        spool_dir = settings.home / SPOOL_DIR
        if store.blocking_io and spool_dir.is_dir() and not dry_run:
            uploaded = flush_spool(Archive(LocalStore(spool_dir)), store)
        report = prune(store, audit, now=dt.datetime.now(dt.UTC), retention_days=days, ledger=ledger,
                       dry_run=dry_run)  # fmt: skip
        report.uploaded = uploaded
    finally:
        store.close()
        audit.close()
        ledger.close()
    if as_json:
        _emit(report.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    size = sum(o.size for o in report.deleted)
    click.echo(f"{verb} {len(report.deleted)} object(s), {size} bytes; "
               f"{report.cache_entries} cache entries and {report.keys} keys expired")  # fmt: skip


@archive.command("verify")
@click.option("--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml")
@click.option("--json", "as_json", is_flag=True)
def verify_cmd(config: str | None, as_json: bool) -> None:
    """Check that every image the audit log names is in the archive with its exact bytes (exit 6 if not)."""
    from ..archive import Archive, LocalStore
    from ..archive.keeper import SPOOL_DIR
    from ..archive.retention import coverage
    from ..audit import open_audit
    from ..errors import VerificationFailed

    settings = _settings(config)
    store = _archive(settings)
    spool_dir = settings.home / SPOOL_DIR
    spool = Archive(LocalStore(spool_dir)) if spool_dir.is_dir() else None
    audit = open_audit(settings.resolved_audit_url, checkpoint_dir=settings.home / "checkpoints")
    try:
        report = coverage(store, audit.iter_records(), spool)
    finally:
        store.close()
        audit.close()
    if as_json:
        _emit(report.to_dict())
    else:
        gone = f"{report.deleted} deleted by retention"
        again = f"; {report.reindexed} re-indexed from the audit log" if report.reindexed else ""
        click.echo(f"{report.checked} image(s) named in the audit log; {gone}; "
                   f"{len(report.missing)} missing; {len(report.corrupt)} corrupt{again}")  # fmt: skip
    if not report.ok:
        first = (report.missing or report.corrupt)[0]
        raise VerificationFailed(f"archive does not hold image {first[1]} named by audit record {first[0]}")
