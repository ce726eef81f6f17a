"""C2PA with c2pa-python 0.38: build our manifest, sign it offline, and read any manifest back.

What our manifest says (docs/provenance.md has a decoded example):

* ``c2pa.actions.v2``: ``c2pa.created`` with digitalSourceType ``trainedAlgorithmicMedia`` and the
  provider/model as ``softwareAgent``; when the backend's output already carried C2PA, ``c2pa.opened``
  of that output (a ``parentOf`` ingredient, so the provider's manifest stays in the store: provenance is
  never stripped) instead; plus ``c2pa.watermarked.bound`` when our watermark was embedded.
* ``c2pa.soft-binding``: the watermark payload (key id, nonce, tag) under our algorithm name, so a copy
  whose manifest was stripped can be matched back through the mark. c2pa-rs requires this assertion
  whenever a ``c2pa.watermarked`` action is present.
* ``io.github.diffusion-gateway.generation``: request id, provider, model, seed, gateway version, and a
  keyed commitment to the prompt hash (provable by the deployment, not guessable by readers).

Thumbnails are off: c2pa-rs would otherwise re-encode a JPEG preview into every PNG (x4 the size and
100 ms at 256x256; measured). No timestamp authority unless configured: signing never needs the
network, and without a timestamp validity is checked at read time (FACTS.md).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from .keys import SigningMaterial

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE_TRAINED_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
SOFT_BINDING_ALG = "io.github.diffusion-gateway.watermark.v1"
SOFT_BINDING_ALG_V2 = "io.github.diffusion-gateway.watermark.v2"  # watermark_v2.ALGORITHM
_OUR_ALGS = (SOFT_BINDING_ALG, SOFT_BINDING_ALG_V2)
GENERATION_LABEL = "io.github.diffusion-gateway.generation"
# Which fine-tune drew the image: base model, adapter name + SHA-256, dataset manifest digest
# (docs/finetune.md). A custom assertion: c2pa.training-mining says whether an asset may be trained
# on, not what a generator was trained on.
FINE_TUNE_LABEL = "io.github.diffusion-gateway.fine-tune"
GENERATOR_NAME = "diffusion-gateway"
C2paState = Literal["trusted", "valid", "invalid", "absent"]


@lru_cache(maxsize=1)
def _sign_context() -> Any:
    import c2pa

    return c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})


def _read_context(trust_anchors_pem: bytes | None) -> Any:
    import c2pa

    if not trust_anchors_pem:
        return None
    return c2pa.Context.from_dict(
        {"verify": {"verify_trust": True}, "trust": {"trust_anchors": trust_anchors_pem.decode("ascii")}}
    )


def build_manifest(
    *,
    title: str,
    gateway_version: str,
    generation: Mapping[str, Any],
    software_agent: str,
    soft_binding: bytes | None,
    parent_label: str | None,
    fine_tune: Mapping[str, Any] | None = None,
    input_labels: Sequence[str] = (),
    edit_mode: str | None = None,
    soft_binding_alg: str = SOFT_BINDING_ALG,
) -> dict[str, Any]:
    """The manifest definition handed to ``c2pa.Builder`` (pure: tested without signing).

    An edit (``input_labels``: one ingredient label per input image) opens its first input and
    records a ``c2pa.edited`` action over all of them, declared composite with AI media.
    """
    import base64

    if input_labels:
        actions: list[dict[str, Any]] = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": [parent_label or input_labels[0]]}},
            {
                "action": "c2pa.edited",
                "digitalSourceType": COMPOSITE_TRAINED_MEDIA,
                "softwareAgent": {"name": software_agent},
                "parameters": {
                    "ingredientIds": list(input_labels),
                    "description": f"{edit_mode or 'edit'} by {software_agent}",
                },
            },
        ]
    elif parent_label is None:
        actions = [
            {
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": {"name": software_agent},
            }
        ]
    else:
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": [parent_label]}}]
    assertions: list[dict[str, Any]] = [{"label": "c2pa.actions.v2", "data": {"actions": actions}}]
    if soft_binding is not None:
        actions.append({"action": "c2pa.watermarked.bound", "softwareAgent": {"name": GENERATOR_NAME}})
        value = base64.b64encode(soft_binding).decode("ascii")
        assertions.append(
            {
                "label": "c2pa.soft-binding",
                "data": {"alg": soft_binding_alg, "blocks": [{"scope": {}, "value": value}]},
            }
        )
    assertions.append({"label": GENERATION_LABEL, "data": dict(generation)})
    if fine_tune:
        assertions.append({"label": FINE_TUNE_LABEL, "data": dict(fine_tune)})
    return {
        "claim_generator_info": [{"name": GENERATOR_NAME, "version": gateway_version}],
        "title": title,
        "assertions": assertions,
    }


def _signer(material: SigningMaterial) -> Any:
    import c2pa

    alg = getattr(c2pa.C2paSigningAlg, material.alg.upper())
    if material.callback is not None:
        return c2pa.Signer.from_callback(
            material.callback, alg, material.cert_chain_pem.decode("ascii"), material.tsa_url
        )
    info = c2pa.C2paSignerInfo(alg, material.cert_chain_pem, material.private_key_pem, material.tsa_url)
    return c2pa.Signer.from_info(info)


def sign(
    data: bytes,
    mime: str,
    manifest: Mapping[str, Any],
    material: SigningMaterial,
    *,
    parent: tuple[bytes, str, str] | None = None,
    inputs: Sequence[tuple[bytes, str, str, str]] = (),
) -> bytes:
    """Embed a signed manifest into ``data``. ``parent`` = (bytes, mime, label) of a C2PA-carrying input.

    ``inputs`` = (bytes, mime, label, title) of an edit's input images. Each becomes an ingredient that
    keeps its own manifest, if it has one. C2PA allows one ``parentOf`` ingredient per manifest
    (c2pa-rs reports ``manifest.multipleParents`` otherwise): the first input is the parent, unless a
    provider's output manifest already is; further inputs are ``componentOf``.
    """
    return sign_with_store(data, mime, manifest, material, parent=parent, inputs=inputs)[0]


def sign_with_store(
    data: bytes,
    mime: str,
    manifest: Mapping[str, Any],
    material: SigningMaterial,
    *,
    parent: tuple[bytes, str, str] | None = None,
    inputs: Sequence[tuple[bytes, str, str, str]] = (),
) -> tuple[bytes, bytes]:
    """:func:`sign`, also returning the manifest store (JUMBF) c2pa embedded, for the credential index."""
    import c2pa

    with _signer(material) as signer, c2pa.Builder(dict(manifest), _sign_context()) as builder:
        if parent is not None:
            p_data, p_mime, label = parent
            ingredient = {"title": f"provider output ({p_mime})", "relationship": "parentOf", "label": label}
            builder.add_ingredient(ingredient, p_mime, io.BytesIO(p_data))
        for i, (i_data, i_mime, label, title) in enumerate(inputs):
            relationship = "parentOf" if i == 0 and parent is None else "componentOf"
            ingredient = {"title": title, "relationship": relationship, "label": label}
            builder.add_ingredient(ingredient, i_mime, io.BytesIO(i_data))
        out = io.BytesIO()
        store = builder.sign(signer, mime, io.BytesIO(data), out)
        return out.getvalue(), bytes(store or b"")


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ManifestSummary:
    """The parts of one manifest a reviewer needs: who signed, what it claims, how it validated."""

    label: str
    claim_generator: str | None
    signer: Mapping[str, Any]
    actions: tuple[str, ...]
    digital_source_type: str | None
    soft_binding: str | None  # hex of our watermark payload, when the manifest carries ours
    generation: Mapping[str, Any] | None
    fine_tune: Mapping[str, Any] | None = None

    @property
    def ours(self) -> bool:
        return (self.claim_generator or "").startswith(GENERATOR_NAME)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "claim_generator": self.claim_generator,
            "signer": dict(self.signer),
            "actions": list(self.actions),
            "digital_source_type": self.digital_source_type,
            "soft_binding": self.soft_binding,
            "generation": dict(self.generation) if self.generation is not None else None,
            "fine_tune": dict(self.fine_tune) if self.fine_tune is not None else None,
        }


@dataclass(frozen=True)
class C2paResult:
    state: C2paState
    active: ManifestSummary | None = None
    ingredients: tuple[ManifestSummary, ...] = ()
    failures: tuple[str, ...] = ()  # validation codes that make the state invalid
    notes: tuple[str, ...] = ()  # informational codes (e.g. signingCredential.untrusted)
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "active_manifest": self.active.to_dict() if self.active else None,
            "ingredients": [m.to_dict() for m in self.ingredients],
            "failures": list(self.failures),
            "notes": list(self.notes),
            "error": self.error,
        }


def _summarise(label: str, m: Mapping[str, Any]) -> ManifestSummary:
    import base64

    gen = m.get("claim_generator_info") or []
    claim_generator = None
    if gen and isinstance(gen[0], Mapping):
        claim_generator = " ".join(str(gen[0].get(k)) for k in ("name", "version") if gen[0].get(k))
    claim_generator = claim_generator or m.get("claim_generator")
    sig = m.get("signature_info") or {}
    signer = {
        k: sig.get(k) for k in ("common_name", "issuer", "alg", "cert_serial_number", "time") if sig.get(k)
    }
    actions: list[str] = []
    dst = soft = None
    generation = fine_tune = None
    for a in m.get("assertions") or []:
        lbl, data = a.get("label", ""), a.get("data") or {}
        if lbl.startswith("c2pa.actions"):
            for act in data.get("actions") or []:
                actions.append(str(act.get("action")))
                dst = dst or act.get("digitalSourceType")
        elif lbl == "c2pa.soft-binding" and data.get("alg") in _OUR_ALGS:
            blocks = data.get("blocks") or [{}]
            try:
                soft = base64.b64decode(blocks[0].get("value", "")).hex()
            except (ValueError, TypeError):
                soft = None
        elif lbl == GENERATION_LABEL:
            generation = dict(data)
        elif lbl == FINE_TUNE_LABEL:
            fine_tune = dict(data)
    return ManifestSummary(label, claim_generator, signer, tuple(actions), dst, soft, generation, fine_tune)


def read(data: bytes, mime: str | None, trust_anchors_pem: bytes | None = None) -> C2paResult:
    """Read and validate the manifest store, if any. Any manifest that fails to parse counts as invalid."""
    import c2pa

    try:
        ctx = _read_context(trust_anchors_pem)
        args = (mime, io.BytesIO(data), None, ctx) if ctx is not None else (mime, io.BytesIO(data))
        reader = c2pa.Reader.try_create(*args)
    except c2pa.C2paError as exc:
        return C2paResult("invalid", error=f"manifest unreadable: {type(exc).__name__.lstrip('_')}")
    if reader is None:
        return C2paResult("absent")
    with reader:
        raw = reader.get_validation_state() or ""
        store = json.loads(reader.json())
    manifests = store.get("manifests") or {}
    active_label = store.get("active_manifest")
    active = _summarise(active_label, manifests[active_label]) if active_label in manifests else None
    ingredients = []
    for ing in (manifests.get(active_label) or {}).get("ingredients") or []:
        label = ing.get("active_manifest")
        if label in manifests:
            ingredients.append(_summarise(label, manifests[label]))
    codes = [str(s.get("code")) for s in store.get("validation_status") or []]
    state: C2paState = {"Trusted": "trusted", "Valid": "valid"}.get(raw, "invalid")  # type: ignore[assignment]
    informational = ("signingCredential.untrusted",)
    failures = tuple(c for c in codes if c not in informational) if state == "invalid" else ()
    notes = tuple(c for c in codes if c in informational or state != "invalid")
    return C2paResult(state, active, tuple(ingredients), failures, notes)
