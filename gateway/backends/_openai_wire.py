"""Pure helpers of the OpenAI Images backends (OpenAI and Azure OpenAI): request fields, responses, errors.

No I/O and no ``openai`` import, so the sync and async paths, ``check()`` and an edit path share them.
An edit (``/images/edits``) differs only in the endpoint and the image parts: :func:`common_fields`
is the part of the body both endpoints take, :func:`generate_fields` adds what only generation takes.

Two families speak this API with different rules (OpenAI's API reference, read from openai-python):

* ``gpt-image`` (gpt-image-2 and its 2.x variants, the retired gpt-image-1*): always base64 output;
  ``response_format`` and ``style`` are rejected (400 ``unknown_parameter``), so they are never sent;
  quality ``low|medium|high|auto``; sizes any multiple of 16 on 2.x; usage in tokens.
* ``dall-e`` (dall-e-3, still deployed on Azure): ``response_format: b64_json`` must be asked for
  (its default is a URL), quality ``standard|hd``, ``style`` allowed, one image per call, no usage.

``model`` is always sent: the API's default model is dall-e-2, which is retired.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
from ._wire import parse_retry_after, redact, validate_image
from .base import BackendCall

FAMILIES = ("gpt-image", "dall-e")
# Request extras each family accepts (passed through as-is); anything else is refused before a call.
EXTRAS: Mapping[str, frozenset[str]] = {
    "gpt-image": frozenset({"background", "output_format", "output_compression", "moderation", "user"}),
    "dall-e": frozenset({"style", "user"}),
}
# Error codes (``error.code``) that mean provider moderation refused the prompt or the output.
MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
MODERATION_INNER = frozenset({"ResponsibleAIPolicyViolation"})  # Azure's inner_error.code


def family_of(call: BackendCall) -> str:
    """The card's ``options.family``, else guessed from the model id (dall-e-* vs the rest)."""
    fam = str(call.options.get("family") or ("dall-e" if call.model.startswith("dall-e") else "gpt-image"))
    if fam not in FAMILIES:
        raise InvalidBackendRequest(
            f"unknown OpenAI image family {fam!r} (known: {', '.join(FAMILIES)})", provider="openai"
        )
    return fam


def common_fields(call: BackendCall, model: str, provider: str) -> dict[str, Any]:
    """Body fields that generation and edits share: model, prompt, n, size, quality, extras."""
    r, fam = call.request, family_of(call)
    fields: dict[str, Any] = {"model": model, "prompt": r.prompt, "n": r.n}
    if r.width is not None and r.height is not None:
        fields["size"] = f"{r.width}x{r.height}"
    if r.quality is not None:
        fields["quality"] = r.quality
    unknown = sorted(set(r.extras) - EXTRAS[fam] - {"quality"})
    if unknown:
        raise InvalidBackendRequest(
            f"{call.model} does not take {', '.join(unknown)} (accepts {', '.join(sorted(EXTRAS[fam]))})",
            provider=provider,
        )
    fields.update({k: v for k, v in r.extras.items() if k in EXTRAS[fam]})
    if fam == "dall-e":
        fields["response_format"] = "b64_json"
    return fields


def generate_fields(call: BackendCall, model: str, provider: str) -> dict[str, Any]:
    """Keyword arguments for ``client.images.generate`` (the JSON body of /images/generations)."""
    if call.request.negative_prompt:
        raise InvalidBackendRequest(f"{call.model} takes no negative prompt", provider=provider)
    return common_fields(call, model, provider)


@dataclass(frozen=True, slots=True)
class ParsedImages:
    images: tuple[bytes, ...]
    tokens: Mapping[str, int | None]
    metadata: Mapping[str, Any]


