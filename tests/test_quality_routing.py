"""Measured quality on cards, policy floors (``min_quality``) and the ``cheapest_meeting_quality``
strategy; the default pack's synthetic-data use case routes digits to the distilled model."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.catalog import Catalog, ModelCard, ProviderCard, default_data_dir
from gateway.errors import ConfigError
from gateway.policy import PolicySet
from gateway.routing import RoutingOptions, plan_routes
from gateway.types import Context, Decision, ImageRequest, QualityFloor, RouteConstraints

TODAY = dt.date(2026, 12, 1)
SRC = {"source": "bench", "as_of": "2026-12-01"}
FLOOR = (QualityFloor("class_consistency", 0.95),)


def card(mid: str, seconds: float, quality: list[dict[str, Any]], steps: int | None = None) -> ModelCard:
    return ModelCard(
        **{
            "id": mid,
            "name": mid,
            "regions": ["local"],
            "licence": {"name": "L", "commercial_use": True, **SRC},
            "indemnity": {"level": "none", **SRC},
            "training_data": {"disclosed": True, **SRC},
            "provenance": {**SRC},
            "moderation": {"provider_side": False, **SRC},
            "pricing": {"unit": "hour", "usd_per_hour": "0.10", "expected_seconds": seconds, **SRC},
            "capabilities": {"max_images": 16, "min_side": 16, "steps": True},
            "defaults": {"width": 256, "height": 256, "steps": steps},
            "quality": [{**q, **SRC} for q in quality],
        }
    )


def cc(value: float, steps: int | None = None, seconds: float | None = None) -> dict[str, Any]:
    return {"metric": "class_consistency", "value": value, "steps": steps, "expected_seconds": seconds}


def catalog() -> Catalog:
    return Catalog(
        [
            ProviderCard(
                provider="local",
                name="local",
                models=(
                    card("slow-good", 0.5, [cc(0.99, 10)], steps=10),
                    card("fast-good", 0.05, [cc(0.93, 1, 0.02), cc(0.99, 2, 0.04)], steps=2),
                    card("cheapest-bad", 0.01, [cc(0.60)]),
                    card("unmeasured", 0.03, []),
                ),
            )
        ]
    )


def plan(req: ImageRequest, floors: tuple[QualityFloor, ...] = FLOOR, strategy: str | None = None) -> Any:
    decision = Decision(True, constraints=RouteConstraints(min_quality=floors, strategy=strategy))
    opts = RoutingOptions("cheapest_meeting_quality")
    return plan_routes(catalog(), req, decision, today=TODAY, now=0.0, options=opts)


def test_cheapest_route_meeting_the_floor_wins_and_the_rest_say_why() -> None:
    p = plan(ImageRequest(prompt="a 7"))
    assert [c.route.model for c in p.ranked] == ["fast-good", "slow-good"]
    why = {c.route.model: c.reason for c in p.candidates}
    assert why["cheapest-bad"] == "class_consistency 0.6 is below the policy floor 0.95"
    assert why["unmeasured"] == "no measured class_consistency on the card (policy floor 0.95)"


def test_quality_is_looked_up_at_the_step_setting_asked() -> None:
    p = plan(ImageRequest(prompt="a 7", steps=1))
    reasons = {c.route.model: c.reason for c in p.candidates}
    assert reasons["fast-good"] == "class_consistency 0.93 at 1 step(s) is below the policy floor 0.95"
    assert (
        reasons["slow-good"] == "no measured class_consistency at 1 step(s) on the card (policy floor 0.95)"
    )
    assert p.ranked == ()


def test_unmeasured_rank_last_keeps_the_route_after_the_measured_ones() -> None:
    p = plan(ImageRequest(prompt="a 7"), (QualityFloor("class_consistency", 0.95, "rank_last"),))
    assert [c.route.model for c in p.ranked] == ["fast-good", "slow-good", "unmeasured"]


def test_explain_shows_cost_per_image_against_measured_quality() -> None:
    two = {c.route.model: c for c in plan(ImageRequest(prompt="a 7", n=4)).candidates}["fast-good"]
    d = two.to_dict()
    assert (d["steps"], d["usd_per_image"]) == (2, "0.000000")  # the estimate: card default 0.05 s per call
    assert d["measured_usd_per_image"] == "0.000001111"  # 0.04 s per image at $0.10/h
    assert d["quality"] == [
        {"metric": "class_consistency", "value": 0.99, "source": "bench", "as_of": "2026-12-01"}
    ]
    one = {c.route.model: c for c in plan(ImageRequest(prompt="a 7", steps=1)).candidates}["fast-good"]
    assert one.to_dict()["measured_usd_per_image"] == "0.000000556"  # 1 step: half the time
    assert two.estimate_usd == Decimal("0.000002")  # budgets still reserve the conservative estimate


def test_a_policy_sets_the_strategy_for_its_scope() -> None:
    decision = Decision(True, constraints=RouteConstraints(strategy="cheapest_meeting_quality"))
    p = plan_routes(
        catalog(),
        ImageRequest(prompt="a 7"),
        decision,
        today=TODAY,
        now=0.0,
        options=RoutingOptions("fastest"),
    )
    assert p.strategy == "cheapest_meeting_quality"
    assert p.ranked[0].route.model == "cheapest-bad"  # no floor: measured quality breaks cost ties only


def test_route_rule_min_quality_merges_to_the_strictest_floor(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("""version: 1
name: q
rules:
  - {id: a, kind: route, min_quality: {metric: class_consistency, value: 0.9}, strategy: cheapest}
  - {id: b, kind: route, min_quality: {metric: class_consistency, value: 0.97},
     strategy: cheapest_meeting_quality}
