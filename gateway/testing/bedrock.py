"""``FakeBedrock``: Bedrock Runtime ``InvokeModel`` on loopback, for real boto3 clients.

``POST /model/{modelId}/invoke`` with the model id URL-encoded in the path (decoded here), request and
response bodies of Titan Image Generator v2, Nova Canvas and the Stability models as the providers
document them, and errors the way botocore parses them: HTTP status + ``x-amzn-ErrorType`` + a JSON
``message``. Every request must be SigV4-signed: the ``Authorization`` header's scope must name the
service ``bedrock`` and one of ``regions``; with ``credentials`` ({access key id: secret}) the
signature itself is recomputed and checked. Bearer tokens (``AWS_BEARER_TOKEN_BEDROCK``) are refused,
which is how a test notices that variable leaking in.

Every request is ``invoke`` for ``inject(..., on=...)``. ``content_filtered`` takes ``stage``:
``"input"`` (a blocked prompt: 400 ValidationException for Titan/Nova, ``Filter reason: prompt`` in
``finish_reasons`` for Stability) or ``"output"`` (default; a blocked image: 200 with ``error`` set for
Titan/Nova, ``Filter reason: output image`` for Stability).
``server_error``/``unavailable``/``rate_limit`` accept ``error_type=`` and ``status=`` to send any
Bedrock error (e.g. ``ModelTimeoutException``/408).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

from ..backends._wire import ASPECT_SIZES_1MP
from ._bedrock_edit import AMAZON_EDIT_TASKS, EditError, amazon_edit, edit_reply_images, stability_edit
from ._http import FakeServer, Fault, RecordedRequest, Reply, Reset, png_bytes, truncate

_INVOKE = re.compile(r"^/model/(?P<model>[^/]+)/invoke$")
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
BLOCKED = (
    "This request has been blocked by our content filters. Our filters automatically flagged this "
    "prompt because it may conflict our AUP or AWS Responsible AI Policy. Please adjust your text prompt "
    "to submit a new request."
)
BLOCKED_OUTPUT = (
    "This request has been blocked by our content filters. The generated image(s) have been blocked."
)
_DEFAULT_ERRORS = {
    "rate_limit": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "server_error": (500, "InternalServerException", "The server encountered an internal error."),
    "unavailable": (
        503,
        "ServiceUnavailableException",
        "The service is temporarily unable to handle the request.",
    ),
}
# Which body a model id speaks, by prefix (data, in the order tried).
FAMILIES: Sequence[tuple[str, str]] = (
    ("amazon.titan-image-generator", "amazon"),
    ("amazon.nova-canvas", "amazon"),
    ("stability.", "stability"),
)
PROMPT_LIMITS = {"amazon.titan-image-generator": 512, "amazon.nova-canvas": 1024, "stability.": 10000}


def aws_error(status: int, name: str, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply.json(status, {"message": message}, {"x-amzn-ErrorType": name, **(headers or {})})


def _family(model_id: str) -> tuple[str, str] | None:
    for prefix, family in FAMILIES:
        if model_id.startswith(prefix):
            return prefix, family
    return None


class FakeBedrock(FakeServer):
    """A loopback Bedrock Runtime. ``requests[i].info`` has ``model_id``, ``region``, ``service``."""

    FAULTS: ClassVar[frozenset[str]] = frozenset(
        {"rate_limit", "server_error", "unavailable", "slow", "reset", "malformed_json", "truncated_image",
         "content_filtered"}
    )  # fmt: skip

    def __init__(
        self,
        *,
        regions: Sequence[str] = ("us-east-1", "us-west-2"),
        credentials: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.regions = tuple(regions)
        self.credentials = dict(credentials or {})

    def classify(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        m = _INVOKE.match(urlsplit(path).path)
        if method != "POST" or m is None:
            return "other", {}
        info: dict[str, Any] = {"model_id": unquote(m["model"]), "raw_model": m["model"]}
        auth = _AUTH.match(headers.get("authorization", ""))
        if auth is not None:
            info.update(region=auth["region"], service=auth["service"], access_key=auth["key"])
        return "invoke", info

    def handle(self, request: RecordedRequest, fault: Fault | None) -> Reply | Reset:
        if request.kind != "invoke":
            return aws_error(404, "UnknownOperationException", "Unknown operation")
        denied = self._auth(request)
        if denied is not None:
            return denied
        if fault is not None and fault.name in _DEFAULT_ERRORS:
            status, name, message = _DEFAULT_ERRORS[fault.name]
            extra = (
                {"Retry-After": str(fault.params.get("retry_after", 1))} if fault.name == "rate_limit" else {}
            )
            p = fault.params
            status, name, message = (
                int(p.get("status", status)),
                str(p.get("error_type", name)),
                str(p.get("message", message)),
            )
            return aws_error(status, name, message, extra)
        model_id = request.info["model_id"]
        fam = _family(model_id)
        if fam is None:
            return aws_error(400, "ValidationException", "The provided model identifier is invalid.")
        try:
            body = request.json()
        except ValueError:
            return aws_error(
                400,
                "ValidationException",
                "Malformed input request, please reformat your input and try again.",
            )
        if not isinstance(body, dict):
            return aws_error(400, "ValidationException", "Malformed input request: expected a JSON object.")
        build = self._amazon if fam[1] == "amazon" else self._stability
        reply = build(body, PROMPT_LIMITS[fam[0]], fault)
        if fault is not None and fault.name == "malformed_json" and reply.status == 200:
            return Reply(200, truncate(reply.body, 0.3), reply.headers)
        return reply

    # ------------------------------------------------------------------ auth

    def _auth(self, request: RecordedRequest) -> Reply | None:
        header = request.headers.get("authorization", "")
        m = _AUTH.match(header)
        if m is None:
            why = "Missing or malformed SigV4 Authorization header"
            if header.lower().startswith("bearer"):
                why = "Bearer tokens are not accepted by this fake"
            return aws_error(403, "AccessDeniedException", why)
        if m["service"] != "bedrock":
            return aws_error(
                403, "InvalidSignatureException", "Credential should be scoped to correct service: 'bedrock'."
            )
        if m["region"] not in self.regions:
            return aws_error(
                403,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region ({m['region']!r}).",
            )
        if self.credentials:
            secret = self.credentials.get(m["key"])
            if secret is None:
                return aws_error(
                    403,
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                )
            if not hmac.compare_digest(sigv4_signature(request, secret, m), m["signature"]):
                why = "The request signature we calculated does not match the signature you provided."
                return aws_error(403, "InvalidSignatureException", why)
        return None

    # ------------------------------------------------------------------ bodies

    def _amazon(self, body: dict[str, Any], limit: int, fault: Fault | None) -> Reply:
        if body.get("taskType") in AMAZON_EDIT_TASKS:  # edits: gateway/testing/_bedrock_edit.py
            return self._amazon_edit(body, fault)
        if body.get("taskType") != "TEXT_IMAGE":
            return aws_error(
                400, "ValidationException", f"taskType {body.get('taskType')!r} is not supported here."
            )
        params = body.get("textToImageParams") or {}
        cfg = body.get("imageGenerationConfig") or {}
        text = params.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= limit:
            why = (
                f"1 validation error detected: Value at 'text' failed to satisfy constraint: length 1-{limit}"
            )
            return aws_error(400, "ValidationException", why)
        n, w, h = cfg.get("numberOfImages", 1), cfg.get("width", 1024), cfg.get("height", 1024)
        if not (isinstance(n, int) and 1 <= n <= 5 and isinstance(w, int) and isinstance(h, int)):
            return aws_error(
                400, "ValidationException", "numberOfImages must be 1-5; width and height integers"
            )
        if fault is not None and fault.name == "content_filtered":
            if fault.params.get("stage") == "input":
                return aws_error(400, "ValidationException", BLOCKED)
            return self._ok({"images": [], "error": BLOCKED_OUTPUT})
        seed = int(cfg.get("seed", 0))
        images = [self._png(w, h, seed + i, fault) for i in range(n)]
        return self._ok({"images": images, "error": None})

    def _stability(self, body: dict[str, Any], limit: int, fault: Fault | None) -> Reply:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= limit:
            return aws_error(400, "ValidationException", f"prompt: length must be 1-{limit}")
        if body.get("mode") == "image-to-image":
            try:
                data = stability_edit(body, fault)
            except EditError as exc:
                return aws_error(400, "ValidationException", str(exc))
            seed = int(body.get("seed", 0)) or 1234
            return self._ok({"seeds": [seed], "finish_reasons": [None], "images": edit_reply_images([data])})
        ratio = str(body.get("aspect_ratio", "1:1"))
        size = ASPECT_SIZES_1MP.get(ratio)
        if size is None or ratio in ("3:4", "4:3"):
            return aws_error(400, "ValidationException", f"aspect_ratio: {ratio!r} is not supported")
        if body.get("output_format", "png") not in ("png", "jpeg"):
            return aws_error(400, "ValidationException", "output_format must be png or jpeg")
        seed = int(body.get("seed", 0)) or 1234
        reason = None
        if fault is not None and fault.name == "content_filtered":
            reason = (
                "Filter reason: prompt"
                if fault.params.get("stage") == "input"
                else "Filter reason: output image"
            )
        return self._ok(
            {"seeds": [seed], "finish_reasons": [reason], "images": [self._png(*size, seed, fault)]}
        )

    def _amazon_edit(self, body: dict[str, Any], fault: Fault | None) -> Reply:
        if fault is not None and fault.name == "content_filtered":
            if fault.params.get("stage") == "input":
                return aws_error(400, "ValidationException", BLOCKED)
            return self._ok({"images": [], "error": BLOCKED_OUTPUT})
        seed = int((body.get("imageGenerationConfig") or {}).get("seed", 0))
        try:
            images = amazon_edit(body, str(body["taskType"]), seed)
        except EditError as exc:
            return aws_error(400, "ValidationException", str(exc))
        if fault is not None and fault.name == "truncated_image":
            images = [truncate(d) for d in images]
        return self._ok({"images": edit_reply_images(images), "error": None})

    def _png(self, w: int, h: int, seed: int, fault: Fault | None) -> str:
        data = png_bytes(w, h, seed)
        if fault is not None and fault.name == "truncated_image":
            data = truncate(data)
        return base64.b64encode(data).decode()

    def _ok(self, payload: dict[str, Any]) -> Reply:
        return Reply.json(200, payload, {"x-amzn-RequestId": str(uuid.uuid4())})


def sigv4_signature(request: RecordedRequest, secret: str, auth: re.Match[str]) -> str:
    """Recompute a SigV4 signature from what was received (services other than S3 double-encode paths)."""
    parts = urlsplit(request.path)
    canonical_uri = quote(parts.path, safe="/~")
    query = "&".join(sorted(parts.query.split("&"))) if parts.query else ""
    signed = auth["signed"].split(";")
    canonical_headers = "".join(f"{h}:{' '.join(request.headers.get(h, '').split())}\n" for h in signed)
    payload = request.headers.get("x-amz-content-sha256") or hashlib.sha256(request.body).hexdigest()
    canonical = "\n".join([request.method, canonical_uri, query, canonical_headers, auth["signed"], payload])
    amz_date = request.headers.get("x-amz-date", "")
    scope = f"{auth['date']}/{auth['region']}/{auth['service']}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (auth["date"], auth["region"], auth["service"], "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
