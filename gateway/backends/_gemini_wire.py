"""Pure helpers of the Gemini image backends (Developer API and Vertex AI): request, response, errors.

No I/O and no ``google.genai`` import. :func:`request_parts` builds the user turn (the prompt, then
an edit's input images as ``inline_data`` parts with their real MIME types) and
:func:`generate_config` the ``GenerateContentConfig`` as a plain dict (the client accepts dicts and
validates them itself).

Edits: Gemini image models edit by instruction. They take reference images and a prompt, but no mask
and no strength, so the modes are ``img2img`` (change the image as the prompt says) and ``variation``
(one or more reference images); inpainting and outpainting are refused here and, through the cards'
``capabilities.edit``, dropped by routing with a reason rather than approximated by describing a
region in words.

Gemini image models take an aspect ratio and an image size (``1K|2K|4K``), not pixels: a request's
``width x height`` must be one of the documented sizes (1K row of :data:`ASPECT_1K`, doubled for 2K,
x4 for 4K where the card allows it). One ``generateContent`` returns one image, so ``n`` images are
``n`` calls (the backend makes them; usage is summed).

Safety: a blocked prompt comes back as ``promptFeedback.blockReason`` with no candidates, a blocked
output as ``finishReason`` ``IMAGE_SAFETY``/``PROHIBITED_CONTENT``/...: both are ``ContentFiltered``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    AuthenticationError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadResponse,
    ContentFiltered,
    InvalidBackendRequest,
    RateLimited,
)
from ._wire import (
    TOKEN_KEYS,
    error_object,
    no_tokens,
    redact,
    retry_after_from_headers,
    sniff_mime,
    validate_image,
)
from .base import BackendCall

# Gemini 2.5 Flash Image sizes per aspect ratio at 1K (Google's image-generation guide).
ASPECT_1K: Mapping[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
IMAGE_SIZES: Mapping[str, int] = {"1K": 1, "2K": 2, "4K": 4}
FILTERED_FINISH = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
_STATUS: Mapping[str, type[BackendError]] = {
    "INVALID_ARGUMENT": InvalidBackendRequest,
    "FAILED_PRECONDITION": InvalidBackendRequest,
    "NOT_FOUND": InvalidBackendRequest,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": AuthenticationError,
    "RESOURCE_EXHAUSTED": RateLimited,
    "INTERNAL": BackendUnavailable,
    "UNAVAILABLE": BackendUnavailable,
    "DEADLINE_EXCEEDED": BackendTimeout,
}


def size_config(call: BackendCall, provider: str) -> dict[str, str]:
    """``imageConfig`` for the request's size: its aspect ratio and, where allowed, its image size."""
    r = call.request
    w, h = r.width or 1024, r.height or 1024
    allowed = tuple(call.options.get("image_sizes") or ("1K",))
    for ratio, (bw, bh) in ASPECT_1K.items():
        for name in allowed:
            k = IMAGE_SIZES.get(str(name))
            if k is not None and (w, h) == (bw * k, bh * k):
                out = {"aspect_ratio": ratio}
                if len(allowed) > 1 or name != "1K":
                    out["image_size"] = str(name)
                return out
    raise InvalidBackendRequest(
        f"{call.model} has no size {w}x{h} (aspect ratios {', '.join(ASPECT_1K)} at {', '.join(allowed)})",
        provider=provider,
    )


EDIT_MODES = ("img2img", "variation")


def request_parts(
    call: BackendCall, provider: str = "google-gemini", *, files: bool = True
) -> list[dict[str, Any]]:
    """The user turn's parts: the prompt, then each input image of an edit as ``inline_data`` (the
    client base64-encodes the bytes). ``files=False`` validates an edit without building its parts."""
    r = call.request
    parts: list[dict[str, Any]] = [{"text": r.prompt}]
    if not r.images:
        return parts
    if r.mode not in EDIT_MODES or r.mask is not None:
        raise InvalidBackendRequest(
            f"{call.model} edits by instruction ({', '.join(EDIT_MODES)}): it takes no mask, so "
            f"{r.mode} is not offered", provider=provider)  # fmt: skip
    if r.strength is not None:
        raise InvalidBackendRequest(f"{call.model} edits take no strength", provider=provider)
    for i, data in enumerate(r.images):
        mime = sniff_mime(data)
        if mime is None:
            raise InvalidBackendRequest(f"input image {i} is not PNG, JPEG or WebP", provider=provider)
        if files:
            parts.append({"inline_data": {"mime_type": mime, "data": data}})
    return parts


def generate_config(call: BackendCall, provider: str, timeout_ms: int | None = None) -> dict[str, Any]:
    r = call.request
    if r.negative_prompt:
        raise InvalidBackendRequest(f"{call.model} takes no negative prompt", provider=provider)
    unknown = sorted(set(r.extras) - {"person_generation"})
    if unknown:
        raise InvalidBackendRequest(f"{call.model} does not take {', '.join(unknown)}", provider=provider)
    image_config: dict[str, Any] = size_config(call, provider)
    if "person_generation" in r.extras:
        image_config["person_generation"] = str(r.extras["person_generation"])
    config: dict[str, Any] = {"response_modalities": ["IMAGE"], "image_config": image_config}
    if r.seed is not None and call.options.get("seed", True):
        config["seed"] = int(r.seed) % 2**31
    if timeout_ms is not None:
        config["http_options"] = {"timeout": timeout_ms}
    return config


