"""``gateway audit``: verify, export, show, seal and prove records of the tamper-evident audit log.

Which log: ``--audit URL``, else ``$GATEWAY_AUDIT_URL``, else the ``audit_url`` of ``--config`` (or the
embedded default ``sqlite:///$GATEWAY_HOME/audit.db``). Which checkpoints: ``--checkpoints DIR``, else
``$GATEWAY_HOME/checkpoints`` when the log came from settings (where the client writes them), else
the folder next to an explicitly given SQLite file.

Exit codes: 0 ok; 2 usage (bad URL, no such log or record); 6 verification failed (the first bad
sequence number and what happened are printed); 1 anything unexpected.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..audit import AuditLog

F = TypeVar("F", bound=Callable[..., Any])


def _log_options(fn: F) -> F:
    opts = [
        click.option(
            "--audit", "audit_url", envvar="GATEWAY_AUDIT_URL", help="sqlite:///PATH or postgresql://..."
        ),
        click.option(
            "--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml (audit_url, home)."
        ),
        click.option(
            "--checkpoints",
            "checkpoint_dir",
            type=click.Path(file_okay=False),
            help="Folder of signed checkpoints (default: $GATEWAY_HOME/checkpoints).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _handled(fn: F) -> F:
    """Turn gateway errors into a one-line message and the error's exit code, however we were invoked."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..audit.redact import redact
        from ..errors import GatewayError

        try:
            return fn(*args, **kwargs)
        except GatewayError as exc:
            click.echo(f"error: {redact(str(exc))}", err=True)
            click.get_current_context().exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def _target(audit_url: str | None, config: str | None, checkpoint_dir: str | None) -> tuple[str, Path | None]:
    if audit_url:
        return audit_url, Path(checkpoint_dir) if checkpoint_dir else None
    from ..config import Settings

    settings = Settings.load(config)
    return settings.resolved_audit_url, Path(
        checkpoint_dir
    ) if checkpoint_dir else settings.home / "checkpoints"


def _open(
    audit_url: str | None,
    config: str | None,
    checkpoint_dir: str | None,
    *,
    public_keys: tuple[str, ...] = (),
) -> AuditLog:
    """The log as configured: keys, pins and witnesses come from ``--config`` (or the defaults)."""
    from ..audit.configure import audit_from_settings
    from ..config import Settings

    url, cps = _target(audit_url, config, checkpoint_dir)
    settings = Settings.load(config)
    if cps is None:
        from ..audit.store import default_checkpoint_dir

        cps = default_checkpoint_dir(url)
    return audit_from_settings(
        settings,
        url=url,
        checkpoint_dir=cps,
        public_keys=public_keys,
        create=False,
        checkpoint_on_close=False,
    )


@click.group("audit")
def audit() -> None:
    """Verify, export or show the tamper-evident audit log."""


