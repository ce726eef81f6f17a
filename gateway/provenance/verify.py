"""Verify an image: our watermark, known third-party marks, C2PA, and what a policy requires.

``ok`` (exit 0 in ``gateway verify``) needs all of:

* some provenance: our watermark is found (its HMAC tag checks out) **or** a C2PA manifest validates;
* no C2PA manifest that fails validation (a manifest that no longer matches its bytes is evidence of
  tampering, whatever the watermark says);
* everything the verification policy requires (watermark, C2PA valid/trusted, AI disclosure, signer).

An image with no provenance at all fails. Every failed condition is listed in ``reasons``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._image import ImageDecodeError, decode, sniff_mime
from .c2pa_sign import TRAINED_ALGORITHMIC_MEDIA, C2paResult
from .credentials import AuditLookup, CredentialStore, summarise_audit
from .thirdparty import ThirdPartyMark, detect_all
from .watermark import (
    CANDIDATES_DEFAULT,
    CANDIDATES_THOROUGH,
    MAX_TAG_ERRORS_DEFAULT,
    MAX_TAG_ERRORS_THOROUGH,
    WatermarkKey,
    can_detect,
    detect,
    false_positive_bound,
)

if TYPE_CHECKING:
    from ..types import ProvenanceRequirements

MAX_INDEX = 16  # images per request (types.MAX_IMAGES): request binding tries every index


class VerifyPolicy(BaseModel):
    """A verification policy file (YAML, ``gateway verify --policy FILE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    require_watermark: bool = Field(default=False, description="Our watermark must be found (HMAC valid).")
    require_c2pa: Literal["none", "valid", "trusted"] = Field(
        default="none",
        description="'trusted' also needs --trust ROOT.pem (or provenance.c2pa.trust_anchors).",
    )
    require_ai_disclosure: bool = Field(
        default=False, description="A manifest must declare digitalSourceType trainedAlgorithmicMedia."
    )
    allowed_signers: tuple[str, ...] | None = Field(
        default=None, description="C2PA signer common names accepted for the active manifest."
    )

    @classmethod
    def load(cls, path: str | Path) -> VerifyPolicy:
        from .._yaml import load_model

        return load_model(cls, path)

    @classmethod
    def from_requirements(cls, req: ProvenanceRequirements) -> VerifyPolicy:
        """The gateway policy's per-request switches, as a verification policy."""
        return cls(
            require_watermark=req.watermark_required, require_c2pa="valid" if req.c2pa_required else "none"
        )


@dataclass(frozen=True)
class WatermarkResult:
    """Our watermark as read from the image (``found`` implies the HMAC tag verified)."""

    applicable: bool
    found: bool
    key_id: str | None = None
    nonce: str | None = None
    bit_accuracy: float | None = None  # agreeing tag bits of the best candidate / 80
    tag_errors: int | None = None
    max_tag_errors: int = MAX_TAG_ERRORS_DEFAULT
    hmac_valid: bool | None = None  # None: no key to check with, or image too small
    request_bound: bool | None = None  # None: no request id given
    request_index: int | None = None
    hypothesis: str | None = None
    false_positive_bound: float = 0.0
    keys_tried: int = 0
    reason: str | None = None
    version: int | None = None  # 2 or 1: which of our marks was found (v2 is tried first)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if out["bit_accuracy"] is not None:
            out["bit_accuracy"] = round(out["bit_accuracy"], 4)
        return out


@dataclass(frozen=True)
class VerifyReport:
    """Everything ``gateway verify`` prints for one image; ``ok`` decides the exit code."""

    ok: bool
    reasons: tuple[str, ...]
    watermark: WatermarkResult
    c2pa: C2paResult
    third_party: tuple[ThirdPartyMark, ...] = ()
    mime: str | None = None
    width: int | None = None
    height: int | None = None
    sha256: str = ""
    source: str | None = None
    soft_binding_match: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    credential: dict[str, Any] | None = None  # the stored record the mark points to (durable credentials)
    audit: dict[str, Any] | None = None  # the request's audit record (seq, ts, model, ...)
    own_manifest_missing: bool | None = None  # True: mark found, this file carries no manifest of ours

    @property
    def c2pa_state(self) -> str:
        return self.c2pa.state

    @property
    def signer(self) -> dict[str, Any] | None:
        return dict(self.c2pa.active.signer) if self.c2pa.active else None

    @property
    def actions(self) -> tuple[str, ...]:
        return self.c2pa.active.actions if self.c2pa.active else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "reasons": list(self.reasons),
            "mime": self.mime,
            "width": self.width,
            "height": self.height,
            "sha256": self.sha256,
            "watermark": self.watermark.to_dict(),
            "third_party_marks": [m.to_dict() for m in self.third_party],
            "c2pa": self.c2pa.to_dict(),
            "soft_binding_match": self.soft_binding_match,
            "credential": self.credential,
            "audit": self.audit,
            "own_manifest_missing": self.own_manifest_missing,
        }

    def summary(self) -> str:
        """A few human-readable lines (what the CLI prints without --json)."""
        w, c = self.watermark, self.c2pa
        head = f"{self.source or '<bytes>'}: {'OK' if self.ok else 'FAILED'}"
        if w.found:
            acc = f"tag bits {w.bit_accuracy:.3f}"
            wm = f"v{w.version} found (key {w.key_id}, nonce {w.nonce}, {acc}, {w.hypothesis})"
        elif not w.applicable or w.hmac_valid is None:
            wm = f"not checked ({w.reason})"
        else:
            wm = f"not found (best tag bits {w.bit_accuracy:.3f})"
        lines = [head, f"  watermark: {wm}"]
        lines += _credential_lines(self)
        if w.request_bound is not None:
            lines.append(f"  request binding: {'matches' if w.request_bound else 'DOES NOT match'}")
        lines += [
            f"  third-party mark: {m.name} (bits {m.bit_accuracy:.3f})"
            for m in self.third_party
            if m.detected
        ]
        c2 = f"  c2pa: {c.state}"
        if c.active:
            who = c.active.signer.get("common_name") or c.active.signer.get("issuer") or "?"
            c2 += f", signer {who!r}, actions {', '.join(c.active.actions) or '-'}"
        if c.ingredients:
            c2 += f", {len(c.ingredients)} ingredient manifest(s) kept"
        lines.append(c2 + (f" [{', '.join(c.failures)}]" if c.failures else ""))
        for ing in c.ingredients:  # e.g. the provider's own manifest (OpenAI, Gemini, Nova Canvas)
            who = ing.signer.get("common_name") or ing.signer.get("issuer") or "?"
            gen = f", by {ing.claim_generator}" if ing.claim_generator else ""
            lines.append(f"  c2pa ingredient: signer {who!r}{gen}, actions {', '.join(ing.actions) or '-'}")
        ft = c.active.fine_tune if c.active else None
        if ft:
            lines.append(
                f"  fine-tune: base {ft.get('base_model')}, adapter {ft.get('adapter')} "
                f"(sha256 {str(ft.get('adapter_sha256') or '-')[:16]}...), "
                f"dataset digest {ft.get('dataset_digest')}"
            )
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)


