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


def pure_work(calls: int) -> None:
    """The backends' own work per call, without the client: build the request, parse the answer
    (base64 decode + PNG integrity check + usage). Noise-free, unlike the end-to-end pairs above."""
    import openai
    from google.genai import types

    from gateway.backends._gemini_wire import generate_config, parse_response
    from gateway.backends._openai_wire import generate_fields, parse_images
    from gateway.testing import signed_png
    from gateway.testing.gemini import usage_for as g_usage
    from gateway.testing.openai import usage_for as o_usage

    png = signed_png(1024, 1024, 0, "openai")
    b64 = base64.b64encode(png).decode()
    o_resp = openai.types.ImagesResponse.model_validate(
        {"created": 0, "data": [{"b64_json": b64}], "usage": o_usage(PROMPT, 1024, 1024, "low", 1)}
    )
    g_resp = types.GenerateContentResponse.model_validate(
        {"candidates": [{"content": {"parts": [{"inline_data": {"mime_type": "image/png", "data": png}}]},
                         "finish_reason": "STOP"}], "usage_metadata": {"candidates_token_count": 1290}}
    )  # fmt: skip
    del g_usage
    o_call = BackendCall(ImageRequest(prompt=PROMPT, width=1024, height=1024, quality="low"), "gpt-image-2",
                         {"family": "gpt-image"})  # fmt: skip
    g_call = BackendCall(ImageRequest(prompt=PROMPT, width=1024, height=1024, seed=1),
                         "gemini-2.5-flash-image", {"image_sizes": ["1K"]})  # fmt: skip
    fns: dict[str, Callable[[], object]] = {
        "openai: fields + parse_images": lambda: (generate_fields(o_call, "gpt-image-2", "openai"),
                                                  parse_images(o_resp, provider="openai", expected=1)),
        "gemini: config + parse_response": lambda: (generate_config(g_call, "google-gemini", 30_000),
                                                    parse_response(g_resp, provider="g", label="G")),
        "base64 decode only (same image)": lambda: base64.b64decode(b64),
    }  # fmt: skip
    res = timed(fns, calls * 5)
    for name, (p50, p95) in res.items():
        print(f"pure      {name:34} p50 {p50 * 1000:7.1f} us  p95 {p95 * 1000:7.1f} us")
    print(f"(image: {len(png)} bytes PNG, {len(b64)} bytes base64)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    pure_work(args.calls)
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