@audit.command("verify")
@_log_options
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Trust only this checkpoint public key (repeatable); default: *.pub in the folder.",
)
@click.option("--deep", is_flag=True, help="Also recompute the Merkle root at every checkpoint (slower).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_context
@_handled
def verify_cmd(
    ctx: click.Context,
    audit_url: str | None,
    config: str | None,
    checkpoint_dir: str | None,
    public_keys: tuple[str, ...],
    deep: bool,
    as_json: bool,
) -> None:
    """Check every record's hash and chain link and every signed checkpoint (exit 6 on tampering)."""
    from ..audit.verify import AuditVerifyReport
    from ..errors import UsageError

    try:
        log = _open(audit_url, config, checkpoint_dir, public_keys=public_keys)
    except UsageError:
        report = _missing_log(audit_url, config, checkpoint_dir)
        if report is None:
            raise
    else:
        with log:
            report = log.verify(deep=deep)
    assert isinstance(report, AuditVerifyReport)
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
    else:
        click.echo(report.summary(), err=not report.ok)
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
    if not report.ok:
        ctx.exit(6)


def _missing_log(audit_url: str | None, config: str | None, checkpoint_dir: str | None) -> Any:
    """A deleted SQLite file is the ultimate truncation: if checkpoints vouch for records, say so."""
    from ..audit.checkpoints import Checkpoint, CheckpointStore
    from ..audit.store import default_checkpoint_dir
    from ..audit.verify import AuditVerifyReport

    url, cps = _target(audit_url, config, checkpoint_dir)
    store = CheckpointStore(cps or default_checkpoint_dir(url))
    if not store.path.exists():
        return None
    sizes = []
    for line in store.path.read_text(encoding="utf-8").splitlines():
        try:
            sizes.append(Checkpoint.from_json(line).size)
        except ValueError:
            continue
    if not sizes or max(sizes) == 0:
        return None
    return AuditVerifyReport(
        ok=False,
        count=0,
        first_bad_seq=1,
        problem="truncated",
        detail=f"the audit log is missing; checkpoints in {store.directory} say it had {max(sizes)} records",
    )


@audit.command("export")
@_log_options
@click.option(
    "--out", type=click.Path(dir_okay=False), default="-", show_default=True, help="JSONL file, - = stdout."
)
@click.option(
    "--since", "since_seq", type=click.IntRange(min=0), default=0, help="Only records after this seq."
)
@_handled
def export_cmd(
    audit_url: str | None, config: str | None, checkpoint_dir: str | None, out: str, since_seq: int
) -> None:
    """Write records as JSON Lines: each record as stored plus seq, ts, prev_hash and entry_hash."""
    from ..audit.canonical import canonical_json
    from ..types import atomic_writer

    with _open(audit_url, config, checkpoint_dir) as log:
        if out == "-":
            for record in log.iter_records(since_seq):
                sys.stdout.write(canonical_json(record) + "\n")
            sys.stdout.flush()
            return
        path = Path(out)
        n = 0
        with atomic_writer(path, "w") as fh:
            for record in log.iter_records(since_seq):
                fh.write(canonical_json(record) + "\n")
                n += 1
    click.echo(f"exported {n} records to {path}", err=True)


@audit.command("show")
@_log_options
@click.argument("seq", type=click.IntRange(min=1))
@_handled
def show_cmd(audit_url: str | None, config: str | None, checkpoint_dir: str | None, seq: int) -> None:
    """Print the record SEQ as JSON."""
    from ..errors import UsageError

    with _open(audit_url, config, checkpoint_dir) as log:
        record = log.get(seq)
        if record is None:
            raise UsageError(f"no audit record {seq} (the log has {log.head()[0]})")
    click.echo(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False))


@audit.command("checkpoint")
@_log_options
@_handled
def checkpoint_cmd(audit_url: str | None, config: str | None, checkpoint_dir: str | None) -> None:
    """Verify the records since the last checkpoint and sign a new one (run it from cron)."""
    with _open(audit_url, config, checkpoint_dir) as log:
        cp = log.checkpoint()
    click.echo(
        json.dumps({"size": cp.size, "root": cp.root, "head": cp.head, "ts": cp.ts, "key_id": cp.key_id})
    )


@audit.command("proof")
@_log_options
@click.argument("seq", type=click.IntRange(min=1))
@click.option(
    "--size", type=click.IntRange(min=1), help="Tree size to prove against (default: the whole log)."
)
@_handled
def proof_cmd(
    audit_url: str | None, config: str | None, checkpoint_dir: str | None, seq: int, size: int | None
) -> None:
    """Print an RFC 6962 inclusion proof for record SEQ (check it against a signed checkpoint root)."""
    from ..errors import UsageError

    with _open(audit_url, config, checkpoint_dir) as log:
        try:
            proof = log.inclusion_proof(seq, size)
        except IndexError as exc:
            raise UsageError(str(exc)) from None
    click.echo(json.dumps(proof, indent=2))


from .audit_witness_cmd import rotate_key_cmd, witness  # noqa: E402  (sub-groups share the options)

audit.add_command(witness)
audit.add_command(rotate_key_cmd)

__all__ = ["audit"]
