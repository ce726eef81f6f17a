"""``gateway audit witness status|push|sql`` and ``gateway audit rotate-key``.

``status`` shows, per configured witness, its latest head, how far it lags the local checkpoints and
any recorded gap; ``push`` re-sends the signed heads a witness missed (after an outage, or when a
witness is added to an existing log); ``sql`` prints the table and grants a PostgreSQL witness's owner
runs once. ``rotate-key`` records a signed key rotation in the log (see gateway.audit.rotation).
"""

from __future__ import annotations

import json
from typing import Any

import click

from .audit_cmd import _handled, _log_options, _open


@click.group("witness")
def witness() -> None:
    """Inspect and feed the audit witnesses configured in gateway.yaml (audit_witnesses)."""


def _require_witnesses(log: Any) -> Any:
    from ..errors import UsageError

    if not log.witnesses:
        raise UsageError("no audit witnesses configured: set audit_witnesses in gateway.yaml (--config)")
    return log.witnesses


@witness.command("status")
@_log_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handled
def status_cmd(audit_url: str | None, config: str | None, checkpoint_dir: str | None, as_json: bool) -> None:
    """Each witness's latest head, its lag behind the local checkpoints, and recorded gaps."""
    from ..audit.witness import WitnessError

    with _open(audit_url, config, checkpoint_dir) as log:
        ws = _require_witnesses(log)
        local = log.checkpoints.latest(log.log_id)
        local_size = local.size if local else 0
        pending = ws.pending()
        rows = []
        for w in ws.witnesses:
            row: dict[str, Any] = {"witness": w.name, "gap_recorded": w.name in pending, "warning": w.warning}
            try:
                latest = w.latest(log.origin)
            except WitnessError as exc:
                row.update(reachable=False, error=str(exc))
            else:
                size = latest.size if latest else 0
                row.update(
                    reachable=True,
                    latest_size=size,
                    received=latest.received if latest else None,
                    lag=max(0, local_size - size),
                )
            rows.append(row)
    out = {"origin": log.origin, "local_checkpoint_size": local_size, "quorum": ws.quorum, "witnesses": rows}
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
        return
    click.echo(f"origin {out['origin']}: local checkpoint size {local_size}, quorum {ws.quorum}")
    for row in rows:
        state = (
            f"latest {row['latest_size']} (lag {row['lag']}), received {row['received'] or '-'}"
            if row["reachable"]
            else f"UNREACHABLE: {row['error']}"
        )
        gap = ", gap recorded" if row["gap_recorded"] else ""
        click.echo(f"  {row['witness']}: {state}{gap}")
        if row["warning"]:
            click.echo(f"  warning: {row['warning']}", err=True)


@witness.command("push")
@_log_options
@_handled
def push_cmd(audit_url: str | None, config: str | None, checkpoint_dir: str | None) -> None:
    """Seal the log, then send every signed head each witness lacks."""
    with _open(audit_url, config, checkpoint_dir) as log:
        ws = _require_witnesses(log)
        log.checkpoint()
        sent = ws.push(log.origin)
    click.echo(json.dumps({"sent": sent}, sort_keys=True))


@witness.command("sql")
@click.option("--table", default="audit_witness_heads", show_default=True)
@click.option("--role", default="gateway_witness", show_default=True, help="The gateway's INSERT-only role.")
def sql_cmd(table: str, role: str) -> None:
    """Print the DDL and GRANTs for a PostgreSQL witness (run by the witness database's owner)."""
    from ..audit.witness.postgres import setup_sql

    click.echo(setup_sql(table, role), nl=False)


@click.command("rotate-key")
@_log_options
@click.option(
    "--new-key",
    required=True,
    help="The new signing key: a path to an Ed25519 PEM (created 0600 if missing) or kms:KEY-ID.",
)
@_handled
def rotate_key_cmd(
    audit_url: str | None, config: str | None, checkpoint_dir: str | None, new_key: str
) -> None:
    """Record a checkpoint key rotation signed by the old and the new key, sealed under the old key.

    Afterwards point audit_signing_key at the new key (and add its id to audit_trusted_keys).
    """
    from pathlib import Path

    from ..audit.signers import signer_from_spec

    with _open(audit_url, config, checkpoint_dir) as log:
        new = signer_from_spec(new_key, default_dir=Path.cwd())
        out = log_rotate(log, new)
    click.echo(json.dumps(out, sort_keys=True))


def log_rotate(log: Any, new: Any) -> dict[str, Any]:
    from ..audit.rotation import rotate_key

    out = rotate_key(log, new)
    log.checkpoint()  # the first head under the new key
    return out


__all__ = ["rotate_key_cmd", "witness"]
