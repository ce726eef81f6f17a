"""Per-call overhead of the Replicate and Bedrock backends over their raw clients, against the fakes.

Run: ``python benchmarks/remote_backends.py [--calls 200]``. Everything is loopback, so the numbers are
the client-side cost (signing, JSON, base64, image checks, the replicate client's parsing), not
provider latency. Results go in docs/backends.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import httpx

from gateway.backends import BackendCall, create_backend
from gateway.backends._wire import validate_image
from gateway.testing import FAKE_AWS_KEY, FAKE_AWS_SECRET, FakeBedrock, FakeReplicate, png_bytes
from gateway.types import ImageRequest


def timed(fns: dict[str, Callable[[], object]], calls: int) -> dict[str, tuple[float, float]]:
    """p50 and p95 in ms per function, calls interleaved so load changes hit all of them alike."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    out = {}
    for name, xs in samples.items():
        xs.sort()
        out[name] = (statistics.median(xs) * 1000, xs[int(len(xs) * 0.95) - 1] * 1000)
    return out


def report(service: str, raw: str, ours: str, res: dict[str, tuple[float, float]]) -> None:
    (r50, r95), (b50, b95) = res[raw], res[ours]
    print(f"{service:9} {raw:34} p50 {r50:6.2f} ms  p95 {r95:6.2f} ms")
    print(f"{service:9} {ours:34} p50 {b50:6.2f} ms  p95 {b95:6.2f} ms  (p50 {b50 - r50:+.2f} ms)")


def bedrock(calls: int) -> None:
    import boto3
    from botocore.config import Config

    os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)
    os.environ.update(
        AWS_ACCESS_KEY_ID=FAKE_AWS_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET,
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    with FakeBedrock(credentials={FAKE_AWS_KEY: FAKE_AWS_SECRET}) as fake:
        body = json.dumps(
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "a lighthouse"},
                "imageGenerationConfig": {"numberOfImages": 1, "width": 512, "height": 512, "seed": 1},
            }
        )
        raw = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=fake.url,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )

        def raw_call() -> None:
            resp = raw.invoke_model(
                modelId="amazon.titan-image-generator-v2:0",
                body=body,
                contentType="application/json",
                accept="application/json",
            )
            json.loads(resp["body"].read())

        backend = create_backend("bedrock", {"endpoint_url": fake.url})
        call = BackendCall(
            ImageRequest(prompt="a lighthouse", width=512, height=512, seed=1),
            "amazon.titan-image-generator-v2:0",
            {"family": "titan-image", "region": "us-east-1"},
        )
        fns = {"raw boto3 invoke_model": raw_call, "BedrockBackend.generate": lambda: backend.generate(call)}
        report("bedrock", "raw boto3 invoke_model", "BedrockBackend.generate", timed(fns, calls))
        backend.close()


def replicate(calls: int) -> None:
    with FakeReplicate() as fake:
        token = "r8_benchmarkTokenValue0000"
        http = httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {token}"})
        files = httpx.Client()

        def raw_call() -> None:
            pred = http.post(
                "/v1/models/black-forest-labs/flux-schnell/predictions",
                headers={"Prefer": "wait=55"},
                json={"input": {"prompt": "a", "aspect_ratio": "1:1", "seed": 1}},
            ).json()
            files.get(pred["output"][0]).raise_for_status()

        backend = create_backend("replicate", {"api_token": token, "base_url": fake.url})
        call = BackendCall(
            ImageRequest(prompt="a", width=1024, height=1024, seed=1),
            "black-forest-labs/flux-schnell",
            {"family": "flux-schnell"},
            timeout_s=60,
        )
        fns = {
            "raw httpx create + file GET": raw_call,
            "ReplicateBackend.generate": lambda: backend.generate(call),
        }
        report("replicate", "raw httpx create + file GET", "ReplicateBackend.generate", timed(fns, calls))
        backend.close()
        http.close()
        files.close()


def image_checks(calls: int) -> None:
    for side in (512, 1024):
        data = png_bytes(side, side, 5)
        p50, p95 = timed({"v": lambda d=data: validate_image(d, provider="bench")}, calls)["v"]
        print(f"validate_image {side}x{side} PNG ({len(data)} B)  p50 {p50:6.2f} ms  p95 {p95:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    n = parser.parse_args().calls
    bedrock(n)
    replicate(n)
    image_checks(n)
