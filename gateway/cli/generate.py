"""``gateway generate``, ``gateway explain`` and ``gateway providers``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..types import SCHEDULERS

F = TypeVar("F", bound=Callable[..., Any])

_REQUEST_KEYS = ("provider", "model", "n", "seed", "steps", "scheduler", "width", "height", "guidance_scale",
                 "negative_prompt", "quality", "adapter")  # fmt: skip
_CONTEXT_KEYS = ("team", "project", "use_case", "user")


def request_options(fn: F) -> F:
    """The options `generate` and `explain` share (the DESIGN contract)."""
    opts = [
        click.argument("prompt"),
        click.option("--provider", help="Narrow routing to this backend (never bypasses policy)."),
        click.option("--model", help="Narrow routing to this model id."),
        click.option("-n", "n", type=int, help="Number of images."),
        click.option("--seed", type=int),
        click.option("--steps", type=int),
        click.option("--scheduler", type=click.Choice(SCHEDULERS)),
        click.option("--guidance-scale", "guidance_scale", type=float),
        click.option("--negative-prompt", "negative_prompt"),
        click.option(
            "--quality",
            help="low | medium | high | auto, or a provider's word (standard, premium, hd); "
            "routes whose card cannot honour it are dropped.",
        ),
        click.option("--width", type=int),
        click.option("--adapter", help="A registered fine-tune (signed LoRA adapter) by name."),
        click.option("--height", type=int),
        click.option("--team"),
        click.option("--project"),
        click.option("--use-case", "use_case"),
        click.option("--user"),
        click.option("--tag", "tags", multiple=True, help="Context tag (repeatable)."),
        click.option(
            "--policy",
            "policies",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="Policy file (repeatable; later files override earlier).",
        ),
        click.option("--config", type=click.Path(dir_okay=False), help="gateway.yaml"),
        click.option("--ledger", help="Ledger URL (sqlite:///path or postgresql://...)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _settings(params: dict[str, Any]) -> Any:
    import os

    from ..audit import configure_logging
    from ..config import Settings

    # JSON log lines on stderr (stdout is reserved for --json results); GATEWAY_LOG_LEVEL=INFO for more.
    configure_logging(os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"))

    overrides: dict[str, Any] = {"ledger_url": params.get("ledger")}
    if params.get("policies"):
        overrides["policies"] = tuple(Path(p).resolve() for p in params["policies"])
    return Settings.load(params.get("config"), **overrides)


def _split(params: dict[str, Any]) -> dict[str, Any]:
    out = {k: params[k] for k in (*_REQUEST_KEYS, *_CONTEXT_KEYS) if params.get(k) is not None}
    if params.get("tags"):
        out["tags"] = tuple(params["tags"])
    return out


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _echo_saved(result: Any, paths: list[Path]) -> None:
    """The human output of a call that saved images: one path a line on stdout, a summary on stderr."""
    for p in paths:
        click.echo(str(p))
    click.echo(
        f"{result.provider}/{result.model} seed={result.seed} cost=${result.cost_usd} "
        f"latency={result.latency_s:.3f}s audit_seq={result.audit_seq} trace={result.trace_id}",
        err=True,
    )


#: ``--idempotency-key``, shared by every command that spends (generate, edit).
idempotency_option = click.option(
    "--idempotency-key",
    "idempotency_key",
    help="The same key (per team) returns the first result and pays once.",
)


def _spend_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """Request options plus the idempotency key, when given."""
    kwargs = _split(params)
    if params.get("idempotency_key") is not None:
        kwargs["idempotency_key"] = params["idempotency_key"]
    return kwargs


@click.command()
@request_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Directory for the images.")  # fmt: skip
@idempotency_option
def generate(**params: Any) -> None:
    """Generate images for PROMPT and write them to --out."""
    from ..client import Gateway

    kwargs = _spend_kwargs(params)
    n = int(kwargs.get("n", 1))
    if n > 1:
        click.echo(f"generating {n} images ...", err=True)
    with Gateway(_settings(params)) as gw:
        result = gw.generate(params["prompt"], **kwargs)
    paths = result.save(params["out_dir"])
    if params["as_json"]:
        _emit(result.to_dict(paths))
        return
    _echo_saved(result, paths)
    if result.quarantined:
        click.echo(f"{len(result.quarantined)} image(s) quarantined by policy", err=True)
    if result.replayed or result.cache_hit:
        click.echo("replayed (idempotency key): nothing paid" if result.replayed
                   else "cache hit: served from the archive at cost 0", err=True)  # fmt: skip


@click.command()
@request_options
def explain(**params: Any) -> None:
    """Show the decision, every candidate route and why, the ranking and the estimate. Spends nothing."""
    from ..client import Gateway

    with Gateway(_settings(params)) as gw:
        plan = gw.explain(params["prompt"], **_split(params))
    data = plan.to_dict()
    if params["as_json"]:
        _emit(data)
        return
    d = data["decision"]
    click.echo(f"decision: {'allow' if d['allowed'] else 'DENY'}  policy {d['policy_hash'][:12]}")
    for rid, why in zip(d["rule_ids"], d["reasons"], strict=False):
        click.echo(f"  {rid}: {why}")
    c = d["constraints"]
    click.echo(
        "constraints: " + ", ".join(f"{k}={v}" for k, v in c.items() if v not in (None, False, "none"))
    )
    click.echo(f"strategy: {data['routing']['strategy']}")
    ranked = data["routing"]["ranked"]
    for cand in data["routing"]["candidates"]:
        if cand["eligible"]:
            rank = ranked.index(cand["route"]) + 1
            click.echo(f"  #{rank} {cand['route']:55s} est ${cand['estimate_usd']}")
        else:
            click.echo(f"  -- {cand['route']:55s} dropped ({cand['stage']}): {cand['reason']}")
    click.echo(f"route: {data['route'] or 'none'}  estimate: ${data['estimate_usd'] or '-'}")


_PRICE_FORMAT: dict[str, Callable[[Any], str]] = {
    "image": lambda p: "/".join(f"${t.usd}" for t in p.per_image) + " per image",
    "token": lambda p: (
        (
            f"${p.usd_per_million_tokens.text_input}/${p.usd_per_million_tokens.image_output}"
            " per 1M text-in/image-out tokens"
        )
        if p.usd_per_million_tokens
        else "per token"
    ),
    "second": lambda p: f"${p.usd_per_second}/s ({p.hardware})",
    "hour": lambda p: f"${p.usd_per_hour}/h ({p.hardware})",
}


@click.command()
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def providers(config: str | None, as_json: bool) -> None:
    """Print every provider card's models: price, licence, indemnity, status, regions."""
    from ..catalog import Catalog
    from ..config import Settings
    from ..routing import env_today

    settings = Settings.load(config)
    catalog = Catalog.load(settings.provider_paths)
    today = env_today()
    rows = []
    for r in catalog:
        p = r.card.pricing
        price = _PRICE_FORMAT[p.unit](p)
        rows.append({
            "route": r.key, "status": r.lifecycle(today), "price": price,
            "licence": r.card.licence.name.split(";")[0][:28],
            "commercial": r.card.licence.commercial_use, "indemnity": r.card.indemnity.level,
            "regions": ",".join(r.card.regions), "watermark": r.card.provenance.watermark,
            "c2pa": r.card.provenance.c2pa, "as_of": str(p.as_of),
        })  # fmt: skip
    if as_json:
        _emit({"providers": rows})
        return
    cols = ["route", "status", "price", "licence", "commercial", "indemnity", "regions", "as_of"]
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in cols} if rows else {}
    click.echo("  ".join(c.ljust(widths[c]) for c in cols))
    for row in rows:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in cols))