def _credential_lines(r: VerifyReport) -> list[str]:
    out = []
    if r.own_manifest_missing:
        out.append("  own manifest: MISSING from this file (stripped or re-encoded); the mark points to it")
    if r.credential is not None:
        c = r.credential
        out.append(f"  credential: request {c.get('request_id')} image {c.get('index')}, "
                   f"{c.get('provider')}/{c.get('model')}, made {c.get('created')}")  # fmt: skip
    if r.audit is not None:
        a = r.audit
        out.append(f"  audit record: seq {a.get('seq')} at {a.get('ts')} ({a.get('event')})")
    return out


def read_watermark_v2(
    y: Any, width: int, height: int, keys: Sequence[WatermarkKey], *, request_id: str | None
) -> WatermarkResult | None:
    """v2 first: found -> its result; not found -> None (the caller then tries v1)."""
    from . import watermark_v2 as v2
    from .watermark_v2_detect import detect as detect_v2

    if not keys or min(width, height) < v2.MIN_DETECT_SIDE:
        return None
    d = detect_v2(y, keys)
    if not d.found:
        return None
    key = next(k for k in keys if k.key_id == d.key_id)
    bound = index = None
    if request_id is not None:
        index = next((i for i in range(MAX_INDEX) if v2.nonce(key, request_id, i) == d.nonce), None)
        bound = index is not None
    return WatermarkResult(
        applicable=True,
        found=True,
        key_id=f"{d.key_id:04x}",
        nonce=f"{d.nonce:016x}",
        bit_accuracy=d.bit_accuracy,
        tag_errors=d.tag_errors,
        max_tag_errors=d.max_tag_errors,
        hmac_valid=True,
        request_bound=bound,
        request_index=index,
        hypothesis=d.hypothesis,
        false_positive_bound=v2.false_positive_bound(v2.CANDIDATES, v2.MAX_TAG_ERRORS),
        keys_tried=len(keys),
        version=2,
    )


