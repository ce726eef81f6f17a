"""``gateway dashboard``: serve the read-only cost and audit dashboard on this machine.

Which stores: ``--ledger``/``--audit`` URLs, else ``$GATEWAY_AUDIT_URL`` for the audit log, else the
``ledger_url``/``audit_url`` of ``--config`` (or the embedded defaults under ``$GATEWAY_HOME``), exactly
as ``gateway report`` and ``gateway audit`` find them. Bound to 127.0.0.1 by default; any other address
needs a token (``--token`` or ``$GATEWAY_DASHBOARD_TOKEN``, which keeps it out of ``ps``).
"""

from __future__ import annotations

import click


@click.command("dashboard")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 picks a free port."
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (non-loopback needs --token)."
)
@click.option(
    "--token", envvar="GATEWAY_DASHBOARD_TOKEN", help="Require this token (env GATEWAY_DASHBOARD_TOKEN)."
)
@click.option("--ledger", help="Ledger URL (default: sqlite:///$GATEWAY_HOME/ledger.db).")
@click.option(
    "--audit",
    "audit_url",
    envvar="GATEWAY_AUDIT_URL",
    help="Audit log URL (sqlite:///PATH or postgresql://...).",
)
@click.option(
    "--checkpoints", "checkpoint_dir", type=click.Path(file_okay=False), help="Folder of signed checkpoints."
)
@click.option(
    "--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml (store URLs, home, routing)."
)
def dashboard(
    port: int,
    host: str,
    token: str | None,
    ledger: str | None,
    audit_url: str | None,
    checkpoint_dir: str | None,
    config: str | None,
) -> None:
    """Serve the cost and audit dashboard (read-only; Ctrl-C stops it).

    Cost: spend over time by team, project, use case, provider and model; budgets against their limits;
    estimate error; cost per image; top spenders. Audit: filterable records, each with its chain
    position, inclusion proof and the chain's verification; denials by rule; quarantined outputs.
    Providers: latency, error rate and breaker state per route.
    """
    from pathlib import Path

    from ..config import Settings
    from ..dashboard import create_app, open_sources
    from ..dashboard.server import bind, serve
    from ..routing import default_stats_path

    settings = Settings.load(config, ledger_url=ledger)
    audit = audit_url or settings.resolved_audit_url
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else None
    if checkpoints is None and not audit_url:
        checkpoints = settings.home / "checkpoints"  # where the client writes them
    app = create_app(
        open_sources(
            settings.resolved_ledger_url,
            audit,
            checkpoint_dir=checkpoints,
            route_stats=default_stats_path(settings.home),
            breaker_threshold=settings.routing.breaker_threshold,
            breaker_cooldown_s=settings.routing.breaker_cooldown_s,
        ),
        host=host,
        token=token,
    )
    from ..archive import open_archive
    from ..errors import GatewayError

    try:
        app.sources.archive = open_archive(settings)
    except GatewayError as exc:
        app.sources.notices.append(f"archive: {exc}")
    for notice in app.sources.notices:
        click.echo(f"note: {notice}", err=True)
    try:
        sock = bind(host, port)
    except OSError as exc:
        app.sources.close()
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host

    def ready() -> None:
        click.echo(f"Dashboard (read-only): http://{shown}:{bound}/", err=False)
        if token:
            click.echo(
                "Open it with ?token=<your token> once, or send 'Authorization: Bearer <token>'.", err=True
            )

    try:
        serve(app, sock, on_ready=ready)
    finally:
        sock.close()
        app.sources.close()
