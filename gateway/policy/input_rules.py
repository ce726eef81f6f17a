"""Rule kind ``input_image``: what an edit's input images must be before anything is spent.

The inputs were already checked for decode-safety and read for provenance by :mod:`gateway.inputs`
(the findings arrive on :attr:`Evaluation.inputs`); this rule decides on them. ``require`` says which
provenance an input must carry:

``none``     anything that decodes safely;
``c2pa``     a C2PA manifest that validates (an untrusted signer is fine: the manifest is intact);
``trusted``  a manifest whose signer chains to a trust anchor the gateway is configured with
             (``provenance.c2pa.trust_anchors`` in gateway.yaml).

``allow_ai_generated: false`` refuses inputs that a manifest declares AI-made or that carry our (or a
known third-party) watermark. The size fields are the ``limits`` rule's, applied to the inputs.
Generations (no input images) are never affected. Registered in ``rules.KINDS``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..inputs import InputImage
from ..types import EditMode
from .rules import CheckRule, CompiledRule, Evaluation

_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class InputImageRule(CheckRule):
    """Deny edits whose input images lack the required provenance or break the input limits."""

    kind: Literal["input_image"]
    require: Literal["none", "c2pa", "trusted"] = Field(
        default="none", description="Provenance each input needs: none, a valid C2PA manifest, or trusted."
    )
    allow_ai_generated: bool = Field(default=True, description="false: refuse inputs marked AI-made.")
    deny_invalid_c2pa: bool = Field(
        default=True, description="Refuse inputs whose manifest fails validation (edited after signing)."
    )
    modes: tuple[EditMode, ...] | None = Field(default=None, description="Allowed edit modes (all if unset).")
    formats: tuple[Literal["png", "jpeg", "webp"], ...] | None = Field(default=None, description="Formats.")
    max_inputs: int | None = Field(default=None, ge=1, description="Input images per request.")
    max_width: int | None = Field(default=None, ge=1)
    max_height: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1, description="width x height of each input")
    max_bytes: int | None = Field(default=None, ge=1, description="Encoded size of each input.")

    def compile(self) -> CompiledRule:
        spec, message = self, self.message

        def check(ev: Evaluation, me: int) -> str | None:
            if not ev.request.images:
                return None
            bad = _mode_and_count(spec, ev)
            for inp in ev.inputs:
                bad.extend(_problems(spec, inp))
            if not bad:
                return None
            return message or "input image refused: " + "; ".join(bad)

        return self._compiled_check(check)


def _mode_and_count(spec: InputImageRule, ev: Evaluation) -> list[str]:
    bad = []
    r = ev.request
    if spec.modes is not None and r.mode not in spec.modes:
        bad.append(f"mode {r.mode!r} is not one of {list(spec.modes)}")
    if spec.max_inputs is not None and len(r.images) > spec.max_inputs:
        bad.append(f"{len(r.images)} input images exceed {spec.max_inputs}")
    # Inputs not inspected: fail closed on anything that needs their contents.
    if not ev.inputs and (spec.require != "none" or not spec.allow_ai_generated):
        bad.append("input provenance was not inspected")
    return bad


def _problems(spec: InputImageRule, inp: InputImage) -> list[str]:
    name = "mask" if inp.role == "mask" else f"input {inp.index}"
    bad = []
    if spec.formats is not None and inp.mime not in {_FORMATS[f] for f in spec.formats}:
        bad.append(f"{name} is {inp.mime}, allowed {list(spec.formats)}")
    if spec.max_width is not None and inp.width > spec.max_width:
        bad.append(f"{name} width {inp.width} exceeds {spec.max_width}")
    if spec.max_height is not None and inp.height > spec.max_height:
        bad.append(f"{name} height {inp.height} exceeds {spec.max_height}")
    if spec.max_pixels is not None and inp.width * inp.height > spec.max_pixels:
        bad.append(f"{name} {inp.width}x{inp.height} exceeds {spec.max_pixels} pixels")
    if spec.max_bytes is not None and inp.size_bytes > spec.max_bytes:
        bad.append(f"{name} is {inp.size_bytes} bytes, limit {spec.max_bytes}")
    if inp.role == "mask":
        return bad
    if inp.c2pa == "invalid" and spec.deny_invalid_c2pa:
        bad.append(f"{name} has a C2PA manifest that fails validation ({inp.c2pa_error or 'invalid'})")
    elif spec.require == "c2pa" and inp.c2pa not in ("valid", "trusted"):
        bad.append(f"{name} has no valid C2PA manifest (found: {inp.c2pa}); policy requires one")
    elif spec.require == "trusted" and inp.c2pa != "trusted":
        bad.append(f"{name} is not signed by a trusted C2PA signer (found: {inp.c2pa})")
    if not spec.allow_ai_generated and inp.ai_generated:
        bad.append(f"{name} is AI-generated (manifest or watermark) and policy refuses AI-made inputs")
    return bad


__all__ = ["InputImageRule"]
