"""The routing cache changes nothing: the same plan, candidate for candidate, with and without it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from gateway.catalog import Catalog
from gateway.routing import CircuitBreaker, RouteCache, RouteStats, plan_routes
from gateway.types import Decision, ImageRequest, QualityFloor, RouteConstraints

REPO_CATALOG = Catalog.default()
TODAY = dt.date(2026, 6, 1)

REQUESTS = [
    ImageRequest(prompt="a cat 1"),
    ImageRequest(prompt="a dog 2", seed=5),  # another prompt and seed: same shape, same verdicts
    ImageRequest(prompt="x", n=3, width=1024, height=1024),
    ImageRequest(prompt="x", provider="bedrock", negative_prompt="blurry"),
    ImageRequest(prompt="x", steps=4, scheduler="euler"),
    ImageRequest(prompt="x", quality="hd"),
    ImageRequest(prompt="x", extras={"style": "photo"}),  # extras: not cached, still planned
]
CONSTRAINTS = [
    RouteConstraints(),
    RouteConstraints(min_indemnity="uncapped", commercial_use_required=True),
    RouteConstraints(max_cost_usd=Decimal("0.02"), denied_providers=("replicate",)),
    RouteConstraints(min_quality=(QualityFloor("class_consistency", 0.9),), exclude_legacy=True),
]


def test_cached_plans_equal_uncached_plans() -> None:
    cache = RouteCache()
    for _round in range(2):  # the second round is served from the cache
        for req in REQUESTS:
            for c in CONSTRAINTS:
                decision = Decision(allowed=True, constraints=c)
                kw = {"today": TODAY, "now": 0.0, "stats": RouteStats(), "breaker": CircuitBreaker()}
                fresh = plan_routes(REPO_CATALOG, req, decision, **kw)  # type: ignore[arg-type]
                cached = plan_routes(REPO_CATALOG, req, decision, cache=cache, **kw)  # type: ignore[arg-type]
                assert cached.to_dict() == fresh.to_dict()
                assert [x.route.key for x in cached.ranked] == [x.route.key for x in fresh.ranked]


def test_a_new_catalogue_or_day_is_planned_afresh() -> None:
    cache = RouteCache()
    req, decision = ImageRequest(prompt="x"), Decision(allowed=True)
    plan_routes(REPO_CATALOG, req, decision, today=TODAY, now=0.0, cache=cache)
    smaller = Catalog([c for c in REPO_CATALOG.cards if c.provider != "bedrock"])
    plan = plan_routes(smaller, req, decision, today=TODAY, now=0.0, cache=cache)
    assert all(c.route.provider != "bedrock" for c in plan.candidates)
    later = plan_routes(REPO_CATALOG, req, decision, today=dt.date(2040, 1, 1), now=0.0, cache=cache)
    fresh = plan_routes(REPO_CATALOG, req, decision, today=dt.date(2040, 1, 1), now=0.0)
    assert later.to_dict() == fresh.to_dict()
