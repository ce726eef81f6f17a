"""The ``gateway`` command.

Sub-commands live in their own modules and are imported only when invoked (``gateway --help`` lists
them from the table below without importing anything heavy). Errors become exit codes through each
error class's ``exit_code``; with ``--json`` nothing but the result object goes to stdout.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .. import __version__

# name -> (module, attribute, short help). Order is the order of `gateway --help`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "generate": ("gateway.cli.generate", "generate", "Generate images under policy, budget and audit."),
    "edit": ("gateway.cli.edit_cmd", "edit", "Edit images (img2img, inpaint, outpaint, variation)."),
    "explain": (
        "gateway.cli.generate",
        "explain",
        "Show the plan (decision, routes, cost) without spending.",
    ),
    "providers": ("gateway.cli.generate", "providers", "List provider cards: prices, licence, indemnity."),
    "policy": ("gateway.cli.policy_cmd", "policy", "Check policy files and print the policy JSON Schema."),
    "report": ("gateway.cli.report_cmd", "report", "Spend by team, project, use case, provider, model, day."),
    "verify": ("gateway.cli.provenance_cmd", "verify", "Verify watermark and C2PA provenance of images."),
    "keys": (
        "gateway.cli.provenance_cmd",
        "keys",
        "Create signing keys (development C2PA chain, watermark key).",
    ),
    "audit": ("gateway.cli.audit_cmd", "audit", "Verify, export or show the tamper-evident audit log."),
    "dashboard": ("gateway.cli.dashboard_cmd", "dashboard", "Serve the local cost and audit dashboard."),
    "dataset": (
        "gateway.cli.dataset_cmd",
        "dataset",
        "Datasets: build synthetic ones from a spec, schema, evaluate; inspect training folders.",
    ),
    "archive": ("gateway.cli.archive_cmd", "archive", "Get archived outputs by sha256; apply retention."),
    "train": ("gateway.cli.train_cmd", "train", "Train a LoRA adapter from a dataset manifest (signed)."),
    "adapters": ("gateway.cli.adapters_cmd", "adapters", "List, show and verify signed LoRA adapters."),
    "serve": ("gateway.cli.serve_cmd", "serve", "Serve the OpenAI-compatible images API (API keys)."),
    "api-keys": ("gateway.cli.serve_cmd", "api_keys", "Create, list and revoke the server's API keys."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module, attr, _ = spec
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, spec[2]) for name, spec in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gateway")
def cli() -> None:
    """diffusion-gateway: governed image generation (policy, routing, budgets, provenance, audit).

    Exit codes: 0 ok, 1 unexpected, 2 usage/config, 3 denied by policy, 4 budget exceeded,
    5 providers failed, 6 verification failed.
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the group, turning GatewayErrors into their exit codes and one-line messages."""
    from ..errors import GatewayError

    try:
        return cli.main(args=argv, prog_name="gateway", standalone_mode=False)
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        detail = getattr(exc, "detail", None)
        if detail:
            click.echo(str(detail), err=True)
        rule_ids = getattr(exc, "rule_ids", None)
        if rule_ids:
            click.echo("rule ids: " + ", ".join(rule_ids), err=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:  # an optional extra planning did not catch: no traceback
        from ..preflight import EXTRA_OF, from_import_error

        if (exc.name or "").split(".", 1)[0] not in EXTRA_OF:
            raise  # not an optional extra: a genuine bug, shown as one
        err = from_import_error(exc)
        click.echo(f"error: {err}", err=True)
        click.echo(err.detail, err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError | click.BadParameter) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
