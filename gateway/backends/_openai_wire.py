"""Pure helpers of the OpenAI Images backends (OpenAI and Azure OpenAI): request fields, responses, errors.

No I/O and no ``openai`` import, so the sync and async paths and ``check()`` share them. An edit
(``/images/edits``, multipart) differs in the endpoint and the image parts: :func:`common_fields` is
the part of the body both endpoints take, :func:`generate_fields` adds what only generation takes and
:func:`edit_fields` what only an edit takes (see its docstring for the modes and the mask).

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
from ._wire import error_object, no_tokens, redact, retry_after_from_headers, sniff_mime, validate_image
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


def common_fields(
    call: BackendCall, model: str, provider: str, extras: Mapping[str, frozenset[str]] = EXTRAS
) -> dict[str, Any]:
    """Body fields that generation and edits share: model, prompt, n, size, quality, extras."""
    r, fam = call.request, family_of(call)
    fields: dict[str, Any] = {"model": model, "prompt": r.prompt, "n": r.n}
    if r.width is not None and r.height is not None:
        fields["size"] = f"{r.width}x{r.height}"
    if r.quality is not None:
        fields["quality"] = r.quality
    allowed = extras[fam]
    unknown = sorted(set(r.extras) - allowed - {"quality"})
    if unknown:
        raise InvalidBackendRequest(
            f"{call.model} does not take {', '.join(unknown)} (accepts {', '.join(sorted(allowed))})",
            provider=provider,
        )
    fields.update({k: v for k, v in r.extras.items() if k in allowed})
    if fam == "dall-e":
        fields["response_format"] = "b64_json"
    return fields


def generate_fields(call: BackendCall, model: str, provider: str) -> dict[str, Any]:
    """Keyword arguments for ``client.images.generate`` (the JSON body of /images/generations)."""
    if call.request.negative_prompt:
        raise InvalidBackendRequest(f"{call.model} takes no negative prompt", provider=provider)
    return common_fields(call, model, provider)


# --------------------------------------------------------------------------- edits

# What /images/edits does with input images, by our mode (the endpoint serves GPT-image models only;
# DALL·E 2, the one DALL·E model it took, and /images/variations are retired).
EDIT_MODES = ("img2img", "inpaint", "variation")
# Edits take neither ``moderation`` nor ``style``; ``input_fidelity`` (low|high) is edit-only.
EDIT_EXTRAS: Mapping[str, frozenset[str]] = {
    "gpt-image": frozenset({"background", "output_format", "output_compression", "input_fidelity", "user"}),
    "dall-e": frozenset(),
}
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _image_size(data: bytes) -> tuple[int, int] | None:
    from ..editing import input_header

    head = input_header(data)
    return None if head is None else (head[1], head[2])


def edit_fields(call: BackendCall, model: str, provider: str, *, files: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``client.images.edit`` (the multipart body of /images/edits).

    Modes: ``inpaint`` (a mask: the first image is repainted where the mask says), ``img2img`` (no
    mask: the prompt says what to change) and ``variation`` (no mask, one or more reference images;
    OpenAI's own advice since /images/variations was retired). No strength and no negative prompt.

    Images go as ``(name, bytes, mime)`` with their real type (bare bytes would be sent as
    application/octet-stream, which the API refuses); one image is the ``image`` part, several are
    repeated ``image[]`` parts (the client's array encoding). The mask is converted from the
    gateway's convention (white or alpha 0 = repaint) to OpenAI's: an RGBA PNG of the first image's
    size, transparent (alpha 0) where to edit. ``files=False`` validates without encoding (``check``).
    """
    r = call.request
    if family_of(call) != "gpt-image":
        raise InvalidBackendRequest(f"{call.model} does not edit (/images/edits takes GPT-image models)",
                                    provider=provider)  # fmt: skip
    if r.mode not in EDIT_MODES:
        raise InvalidBackendRequest(f"{call.model} edits by {', '.join(EDIT_MODES)}, not {r.mode!r}",
                                    provider=provider)  # fmt: skip
    if r.negative_prompt or r.strength is not None:
        what = "negative prompt" if r.negative_prompt else "strength"
        raise InvalidBackendRequest(f"{call.model} edits take no {what}", provider=provider)
    if (r.mask is not None) != (r.mode == "inpaint"):
        raise InvalidBackendRequest(f"{call.model}: a mask goes with inpaint, and inpaint needs one "
                                    "(OpenAI takes no mask prompt)", provider=provider)  # fmt: skip
    mimes = [sniff_mime(d) for d in r.images]
    if not r.images or None in mimes:
        raise InvalidBackendRequest("edit inputs must be PNG, JPEG or WebP images", provider=provider)
    if r.mask is not None and _image_size(r.mask) != _image_size(r.images[0]):
        raise InvalidBackendRequest(f"the mask must have input image 0's size {_image_size(r.images[0])}",
                                    provider=provider)  # fmt: skip
    fields = common_fields(call, model, provider, EDIT_EXTRAS)
    if not files:
        return fields
    parts = [
        (f"image-{i}.{_EXT[str(m)]}", d, str(m)) for i, (d, m) in enumerate(zip(r.images, mimes, strict=True))
    ]
    fields["image"] = parts[0] if len(parts) == 1 else parts
    if r.mask is not None:
        from ..inputs import alpha_mask_png

        fields["mask"] = ("mask.png", alpha_mask_png(r.mask), "image/png")
    return fields


def request_fields(call: BackendCall, model: str, provider: str, *, files: bool = True) -> dict[str, Any]:
    """The fields of ``call``'s request: an edit when it carries input images, else a generation."""
    if call.request.images:
        return edit_fields(call, model, provider, files=files)
    return generate_fields(call, model, provider)


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
        return no_tokens()
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
    err = error_object(body)
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
    "EDIT_EXTRAS",
    "EDIT_MODES",
    "EXTRAS",
    "FAMILIES",
    "MODERATION_CODES",
    "ParsedImages",
    "common_fields",
    "edit_fields",
    "family_of",
    "generate_fields",
    "parse_images",
    "request_fields",
    "retry_after_from_headers",
    "status_error",
    "transport_error",
    "usage_tokens",
]