@dataclass(frozen=True, slots=True)
class ParsedCandidate:
    image: bytes
    mime: str
    tokens: Mapping[str, int | None]
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _get(obj: Any, *names: str) -> Any:
    """First present attribute/key among ``names`` (SDK models use snake_case, raw JSON camelCase)."""
    if obj is None:
        return None
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def usage_tokens(meta: Any) -> dict[str, int | None]:
    """``usageMetadata`` -> our four counts: per-modality details when given, totals otherwise."""
    out = no_tokens()
    if meta is None:
        return out

    def by_modality(details: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in details or ():
            mod = _enum(_get(d, "modality")).upper()
            counts[mod] = counts.get(mod, 0) + int(_get(d, "token_count", "tokenCount") or 0)
        return counts

    prompt = by_modality(_get(meta, "prompt_tokens_details", "promptTokensDetails"))
    cands = by_modality(_get(meta, "candidates_tokens_details", "candidatesTokensDetails"))
    thoughts = _get(meta, "thoughts_token_count", "thoughtsTokenCount")
    prompt_total = _get(meta, "prompt_token_count", "promptTokenCount")
    cand_total = _get(meta, "candidates_token_count", "candidatesTokenCount")
    if prompt:
        out["input_text_tokens"] = prompt.get("TEXT", 0)
        out["input_image_tokens"] = prompt.get("IMAGE")
    elif prompt_total is not None:
        out["input_text_tokens"] = int(prompt_total)
    if cands:
        out["output_image_tokens"] = cands.get("IMAGE", 0)
        text_out = cands.get("TEXT", 0) + int(thoughts or 0)
        out["output_text_tokens"] = text_out or None
    elif cand_total is not None:
        out["output_image_tokens"] = int(cand_total)
        out["output_text_tokens"] = int(thoughts) if thoughts else None
    return out


def parse_response(response: Any, *, provider: str, label: str) -> ParsedCandidate:
    """The first inline image of the first candidate, or the error the response stands for."""
    feedback = _get(response, "prompt_feedback", "promptFeedback")
    block = _enum(_get(feedback, "block_reason", "blockReason"))
    if block and block != "BLOCK_REASON_UNSPECIFIED":
        raise ContentFiltered(f"{label} blocked the prompt (blockReason {block})", provider=provider)
    candidates = _get(response, "candidates") or []
    if not candidates:
        raise BadResponse(f"{label} answered with no candidates", provider=provider)
    cand = candidates[0]
    finish = _enum(_get(cand, "finish_reason", "finishReason"))
    if finish in FILTERED_FINISH:
        raise ContentFiltered(f"{label} blocked the output (finishReason {finish})", provider=provider)
    parts = _get(_get(cand, "content"), "parts") or []
    for part in parts:
        blob = _get(part, "inline_data", "inlineData")
        data = _get(blob, "data")
        if data is None:
            continue
        if isinstance(data, str):  # raw JSON (the SDK decodes base64 into bytes itself)
            import base64
            import binascii

            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise BadResponse(f"{label} image data is not valid base64", provider=provider) from None
        mime, _w, _h = validate_image(bytes(data), provider=provider)
        meta: dict[str, Any] = {"finish_reason": finish or None}
        version = _get(response, "model_version", "modelVersion")
        if version:
            meta["model_version"] = str(version)
        usage = usage_tokens(_get(response, "usage_metadata", "usageMetadata"))
        return ParsedCandidate(bytes(data), mime, usage, meta)
    why = f" (finishReason {finish})" if finish and finish != "STOP" else ""
    raise BadResponse(f"{label} answered without an image{why}", provider=provider)


def sum_tokens(parts: Sequence[Mapping[str, int | None]]) -> dict[str, int | None]:
    """Add per-call counts; a kind stays None only if no call reported it."""
    out: dict[str, int | None] = {}
    for k in TOKEN_KEYS:
        values = [p.get(k) for p in parts if p.get(k) is not None]
        out[k] = sum(v for v in values if v is not None) if values else None
    return out


# --------------------------------------------------------------------------- errors

_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def retry_delay(details: Any) -> float | None:
    """``google.rpc.RetryInfo.retryDelay`` ("30s") from an error's ``details`` list."""
    for d in details if isinstance(details, list) else ():
        if isinstance(d, Mapping) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DELAY.match(str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None


def api_error(
    code: int,
    status: str | None,
    message: str | None,
    body: Any,
    headers: Mapping[str, str] | None,
    *,
    provider: str,
    label: str,
    secrets: Iterable[str | None] = (),
) -> BackendError:
    """``{"error": {"code", "message", "status", "details"}}`` -> our tree."""
    err = error_object(body)
    text = redact(str(message or err.get("message") or ""), secrets)
    status = status or str(err.get("status") or "")
    msg = f"{label} HTTP {code}" + (f" {status}" if status else "") + (f": {text}" if text else "")
    if re.search(r"api key not valid|API_KEY_INVALID", f"{text} {err.get('details')}", re.IGNORECASE):
        return AuthenticationError(msg, provider=provider, status=code)  # Google answers 400 for it
    if re.search(r"safety|blocked|prohibited", text, re.IGNORECASE) and code == 400:
        return ContentFiltered(msg, provider=provider, status=code)
    target = _STATUS.get(status)
    if target is None:
        target = {
            429: RateLimited,
            401: AuthenticationError,
            403: AuthenticationError,
            504: BackendTimeout,
        }.get(code, BackendUnavailable if code >= 500 else InvalidBackendRequest)
    if target is RateLimited:
        after = retry_after_from_headers(headers)
        if after is None:
            after = retry_delay(err.get("details"))
        return RateLimited(msg, provider=provider, status=code, retry_after=after)
    return target(msg, provider=provider, status=code)


__all__ = [
    "ASPECT_1K",
    "EDIT_MODES",
    "FILTERED_FINISH",
    "ParsedCandidate",
    "api_error",
    "generate_config",
    "parse_response",
    "request_parts",
    "retry_delay",
    "size_config",
    "sum_tokens",
    "usage_tokens",
]
