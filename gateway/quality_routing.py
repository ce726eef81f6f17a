"""Quality-aware routing: measured quality on cards, policy floors, and the ``cheapest_meeting_quality``
strategy.

Why: a step count is a price. Ten DPM++ steps of tiny-digits and two steps of the distilled
``tiny-digits-lcm`` both read as the digit asked for ~99% of the time, but one costs several times the
other. Cards record what was measured (``quality:`` entries per step setting, each with its source and
date); a policy states what is good enough (``kind: route``, ``min_quality: {metric, value}``); routing
drops what is known to fall short and, under ``cheapest_meeting_quality``, picks the cheapest route
that is known to meet the floor. ``gateway explain`` shows the trade per candidate.

Pure functions over cards and requests, like the rest of routing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

_MICRO = Decimal("0.000001")

if TYPE_CHECKING:
    from .catalog import ModelCard, QualityRecord, Route
    from .routing import Candidate, RoutingInput
    from .types import ImageRequest, QualityFloor


def effective_setting(card: ModelCard, request: ImageRequest) -> tuple[int | None, str | None]:
    """The steps and scheduler this route will actually run (request, else the card's defaults)."""
    return request.steps or card.defaults.steps, request.scheduler or card.defaults.scheduler


def recorded(card: ModelCard, request: ImageRequest, metric: str) -> QualityRecord | None:
    """The card's measured ``metric`` at the request's step setting; None when nothing was measured."""
    return next((q for q in _at_setting(card, request) if q.metric == metric), None)


def floor_reason(x: RoutingInput) -> str | None:
    """Eligibility: drop a route whose recorded quality is below a floor (or unmeasured, if excluded)."""
    for floor in x.constraints.min_quality:
        rec = recorded(x.route.card, x.request, floor.metric)
        steps, _ = effective_setting(x.route.card, x.request)
        at = f" at {steps} step(s)" if steps else ""
        if rec is None:
            if floor.unmeasured == "exclude":
                return f"no measured {floor.metric}{at} on the card (policy floor {floor.value})"
            continue
        if rec.value < floor.value:
            return f"{floor.metric} {rec.value}{at} is below the policy floor {floor.value}"
    return None


def meets_all(route: Route, request: ImageRequest, floors: tuple[QualityFloor, ...]) -> bool:
    """Known to meet every floor (a route only kept as ``rank_last`` is not)."""
    for f in floors:
        rec = recorded(route.card, request, f.metric)
        if rec is None or rec.value < f.value:
            return False
    return True


def rank_key(c: Candidate, request: ImageRequest, floors: tuple[QualityFloor, ...]) -> tuple[Any, ...]:
    """``cheapest_meeting_quality``: routes known to meet the floors first, then cost, then quality.

    Cost is the benchmark's measured cost at this step setting when the card records one (the same
    run measured every candidate, so they compare like with like), else the routing estimate.
    """
    metric = floors[0].metric if floors else "class_consistency"
    rec = recorded(c.route.card, request, metric)
    measured = measured_usd(c.route.card, request)
    est = measured if measured is not None else c.estimate_usd
    cost = float(est) if est is not None else float("inf")
    quality = rec.value if rec is not None else float("-inf")
    latency = c.expected_latency_s if c.expected_latency_s is not None else float("inf")
    return (not meets_all(c.route, request, floors), cost, -quality, latency)


def measured_usd(card: ModelCard, request: ImageRequest) -> Decimal | None:
    """The request's cost from a measured per-image time at this step setting (time-billed cards)."""
    p = card.pricing
    rate = p.usd_per_hour / 3600 if p.usd_per_hour is not None else p.usd_per_second
    for rec in _at_setting(card, request):
        if rec.expected_seconds is not None and rate is not None:
            return rate * Decimal(str(rec.expected_seconds)) * request.n
    return None


def _at_setting(card: ModelCard, request: ImageRequest) -> list[QualityRecord]:
    steps, scheduler = effective_setting(card, request)
    return [
        q
        for q in card.quality
        if (q.steps is None or q.steps == steps) and (q.scheduler is None or q.scheduler == scheduler)
    ]


def trade(route: Route, request: ImageRequest, estimate_usd: Decimal | None) -> dict[str, Any]:
    """What ``explain`` shows per candidate: cost per image against the measured quality."""
    steps, scheduler = effective_setting(route.card, request)
    per_image = None if estimate_usd is None else str((estimate_usd / request.n).quantize(_MICRO))
    measured = measured_usd(route.card, request)
    measured_per_image = None if measured is None else f"{measured / request.n:.9f}"
    quality = [
        {"metric": q.metric, "value": q.value, "source": q.source, "as_of": q.as_of.isoformat()}
        for q in _at_setting(route.card, request)
    ]
    return {"steps": steps, "scheduler": scheduler, "usd_per_image": per_image,
            "measured_usd_per_image": measured_per_image, "quality": quality}  # fmt: skip
