from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from gateway.catalog import Catalog, ModelCard, ProviderCard
from gateway.routing import CircuitBreaker, RouteStats, RoutingOptions, plan_routes
from gateway.types import Decision, ImageRequest, RouteConstraints

TODAY = dt.date(2026, 11, 25)


def card(mid: str, *, usd: str = "0.01", indemnity: str = "none", commercial: bool = True,
         status: str = "active", eol: str | None = None, regions: tuple[str, ...] = ("us-east-1",),
         unit: str = "image", max_images: int = 4) -> dict[str, object]:  # fmt: skip
    src = {"source": "test", "as_of": "2026-11-01"}
    pricing: dict[str, object] = {"unit": unit, **src}
    if unit == "image":
        pricing["per_image"] = [{"usd": usd}]
    else:
        pricing["usd_per_second"] = usd
        pricing["expected_seconds"] = 4
    return {
        "id": mid, "name": mid, "status": status, "end_of_life": eol, "regions": list(regions),
        "licence": {"name": "L", "commercial_use": commercial, **src},
        "indemnity": {"level": indemnity, **src}, "training_data": {"disclosed": True, **src},
        "provenance": {**src}, "moderation": {"provider_side": True, **src}, "pricing": pricing,
        "capabilities": {"max_images": max_images, "min_side": 256, "max_side": 1024, "multiple_of": 64},
        "defaults": {"width": 512, "height": 512},
    }  # fmt: skip


def catalog(*models: dict[str, object], provider: str = "p") -> Catalog:
    return Catalog(
        [ProviderCard(provider=provider, name=provider, models=tuple(ModelCard(**m) for m in models))]
    )


def plan(cat: Catalog, req: ImageRequest | None = None, constraints: RouteConstraints | None = None, **kw):  # type: ignore[no-untyped-def]
    decision = Decision(True, constraints=constraints or RouteConstraints())
    return plan_routes(cat, req or ImageRequest(prompt="x"), decision, today=TODAY, now=0.0, **kw)


def test_cheapest_ranks_by_estimate_then_key() -> None:
    cat = catalog(card("b", usd="0.02"), card("a", usd="0.02"), card("c", usd="0.01"))
    assert [c.route.model for c in plan(cat).ranked] == ["c", "a", "b"]


def test_fastest_uses_persisted_ewma(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cat = catalog(card("slow"), card("quick"))
    stats = RouteStats(tmp_path / "s.json", alpha=0.5)
    stats.observe("p/slow", 3.0)
    stats.observe("p/quick", 1.0)
    stats.observe("p/quick", 2.0)  # ewma 1.5
    stats.save()
    reloaded = RouteStats(tmp_path / "s.json")
    assert reloaded.latency("p/quick") == pytest.approx(1.5)
    ranked = plan(cat, options=RoutingOptions("fastest"), stats=reloaded).ranked
    assert [c.route.model for c in ranked] == ["quick", "slow"]


def test_priority_and_weighted() -> None:
    cat = catalog(card("a", usd="0.05"), card("b", usd="0.01"), card("c", usd="0.03"))
    pri = plan(cat, options=RoutingOptions("priority", priority=("p/c", "p/a"))).ranked
    assert [c.route.model for c in pri] == ["c", "a", "b"]
    w = plan(cat, options=RoutingOptions("weighted", weights={"cost": 1.0, "latency": 0.0})).ranked
    assert [c.route.model for c in w] == ["b", "c", "a"]


def test_policy_constraints_drop_with_reasons() -> None:
    cat = catalog(
        card("indemnified", indemnity="uncapped"),
        card("capped", indemnity="capped", commercial=False),
        card("eu", indemnity="uncapped", regions=("eu-west-1",)),
        card("old", indemnity="uncapped", status="legacy", eol="2026-09-30"),
    )
    c = RouteConstraints(min_indemnity="capped", commercial_use_required=True, allowed_regions=("us-*",))
    p = plan(cat, constraints=c)
    assert [x.route.model for x in p.ranked] == ["indemnified"]
    reasons = {x.route.model: x.reason for x in p.candidates}
    assert "commercial" in str(reasons["capped"])
    assert "regions" in str(reasons["eu"])
    assert "end of life since 2026-09-30" in str(reasons["old"])


def test_end_of_life_follows_the_date() -> None:
    cat = catalog(card("nova", status="legacy", eol="2026-09-30"))
    before = plan_routes(cat, ImageRequest(prompt="x"), Decision(True), today=dt.date(2026, 9, 1), now=0)
    after = plan_routes(cat, ImageRequest(prompt="x"), Decision(True), today=TODAY, now=0)
    assert before.ranked and not after.ranked
    assert after.candidates[0].stage == "policy"


def test_hints_narrow_but_capabilities_still_apply() -> None:
    cat = catalog(card("a", max_images=1), card("b"))
    p = plan(cat, ImageRequest(prompt="x", model="a", n=2))
    assert not p.ranked
    assert {c.route.model: c.stage for c in p.candidates} == {"a": "capability", "b": "hint"}
    p2 = plan(cat, ImageRequest(prompt="x", width=300, height=512))
    assert all("multiple of 64" in str(c.reason) for c in p2.candidates)


def test_max_cost_and_time_billed_estimates() -> None:
    cat = catalog(card("t", usd="0.01", unit="second"))
    p = plan(cat)
    assert p.ranked[0].estimate_usd == Decimal("0.04")  # 4 expected seconds x $0.01
    capped = plan(cat, constraints=RouteConstraints(max_cost_usd=Decimal("0.03")))
    assert capped.candidates[0].stage == "cost"


def test_circuit_breaker_opens_and_half_opens() -> None:
    br = CircuitBreaker(threshold=2, cooldown_s=10)
    br.record_failure("k", now=0)
    assert br.state("k", 1) == "closed"
    br.record_failure("k", now=1)
    assert br.state("k", 5) == "open"
    assert br.state("k", 11.5) == "half-open"
    br.record_failure("k", now=12)  # failed trial: open again for a full cool-down
    assert br.state("k", 20) == "open"
    br.record_success("k")
    assert br.state("k", 20) == "closed"
    cat = catalog(card("k"))
    br2 = CircuitBreaker(threshold=1, cooldown_s=10)
    br2.record_failure("p/k", now=0)
    assert plan(cat, breaker=br2).candidates[0].stage == "breaker"
