"""``gateway report``: spend vs budget, counts, cost per image and estimate error, from the ledger."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]


def _dimensions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from ..ledger.store import REPORT_DIMENSIONS

    dims = tuple(d.strip() for d in value.split(",") if d.strip())
    bad = [d for d in dims if d not in REPORT_DIMENSIONS]
    if bad:
        raise click.BadParameter(f"unknown {bad}; choose from {', '.join(REPORT_DIMENSIONS)}")
    return tuple(dict.fromkeys(dims))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)


def _ledger_url(ledger: str | None, config: str | None) -> str:
    from ..config import Settings

    return Settings.load(config, ledger_url=ledger).resolved_ledger_url


@click.command("report")
@click.option("--ledger", help="Ledger URL (default: sqlite:///$GATEWAY_HOME/ledger.db).")
@click.option(
    "--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml (for its ledger_url)."
)
@click.option(
    "--by",
    default="team",
    show_default=True,
    callback=_dimensions,
    help="Comma-separated: team, project, use_case, user, provider, model, route, day.",
)
@click.option(
    "--since",
    type=click.DateTime(_DATE_FORMATS),
    metavar="DATE",
    help="UTC start, inclusive (YYYY-MM-DD[THH:MM]).",
)
@click.option(
    "--until",
    type=click.DateTime(_DATE_FORMATS),
    metavar="DATE",
    help="UTC end, exclusive (YYYY-MM-DD[THH:MM]).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@click.option(
    "--section",
    type=click.Choice(["all", "spend", "budgets"]),
    default=None,
    help="What to print (default: all; CSV prints one table, spend unless 'budgets').",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the cost and audit views as one self-contained HTML file (opens offline).",
)
def report(
    ledger: str | None,
    config: str | None,
    by: tuple[str, ...],
    since: dt.datetime | None,
    until: dt.datetime | None,
    fmt: str,
    section: str | None,
    html_path: str | None,
) -> None:
    """Spend by team, project, use case, user, provider, model or day, and budgets in their window.

    Money is exact (micro-dollars). "est err %" is (actual - estimate) / estimate over settled calls;
    refused requests never reached a backend; in-flight ones hold a reservation now.
    """
    from ..errors import UsageError
    from ..ledger import open_ledger
    from ..ledger.report import build_report, render_csv, render_json, render_table
    from ..ledger.sqlite import parse_sqlite_url

    start, end = _utc(since), _utc(until)
    if start and end and end <= start:
        raise click.BadParameter("--until must be after --since", param_hint="--until")
    if fmt == "csv" and section == "all":
        raise click.BadParameter("CSV holds one table: use --section spend or --section budgets")
    url = _ledger_url(ledger, config)
    if url.startswith("sqlite:") and not parse_sqlite_url(url)[0].exists():
        raise UsageError(f"no ledger at {parse_sqlite_url(url)[0]} (nothing spent yet?); pass --ledger URL")
    store = open_ledger(url)
    try:
        data = build_report(store, by=by, since=start, until=end, now=dt.datetime.now(dt.UTC))
    finally:
        store.close()
    renderers: dict[str, Any] = {
        "json": lambda: render_json(data, section or "all") + "\n",
        "csv": lambda: render_csv(data, section or "spend"),
        "table": lambda: render_table(data, section or "all"),
    }
    click.echo(renderers[fmt](), nl=False)
    if html_path:
        from ..dashboard.report import write_report_for_cli

        click.echo(f"wrote {write_report_for_cli(html_path, url, config, start, end)}", err=True)
