"""Per-call overhead of the OpenAI, Azure OpenAI, Gemini and Vertex backends over their raw clients.

Run: ``python benchmarks/image_api_backends.py [--calls 200]``. Loopback fakes (FakeOpenAI, FakeGemini),
so the numbers are client-side cost: the backend's request building, error guard, base64 decode, PNG
integrity check and usage parsing, over the same official client making the same request and
decoding the same base64 (what any caller must do). Calls are interleaved so load changes hit both
alike. The fakes return a 1024x1024 C2PA-signed PNG (cached), so the transfer is identical on both
sides. Results go in docs/backends.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import time
from collections.abc import Awaitable, Callable

from remote_backends import report, timed

from gateway.backends import BackendCall
from gateway.backends.gemini import GeminiBackend, VertexGeminiBackend
from gateway.backends.openai_images import AzureOpenAIBackend, OpenAIBackend
from gateway.testing import (
    FAKE_AZURE_KEY,
    FAKE_GEMINI_KEY,
    FAKE_GOOGLE_TOKEN,
    FAKE_OPENAI_KEY,
    FakeGemini,
    FakeOpenAI,
)
from gateway.types import ImageRequest

PROMPT = "a red bicycle"
ASYNC_RAW, ASYNC_OURS = "async raw openai (8 in flight)", "async OpenAIBackend (8 in flight)"
VERSION = "2025-04-01-preview"


def openai_pair() -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    import openai

    fake = FakeOpenAI(api_key=FAKE_OPENAI_KEY, azure_key=FAKE_AZURE_KEY).start()
    os.environ.update(OPENAI_API_KEY=FAKE_OPENAI_KEY, OPENAI_BASE_URL=f"{fake.url}/v1",
                      AZURE_OPENAI_ENDPOINT=fake.url, AZURE_OPENAI_API_KEY=FAKE_AZURE_KEY,
                      OPENAI_API_VERSION=VERSION)  # fmt: skip
    raw = openai.OpenAI(max_retries=0)
    raw_az = openai.AzureOpenAI(max_retries=0)
    ours, ours_az = OpenAIBackend(), AzureOpenAIBackend()
    req = ImageRequest(prompt=PROMPT, width=1024, height=1024, quality="low")
    call = BackendCall(req, "gpt-image-2", {"family": "gpt-image"}, timeout_s=30)

    def raw_call(client: object) -> Callable[[], object]:
        def run() -> object:
            r = client.images.generate(model="gpt-image-2", prompt=PROMPT, n=1, size="1024x1024",  # type: ignore[attr-defined]
                                       quality="low", timeout=30)  # fmt: skip
            return [base64.b64decode(d.b64_json) for d in r.data]

        return run

    fns: dict[str, Callable[[], object]] = {
        "raw openai images.generate": raw_call(raw),
        "OpenAIBackend.generate": lambda: ours.generate(call),
        "raw AzureOpenAI images.generate": raw_call(raw_az),
        "AzureOpenAIBackend.generate": lambda: ours_az.generate(call),
    }

    def close() -> None:
        raw.close()
        raw_az.close()
        ours.close()
        ours_az.close()
        fake.stop()

    return fns, close


def gemini_pair() -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    from google import genai
    from google.genai import types
    from google.oauth2.credentials import Credentials

    fake = FakeGemini(api_key=FAKE_GEMINI_KEY, token=FAKE_GOOGLE_TOKEN).start()
    os.environ.pop("GOOGLE_API_KEY", None)
    os.environ.update(GEMINI_API_KEY=FAKE_GEMINI_KEY, GOOGLE_GEMINI_BASE_URL=fake.url,
                      GOOGLE_VERTEX_BASE_URL=fake.url, GOOGLE_CLOUD_PROJECT="bench",
                      GOOGLE_CLOUD_LOCATION="us-central1")  # fmt: skip
    http = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))
    raw = genai.Client(vertexai=False, http_options=http)
    creds = Credentials(token=FAKE_GOOGLE_TOKEN)
    raw_v = genai.Client(vertexai=True, project="bench", location="us-central1", credentials=creds,
                         http_options=http)  # fmt: skip
    ours, ours_v = GeminiBackend(), VertexGeminiBackend(credentials=creds)
    req = ImageRequest(prompt=PROMPT, width=1024, height=1024, seed=1)
    call = BackendCall(req, "gemini-2.5-flash-image", {"image_sizes": ["1K"]}, timeout_s=30)
    config = {"response_modalities": ["IMAGE"], "image_config": {"aspect_ratio": "1:1"}, "seed": 1,
              "http_options": {"timeout": 30_000}}  # fmt: skip

    def raw_call(client: genai.Client) -> Callable[[], object]:
        def run() -> object:
            r = client.models.generate_content(model="gemini-2.5-flash-image",
                                               contents=[{"role": "user", "parts": [{"text": PROMPT}]}],
                                               config=config)  # type: ignore[arg-type]  # fmt: skip
            return r.candidates[0].content.parts[0].inline_data.data  # type: ignore[index,union-attr]

        return run

    fns: dict[str, Callable[[], object]] = {
        "raw genai generate_content": raw_call(raw),
        "GeminiBackend.generate": lambda: ours.generate(call),
        "raw genai (vertex) generate_content": raw_call(raw_v),
        "VertexGeminiBackend.generate": lambda: ours_v.generate(call),
    }

    def close() -> None:
        raw.close()
        raw_v.close()
        ours.close()
        ours_v.close()
        fake.stop()

    return fns, close


def async_openai(calls: int) -> dict[str, tuple[float, float]]:
    """The async path, 8 calls in flight, ms per call (total wall time / calls)."""
    import openai

    async def main() -> dict[str, tuple[float, float]]:
        raw = openai.AsyncOpenAI(max_retries=0)
        ours = OpenAIBackend()
        call = BackendCall(ImageRequest(prompt=PROMPT, width=1024, height=1024, quality="low"), "gpt-image-2",
                           {"family": "gpt-image"}, timeout_s=30)  # fmt: skip

        async def raw_one() -> object:
            r = await raw.images.generate(model="gpt-image-2", prompt=PROMPT, n=1, size="1024x1024",
                                          quality="low", timeout=30)  # fmt: skip
            return [base64.b64decode(d.b64_json or "") for d in r.data or ()]

        async def batch(fn: Callable[[], Awaitable[object]]) -> float:
            t = time.perf_counter()
            await asyncio.gather(*(fn() for _ in range(8)))
            return (time.perf_counter() - t) / 8

        out: dict[str, list[float]] = {ASYNC_RAW: [], ASYNC_OURS: []}
        for _ in range(3):
            await batch(raw_one)
            await batch(lambda: ours.agenerate(call))
        for _ in range(max(4, calls // 4)):
            out[ASYNC_RAW].append(await batch(raw_one))
            out[ASYNC_OURS].append(await batch(lambda: ours.agenerate(call)))
        await raw.close()
        await ours.aclose()
        return {k: (statistics.median(v) * 1000, sorted(v)[max(0, int(len(v) * 0.95) - 1)] * 1000)
                for k, v in out.items()}  # fmt: skip

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    fns, close = openai_pair()
    try:
        res = timed(fns, args.calls)
        report("openai", "raw openai images.generate", "OpenAIBackend.generate", res)
        report("azure", "raw AzureOpenAI images.generate", "AzureOpenAIBackend.generate", res)
        res = async_openai(args.calls)
        report("openai", ASYNC_RAW, ASYNC_OURS, res)
    finally:
        close()
    fns, close = gemini_pair()
    try:
        res = timed(fns, args.calls)
        report("gemini", "raw genai generate_content", "GeminiBackend.generate", res)
        report("vertex", "raw genai (vertex) generate_content", "VertexGeminiBackend.generate", res)
    finally:
        close()


if __name__ == "__main__":
    main()
