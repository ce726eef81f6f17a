"""``gateway serve`` (the OpenAI-compatible images server) and ``gateway api-keys`` (who may call it).

Keys are stored beside the ledger (``--ledger``, else the config's ``ledger_url``, else the embedded
SQLite under ``$GATEWAY_HOME``), so a server started with the same config sees them.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

import click


def _settings(config: str | None, ledger: str | None) -> Any:
    from ..config import Settings

    return Settings.load(config, ledger_url=ledger)


def _store(config: str | None, ledger: str | None) -> Any:
    from ..server.keys import KeyStore

    return KeyStore(_settings(config, ledger).resolved_ledger_url)


_config = click.option("--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml")
_ledger = click.option(
    "--ledger", help="Ledger URL the keys live beside (sqlite:///... or postgresql://...)."
)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 = free port.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Worker processes.")
@_config
@click.option(
    "--graceful-timeout", "graceful_s", type=float, default=30.0, show_default=True,
    help="Seconds in-flight requests get to finish on shutdown.",
)  # fmt: skip
def serve(host: str, port: int, workers: int, config: str | None, graceful_s: float) -> None:
    """Serve /v1/images/generations, /v1/images/edits and /v1/models to any OpenAI client.

    Every request needs an API key (``gateway api-keys create``). ``$GATEWAY_ADMIN_KEY`` mounts the
    read-only dashboard under /dashboard behind that key. Prints the base URL on stdout when ready.
    """
    import os

    from ..audit import configure_logging
    from ..server.run import serve as run

    configure_logging(os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"))
    shown = f"[{host}]" if ":" in host else host

    def ready(_host: str, bound: int) -> None:
        click.echo(f"Serving the OpenAI images API on http://{shown}:{bound}/v1 ({workers} worker(s))")
        sys.stdout.flush()

    try:
        run(host, port, workers=workers, config=config, graceful_s=graceful_s, on_ready=ready)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@click.group("api-keys")
def api_keys() -> None:
    """Create, list and revoke the API keys the server accepts."""


def _money(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"not an amount: {value!r}", param_hint="--budget-usd") from None


@api_keys.command("create")
@click.option("--name", required=True, help="Unique name (shown in every audit record of its use).")
@click.option("--team", required=True)
@click.option("--project", default="default", show_default=True)
@click.option("--user", help="Fixed user (default key-NAME; the key's own budget counts on it).")
@click.option(
    "--use-case", "use_cases", multiple=True, help="Allowed use case (repeatable; first = default)."
)
@click.option("--budget-usd", help="The key's own budget.")
@click.option("--budget-period", type=click.Choice(["day", "month"]))
@_config
@_ledger
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def create(
    name: str,
    team: str,
    project: str,
    user: str | None,
    use_cases: tuple[str, ...],
    budget_usd: str | None,
    budget_period: str | None,
    config: str | None,
    ledger: str | None,
    as_json: bool,
) -> None:
    """Make a key and print its secret once (only a salted hash is stored)."""
    with _store(config, ledger) as store:
        key, secret = store.create(
            name,
            team=team,
            project=project,
            user=user,
            use_cases=use_cases,
            budget_usd=_money(budget_usd),
            budget_period=budget_period,
        )
    if as_json:
        sys.stdout.write(json.dumps({**key.to_dict(), "secret": secret}) + "\n")
        return
    click.echo(secret)
    click.echo(f"key {key.name!r} for team {key.team}: store the secret now, it is not shown again", err=True)


@api_keys.command("list")
@_config
@_ledger
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def list_keys(config: str | None, ledger: str | None, include_revoked: bool, as_json: bool) -> None:
    """List keys (never their secrets)."""
    with _store(config, ledger) as store:
        keys = store.list(include_revoked=include_revoked)
    if as_json:
        sys.stdout.write(json.dumps({"keys": [k.to_dict() for k in keys]}) + "\n")
        return
    for k in keys:
        budget = f"${k.budget_usd}/{k.budget_period}" if k.budget_usd is not None else "-"
        state = "revoked" if k.revoked else "live"
        click.echo(
            f"{k.name:<20} {state:<8} team={k.team} project={k.project} user={k.user} "
            f"use_cases={','.join(k.use_cases)} budget={budget}"
        )


@api_keys.command("revoke")
@click.argument("name")
@_config
@_ledger
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def revoke(name: str, config: str | None, ledger: str | None, as_json: bool) -> None:
    """Revoke the live key NAME (servers stop accepting it within their key cache time)."""
    with _store(config, ledger) as store:
        key = store.revoke(name)
    if as_json:
        sys.stdout.write(json.dumps(key.to_dict()) + "\n")
        return
    click.echo(f"revoked {key.name}", err=True)
