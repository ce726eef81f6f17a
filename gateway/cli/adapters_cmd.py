"""``gateway adapters list | show NAME | verify NAME``: the signed LoRA adapters of this gateway home."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _context(config: str | None) -> tuple[Any, str]:
    from ..config import Settings
    from ..finetune.signing import trust_bundle
    from ..provenance.keys import KeyStore, ProvenanceSettings

    settings = Settings.load(config)
    keys = KeyStore(settings.home, ProvenanceSettings.parse(settings.provenance))
    return settings, trust_bundle(keys)


_config = click.option("--config", type=click.Path(dir_okay=False), help="gateway.yaml")
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


@click.group()
def adapters() -> None:
    """Signed LoRA adapters in <home>/adapters (each is a route local/<base>+<name>)."""


@adapters.command("list")
@_config
@_json
def list_cmd(config: str | None, as_json: bool) -> None:
    """Every registered adapter: route, signature, dataset digest, licence."""
    from ..finetune.registry import scan

    settings, bundle = _context(config)
    entries = scan(settings.home, bundle)
    if as_json:
        _emit({"adapters": [e.to_dict() for e in entries]})
        return
    if not entries:
        click.echo(f"no adapters in {settings.home / 'adapters'}", err=True)
    for e in entries:
        d = e.to_dict()
        sig = "signed" if e.signed else f"NOT VALID ({e.problem})"
        click.echo(f"{d['route']:40s} {sig:8s} dataset {str(d['dataset_digest'])[:16]}...  {d['licence']}")


@adapters.command("show")
@click.argument("name")
@_config
@_json
def show_cmd(name: str, config: str | None, as_json: bool) -> None:
    """The provenance header of adapter NAME (base, dataset, licences, owner, training config)."""
    from ..finetune.registry import find

    settings, bundle = _context(config)
    d = find(settings.home, name, bundle).to_dict()
    if as_json:
        _emit(d)
        return
    for k, v in d.items():
        click.echo(f"{k:18s} {json.dumps(v) if isinstance(v, dict | list) else v}")


@adapters.command("verify")
@click.argument("name")
@_config
@_json
def verify_cmd(name: str, config: str | None, as_json: bool) -> None:
    """Full check of NAME: signature, signer trust, tensor hash, base-model digest (exit 6 if any fails)."""
    from ..catalog import Catalog
    from ..finetune.basemodel import model_digest
    from ..finetune.registry import find
    from ..finetune.signing import AdapterRejected, verify_bytes
    from ..finetune.train import resolve_base

    settings, bundle = _context(config)
    entry = find(settings.home, name, bundle)
    _, base_dir, _ = resolve_base(entry.base_model or "?", Catalog.load(settings.provider_paths))
    try:
        v = verify_bytes(entry.path.read_bytes(), bundle, base_model_sha256=model_digest(base_dir))
    except AdapterRejected as exc:
        if as_json:
            _emit({"name": name, "ok": False, "error": str(exc)})
        raise
    out = {
        "name": name,
        "ok": True,
        "sha256": v.file_sha256,
        "tensor_sha256": v.tensor_sha256,
        "signer": v.signer,
        "base_model": entry.base_model,
        "base_dir": str(base_dir),
    }
    if as_json:
        _emit(out)
        return
    click.echo(
        f"{name}: OK (signature, signer, tensor hash {v.tensor_sha256[:16]}..., base {entry.base_model})"
    )
