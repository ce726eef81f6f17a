"""``FakeOpenAI``: the OpenAI Images API (and its Azure OpenAI paths) on loopback, for the real client.

Paths: ``POST {/v1}/images/{generations|edits}`` (OpenAI, ``Authorization: Bearer``) and
``POST /openai/deployments/{deployment}/images/{generations|edits}?api-version=...`` (Azure,
``api-key`` header or an Entra ID bearer token). Bodies are checked the way the API checks them:
``model`` must be sent (its absence would mean dall-e-2, which is retired: 400 here), GPT-image models
refuse ``response_format`` and ``style`` (400 ``unknown_parameter``), quality words per family,
``WxH`` sizes (multiples of 16 for gpt-image-2+), ``n`` (1 for DALL·E 3). Edits are multipart forms
(:mod:`._openai_edit`): ``image`` / ``image[]`` files with real image types, a ``mask`` PNG with
alpha of the first image's size; an edit answers at the requested size (else the first input's) and
counts input image tokens. Answers carry real PNGs with a C2PA manifest signed by a test chain
(:mod:`._signed`), ``usage`` token counts, and ``x-request-id``. Azure deployments map to models
through ``deployments`` (default: the deployment name is the model).

Requests are ``generate`` or ``edit`` for ``inject(..., on=...)`` (faults hit both by default).
Faults: ``rate_limit`` (429 with ``retry-after-ms`` and ``retry-after``; ``retry_after=`` seconds),
``server_error`` (500), ``moderation`` (400 ``moderation_blocked`` for GPT-image,
``content_policy_violation`` for DALL·E, Azure's ``content_filter`` on Azure paths), ``slow``
(timeout), ``reset``, ``malformed_json``, ``truncated_base64``, ``no_usage`` (a 200 without ``usage``).
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from ._http import IMAGE_API_FAULTS, FakeServer, Fault, RecordedRequest, Reply, Reset, retry_headers, truncate
from ._openai_edit import FormError, InputFile, input_tokens, read_edit_form
from ._signed import signed_png

_OPENAI = re.compile(r"^(?:/v1)?/images/(?P<op>generations|edits)$")
_AZURE = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/images/(?P<op>generations|edits)$")
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
# gpt-image-1's published output tokens at 1024x1024 (FACTS / OpenAI's image-generation guide).
TOKENS_1MP = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
QUALITIES = {
    "gpt-image": frozenset({"low", "medium", "high", "auto"}),
    "dall-e": frozenset({"standard", "hd"}),
}
DALLE_SIZES = frozenset({"1024x1024", "1792x1024", "1024x1792"})


def openai_error(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Reply:
    err = {"message": message, "type": type_, "param": param, "code": code, **extra}
    return Reply.json(status, {"error": err}, headers)


def family(model: str) -> str:
    return "dall-e" if model.startswith("dall-e") else "gpt-image"


class FakeOpenAI(FakeServer):
    """A loopback OpenAI Images API (+ Azure). ``requests[i].info``: ``api``, ``deployment``, ``model``."""

    FAULTS: ClassVar[frozenset[str]] = IMAGE_API_FAULTS

    def __init__(
        self,
        *,
        api_key: str | None = None,
        azure_key: str | None = None,
        deployments: Mapping[str, str] | None = None,
        models: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.azure_key = azure_key
        self.deployments = dict(deployments or {})
        self.models = models  # when given, other model ids answer 404 model_not_found

    def classify(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        parts = urlsplit(path)
        if method != "POST":
            return "other", {}
        if m := _AZURE.match(parts.path):
            query = parse_qs(parts.query)
            version = (query.get("api-version") or [""])[0] or None
            return "generate" if m["op"] == "generations" else "edit", {
                "api": "azure",
                "deployment": m["deployment"],
                "api_version": version,
            }
        if m := _OPENAI.match(parts.path):
            return "generate" if m["op"] == "generations" else "edit", {"api": "openai"}
        return "other", {}

    # ------------------------------------------------------------------ handling

    def handle(self, request: RecordedRequest, fault: Fault | None) -> Reply | Reset:
        if request.kind == "other":
            return openai_error(404, "Unknown request URL", "invalid_request_error", "unknown_url")
        azure = request.info.get("api") == "azure"
        denied = self._auth(request, azure)
        if denied is not None:
            return denied
        if fault is not None and fault.name == "rate_limit":
            _after, headers = retry_headers(fault)
            return openai_error(
                429,
                "Rate limit reached for requests. Please try again shortly.",
                "requests",
                "rate_limit_exceeded",
                headers=headers,
            )
        if fault is not None and fault.name == "server_error":
            return openai_error(
                500, "The server had an error while processing your request.", "server_error", None
            )
        parsed = self._edit_body(request) if request.kind == "edit" else self._json_body(request)
        if isinstance(parsed, Reply):
            return parsed
        body, inputs = parsed
        model = self._model(body, request.info)
        if isinstance(model, Reply):
            return model
        if request.kind == "edit" and family(model) != "gpt-image":
            return openai_error(400, f"Image edits are not supported for model '{model}' (GPT image models "
                                "only).", "invalid_request_error", "invalid_value", "model")  # fmt: skip
        bad = self._validate(body, model)
        if bad is not None:
            return bad
        if fault is not None and fault.name == "moderation":
            return self._moderation(model, azure)
        return self._ok(body, model, fault, inputs)

    @staticmethod
    def _json_body(request: RecordedRequest) -> tuple[dict[str, Any], list[InputFile]] | Reply:
        try:
            body = request.json()
        except ValueError:
            return openai_error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error", None
            )
        if not isinstance(body, dict):
            return openai_error(400, "The body must be a JSON object.", "invalid_request_error", None)
        return body, []

    @staticmethod
    def _edit_body(request: RecordedRequest) -> tuple[dict[str, Any], list[InputFile]] | Reply:
        try:
            body, inputs, _mask = read_edit_form(request.form())
        except FormError as exc:
            return openai_error(400, str(exc), "invalid_request_error", exc.code, exc.param)
        except ValueError as exc:
            return openai_error(400, f"Invalid multipart body: {exc}", "invalid_request_error", None)
        return body, inputs

    def _auth(self, request: RecordedRequest, azure: bool) -> Reply | None:
        h = request.headers
        if azure:
            if not request.info.get("api_version"):
                return openai_error(
                    404, "Resource not found (missing api-version)", "invalid_request_error", "404"
                )
            key = h.get("api-key")
            bearer = h.get("authorization", "")
            if (
                self.azure_key is not None
                and key != self.azure_key
                and not bearer.lower().startswith("bearer ")
            ):
                return openai_error(
                    401,
                    f"Access denied due to invalid subscription key {key} or wrong API endpoint.",
                    "invalid_request_error",
                    "401",
                )
            if key is None and not bearer:
                return openai_error(401, "Missing api-key header", "invalid_request_error", "401")
            return None
        auth = h.get("authorization", "")
        if not auth.startswith("Bearer "):
            return openai_error(401, "You didn't provide an API key.", "invalid_request_error", None)
        if self.api_key is not None and auth[7:] != self.api_key:
            return openai_error(
                401, f"Incorrect API key provided: {auth[7:]}.", "invalid_request_error", "invalid_api_key"
            )
        return None

    def _model(self, body: dict[str, Any], info: Mapping[str, Any]) -> str | Reply:
        if info.get("api") == "azure":
            dep = str(info["deployment"])
            model = self.deployments.get(dep, dep)
        else:
            if "model" not in body:
                return openai_error(
                    400,
                    "model is required (the default, dall-e-2, is retired)",
                    "invalid_request_error",
                    "missing_required_parameter",
                    "model",
                )
            model = str(body["model"])
        if self.models and model not in self.models:
            return openai_error(
                404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found"
            )
        return model

    def _validate(self, body: dict[str, Any], model: str) -> Reply | None:
        fam = family(model)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return openai_error(
                400, "prompt is required", "invalid_request_error", "missing_required_parameter", "prompt"
            )
        if fam == "gpt-image":
            for name in ("response_format", "style"):
                if name in body:
                    return openai_error(
                        400,
                        f"Unknown parameter: '{name}'.",
                        "invalid_request_error",
                        "unknown_parameter",
                        name,
                    )
        quality = body.get("quality")
        if quality is not None and quality not in QUALITIES[fam]:
            return openai_error(
                400, f"Invalid value: '{quality}'.", "invalid_request_error", "invalid_value", "quality"
            )
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= (1 if model == "dall-e-3" else 10):
            return openai_error(400, f"Invalid n: {n!r}", "invalid_request_error", "invalid_value", "n")
        size = str(body.get("size", "1024x1024"))
        m = _SIZE.match(size)
        if size != "auto" and (
            m is None
            or (fam == "dall-e" and size not in DALLE_SIZES)
            or (fam == "gpt-image" and (int(m[1]) % 16 or int(m[2]) % 16))
        ):
            return openai_error(
                400, f"Invalid size '{size}'.", "invalid_request_error", "invalid_value", "size"
            )
        return None

    def _moderation(self, model: str, azure: bool) -> Reply:
        if azure:
            return openai_error(
                400,
                "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                "policy.",
                "invalid_request_error",
                "content_filter",
                "prompt",
                inner_error={
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_results": {"violence": {"filtered": True, "severity": "high"}},
                },
            )
        if family(model) == "dall-e":
            return openai_error(
                400,
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                "content_policy_violation",
            )
        return openai_error(
            400,
            "Your request was rejected by the safety system.",
            "image_generation_user_error",
            "moderation_blocked",
            moderation_details={"categories": ["violence"]},
        )

    def _ok(self, body: dict[str, Any], model: str, fault: Fault | None, inputs: list[InputFile]) -> Reply:
        size = str(body.get("size", "auto" if inputs else "1024x1024"))
        w, h = (
            (inputs[0].size if inputs else (1024, 1024))
            if size == "auto"
            else (int(x) for x in size.split("x"))
        )
        n = int(body.get("n", 1))
        quality = str(body.get("quality") or ("standard" if family(model) == "dall-e" else "auto"))
        data = []
        for i in range(n):
            png = signed_png(w, h, i, "openai")
            b64 = base64.b64encode(png).decode()
            if fault is not None and fault.name == "truncated_base64":
                b64 = b64[: len(b64) // 2 + 1]  # cut mid-stream: neither whole base64 nor a whole PNG
            data.append({"b64_json": b64})
        payload: dict[str, Any] = {
            "created": int(time.time()),
            "data": data,
            "output_format": "png",
            "size": f"{w}x{h}",
        }
        if family(model) == "gpt-image":
            payload["quality"] = "medium" if quality == "auto" else quality
            payload["background"] = "opaque"
            if fault is None or fault.name != "no_usage":
                payload["usage"] = usage_for(str(body["prompt"]), w, h, quality, n, input_tokens(inputs))
        elif model == "dall-e-3":
            data[0]["revised_prompt"] = f"A detailed rendering: {body['prompt']}"
        reply = Reply.json(200, payload, {"x-request-id": f"req_{uuid.uuid4().hex}"})
        if fault is not None and fault.name == "malformed_json":
            return Reply(200, truncate(reply.body, 0.3), reply.headers)
        return reply


def usage_for(
    prompt: str, width: int, height: int, quality: str, n: int, image_in: int = 0
) -> dict[str, Any]:
    """Token usage as the API reports it: output tokens scale with pixels from the 1024x1024 table;
    an edit's input images count once per call (``image_in``)."""
    text = max(1, len(prompt) // 4)
    per_image = round(TOKENS_1MP.get(quality, 1056) * width * height / (1024 * 1024))
    out = per_image * n
    return {
        "input_tokens": text + image_in,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image_in},
        "output_tokens": out,
        "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
        "total_tokens": text + image_in + out,
    }


__all__ = ["FakeOpenAI", "openai_error", "usage_for"]