""")
    d = PolicySet.load([f]).evaluate(ImageRequest(prompt="a 7"), Context())
    assert d.constraints.min_quality == (QualityFloor("class_consistency", 0.97),)
    assert d.constraints.strategy == "cheapest_meeting_quality"
    f.write_text("version: 1\nname: q\nrules:\n  - {id: a, kind: route, min_quality: {metric: x}}\n")
    with pytest.raises(ConfigError, match=r"p\.yaml"):
        PolicySet.load([f])


def test_shipped_cards_record_quality_for_both_digit_models() -> None:
    cat = Catalog.default()
    lcm, teacher = cat.get("local/tiny-digits-lcm"), cat.get("local/tiny-digits")
    assert lcm is not None and teacher is not None
    assert {q.steps for q in lcm.card.quality} == {1, 2, 4, 8}
    assert lcm.card.options["few_step"] == {"scheduler": "lcm", "steps": [1, 2, 4, 8]}
    assert all(
        q.metric == "class_consistency" and q.source for q in (*lcm.card.quality, *teacher.card.quality)
    )


def test_default_pack_synthetic_data_prefers_the_distilled_model() -> None:
    policies = default_data_dir("policies")
    ps = PolicySet.load([policies / "default.yaml", policies / "synthetic-data.yaml"])
    req = ImageRequest(prompt="a handwritten 7")
    d = ps.evaluate(req, Context(use_case="synthetic-data", project="digits"))
    assert d.allowed and d.constraints.strategy == "cheapest_meeting_quality"
    p = plan_routes(Catalog.default(), req, d, today=TODAY, now=0.0)
    assert p.ranked[0].route.key == "local/tiny-digits-lcm"
    local = [c.route.key for c in p.ranked if c.route.provider == "local"]
    assert local == ["local/tiny-digits-lcm", "local/tiny-digits"]  # measured routes before unmeasured ones
    other = plan_routes(Catalog.default(), req, ps.evaluate(req, Context()), today=TODAY, now=0.0)
    assert other.strategy == "cheapest"  # other use cases keep the settings' strategy
