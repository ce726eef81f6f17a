"""``gateway edit IMAGE... PROMPT``: an edit under the same governance as ``generate``.

Every ``generate`` option is reused from :func:`gateway.cli.generate.request_options` (so options added
there appear here too); the prompt argument moves after the input images, like ``cp SRC... DST``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..types import EDIT_MODES
from .generate import _echo_saved, _emit, _settings, _spend_kwargs, idempotency_option, request_options

F = TypeVar("F", bound=Callable[..., Any])


def edit_arguments(fn: F) -> F:
    """``generate``'s options with ``IMAGE... PROMPT`` as the arguments."""
    fn = request_options(fn)
    params = [p for p in getattr(fn, "__click_params__", []) if p.name != "prompt"]
    fn.__click_params__ = params  # type: ignore[attr-defined]
    fn = click.argument("prompt")(fn)
    path = click.Path(exists=True, dir_okay=False)
    return click.argument("images", nargs=-1, required=True, type=path)(fn)


@click.command()
@edit_arguments
@click.option("--mask", type=click.Path(exists=True, dir_okay=False),
              help="Mask image of the first input's size: white (or alpha 0) = repaint.")  # fmt: skip
@click.option("--strength", type=click.FloatRange(0.0, 1.0), help="0 keeps the input, 1 redraws it.")
@click.option("--mode", type=click.Choice(EDIT_MODES), help="Default: inpaint with --mask, else img2img.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Directory for the images.")  # fmt: skip
@idempotency_option
def edit(**params: Any) -> None:
    """Edit IMAGE(s) as PROMPT says; inputs are checked (format, size, provenance, policy) first."""
    from ..client import Gateway

    kwargs = _spend_kwargs(params)
    images = [Path(p) for p in params["images"]]
    with Gateway(_settings(params)) as gw:
        result = gw.edit(
            images,
            params["prompt"],
            mask=Path(params["mask"]) if params.get("mask") else None,
            strength=params.get("strength"),
            mode=params.get("mode"),
            **kwargs,
        )
    paths = result.save(params["out_dir"])
    if params["as_json"]:
        found = [i for i in result.decision.inputs if i.get("role") == "image"]
        out = result.to_dict(paths)
        out["inputs"] = [
            {"path": str(p), "sha256": info.get("sha256"), "c2pa": info.get("c2pa"),
             "ai_generated": info.get("ai_generated"), "watermark": info.get("watermark")}
            for p, info in zip(images, found, strict=False)
        ]  # fmt: skip
        if params.get("mask"):
            data = Path(params["mask"]).read_bytes()
            out["mask"] = {"path": params["mask"], "sha256": hashlib.sha256(data).hexdigest()}
        # Remote backends do not echo the mode: it is the request's (a mask means inpaint).
        inferred = params.get("mode") or ("inpaint" if params.get("mask") else "img2img")
        out["edit_mode"] = result.metadata.get("edit_mode") or inferred
        _emit(out)
        return
    _echo_saved(result, paths)
