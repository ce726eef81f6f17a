"""Indemnity-aware routing end to end: the marketing pack, the real boto3 client, the loopback fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import Gateway
from gateway.config import Settings
from gateway.errors import ProvidersFailed
from gateway.testing import FakeBedrock

pytest_plugins = ["gateway.testing.pytest_plugin"]

REPO = Path(__file__).resolve().parent.parent
MARKETING = (REPO / "policies/default.yaml", REPO / "policies/marketing.yaml")


def gateway(tmp_path: Path) -> Gateway:
    settings = Settings(home=tmp_path / "h", policies=MARKETING)
    return Gateway(settings, sleep=lambda s: None)


def test_marketing_routes_only_to_the_indemnified_model_and_adds_provenance(
    tmp_path: Path, fake_bedrock: FakeBedrock
) -> None:
    with gateway(tmp_path) as gw:
        res = gw.generate("a lighthouse at dusk, brand colours", use_case="marketing", width=512, height=512)
    assert (res.provider, res.model) == ("bedrock", "amazon.titan-image-generator-v2:0")
    models = {r.info.get("model_id") or r.path for r in fake_bedrock.requests_of("invoke")}
    assert len(fake_bedrock.requests_of("invoke")) == 1 and any("titan" in str(m) for m in models)
    # Required by the pack: the gateway's own watermark and C2PA where the provider's output lacked them.
    assert {i.watermark for i in res.images} <= {"embedded", "provider"}
    assert {i.c2pa for i in res.images} <= {"signed", "provider"}


def test_marketing_falls_back_only_among_eligible_routes_then_exits_5(
    tmp_path: Path, fake_bedrock: FakeBedrock
) -> None:
    fake_bedrock.inject("unavailable", times=50, on="any")
    with gateway(tmp_path) as gw, pytest.raises(ProvidersFailed) as err:
        gw.generate("a lighthouse at dusk", use_case="marketing", width=512, height=512)
    invoked = [r.path for r in fake_bedrock.requests_of("invoke")]
    assert invoked and all("titan-image-generator-v2" in p for p in invoked)  # never Stability, never Nova
    assert "amazon.titan-image-generator-v2:0" in str(err.value)
    assert err.value.exit_code == 5


def test_without_the_marketing_pack_the_cheapest_active_bedrock_model_wins(
    tmp_path: Path, fake_bedrock: FakeBedrock
) -> None:
    with Gateway(Settings(home=tmp_path / "h"), sleep=lambda s: None) as gw:
        plan = gw.explain("a lighthouse", provider="bedrock", width=1024, height=1024)
    ranked = [c.route.model for c in plan.routes.ranked]
    assert ranked[0] == "amazon.titan-image-generator-v2:0"
    assert "amazon.nova-canvas-v1:0" not in ranked  # end of life since 2026-09-30
