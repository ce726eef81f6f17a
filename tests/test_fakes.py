"""The loopback fakes speak the wire format, inject every fault, and the fault matrix holds.

The matrix at the bottom is the contract documented in docs/backends.md: every injected fault, on each
backend, through the gateway's retry policy, ends in success by a safe retry or in the right typed
error, never a hang, a traceback or a secret in a message.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from gateway.backends import BackendCall, create_backend
from gateway.errors import BackendError
from gateway.retry import RetryPolicy
from gateway.testing import (
    FAKE_AWS_KEY,
    FAKE_AWS_SECRET,
    FAKE_REPLICATE_TOKEN,
    FAULTS,
    FakeBedrock,
    FakeReplicate,
    FakeServer,
)
from gateway.types import ImageRequest

pytest_plugins = ["gateway.testing.pytest_plugin"]

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": f"Bearer {FAKE_REPLICATE_TOKEN}"}


# --------------------------------------------------------------------------- FakeReplicate wire format


def test_replicate_create_wait_poll_cancel_and_files(fake_replicate: FakeReplicate) -> None:
    url = fake_replicate.url
    with httpx.Client(base_url=url, headers=AUTH) as http:
        r = http.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "a"}},
            headers={"Prefer": "wait"},
        )
        assert r.status_code == 201
        pred = r.json()
        assert pred["status"] == "succeeded"
        assert pred["model"] == "black-forest-labs/flux-schnell"
        assert pred["metrics"]["predict_time"] == fake_replicate.predict_time
        assert pred["urls"]["get"] == f"{url}/v1/predictions/{pred['id']}"
        file = httpx.get(pred["output"][0])  # no Authorization header
        assert file.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(file.content)).size == (1024, 1024)

        fake_replicate.pending_polls = 2
        r = http.post(
            "/v1/predictions", json={"version": "abc123", "input": {"prompt": "b", "width": 64, "height": 96}}
        )
        assert r.status_code == 201
        assert r.json()["status"] == "starting"
        pid = r.json()["id"]
        states = [http.get(f"/v1/predictions/{pid}").json()["status"] for _ in range(3)]
        assert states == ["processing", "processing", "succeeded"]

        r = http.post("/v1/predictions", json={"version": "abc123", "input": {"prompt": "c"}})
        cancelled = http.post(f"/v1/predictions/{r.json()['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "canceled"
        assert fake_replicate.cancelled == [r.json()["id"]]
    assert [q.kind for q in fake_replicate.requests] == [
        "create",
        "file",
        "create",
        "poll",
        "poll",
        "poll",
        "create",
        "cancel",
    ]


def test_replicate_problem_json_errors(fake_replicate: FakeReplicate) -> None:
    with httpx.Client(base_url=fake_replicate.url) as http:
        r = http.post("/v1/predictions", json={"version": "v", "input": {"prompt": "a"}})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401
        r = http.post("/v1/predictions", json={"input": {"prompt": "a"}}, headers=AUTH)
        assert r.status_code == 422
        r = http.get("/v1/predictions/doesnotexist", headers=AUTH)
        assert r.status_code == 404
        fake_replicate.inject("rate_limit", retry_after=9)
        r = http.post("/v1/predictions", json={"version": "v", "input": {"prompt": "a"}}, headers=AUTH)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "9"
        assert "resets in ~9s" in r.json()["detail"]


def test_replicate_files_refuse_and_record_authorization(fake_replicate: FakeReplicate) -> None:
    with httpx.Client(base_url=fake_replicate.url, headers=AUTH) as http:
        pred = http.post(
            "/v1/predictions", json={"version": "v", "input": {"prompt": "a"}}, headers={"Prefer": "wait"}
        ).json()
        leaked = http.get(
            pred["output"][0]
        )  # what replicate's FileOutput.read() does: token to the file host
    assert leaked.status_code == 400
    assert fake_replicate.file_auth_headers == [AUTH["Authorization"]]


def test_faults_are_targeted_counted_and_validated() -> None:
    with FakeReplicate() as fake, httpx.Client(base_url=fake.url, headers=AUTH) as http:
        fake.inject("server_error", times=2, on="poll")
        fake.inject("unavailable")
        assert fake.faults.pending() == [("server_error", 2), ("unavailable", 1)]
        assert (
            http.post("/v1/predictions", json={"version": "v", "input": {"prompt": "a"}}).status_code == 503
        )
        pid = http.post("/v1/predictions", json={"version": "v", "input": {"prompt": "a"}}).json()["id"]
        assert [http.get(f"/v1/predictions/{pid}").status_code for _ in range(3)] == [500, 500, 200]
        assert [q.fault for q in fake.requests] == ["unavailable", None, "server_error", "server_error", None]
        with pytest.raises(ValueError, match="unknown fault"):
            fake.inject("meteor_strike")
        with pytest.raises(ValueError, match="times"):
            fake.inject("reset", times=0)
        fake.inject("reset")
        fake.clear()
        assert fake.faults.pending() == []
        assert fake.requests == []


def test_slow_fault_is_released_without_waiting() -> None:
    with FakeReplicate() as fake:
        fake.inject("slow", delay=600)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{fake.url}/v1/predictions",
                json={"version": "v", "input": {"prompt": "a"}},
                headers=AUTH,
                timeout=0.05,
            )
        fake.release()
        r = httpx.post(
            f"{fake.url}/v1/predictions", json={"version": "v", "input": {"prompt": "a"}}, headers=AUTH
        )
        assert r.status_code == 201
    # leaving the block stopped the server although a slow answer was pending: no 600 s wait


def test_reset_fault_drops_the_connection() -> None:
    with FakeReplicate() as fake:
        fake.inject("reset")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.post(
                f"{fake.url}/v1/predictions", json={"version": "v", "input": {"prompt": "a"}}, headers=AUTH
            )


@pytest.mark.parametrize("fake_cls", [FakeReplicate, FakeBedrock])
def test_each_response_is_written_in_one_piece(fake_cls: type[FakeServer]) -> None:
    """Status line, headers and body arrive together: no small-write/delayed-ACK stall."""
    with fake_cls() as fake:
        host, port = fake.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            first = sock.recv(65536)
    head, _, body = first.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert length > 0
    assert len(body) == length


def test_command_line_fake_takes_faults_and_serves_until_interrupted() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    token = ["--token", "r8_cli_token_1234"]
    argv = [
        sys.executable,
        "-m",
        "gateway.testing",
        "replicate",
        "--port",
        "0",
        *token,
        "--fault",
        "rate_limit:1",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    create = {"version": "v", "input": {"prompt": "a"}}
    auth = {"Authorization": "Bearer r8_cli_token_1234"}
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)  # type: ignore[union-attr]
        assert "REPLICATE_BASE_URL=" + url in proc.stdout.readline()
        assert httpx.post(f"{url}/v1/predictions", json=create, headers=auth).status_code == 429
        assert httpx.post(f"{url}/v1/predictions", json=create, headers=auth).status_code == 201
        control = f"{url}/__fake__/faults"
        assert httpx.post(control, json={"fault": "unavailable", "times": 2}).json() == {
            "pending": [["unavailable", 2]]
        }
        assert httpx.post(control, json={"fault": "meteor"}).status_code == 400
        assert httpx.post(f"{url}/v1/predictions", json=create, headers=auth).status_code == 503
        assert httpx.get(control).json() == {"pending": [["unavailable", 1]], "requests": 3}
        assert httpx.delete(control).status_code == 204
        assert httpx.post(f"{url}/v1/predictions", json=create, headers=auth).status_code == 201
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "served 4 request(s)" in err


# --------------------------------------------------------------------------- FakeBedrock wire format


def _signed(
    url: str, *, service: str = "bedrock", region: str = "us-east-1", secret: str = FAKE_AWS_SECRET
) -> httpx.Response:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = json.dumps(
        {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": {"text": "a"},
            "imageGenerationConfig": {"width": 64, "height": 64},
        }
    ).encode()
    req = AWSRequest(
        "POST",
        f"{url}/model/amazon.titan-image-generator-v2%3A0/invoke",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    SigV4Auth(Credentials(FAKE_AWS_KEY, secret), service, region).add_auth(req)
    return httpx.post(req.url, content=body, headers=dict(req.headers.items()))


def test_bedrock_checks_the_signing_scope_and_signature(fake_bedrock: FakeBedrock) -> None:
    ok = _signed(fake_bedrock.url)
    assert ok.status_code == 200
    assert ok.headers["x-amzn-requestid"]
    assert len(ok.json()["images"]) == 1
    bad_service = _signed(fake_bedrock.url, service="s3")
    assert bad_service.status_code == 403
    assert bad_service.headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert "bedrock" in bad_service.json()["message"]
    bad_region = _signed(fake_bedrock.url, region="eu-west-9")
    assert bad_region.status_code == 403
    assert "region" in bad_region.json()["message"]
    bad_secret = _signed(fake_bedrock.url, secret="not-the-secret")
    assert bad_secret.status_code == 403
    assert "signature" in bad_secret.json()["message"]
    bearer = httpx.post(f"{fake_bedrock.url}/model/x/invoke", headers={"Authorization": "Bearer abc"})
    assert bearer.status_code == 403
    assert bearer.headers["x-amzn-errortype"] == "AccessDeniedException"
    invoke = fake_bedrock.requests_of("invoke")[0]
    assert invoke.info["raw_model"] == "amazon.titan-image-generator-v2%3A0"
    assert invoke.info["model_id"] == "amazon.titan-image-generator-v2:0"
    assert invoke.info["region"] == "us-east-1"
    assert invoke.info["service"] == "bedrock"


def test_fault_lists_are_the_documented_ones() -> None:
    common = {
        "rate_limit",
        "server_error",
        "unavailable",
        "slow",
        "reset",
        "malformed_json",
        "truncated_image",
        "content_filtered",
    }
    assert FAULTS["bedrock"] == common
    assert FAULTS["replicate"] == common | {"prediction_failed"}


# --------------------------------------------------------------------------- the fault matrix


@dataclass(frozen=True)
class Cell:
    backend: str
    fault: str
    params: dict[str, Any]
    outcome: str  # "ok" or the error class name
    sends: int  # creates (Replicate) or invokes (Bedrock) the provider saw
    cancels: int = 0


R, B = "replicate", "bedrock"
MATRIX: list[Cell] = [
    Cell(R, "rate_limit", {}, "ok", 2),
    Cell(R, "rate_limit", {"times": 9}, "RateLimited", 3),
    Cell(R, "rate_limit", {"on": "poll"}, "ok", 1),
    Cell(R, "server_error", {}, "ok", 2),
    Cell(R, "server_error", {"on": "poll", "times": 2}, "ok", 1),
    Cell(R, "unavailable", {}, "ok", 2),
    Cell(R, "unavailable", {"times": 9}, "BackendUnavailable", 3),
    Cell(R, "unavailable", {"on": "poll"}, "ok", 1),
    Cell(R, "slow", {}, "BackendTimeout", 1),
    Cell(R, "slow", {"on": "poll"}, "BackendTimeout", 1, cancels=1),
    Cell(R, "reset", {}, "BackendTimeout", 1),
    Cell(R, "reset", {"on": "poll"}, "ok", 1),
    Cell(R, "reset", {"on": "file"}, "ok", 1),
    Cell(R, "malformed_json", {}, "ok", 1),
    Cell(R, "malformed_json", {"keep_id": False}, "BackendTimeout", 1),
    Cell(R, "malformed_json", {"on": "poll"}, "ok", 1),
    Cell(R, "truncated_image", {}, "ok", 1),
    Cell(R, "truncated_image", {"times": 3}, "ok", 2),
    Cell(R, "content_filtered", {}, "ContentFiltered", 1),
    Cell(R, "prediction_failed", {}, "PredictionFailed", 1),
    Cell(B, "rate_limit", {}, "ok", 2),
    Cell(B, "rate_limit", {"times": 9}, "RateLimited", 3),
    Cell(B, "server_error", {}, "ok", 2),
    Cell(B, "server_error", {"error_type": "ModelErrorException", "status": 424}, "ok", 2),
    Cell(B, "server_error", {"error_type": "ModelTimeoutException", "status": 408}, "BackendTimeout", 1),
    Cell(B, "unavailable", {}, "ok", 2),
    Cell(B, "unavailable", {"times": 9}, "BackendUnavailable", 3),
    Cell(B, "slow", {}, "BackendTimeout", 1),
    Cell(B, "reset", {}, "ok", 2),
    Cell(B, "malformed_json", {}, "ok", 2),
    Cell(B, "truncated_image", {}, "ok", 2),
    Cell(B, "content_filtered", {}, "ContentFiltered", 1),
    Cell(B, "content_filtered", {"stage": "input"}, "ContentFiltered", 1),
]
MODELS = {
    R: ("black-forest-labs/flux-schnell", {"family": "flux-schnell"}),
    B: ("amazon.titan-image-generator-v2:0", {"family": "titan-image", "region": "us-east-1"}),
}
POLICY = RetryPolicy(max_attempts=3, jitter=False)


def _cell_id(cell: Cell) -> str:
    extra = ",".join(f"{k}={v}" for k, v in cell.params.items())
    return f"{cell.backend}-{cell.fault}" + (f"[{extra}]" if extra else "")


def run_cell(cell: Cell, fake: FakeServer, backend_options: dict[str, Any], mode: str) -> tuple[str, str]:
    """Run one matrix cell the way the gateway does: the backend inside the retry policy."""
    model, options = MODELS[cell.backend]
    slow = cell.fault == "slow"
    call = BackendCall(
        ImageRequest(prompt="a lighthouse", width=1024, height=1024, seed=11),
        model,
        options,
        timeout_s=0.5 if slow else 10.0,
    )
    params = dict(cell.params)
    fake.inject(cell.fault, times=params.pop("times", 1), **params)
    backend = create_backend(cell.backend, backend_options)

    async def no_sleep(_s: float) -> None:
        return None

    try:
        if mode == "sync":
            result = POLICY.run(lambda: backend.generate(call), sleep=lambda _s: None)
        else:

            async def go() -> Any:
                try:
                    return await POLICY.arun(lambda: backend.agenerate(call), sleep=no_sleep)
                finally:
                    await backend.aclose()

            result = asyncio.run(go())
        assert result.images
        assert all(img.startswith(b"\x89PNG") for img in result.images)
        return "ok", ""
    except BackendError as exc:
        return type(exc).__name__, str(exc)
    finally:
        backend.close()


def _replicate_options(fake: FakeReplicate) -> dict[str, Any]:
    async def no_sleep(_s: float) -> None:
        return None

    sleep: Callable[[float], None] = lambda _s: None  # noqa: E731
    return {"api_token": FAKE_REPLICATE_TOKEN, "base_url": fake.url, "sleep": sleep, "async_sleep": no_sleep}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("cell", MATRIX, ids=_cell_id)
def test_fault_matrix(
    cell: Cell, mode: str, fake_replicate: FakeReplicate, fake_bedrock: FakeBedrock
) -> None:
    if cell.backend == R:
        fake_replicate.pending_polls = 1
        outcome, message = run_cell(cell, fake_replicate, _replicate_options(fake_replicate), mode)
        sends, cancels = len(fake_replicate.requests_of("create")), len(fake_replicate.cancelled)
    else:
        outcome, message = run_cell(cell, fake_bedrock, {}, mode)
        sends, cancels = len(fake_bedrock.requests_of("invoke")), 0
    assert (outcome, sends, cancels) == (cell.outcome, cell.sends, cell.cancels), message
    for secret in (FAKE_REPLICATE_TOKEN, FAKE_AWS_SECRET, "Signature=", "Bearer "):
        assert secret not in message
