"""``gateway verify IMAGE...`` and ``gateway keys init|show``.

``verify`` exits 0 when every image carries our watermark or a valid C2PA manifest and meets the
policy, else 6 (VerificationFailed). With ``--json`` stdout holds one JSON object and nothing else.
Keys come from the gateway home (``--home``, ``$GATEWAY_HOME``, ``./.gateway``) or from the
``provenance:`` section of ``--config``; ``verify`` never creates keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import VerificationFailed

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIR = click.Path(file_okay=False, path_type=Path)


def _home_and_settings(home: Path | None, config: Path | None) -> tuple[Path, dict[str, Any]]:
    from ..config import Settings, default_home

    if config is not None:
        s = Settings.load(config)
        return (home or s.home), dict(s.provenance)
    return (home or default_home()), {}


def _audit_lookup(home: Path, config: Path | None) -> Any:
    """Request id -> audit record, from the audit log of ``--config`` or the home's SQLite log."""
    from ..provenance.credentials import audit_lookup_for

    if config is not None:
        from ..config import Settings

        s = Settings.load(config)
        return audit_lookup_for(s.resolved_audit_url, s.home / "checkpoints")
    return audit_lookup_for(f"sqlite:///{home / 'audit.db'}", home / "checkpoints")


@click.command("verify")
@click.argument("images", nargs=-1, required=True, type=_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--trust", type=_FILE, help="PEM trust anchors: a valid manifest chaining to them is 'trusted'."
)
@click.option("--policy", type=_FILE, help="Verification policy YAML (require_watermark, require_c2pa, ...).")
@click.option("--home", type=_DIR, help="Gateway home holding keys/ (default $GATEWAY_HOME or ./.gateway).")
@click.option("--config", type=_FILE, help="gateway.yaml whose provenance section names the keys.")
@click.option("--request-id", help="Also check that the watermark was made for this request id.")
@click.option(
    "--thorough", is_flag=True, help="Search every 8x8 pixel offset (crops); slower, same FP bound."
)
def verify(
    images: tuple[Path, ...],
    as_json: bool,
    trust: Path | None,
    policy: Path | None,
    home: Path | None,
    config: Path | None,
    request_id: str | None,
    thorough: bool,
) -> None:
    """Verify the watermark and C2PA provenance of IMAGE files (exit 0 ok, 6 failed)."""
    from ..provenance import Provenance, VerifyPolicy

    home_dir, settings = _home_and_settings(home, config)
    pv = Provenance(home_dir, settings)
    pol = VerifyPolicy.load(policy) if policy is not None else VerifyPolicy()
    anchors = trust.read_bytes() if trust is not None else None
    opts: dict[str, Any] = {"trust_anchors_pem": anchors, "policy": pol, "request_id": request_id,
                            "audit_lookup": _audit_lookup(home_dir, config)}  # fmt: skip
    reports = [pv.verify(p.read_bytes(), thorough=thorough, source=str(p), **opts) for p in images]
    failed = [r for r in reports if not r.ok]
    if as_json:
        out = {
            "ok": not failed,
            "policy": pol.model_dump(mode="json"),
            "images": [r.to_dict() for r in reports],
        }
        click.echo(json.dumps(out, sort_keys=True))
    else:
        for r in reports:
            click.echo(r.summary())
    if failed:
        raise VerificationFailed(f"{len(failed)} of {len(reports)} image(s) failed verification")


@click.group("keys")
def keys() -> None:
    """Signing keys: the development C2PA chain and the watermark key."""


@keys.command("init")
@click.option(
    "--home", type=_DIR, help="Gateway home (default $GATEWAY_HOME or ./.gateway); keys go in keys/."
)
@click.option(
    "--force", is_flag=True, help="Retire the current keys (kept under keys/retired/) and make new ones."
)
@click.option("--json", "as_json", is_flag=True)
def init(home: Path | None, force: bool, as_json: bool) -> None:
    """Create the development C2PA chain (P-256 root + leaf) and a watermark key, if missing."""
    from ..provenance.keys import init_keys

    home_dir, _ = _home_and_settings(home, None)
    res = init_keys(home_dir / "keys", force=force)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "directory": str(res.directory),
                    "created": [str(p) for p in res.created],
                    "retired": [str(p) for p in res.retired],
                    "watermark_key_id": res.watermark_key_id,
                    "development": True,
                }
            )
        )
        return
    for p in res.created:
        click.echo(f"created  {p}")
    for p in res.retired:
        click.echo(f"retired  {p}")
    if not res.created:
        click.echo(f"keys already exist in {res.directory} (use --force to rotate)")
    click.echo(f"watermark key id: {res.watermark_key_id}")
    click.echo(
        "note: this is a DEVELOPMENT chain trusted by nobody else; verifiers can trust it with "
        f"--trust {res.directory / 'c2pa-root.pem'}",
        err=True,
    )


@keys.command("show")
@click.option("--home", type=_DIR)
@click.option("--config", type=_FILE)
def show(home: Path | None, config: Path | None) -> None:
    """Show key ids and the signing certificate (never the secrets)."""
    from cryptography import x509

    from ..provenance.keys import KeyStore, ProvenanceSettings

    home_dir, settings = _home_and_settings(home, config)
    store = KeyStore(home_dir, ProvenanceSettings.parse(settings))
    wm = store.watermark_keys(create=False)
    click.echo(f"keys directory: {store.directory}")
    click.echo("watermark keys: " + (", ".join(k.key_id_hex for k in wm) or "none") + " (first is current)")
    chain = store.settings.c2pa.cert_chain
    leaf_path = store.resolve(chain) if chain else store.directory / "c2pa-signer.pem"
    if leaf_path.exists():
        cert = x509.load_pem_x509_certificates(leaf_path.read_bytes())[0]
        click.echo(f"c2pa signer: {cert.subject.rfc4514_string()}")
        click.echo(f"  issuer: {cert.issuer.rfc4514_string()}")
        click.echo(f"  valid until: {cert.not_valid_after_utc.isoformat()}")
    else:
        click.echo("c2pa signer: none (created on first stamp, or run `gateway keys init`)")
