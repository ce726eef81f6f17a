"""``gateway dataset build | schema | evaluate``: synthetic datasets under the gateway's governance.

The commands join the ``gateway dataset`` group. ``build`` prints progress (images, images/s, spend
vs budget, ETA) on stderr and, with ``--json``, one object on stdout; it exits 4 when the spec's budget
stops it (everything paid is kept and a rerun continues), 2 for a bad spec (``FILE:LINE:``).
"""

from __future__ import annotations

import json
import sys

import click


@click.group()
def dataset() -> None:
    """Synthetic datasets: build from a spec (resumable, never pays twice), schema, evaluate."""


@click.command("build")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Build folder.")
@click.option(
    "--executor", "executor_name", type=click.Choice(["local", "ray"]), default="local", show_default=True
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--config", type=click.Path(dir_okay=False, exists=True), help="gateway.yaml.")
@click.option("--force-new", is_flag=True, help="Start a new build when the spec changed existing items.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def build_cmd(
    spec: str, out: str, executor_name: str, workers: int, config: str | None, force_new: bool, as_json: bool
) -> None:
    """Build (or continue) the dataset described by SPEC into --out."""
    from ..datasets import build

    result = build(
        spec, out, executor_name=executor_name, workers=workers, config=config, force_new=force_new
    )
    doc = result.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
    else:
        state = "complete" if doc["complete"] else f"stopped ({doc['stopped'] or 'incomplete'})"
        click.echo(
            f"{doc['name']}: {doc['images']} images listed, {doc['dropped']} dropped, {state}; "
            f"this run paid ${doc['cost_usd_this_run']} for {doc['requests_run']} requests "
            f"({doc['requests_replayed']} replayed free); total ${doc['cost_usd_total']}; "
            f"{doc['images_per_s']} images/s",
            err=True,
        )
    for err in result.errors[:5]:
        click.echo(f"error: {err}", err=True)
    if result.exit_code:
        click.get_current_context().exit(result.exit_code)


@click.command("schema")
def schema_cmd() -> None:
    """Print the dataset spec's JSON Schema."""
    from ..datasets import spec_schema

    click.echo(json.dumps(spec_schema(), indent=2, sort_keys=True))


@click.command("evaluate")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--real", type=click.Choice(["digits"]), default="digits", show_default=True, help="Real data to test on."
)
@click.option("--classifier", type=click.Choice(["logreg", "svm"]), default="logreg", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate_cmd(directory: str, real: str, classifier: str, as_json: bool) -> None:
    """Train on the build only, test on real digits, next to the same classifier trained on real digits."""
    from ..datasets.evaluate import evaluate

    doc = evaluate(directory, classifier=classifier)
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    click.echo(
        f"train on synthetic, test on real: {doc['tstr_accuracy']:.1%}; same classifier on "
        f"{doc['train_images']} real digits: {doc['real_baseline_accuracy']:.1%} "
        f"(gap {doc['gap_points']} points, {doc['test_images']} real test digits)"
    )


for _cmd in (build_cmd, schema_cmd, evaluate_cmd):
    dataset.add_command(_cmd)

__all__ = ["build_cmd", "dataset", "evaluate_cmd", "schema_cmd"]
