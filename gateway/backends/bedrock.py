"""AWS Bedrock backend: boto3 ``bedrock-runtime`` ``invoke_model`` for Titan, Nova Canvas and Stability.

Request and response bodies differ by model family (:mod:`._bedrock_bodies`); the card picks one with
``options.family`` and the region with ``options.region`` (else ``AWS_REGION``/``AWS_DEFAULT_REGION``).
One boto3 client per (region, timeout) is cached; each is built with
``Config(retries={"total_max_attempts": 1, "mode": "standard"})`` because retries belong to the
gateway's own layer (botocore's default "legacy" mode would retry throttling five times over ~12 s
behind its back). Note ``{"max_attempts": 1}`` is *not* enough: botocore reads the client-config
``max_attempts`` as retries and sends ``max_attempts + 1`` requests (botocore/args.py, run here).
The read timeout is the call's timeout. ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` and the whole AWS
credential chain work as boto3 defines them.

Errors: botocore's ``x-amzn-ErrorType`` names map through :data:`ERRORS`; provider moderation (a
ValidationException about content filters, Titan/Nova ``error``, a Stability ``Filter reason``) is
:class:`ContentFiltered`. Connection failures are retryable, as botocore's own standard retry mode
treats them: ``invoke_model`` keeps no server-side state, so a resend cannot leave a job running.

Async runs the blocking boto3 call in a **bounded thread pool** (``max_workers``, default 16), not
aioboto3. Why: aiobotocore pins exact botocore versions (a second, conflicting AWS stack to keep in
step with boto3), while an image call is a handful of long requests, for which a thread each is cheap;
the bound is also backpressure, keeping in-flight calls under Bedrock's per-model quotas. Body parsing
and image checks run in the same worker, so the event loop never decodes base64 or PNGs. A call that
waited in the queue past its deadline is dropped before it is sent; a cancelled awaiting task leaves its
request to finish in the worker (``invoke_model`` has no cancel), bounded by the read timeout.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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
from ._bedrock_bodies import FILTER_PATTERN, PROVIDER, BodyFamily, Parsed, fold_seed, resolve_family
from ._wire import parse_retry_after, redact
from .base import Backend, BackendCall, BackendResult, Usage

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")

# botocore error names (the x-amzn-ErrorType header) -> gateway errors. Unknown names fall back on
# the HTTP status (see _client_error).
ERRORS: dict[str, type[BackendError]] = {
    "ValidationException": InvalidBackendRequest,
    "ResourceNotFoundException": InvalidBackendRequest,
    "AccessDeniedException": AuthenticationError,
    "UnrecognizedClientException": AuthenticationError,
    "InvalidSignatureException": AuthenticationError,
    "ExpiredTokenException": AuthenticationError,
    "ThrottlingException": RateLimited,
    "ServiceQuotaExceededException": RateLimited,
    "ModelNotReadyException": BackendUnavailable,
    "InternalServerException": BackendUnavailable,
    "ServiceUnavailableException": BackendUnavailable,
    "ModelTimeoutException": BackendTimeout,
    "ModelErrorException": BadResponse,
}
# botocore's own exceptions, by class name anywhere in the MRO (first match wins).
TRANSPORT_ERRORS: dict[str, type[BackendError]] = {
    "ReadTimeoutError": BackendTimeout,
    "ConnectTimeoutError": BackendUnavailable,
    "NoCredentialsError": AuthenticationError,
    "PartialCredentialsError": AuthenticationError,
    "TokenRetrievalError": AuthenticationError,
    "NoAuthTokenError": AuthenticationError,
    "InvalidEndpointConfigurationError": AuthenticationError,  # e.g. a Bedrock API key over plain http
    "ParamValidationError": InvalidBackendRequest,
    "NoRegionError": InvalidBackendRequest,
    "ConnectionError": BackendUnavailable,
    "HTTPClientError": BackendUnavailable,
    "IncompleteReadError": BadResponse,
}


class BedrockBackend(Backend):
    """Amazon Bedrock image models through ``invoke_model``."""

    name = "bedrock"

    def __init__(
        self,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_workers: int = 16,
        max_cached_clients: int = 16,
        **_: Any,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.max_workers = max_workers
        self.max_cached_clients = max_cached_clients
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._clients: OrderedDict[tuple[str, float], Any] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ pure core

    def _region(self, call: BackendCall) -> str:
        region = str(
            call.options.get("region") or self.region or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION") or ""
        )  # fmt: skip
        if not _REGION.match(region):
            what = f"region {region!r} is not an AWS region" if region else "no AWS region"
            raise InvalidBackendRequest(
                f"{what}: set the card's options.region or AWS_REGION", provider=PROVIDER
            )
        return region

    def _plan(self, call: BackendCall) -> tuple[BodyFamily, str, dict[str, Any]]:
        family = resolve_family(call.options)
        return family, self._region(call), family.build(call)

    def check(self, call: BackendCall) -> str | None:
        try:
            self._plan(call)
        except BackendError as exc:
            return str(exc)
        return None

    def _secrets(self) -> tuple[str | None, ...]:
        session = self._session
        creds = session.get_credentials() if session is not None else None
        if creds is None:
            return ()
        frozen = creds.get_frozen_credentials()
        return (frozen.access_key, frozen.secret_key, frozen.token)

    def _error(self, exc: Exception) -> BackendError:
        if isinstance(exc, ClientError):
            return self._client_error(exc)
        for klass in type(exc).__mro__:
            target = TRANSPORT_ERRORS.get(klass.__name__)
            if target is not None:
                text = redact(f"{type(exc).__name__}: {exc}", self._secrets())
                return target(f"Bedrock invoke_model: {text}", provider=PROVIDER)
        return BackendUnavailable(f"Bedrock invoke_model: {type(exc).__name__}", provider=PROVIDER)

    def _client_error(self, exc: ClientError) -> BackendError:
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code, status = str(err.get("Code") or "Unknown"), meta.get("HTTPStatusCode")
        text = redact(str(err.get("Message") or ""), self._secrets())
        msg = f"Bedrock {code}" + (f" (HTTP {status})" if status else "") + (f": {text}" if text else "")
        if code == "ValidationException" and FILTER_PATTERN.search(text):
            return ContentFiltered(msg, provider=PROVIDER, status=status)
        target = ERRORS.get(code)
        if target is None:
            target = _by_status(status)
        if target is RateLimited:
            headers = meta.get("HTTPHeaders") or {}
            return RateLimited(
                msg,
                provider=PROVIDER,
                status=status,
                retry_after=parse_retry_after(headers.get("retry-after")),
            )
        return target(msg, provider=PROVIDER, status=status)

    # ------------------------------------------------------------------ clients

    def _client(self, region: str, left_s: float) -> Any:
        """The cached client for ``region`` whose read timeout is ``left_s`` rounded up to a step.

        botocore fixes timeouts per client, so the time left is quantised (0.1 s below 2 s, else 1 s):
        few clients, and a call overshoots its deadline by less than one step.
        """
        step = 0.1 if left_s < 2 else 1.0
        timeout_s = round(math.ceil(left_s / step - 1e-9) * step, 1)
        key = (region, timeout_s)
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            if self._session is None:
                self._session = _new_session()
            config = Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=min(5.0, timeout_s),
                read_timeout=timeout_s,
                max_pool_connections=self.max_workers,
                user_agent_appid="diffusion-gateway",
            )
            client = self._session.client(
                "bedrock-runtime", region_name=region, endpoint_url=self.endpoint_url, config=config
            )
            self._clients[key] = client
            while len(self._clients) > self.max_cached_clients:
                self._clients.popitem(last=False)
            return client

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="gateway-bedrock"
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            clients = list(self._clients.values())
            self._clients.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for client in clients:
            client.close()

    # ------------------------------------------------------------------ calls

    def generate(self, call: BackendCall) -> BackendResult:
        return self._run(call, time.monotonic())

    async def agenerate(self, call: BackendCall) -> BackendResult:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        future = loop.run_in_executor(self._executor(), self._run, call, started)
        try:
            return await asyncio.wait_for(future, timeout=call.timeout_s + 1.0)
        except TimeoutError:
            raise BackendTimeout(
                f"Bedrock gave no answer within {call.timeout_s:g}s", provider=PROVIDER
            ) from None

    def _run(self, call: BackendCall, started: float) -> BackendResult:
        """The whole call, blocking: plan, invoke, parse, check the images. Shared by both paths."""
        family, region, body = self._plan(call)
        left = call.timeout_s - (time.monotonic() - started)
        if left <= 0.05:  # waited in the pool past its deadline: do not start a call nobody awaits
            raise BackendTimeout("Bedrock call expired before it was sent", provider=PROVIDER)
        client = self._client(region, left)
        try:
            resp = client.invoke_model(
                modelId=call.model,
                body=json.dumps(body, separators=(",", ":")).encode(),
                contentType="application/json",
                accept="application/json",
            )
            raw = resp["body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from None
        request_id = str(resp.get("ResponseMetadata", {}).get("RequestId") or "") or None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise BadResponse("Bedrock answered with malformed JSON", provider=PROVIDER) from None
        if not isinstance(payload, dict):
            raise BadResponse("Bedrock answered with a JSON value that is not an object", provider=PROVIDER)
        parsed: Parsed = family.parse(payload)
        requested = call.request.seed
        sent = fold_seed(requested, family.limits) if requested is not None else None
        seed = parsed.seed if parsed.seed is not None else sent
        folded = {"requested_seed": requested} if requested is not None and requested != sent else {}
        return BackendResult(
            images=parsed.images,
            usage=Usage(
                images=len(parsed.images),
                elapsed_s=time.monotonic() - started,
                provider_request_id=request_id,
            ),
            seed=seed,
            metadata={
                "region": region,
                "family": family.name,
                "model_id": call.model,
                "request_id": request_id,
                **parsed.metadata,
                **folded,
            },
        )


_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _new_session() -> boto3.session.Session:
    """A boto3 session sharing one process-wide botocore data loader.

    The loader caches the parsed service models and endpoint data; sharing it makes every further
    client ~15x cheaper to build (~12 ms instead of ~200 ms here), while credentials and settings
    stay per session.
    """
    global _LOADER
    import botocore.session

    core = botocore.session.Session()
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


def _by_status(status: int | None) -> type[BackendError]:
    """For error names not in :data:`ERRORS`: decide by HTTP status."""
    if status == 429:
        return RateLimited
    if status in (401, 403):
        return AuthenticationError
    if status is None or status >= 500:
        return BackendUnavailable
    return InvalidBackendRequest


__all__ = ["ERRORS", "TRANSPORT_ERRORS", "BedrockBackend"]
