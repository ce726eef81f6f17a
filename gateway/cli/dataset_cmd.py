"""``gateway dataset``: the group for training and synthetic datasets.

``inspect`` lives here; other sub-commands (``build``, ``schema``, ``evaluate``) join this group from
their own modules by ``dataset.add_command(...)`` or by defining them below, so the group stays one
place and the top-level command table has one entry.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@click.group()
def dataset() -> None:
    """Datasets: build synthetic ones from a spec (resumable, budgeted), schema, evaluate; inspect a
    training folder (hashes, safe decoding, licences, manifest digest)."""


@dataset.command("inspect")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--check", is_flag=True, help="Compare with the stored dataset.manifest.json (exit 6 if changed)."
)
@click.option("--no-write", is_flag=True, help="Do not write dataset.manifest.json.")
@click.option("--files", "show_files", is_flag=True, help="List every file (with --json: always listed).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def inspect_cmd(directory: str, check: bool, no_write: bool, show_files: bool, as_json: bool) -> None:
    """Hash every file of DIRECTORY, check each decodes safely, and write its manifest digest."""
    from ..errors import VerificationFailed
    from ..finetune.manifest import build_manifest, check_manifest, write_manifest

    if check:
        result = check_manifest(directory)
        if as_json:
            _emit(result.to_dict())
        else:
            click.echo(f"stored digest:  {result.stored_digest}")
            click.echo(f"current digest: {result.current_digest or '-'}")
            for what in ("changed", "added", "removed"):
                for p in getattr(result, what):
                    click.echo(f"  {what}: {p}")
            if result.error:
                click.echo(f"  {result.error}")
        if not result.ok:
            raise VerificationFailed(f"{directory}: dataset does not match its manifest")
        return
    manifest = build_manifest(directory)
    path = None if no_write else write_manifest(directory, manifest)
    data = manifest.to_dict()
    if as_json:
        _emit({**data, "manifest_path": str(path) if path else None})
        return
    click.echo(f"dataset {manifest.name}: {len(manifest.files)} files, owner {manifest.owner or '(none)'}")
    click.echo(f"licences: {', '.join(f'{k} x{v}' for k, v in manifest.licence_summary().items())}")
    if manifest.labels:
        click.echo(f"labels: {', '.join(manifest.labels)}")
    if show_files:
        for f in manifest.files:
            click.echo(f"  {f.sha256}  {f.path}  {f.width}x{f.height} {f.mode}  {f.licence}")
    click.echo(f"digest: {manifest.digest}")
    if path is not None:
        click.echo(f"manifest: {path}", err=True)


# The synthetic-dataset commands (gateway/cli/dataset_build_cmd.py) join the same group.
from .dataset_build_cmd import build_cmd, evaluate_cmd, schema_cmd  # noqa: E402

for _cmd in (build_cmd, schema_cmd, evaluate_cmd):
    dataset.add_command(_cmd)
