"""``FakeGemini``: Gemini ``generateContent`` on loopback, Developer API and Vertex AI paths.

Paths: ``POST /{v1|v1beta}/models/{model}:generateContent`` (Developer API, ``x-goog-api-key``) and
``POST /{v1|v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent``
(Vertex, ``Authorization: Bearer``). The body must ask for the ``IMAGE`` modality; ``imageConfig``'s
``aspectRatio`` (and ``imageSize`` 1K/2K/4K) pick the output size from Google's table. The answer is
one candidate with one ``inlineData`` PNG carrying a C2PA manifest signed by a test chain, and
``usageMetadata`` with per-modality counts (1290 image tokens per 1K image, as Google documents).
An edit's input images arrive as ``inlineData`` parts next to the text: each must declare a real
image type its bytes confirm (at most 14; ``mimeType`` or ``mime_type``, as proto JSON allows and
the client sends; standard or URL-safe base64); they are counted as prompt ``IMAGE`` tokens, 258 per
768x768 tile (Google's token-counting rule).
Errors are ``{"error": {"code", "message", "status"}}``.

Every request is ``generate`` for ``inject(..., on=...)``. Faults: ``rate_limit`` (429
RESOURCE_EXHAUSTED with ``retry-after-ms``, ``retry-after`` and a RetryInfo detail), ``server_error``
(500 INTERNAL), ``moderation`` (``stage="output"``: finishReason ``IMAGE_SAFETY`` or ``reason=``;
``stage="input"``: ``promptFeedback.blockReason`` ``PROHIBITED_CONTENT`` or ``reason=``), ``slow``,
``reset``, ``malformed_json``, ``truncated_base64``, ``no_usage``.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..backends._gemini_wire import ASPECT_1K, IMAGE_SIZES
from ._http import IMAGE_API_FAULTS, FakeServer, Fault, RecordedRequest, Reply, Reset, retry_headers, truncate
from ._signed import signed_png

_DEV = re.compile(r"^/(?P<version>v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):generateContent$")
_VERTEX = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):generateContent$"
)
IMAGE_TOKENS = {"1K": 1290, "2K": 1290, "4K": 2000}
INPUT_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_INPUT_IMAGES = 14
TILE, TOKENS_PER_TILE = 768, 258


def google_error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Reply:
    err: dict[str, Any] = {"code": status, "message": message, "status": code}
    if details:
        err["details"] = details
    return Reply.json(status, {"error": err}, headers)


class FakeGemini(FakeServer):
    """A loopback Gemini API. ``requests[i].info``: ``api`` (developer|vertex), ``model``, ``project``..."""

    FAULTS: ClassVar[frozenset[str]] = IMAGE_API_FAULTS

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.token = token

    def classify(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        p = urlsplit(path).path
        if method == "POST" and (m := _DEV.match(p)):
            return "generate", {"api": "developer", "model": m["model"], "version": m["version"]}
        if method == "POST" and (m := _VERTEX.match(p)):
            return "generate", {
                "api": "vertex",
                "model": m["model"],
                "version": m["version"],
                "project": m["project"],
                "location": m["location"],
            }
        return "other", {}

    def handle(self, request: RecordedRequest, fault: Fault | None) -> Reply | Reset:
        if request.kind == "other":
            return google_error(404, "NOT_FOUND", "Method not found.")
        denied = self._auth(request)
        if denied is not None:
            return denied
        if fault is not None and fault.name == "rate_limit":
            after, headers = retry_headers(fault)
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{after:g}s"}]
            return google_error(
                429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", headers, details
            )
        if fault is not None and fault.name == "server_error":
            return google_error(500, "INTERNAL", "An internal error has occurred.")
        try:
            body = request.json()
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload: expected an object.")
        prompt = _prompt(body)
        if not prompt:
            return google_error(400, "INVALID_ARGUMENT", "contents must contain a text part")
        try:
            image_in = input_image_tokens(body)
        except ValueError as exc:
            return google_error(400, "INVALID_ARGUMENT", str(exc))
        cfg = body.get("generationConfig") or {}
        if "IMAGE" not in [str(m).upper() for m in cfg.get("responseModalities") or []]:
            return google_error(400, "INVALID_ARGUMENT", "This model only supports responseModalities IMAGE")
        img_cfg = cfg.get("imageConfig") or {}
        ratio, image_size = str(img_cfg.get("aspectRatio", "1:1")), str(img_cfg.get("imageSize", "1K"))
        if ratio not in ASPECT_1K or image_size not in IMAGE_SIZES:
            return google_error(400, "INVALID_ARGUMENT", f"Unsupported aspect ratio or image size: {ratio}")
        if fault is not None and fault.name == "moderation":
            return self._blocked(fault, prompt)
        k = IMAGE_SIZES[image_size]
        w, h = ASPECT_1K[ratio][0] * k, ASPECT_1K[ratio][1] * k
        seed = int(cfg.get("seed", 0)) % 8
        b64 = base64.b64encode(signed_png(w, h, seed, "google")).decode()
        if fault is not None and fault.name == "truncated_base64":
            b64 = b64[: len(b64) // 2 + 1]
        payload: dict[str, Any] = {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": b64}}],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "modelVersion": request.info["model"],
            "responseId": f"fake-{len(self.requests)}",
        }
        if fault is None or fault.name != "no_usage":
            payload["usageMetadata"] = usage_for(prompt, IMAGE_TOKENS[image_size], image_in)
        reply = Reply.json(200, payload)
        if fault is not None and fault.name == "malformed_json":
            return Reply(200, truncate(reply.body, 0.3), reply.headers)
        return reply

    def _auth(self, request: RecordedRequest) -> Reply | None:
        h = request.headers
        if request.info["api"] == "developer":
            key = h.get("x-goog-api-key")
            if not key or (self.api_key is not None and key != self.api_key):
                return google_error(
                    400, "INVALID_ARGUMENT", f"API key not valid: {key}. Please pass a valid API key."
                )
            return None
        auth = h.get("authorization", "")
        if not auth.startswith("Bearer ") or (self.token is not None and auth[7:] != self.token):
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        return None

    def _blocked(self, fault: Fault, prompt: str) -> Reply:
        if fault.params.get("stage") == "input":
            reason = str(fault.params.get("reason", "PROHIBITED_CONTENT"))
            return Reply.json(
                200, {"promptFeedback": {"blockReason": reason}, "usageMetadata": usage_for(prompt, 0)}
            )
        reason = str(fault.params.get("reason", "IMAGE_SAFETY"))
        return Reply.json(
            200,
            {
                "candidates": [
                    {"content": {"role": "model", "parts": []}, "finishReason": reason, "index": 0}
                ],
                "usageMetadata": usage_for(prompt, 0),
            },
        )


def _prompt(body: Mapping[str, Any]) -> str:
    for content in body.get("contents") or []:
        for part in (content or {}).get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                return str(part["text"])
    return ""


def input_image_tokens(body: Mapping[str, Any]) -> int:
    """Check every ``inlineData`` part of the request; return their prompt tokens (ValueError if bad)."""
    from PIL import Image

    tokens, count = 0, 0
    for content in body.get("contents") or []:
        for part in (content or {}).get("parts") or []:
            blob = part.get("inlineData") if isinstance(part, dict) else None
            if blob is None:
                continue
            count += 1
            # Proto JSON: camelCase or the proto field name (google-genai sends ``mime_type``).
            mime = str(blob.get("mimeType") or blob.get("mime_type") or "")
            if mime not in INPUT_TYPES:
                raise ValueError(f"Unsupported MIME type: {mime or 'none'}")
            try:
                raw = str(blob.get("data") or "")  # standard or URL-safe base64 (the client sends the latter)
                data = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    fmt, (w, h) = Image.MIME.get(img.format or ""), img.size
            except (binascii.Error, ValueError, OSError):
                raise ValueError(f"Unable to process input image {count - 1}") from None
            if fmt != mime:
                raise ValueError(f"Input image {count - 1} is {fmt}, declared {mime}")
            tiles = 1 if max(w, h) <= 384 else math.ceil(w / TILE) * math.ceil(h / TILE)
            tokens += tiles * TOKENS_PER_TILE
    if count > MAX_INPUT_IMAGES:
        raise ValueError(f"At most {MAX_INPUT_IMAGES} input images are supported, {count} given")
    return tokens


def usage_for(prompt: str, image_tokens: int, image_in: int = 0) -> dict[str, Any]:
    text = max(1, len(prompt) // 4)
    meta: dict[str, Any] = {
        "promptTokenCount": text + image_in,
        "candidatesTokenCount": image_tokens,
        "totalTokenCount": text + image_in + image_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text}],
    }
    if image_in:
        meta["promptTokensDetails"].append({"modality": "IMAGE", "tokenCount": image_in})
    if image_tokens:
        meta["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": image_tokens}]
    return meta


__all__ = ["FakeGemini", "google_error", "input_image_tokens", "usage_for"]