def read_watermark(
    y: Any, width: int, height: int, keys: Sequence[WatermarkKey], *, request_id: str | None, thorough: bool
) -> WatermarkResult:
    """Our mark: v2 (re-synchronising) first, then v1 for images marked before v2 existed.

    The reported false-positive bound is the sum of both searches' bounds (union bound: 9.9e-7).
    """
    from . import watermark_v2 as w2

    v2 = read_watermark_v2(y, width, height, keys, request_id=request_id)
    if v2 is not None:
        v1_bound = false_positive_bound(
            CANDIDATES_THOROUGH if thorough else CANDIDATES_DEFAULT,
            MAX_TAG_ERRORS_THOROUGH if thorough else MAX_TAG_ERRORS_DEFAULT,
        )
        return replace(v2, false_positive_bound=v2.false_positive_bound + v1_bound)
    res = _read_watermark_v1(y, width, height, keys, request_id=request_id, thorough=thorough)
    extra = w2.false_positive_bound(w2.CANDIDATES, w2.MAX_TAG_ERRORS) if keys else 0.0
    return replace(res, false_positive_bound=res.false_positive_bound + extra,
                   version=1 if res.found else None)  # fmt: skip


def _read_watermark_v1(
    y: Any, width: int, height: int, keys: Sequence[WatermarkKey], *, request_id: str | None, thorough: bool
) -> WatermarkResult:
    candidates = CANDIDATES_THOROUGH if thorough else CANDIDATES_DEFAULT
    limit = MAX_TAG_ERRORS_THOROUGH if thorough else MAX_TAG_ERRORS_DEFAULT
    fp = false_positive_bound(candidates, limit)
    if not can_detect(width, height):
        return WatermarkResult(
            False, False, max_tag_errors=limit, reason=f"image is {width}x{height}, too small"
        )
    if not keys:
        return WatermarkResult(True, False, max_tag_errors=limit, reason="no watermark key to verify with")
    d = detect(y, keys, thorough=thorough)
    bound = None
    index = None
    if d.found and request_id is not None:
        key = next(k for k in keys if k.key_id == d.key_id)
        index = next((i for i in range(MAX_INDEX) if key.nonce(request_id, i) == d.nonce), None)
        bound = index is not None
    return WatermarkResult(
        applicable=True,
        found=d.found,
        key_id=f"{d.key_id:04x}" if d.key_id is not None else None,
        nonce=f"{d.nonce:08x}" if d.nonce is not None else None,
        bit_accuracy=d.bit_accuracy,
        tag_errors=d.tag_errors,
        max_tag_errors=limit,
        hmac_valid=d.found,
        request_bound=bound,
        request_index=index,
        hypothesis=d.hypothesis,
        false_positive_bound=fp,
        keys_tried=len(keys),
    )


def read_c2pa(data: bytes, mime: str | None, trust_anchors_pem: bytes | None) -> C2paResult:
    try:
        from .c2pa_sign import read
    except ImportError:  # pragma: no cover - the provenance extra is missing
        return C2paResult(
            "absent", error="c2pa-python is not installed (pip install 'diffusion-gateway[provenance]')"
        )
    try:
        return read(data, mime, trust_anchors_pem)
    except ImportError:  # pragma: no cover
        return C2paResult(
            "absent", error="c2pa-python is not installed (pip install 'diffusion-gateway[provenance]')"
        )


