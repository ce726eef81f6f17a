"""Token pricing, the quality field and the new cards: pure tests (no network)."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from gateway.backends.base import Usage
from gateway.catalog import Catalog, Pricing
from gateway.ledger.pricing import actual_cost, estimate_cost
from gateway.ledger.tokens import cost_basis, expected_image_tokens
from gateway.quality import provider_quality, quality_reason
from gateway.testing import FAKE_GEMINI_KEY, FAKE_OPENAI_KEY
from gateway.types import ImageRequest

ROOT = Path(__file__).resolve().parent.parent
CATALOG = Catalog.default()
NEW_PROVIDERS = ("openai", "azure-openai", "google-gemini", "google-vertex")


def route(key: str):  # type: ignore[no-untyped-def]
    r = CATALOG.get(key)
    assert r is not None, key
    return r


def test_token_unit_needs_prices_and_expected_tokens() -> None:
    base = {"source": "x", "as_of": dt.date(2026, 12, 1), "unit": "token"}
    with pytest.raises(ValidationError, match="usd_per_million_tokens and expected_tokens"):
        Pricing.model_validate(base)
    Pricing.model_validate({**base, "usd_per_million_tokens": {"text_input": "1", "image_output": "2"},
                            "expected_tokens": [{"output_image_tokens": 10}]})  # fmt: skip


@pytest.mark.parametrize(
    ("quality", "size", "tokens"),
    [("low", (1024, 1024), 272), ("medium", (1024, 1024), 1056), ("high", (1024, 1024), 4160),
     ("high", (1536, 1024), 6240), ("low", (512, 512), 272), ("auto", (1024, 1024), 4160),
     ("auto", (1024, 1536), 6240)],
)  # fmt: skip
def test_expected_tokens_by_size_and_quality(quality: str, size: tuple[int, int], tokens: int) -> None:
    assert expected_image_tokens(route("openai/gpt-image-2"), *size, quality) == tokens


def test_estimate_is_an_upper_bound_and_actual_follows_usage() -> None:
    r = route("openai/gpt-image-2")
    req = ImageRequest(prompt="a red bicycle", n=2, quality="high")
    est = estimate_cost(r, req)
    # 13 prompt bytes x 2 images of text (bound) + 2 x 4160 image tokens
    assert est == Decimal("0.249730")
    usage = Usage(
        images=2,
        elapsed_s=1.0,
        input_text_tokens=3,
        input_image_tokens=0,
        output_image_tokens=8320,
        output_text_tokens=0,
    )
    assert actual_cost(r, req, usage) == Decimal("0.249615") <= est
    assert cost_basis(r, usage) == "tokens"
    # No usage at all: per-image fallback = the expected image tokens of one image each.
    bare = Usage(images=2, elapsed_s=1.0)
    assert cost_basis(r, bare) == "per_image_fallback"
    assert actual_cost(r, req, bare) == Decimal("0.249600")
    g = route("google-gemini/gemini-2.5-flash-image")
    assert actual_cost(g, ImageRequest(prompt="p"), Usage(images=1, elapsed_s=1.0)) == Decimal("0.039000")


def test_quality_words_map_per_card() -> None:
    cases = {
        "openai/gpt-image-2": {"high": "high", "auto": "auto", None: "auto"},
        "azure-openai/dall-e-3": {"high": "hd", "hd": "hd", "auto": "standard", None: "standard"},
        "bedrock/amazon.nova-canvas-v1:0": {"high": "premium", "premium": "premium", None: None},
        "google-vertex/gemini-2.5-flash-image": {"high": "standard", "auto": "standard"},
    }
    for key, table in cases.items():
        for asked, word in table.items():
            assert provider_quality(route(key).card, asked) == word, (key, asked)
    assert quality_reason(route("openai/gpt-image-2").card, "hd") is not None
    assert quality_reason(route("local/tiny-digits").card, "auto") is None
    assert quality_reason(route("local/tiny-digits").card, "high") == "has no quality choice (asked 'high')"


def test_quality_prices_titan_and_nova_tiers() -> None:
    nova, titan = route("bedrock/amazon.nova-canvas-v1:0"), route("bedrock/amazon.titan-image-generator-v2:0")
    assert estimate_cost(nova, ImageRequest(prompt="p", quality="high")) == Decimal("0.060000")
    assert estimate_cost(nova, ImageRequest(prompt="p", quality="standard")) == Decimal("0.040000")
    with pytest.raises(ValueError, match="quality 'premium'"):  # Titan's premium tier is not priced
        estimate_cost(titan, ImageRequest(prompt="p", quality="premium"))
    # extras.quality (the old spelling) still prices the same tier
    assert estimate_cost(nova, ImageRequest(prompt="p", extras={"quality": "premium"})) == Decimal("0.060000")


def test_request_quality_is_validated() -> None:
    from gateway.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="quality"):
        ImageRequest.build("p", quality="Very High!")


_URL = re.compile(r"https://[^\s,;)]+")


def test_new_cards_cite_public_sources_and_lifecycles() -> None:
    for r in CATALOG:
        if r.provider not in NEW_PROVIDERS:
            continue
        c = r.card
        for part in (c.licence, c.indemnity, c.training_data, c.provenance, c.moderation, c.pricing):
            assert _URL.search(part.source), (r.key, part.source)
            assert "FACTS" not in part.source
            assert part.as_of == dt.date(2026, 12, 1)
    eol = {r.key: r.card.end_of_life for r in CATALOG if r.card.end_of_life}
    assert eol["openai/dall-e-2"] == eol["openai/dall-e-3"] == dt.date(2026, 5, 12)
    assert eol["openai/gpt-image-1"] == dt.date(2026, 10, 23)
    assert eol["openai/gpt-image-1-mini"] == eol["openai/gpt-image-1.5"] == dt.date(2026, 12, 1)
    assert route("azure-openai/dall-e-3").lifecycle(dt.date(2026, 12, 1)) == "legacy"
    levels = {r.key: r.card.indemnity.level for r in CATALOG if r.provider in NEW_PROVIDERS}
    assert {v for k, v in levels.items() if k.startswith("google-gemini/")} == {"none"}
    assert levels["google-vertex/gemini-3-pro-image-preview"] == "none"
    assert levels["google-vertex/gemini-2.5-flash-image"] != "none"
    assert levels["openai/gpt-image-2"] != "none" and levels["azure-openai/gpt-image-2"] != "none"
    assert "Copyright Shield" in route("openai/gpt-image-2").card.indemnity.scope
    assert "mitigations" in route("azure-openai/gpt-image-2").card.indemnity.scope


@pytest.mark.parametrize("service", ["openai", "gemini"])
def test_command_line_fakes(service: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "gateway.testing", service, "--port", "0", "--fault", "rate_limit:1"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline()).group(0)  # type: ignore[union-attr]
        hint = proc.stdout.readline() + proc.stdout.readline()
        if service == "openai":
            assert f"OPENAI_BASE_URL={url}/v1" in hint and f"AZURE_OPENAI_ENDPOINT={url}" in hint
            post = {"url": f"{url}/v1/images/generations", "json": {"model": "gpt-image-2", "prompt": "a"},
                    "headers": {"Authorization": f"Bearer {FAKE_OPENAI_KEY}"}}  # fmt: skip
        else:
            assert f"GOOGLE_GEMINI_BASE_URL={url}" in hint and f"GOOGLE_VERTEX_BASE_URL={url}" in hint
            post = {"url": f"{url}/v1beta/models/gemini-2.5-flash-image:generateContent",
                    "json": {"contents": [{"parts": [{"text": "a"}]}],
                             "generationConfig": {"responseModalities": ["IMAGE"]}},
                    "headers": {"x-goog-api-key": FAKE_GEMINI_KEY}}  # fmt: skip
        first = httpx.post(**post, timeout=30)
        assert first.status_code == 429 and first.headers["retry-after-ms"] == "1000"
        assert httpx.post(**post, timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "served 2 request(s)" in err