def _get(obj: Any, name: str) -> Any:
    """Attribute or key access: the client's pydantic models and plain dicts both work."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def usage_tokens(usage: Any) -> dict[str, int | None]:
    """OpenAI ``usage`` -> our four counts (None where the response did not say)."""
    if usage is None:
        return dict.fromkeys(
            ("input_text_tokens", "input_image_tokens", "output_image_tokens", "output_text_tokens")
        )
    inp, out = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
    output_image = _get(out, "image_tokens")
    if out is None:  # older responses: every output token is an image token
        output_image = _get(usage, "output_tokens")
    return {
        "input_text_tokens": _get(inp, "text_tokens") if inp is not None else _get(usage, "input_tokens"),
        "input_image_tokens": _get(inp, "image_tokens"),
        "output_image_tokens": output_image,
        "output_text_tokens": _get(out, "text_tokens"),
    }


def parse_images(response: Any, *, provider: str, expected: int) -> ParsedImages:
    """Decode every ``data[].b64_json`` and check each is one whole image; raise BadResponse if not."""
    data = _get(response, "data") or []
    images: list[bytes] = []
    revised: list[str] = []
    for item in data:
        b64 = _get(item, "b64_json")
        if not isinstance(b64, str) or not b64:
            raise BadResponse("OpenAI answered without b64_json image data", provider=provider)
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise BadResponse(
                "OpenAI image data is not valid base64 (truncated?)", provider=provider
            ) from None
        validate_image(raw, provider=provider)
        images.append(raw)
        if isinstance(rp := _get(item, "revised_prompt"), str):
            revised.append(rp)
    if not images:
        raise BadResponse("OpenAI answered with no images", provider=provider)
    if len(images) > expected:
        images = images[:expected]
    meta: dict[str, Any] = {
        k: v
        for k in ("output_format", "quality", "size", "background")
        if (v := _get(response, k)) is not None
    }
    if revised:
        meta["revised_prompt_sha256"] = [_sha(r) for r in revised]  # the text itself may echo the prompt
    return ParsedImages(tuple(images), usage_tokens(_get(response, "usage")), meta)


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- errors

_ERR_BY_STATUS: Mapping[int, type[BackendError]] = {
    400: InvalidBackendRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: InvalidBackendRequest,
    409: BackendUnavailable,
    413: InvalidBackendRequest,
    422: InvalidBackendRequest,
    429: RateLimited,
}
_QUOTA = re.compile(r"insufficient_quota|billing", re.IGNORECASE)


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms`` first (milliseconds), then ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    return parse_retry_after(headers.get("retry-after"))


def status_error(
    status: int,
    body: Any,
    headers: Mapping[str, str] | None,
    *,
    provider: str,
    label: str,
    secrets: Iterable[str | None] = (),
) -> BackendError:
    """Map an HTTP error answer (``{"error": {message, type, param, code}}``) into our tree."""
    err = body.get("error", body) if isinstance(body, Mapping) else {}
    err = err if isinstance(err, Mapping) else {}
    code = str(err.get("code") or "")
    inner = err.get("inner_error") or err.get("innererror") or {}
    inner_code = str(inner.get("code") or "") if isinstance(inner, Mapping) else ""
    text = redact(str(err.get("message") or ""), secrets)
    msg = f"{label} HTTP {status}" + (f" {code}" if code else "") + (f": {text}" if text else "")
    if code in MODERATION_CODES or inner_code in MODERATION_INNER:
        return ContentFiltered(msg, provider=provider, status=status)
    if status == 429:
        if code == "insufficient_quota" or (_QUOTA.search(text) and "rate limit" not in text.lower()):
            # Out of credit is not a throttle: retrying cannot help.
            return AuthenticationError(msg, provider=provider, status=status)
        return RateLimited(
            msg, provider=provider, status=status, retry_after=retry_after_from_headers(headers)
        )
    target = _ERR_BY_STATUS.get(status) or (BackendUnavailable if status >= 500 else InvalidBackendRequest)
    return target(msg, provider=provider, status=status)


def transport_error(kind: str, detail: str, *, provider: str, label: str) -> BackendError:
    """A failure with no HTTP answer: ``timeout`` (the call may have been accepted: not retried),
    ``connection`` (nothing was accepted), ``decode`` (an answer we cannot parse)."""
    if kind == "timeout":
        return BackendTimeout(f"{label} gave no answer in time ({detail})", provider=provider)
    if kind == "decode":
        return BadResponse(f"{label} answered with malformed JSON ({detail})", provider=provider)
    return BackendUnavailable(f"{label} connection failed ({detail})", provider=provider)


__all__ = [
    "EXTRAS",
    "FAMILIES",
    "MODERATION_CODES",
    "ParsedImages",
    "common_fields",
    "family_of",
    "generate_fields",
    "parse_images",
    "retry_after_from_headers",
    "status_error",
    "transport_error",
    "usage_tokens",
]