def evaluate(wm: WatermarkResult, c2: C2paResult, policy: VerifyPolicy, soft_match: bool | None) -> list[str]:
    """Every reason the image fails; empty means ok."""
    reasons = []
    valid = c2.state in ("valid", "trusted")
    if c2.state == "invalid":
        why = ", ".join(c2.failures) or c2.error or "validation failed"
        reasons.append(f"C2PA manifest is invalid ({why}): the bytes were changed after signing")
    if not wm.found and not valid:
        reasons.append("no provenance: neither our watermark nor a valid C2PA manifest was found")
    if policy.require_watermark and not wm.found:
        reasons.append("policy requires our watermark, which was not found")
    if policy.require_c2pa == "valid" and not valid:
        reasons.append(f"policy requires a valid C2PA manifest (state: {c2.state})")
    if policy.require_c2pa == "trusted" and c2.state != "trusted":
        reasons.append(f"policy requires a trusted C2PA manifest (state: {c2.state}; pass --trust ROOT.pem)")
    if policy.require_ai_disclosure and valid:
        manifests = ([c2.active] if c2.active else []) + list(c2.ingredients)
        if not any(m.digital_source_type == TRAINED_ALGORITHMIC_MEDIA for m in manifests):
            reasons.append("policy requires an AI disclosure (digitalSourceType trainedAlgorithmicMedia)")
    elif policy.require_ai_disclosure:
        reasons.append("policy requires an AI disclosure, which needs a valid C2PA manifest")
    if policy.allowed_signers is not None and valid and c2.active is not None:
        who = c2.active.signer.get("common_name")
        if who not in policy.allowed_signers:
            reasons.append(f"C2PA signer {who!r} is not in the policy's allowed_signers")
    if wm.request_bound is False:
        reasons.append("the watermark's nonce does not match the given request id")
    if soft_match is False:
        reasons.append("the C2PA soft-binding names a different watermark than the image carries")
    return reasons


def verify_bytes(
    data: bytes,
    *,
    keys: Sequence[WatermarkKey],
    credentials: CredentialStore | None = None,
    audit_lookup: AuditLookup | None = None,
    trust_anchors_pem: bytes | None = None,
    policy: VerifyPolicy | None = None,
    request_id: str | None = None,
    thorough: bool = False,
    source: str | None = None,
) -> VerifyReport:
    """The whole check for one image, from bytes (no key creation, no network)."""
    policy = policy or VerifyPolicy()
    digest = hashlib.sha256(data).hexdigest()
    # C2PA first, from the raw bytes: a tampered file may no longer decode, and that is exactly when
    # the manifest's verdict matters.
    c2 = read_c2pa(data, sniff_mime(data), trust_anchors_pem)
    try:
        img = decode(data, lenient=True)
    except ImageDecodeError as exc:
        wm = WatermarkResult(False, False, reason=str(exc))
        reasons = [str(exc), *evaluate(wm, c2, policy, None)]
        return VerifyReport(
            False, tuple(reasons), wm, c2, mime=sniff_mime(data), sha256=digest, source=source
        )
    wm = read_watermark(img.luma, img.width, img.height, keys, request_id=request_id, thorough=thorough)
    soft = None
    ours = [m for m in ([c2.active] if c2.active else []) if m.soft_binding]
    if ours and wm.found and c2.state != "invalid":
        soft = ours[0].soft_binding is not None and ours[0].soft_binding.startswith(f"{wm.key_id}{wm.nonce}")
    reasons = evaluate(wm, c2, policy, soft)
    cred, audit, missing = _durable(wm, c2, credentials, audit_lookup)
    return VerifyReport(
        ok=not reasons,
        reasons=tuple(reasons),
        watermark=wm,
        c2pa=c2,
        third_party=detect_all(img.pixels, img.mode),
        mime=img.mime,
        width=img.width,
        height=img.height,
        sha256=digest,
        source=source,
        soft_binding_match=soft,
        credential=cred,
        audit=audit,
        own_manifest_missing=missing,
    )


def _durable(
    wm: WatermarkResult,
    c2: C2paResult,
    credentials: CredentialStore | None,
    audit_lookup: AuditLookup | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool | None]:
    """Follow a found mark to its stored credential and audit record (durable content credentials)."""
    if not wm.found or wm.key_id is None or wm.nonce is None:
        return None, None, None
    ours = c2.active is not None and c2.active.ours and c2.state != "invalid"
    cred = credentials.get(wm.key_id, wm.nonce) if credentials is not None else None
    audit = None
    if cred is not None and audit_lookup is not None:
        rec = audit_lookup(cred.request_id)
        audit = summarise_audit(rec) if rec is not None else None
    return (cred.to_dict() if cred is not None else None), audit, not ours
