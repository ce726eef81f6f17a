"""``gateway policy check FILE...`` and ``gateway policy schema``.

``check`` validates the files *and their composition* in the order given (the same order
``--policy`` uses on ``generate``), so CI can gate a team's override file against the org default.
Errors are ConfigErrors (``FILE:LINE: ...``, exit 2) raised to the CLI's one error handler.
With ``--prompt`` it also evaluates one request and exits 3 when the policy denies it, which makes a
policy change testable in a shell script.
"""

from __future__ import annotations

import json
from typing import Any

import click


@click.group("policy")
def policy() -> None:
    """Check policy files and print the policy JSON Schema."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("--prompt", help="Also evaluate this prompt (exit 3 if denied).")
@click.option("--team")
@click.option("--project")
@click.option("--use-case", "use_case")
@click.option("--user")
@click.option("--tag", "tags", multiple=True, help="Request tag (repeatable).")
@click.option("-n", "n", type=int, help="Number of images for --prompt.")
@click.option("--width", type=int)
@click.option("--height", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def check(files: tuple[str, ...], prompt: str | None, as_json: bool, **fields: Any) -> None:
    """Validate FILES and compose them in the order given (later files override earlier ones)."""
    from ..errors import PolicyDenied
    from ..policy import PolicySet
    from ..types import Context, ImageRequest

    ps = PolicySet.load(files)
    out: dict[str, Any] = {
        "ok": True,
        "sources": list(ps.sources),
        "hash": ps.hash,
        "rules": [
            {"id": p.rule.id, "kind": p.rule.kind, "at": f"{p.source}:{p.line}", "final": p.rule.final}
            for p in ps.placed
        ],
    }
    decision = None
    if prompt is not None:
        ctx_fields = {k: fields[k] for k in ("team", "project", "use_case", "user")}
        context = Context.build(None, **ctx_fields, tags=tuple(fields["tags"]) or None)
        req_fields = {k: fields[k] for k in ("n", "width", "height") if fields[k] is not None}
        decision = ps.evaluate(ImageRequest.build(prompt, **req_fields), context)
        out["decision"] = _decision_dict(decision)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"ok: {len(ps.placed)} rules from {len(ps.sources)} file(s), policy hash {ps.hash[:16]}")
        for r in out["rules"]:
            click.echo(f"  {r['id']:<36} {r['kind']:<18} {r['at']}{'  (final)' if r['final'] else ''}")
        if decision is not None:
            click.echo(f"decision: {'allow' if decision.allowed else 'DENY'}")
            for reason in decision.reasons:
                click.echo(f"  {reason}")
    if decision is not None and not decision.allowed:
        raise PolicyDenied("denied by policy", rule_ids=decision.rule_ids, decision=decision)


def _decision_dict(d: Any) -> dict[str, Any]:
    constraints = _fields(d.constraints)
    if constraints["max_cost_usd"] is not None:
        constraints["max_cost_usd"] = str(constraints["max_cost_usd"])
    return {
        **d.to_dict(),
        "constraints": constraints,
        "provenance": _fields(d.provenance),
        "budgets": [{**_fields(b), "limit_usd": str(b.limit_usd)} for b in d.budgets],
        "rate_limits": [_fields(r) for r in d.rate_limits],
        "capture_prompt": d.capture_prompt,
    }


def _fields(obj: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@policy.command("schema")
def schema() -> None:
    """Print the JSON Schema of a policy file (point your editor's YAML plugin at it)."""
    from ..policy.model import json_schema_text

    click.echo(json_schema_text(), nl=False)


__all__ = ["policy"]
