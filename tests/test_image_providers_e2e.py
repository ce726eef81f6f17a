"""OpenAI, Azure OpenAI, Gemini and Vertex through the whole gateway: token cost, provenance, routing.

Real clients against the loopback fakes, real SQLite ledger and audit, real c2pa signing. The
"Done when" commands of the issue run through the CLI entry point at the end.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from image_provider_support import vertex_credentials

from gateway import Gateway
from gateway.backends.gemini import VertexGeminiBackend
from gateway.cli import main
from gateway.config import Settings
from gateway.errors import ContentFiltered
from gateway.provenance import verify_image
from gateway.testing import FakeGemini, FakeOpenAI
from gateway.types import GenerationResult

pytest_plugins = ["gateway.testing.pytest_plugin"]
ROOT = Path(__file__).resolve().parent.parent
MILLION = Decimal(1_000_000)


@pytest.fixture
def gw(tmp_path: Path, fake_openai: FakeOpenAI, fake_gemini: FakeGemini) -> Any:
    vertex = VertexGeminiBackend(credentials=vertex_credentials())
    with Gateway(Settings(home=tmp_path / "home"), backends={"google-vertex": vertex},
                 sleep=lambda _s: None) as g:  # fmt: skip
        yield g


def attempt_records(gw: Gateway) -> list[dict[str, Any]]:
    return [r for r in gw._core.audit.iter_records() if r["event"] == "attempt"]


def tokens_usd(text_in: int, image_out: int, p_text: str, p_out: str) -> Decimal:
    return ((text_in * Decimal(p_text) + image_out * Decimal(p_out)) / MILLION).quantize(Decimal("0.000001"))


def check_provider_c2pa(result: GenerationResult, home: Path, signer: str) -> None:
    for img in result.images:
        assert (img.c2pa, img.watermark) == ("signed", "provider")  # their mark, our manifest on top
        report = verify_image(img.data, home=home)
        assert report.ok, report.reasons
        assert report.c2pa.state in ("valid", "trusted")
        assert report.c2pa.active is not None and report.c2pa.active.ours
        assert [m.signer["common_name"] for m in report.c2pa.ingredients] == [
            f"{signer} test provider signer"
        ]
        assert report.c2pa.ingredients[0].actions == ("c2pa.created",)
        assert not report.c2pa.failures  # the provider's manifest still validates inside ours


def test_openai_cost_follows_the_returned_tokens(gw: Gateway, tmp_path: Path) -> None:
    r = gw.generate("a red bicycle", provider="openai", model="gpt-image-2", quality="high", n=2)
    assert (r.provider, r.model, len(r.images), r.seed) == ("openai", "gpt-image-2", 2, None)
    assert r.cost_usd == tokens_usd(3, 2 * 4160, "5.00", "30.00")
    assert r.estimated_cost_usd >= r.cost_usd  # the reservation was an upper bound
    rec = attempt_records(gw)[-1]
    assert rec["cost_basis"] == "tokens"
    assert rec["tokens"] == {"input_text_tokens": 3, "input_image_tokens": 0, "output_image_tokens": 8320,
                             "output_text_tokens": 0}  # fmt: skip
    check_provider_c2pa(r, tmp_path / "home", "openai")


def test_missing_usage_falls_back_to_the_per_image_price(gw: Gateway, fake_gemini: FakeGemini) -> None:
    fake_gemini.inject("no_usage")
    r = gw.generate("a red bicycle", provider="google-gemini", model="gemini-2.5-flash-image")
    assert r.cost_usd == Decimal("0.039000")
    rec = attempt_records(gw)[-1]
    assert rec["cost_basis"] == "per_image_fallback"
    assert "no token usage" in rec["cost_note"]
    assert "tokens" not in rec


def test_gemini_and_vertex_costs_and_provenance(gw: Gateway, tmp_path: Path, fake_gemini: FakeGemini) -> None:
    for provider in ("google-gemini", "google-vertex"):
        r = gw.generate("a red bicycle", provider=provider, model="gemini-2.5-flash-image", n=2)
        assert r.cost_usd == tokens_usd(2 * 3, 2 * 1290, "0.30", "30.00")
        assert r.seed is not None
        check_provider_c2pa(r, tmp_path / "home", "google")
    apis = [q.info["api"] for q in fake_gemini.requests_of("generate")]
    assert apis == ["developer", "developer", "vertex", "vertex"]


def test_azure_deployments_come_from_gateway_yaml(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("home: home\nbackends:\n  azure-openai:\n    deployments: {gpt-image-2: img-eastus2}\n")
    fake_openai.deployments["img-eastus2"] = "gpt-image-2"
    with Gateway.from_config(cfg) as g:
        r = g.generate("a red bicycle", provider="azure-openai", model="gpt-image-2", quality="low")
    assert fake_openai.requests_of("generate")[-1].info["deployment"] == "img-eastus2"
    assert r.cost_usd == tokens_usd(3, 272, "5.00", "30.00")
    assert r.metadata["model_sent"] == "img-eastus2"


def test_moderation_is_final_no_retry_no_fallback(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.inject("moderation", times=10)
    with pytest.raises(ContentFiltered, match="moderation_blocked"):
        gw.generate("a red bicycle", provider="openai")  # several openai routes are eligible
    assert len(fake_openai.requests_of("generate")) == 1


def test_throttling_is_retried_once_by_the_gateway(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.inject("rate_limit", retry_after=0.2)
    r = gw.generate("a red bicycle", provider="openai", model="gpt-image-2", quality="low")
    assert [a.retries for a in r.attempts] == [1]
    assert len(fake_openai.requests_of("generate")) == 2  # one by our policy, none by the client


def candidates(plan: Any) -> dict[str, dict[str, Any]]:
    return {c["route"]: c for c in plan.to_dict()["routing"]["candidates"]}


def test_marketing_drops_the_developer_api_for_indemnity(tmp_path: Path, fake_openai: FakeOpenAI,
                                                         fake_gemini: FakeGemini) -> None:  # fmt: skip
    policies = (ROOT / "policies" / "default.yaml", ROOT / "policies" / "marketing.yaml")
    with Gateway(Settings(home=tmp_path / "home", policies=policies)) as g:
        plan = g.explain("a red bicycle on a beach", use_case="marketing")
    c = candidates(plan)
    for key in ("google-gemini/gemini-2.5-flash-image", "google-gemini/gemini-3.1-flash-image",
                "google-vertex/gemini-3-pro-image-preview"):  # fmt: skip
        assert not c[key]["eligible"]
        assert (c[key]["stage"], "indemnity" in c[key]["reason"]) == ("policy", True), c[key]
    for key in ("openai/gpt-image-2", "azure-openai/gpt-image-2", "google-vertex/gemini-2.5-flash-image"):
        assert c[key]["eligible"], c[key]
    assert "legacy" in c["azure-openai/dall-e-3"]["reason"]


def test_explain_says_why_retired_models_are_not_used(gw: Gateway) -> None:
    c = candidates(gw.explain("a red bicycle"))
    assert c["openai/dall-e-3"]["reason"] == "end of life since 2026-05-12"
    assert c["openai/dall-e-2"]["reason"] == "end of life since 2026-05-12"
    assert c["openai/gpt-image-1"]["reason"] == "end of life since 2026-10-23"
    assert c["openai/gpt-image-1-mini"]["reason"] == "end of life since 2026-12-01"
    assert c["openai/gpt-image-1.5"]["reason"] == "end of life since 2026-12-01"
    assert c["azure-openai/dall-e-3"]["eligible"]  # Azure deployments outlive the public API


def test_quality_drops_cards_that_cannot_honour_it(gw: Gateway) -> None:
    c = candidates(gw.explain("a red bicycle", quality="hd"))
    assert c["azure-openai/dall-e-3"]["eligible"]
    assert c["azure-openai/dall-e-3"]["estimate_usd"] == "0.080000"
    assert c["openai/gpt-image-2"]["reason"].startswith("quality: does not offer quality 'hd'")
    assert c["local/tiny-digits"]["reason"] == "quality: has no quality choice (asked 'hd')"
    r = gw.generate("a red bicycle", provider="azure-openai", model="dall-e-3", quality="high")
    assert r.cost_usd == Decimal("0.080000")  # "high" is DALL·E 3's "hd" tier


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    try:
        code = int(main(args) or 0)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, _err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "gpt-image-2", tokens_usd(3, 2 * 4160, "5.00", "30.00")),
        ("azure-openai", "gpt-image-2", tokens_usd(3, 2 * 4160, "5.00", "30.00")),
        ("google-gemini", "gemini-2.5-flash-image", tokens_usd(2 * 3, 2 * 1290, "0.30", "30.00")),
    ],
)
def test_done_when_commands(provider: str, model: str, expected: Decimal, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                            fake_openai: FakeOpenAI, fake_gemini: FakeGemini) -> None:  # fmt: skip
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["generate", "a red bicycle", "--provider", provider, "--model", model,
                         "--quality", "high", "-n", "2", "--json"], capsys)  # fmt: skip
    assert code == 0, out
    assert (out["provider"], out["model"], len(out["images"])) == (provider, model, 2)
    assert Decimal(out["cost_usd"]) == expected
    assert Decimal(out["estimated_cost_usd"]) >= expected
    # Azure documents C2PA but no invisible mark, so its card lets ours in (the provider's manifest
    # stays an ingredient); OpenAI and Google mark their images, so ours is not layered on top.
    assert out["c2pa"] == "signed"
    assert out["watermark"] == ("embedded" if provider == "azure-openai" else "provider")
    for img in out["images"]:
        report = verify_image(tmp_path / img["path"], home=tmp_path / "home")
        assert report.ok and report.c2pa.ingredients and not report.c2pa.failures


def test_async_gateway_on_every_new_backend(tmp_path: Path, fake_openai: FakeOpenAI,
                                            fake_gemini: FakeGemini) -> None:  # fmt: skip
    import asyncio

    from gateway import AsyncGateway

    async def run() -> list[GenerationResult]:
        vertex = VertexGeminiBackend(credentials=vertex_credentials())
        async with AsyncGateway(Settings(home=tmp_path / "home"), backends={"google-vertex": vertex}) as g:
            routes = [
                ("openai", "gpt-image-2"),
                ("azure-openai", "gpt-image-2"),
                ("google-gemini", "gemini-2.5-flash-image"),
                ("google-vertex", "gemini-2.5-flash-image"),
            ]
            jobs = [g.generate("a red bicycle", provider=p, model=m, n=2) for p, m in routes]
            return list(await asyncio.gather(*jobs))

    results = asyncio.run(run())
    assert [len(r.images) for r in results] == [2, 2, 2, 2]
    assert all(r.cost_usd > 0 and r.estimated_cost_usd >= r.cost_usd for r in results)
