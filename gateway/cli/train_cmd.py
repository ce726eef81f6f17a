"""``gateway train lora DATASET --base MODEL --name NAME``: a signed LoRA adapter from a dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


@click.group()
def train() -> None:
    """Train fine-tunes (LoRA adapters) from dataset manifests, under the training-data policy."""


@train.command("lora")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--base", default="tiny-digits", show_default=True, help="Local model id or pipeline folder.")
@click.option("--name", required=True, help="Adapter name (its route is local/<base>+<name>).")
@click.option("--steps", type=int, default=400, show_default=True)
@click.option("--rank", type=int, default=8, show_default=True)
@click.option("--alpha", type=int, default=None, help="LoRA alpha (default: the rank).")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=50, show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine).")
@click.option("--out", type=click.Path(dir_okay=False), help="Adapter file (default: <home>/adapters/NAME).")
@click.option("--force", is_flag=True, help="Replace an existing adapter of that name.")
@click.option("--team")
@click.option("--project")
@click.option("--use-case", "use_case")
@click.option("--user")
@click.option("--policy", "policies", multiple=True, type=click.Path(dir_okay=False), help="Policy file(s).")
@click.option("--config", type=click.Path(dir_okay=False), help="gateway.yaml")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def lora(dataset: str, **p: Any) -> None:
    """Train a LoRA adapter on DATASET (resumes from its last checkpoint if interrupted)."""
    from ..catalog import Catalog
    from ..config import Settings
    from ..finetune.train import TrainConfig, train_lora
    from ..policy import PolicySet
    from ..provenance.keys import KeyStore, ProvenanceSettings
    from ..types import Context

    overrides: dict[str, Any] = {}
    if p["policies"]:
        overrides["policies"] = tuple(Path(x).resolve() for x in p["policies"])
    settings = Settings.load(p["config"], **overrides)
    cfg = TrainConfig(
        name=p["name"],
        base=p["base"],
        steps=p["steps"],
        rank=p["rank"],
        alpha=p["alpha"],
        lr=p["lr"],
        batch=p["batch"],
        seed=p["seed"],
        checkpoint_every=p["checkpoint_every"],
        threads=p["threads"],
    )
    context = Context.build(
        None, team=p["team"], project=p["project"], use_case=p["use_case"], user=p["user"]
    )
    keys = KeyStore(settings.home, ProvenanceSettings.parse(settings.provenance))
    result = train_lora(
        dataset,
        cfg,
        home=settings.home,
        policy=PolicySet.load(settings.policy_paths),
        keys=keys,
        context=context,
        catalog=Catalog.load(settings.provider_paths),
        out=Path(p["out"]) if p["out"] else None,
        progress=True,  # stderr only: stdout stays one JSON object with --json
        force=p["force"],
    )
    if p["as_json"]:
        sys.stdout.write(json.dumps(result.to_dict(), default=str) + "\n")
        return
    click.echo(str(result.adapter_path))
    click.echo(
        f"adapter {result.name} on {result.base_model}: {result.steps} steps, loss {result.final_loss:.4f}, "
        f"{result.seconds:.1f}s; dataset {result.dataset_name} digest {result.dataset_digest}",
        err=True,
    )
