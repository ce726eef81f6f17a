"""Cost from a provider card: an estimate before the call, the actual figure after. Pure functions.

Money is ``Decimal`` quantized to micro-dollars; estimates round up (a budget must never be
under-reserved), actuals round half-even.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_UP, Decimal

from ..backends.base import Usage
from ..catalog import ImageTier, Route
from ..editing import priced_route
from ..types import ImageRequest

MICRO = Decimal("0.000001")


def to_micros(usd: Decimal) -> int:
    return int((usd / MICRO).to_integral_value(rounding=ROUND_UP))


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) * MICRO).quantize(MICRO)


def image_tier(route: Route, width: int, height: int, quality: str = "standard") -> ImageTier | None:
    """The cheapest tier of ``quality`` that covers ``width × height`` (None if the card has none)."""
    pixels = width * height
    fits = [t for t in route.card.pricing.per_image
            if t.quality == quality and (t.max_pixels is None or pixels <= t.max_pixels)]  # fmt: skip
    return min(fits, key=lambda t: t.usd) if fits else None


def _size(route: Route, request: ImageRequest) -> tuple[int, int]:
    d = route.card.defaults
    return request.width or d.width, request.height or d.height


def _quality(route: Route, request: ImageRequest) -> str:
    """The tier key: the request's ``quality`` as the card maps it (``extras.quality`` still counts)."""
    from ..quality import pricing_quality

    asked = request.quality
    if asked is None and "quality" in request.extras:
        asked = str(request.extras["quality"])
        table = route.card.capabilities.qualities
        if table is None or asked not in table:
            return asked  # a provider word passed through extras, as before quality was a field
    return pricing_quality(route.card, asked)


def _by_time(route: Route, seconds: float) -> Decimal:
    p = route.card.pricing
    if p.unit == "second" and p.usd_per_second is not None:
        return p.usd_per_second * Decimal(repr(seconds))
    if p.unit == "hour" and p.usd_per_hour is not None:
        return p.usd_per_hour * Decimal(repr(seconds)) / Decimal(3600)
    raise ValueError(f"{route.key}: pricing unit {p.unit} is not time-based")


def estimate_cost(route: Route, request: ImageRequest, expected_seconds: float | None = None) -> Decimal:
    """What this request will cost on ``route``, rounded up to the micro-dollar.

    Time-billed routes use ``expected_seconds`` (from observed history) or the card's conservative
    default; per-image routes multiply the tier price by the image count.
    """
    route = priced_route(route, request)  # an edit may be priced apart (capabilities.edit.pricing)
    p = route.card.pricing
    if p.unit == "token":
        from .tokens import estimate_tokens_cost

        usd = estimate_tokens_cost(route, request, *_size(route, request))
    elif p.unit == "image":
        w, h = _size(route, request)
        quality = _quality(route, request)
        tier = image_tier(route, w, h, quality)
        if tier is None:
            raise ValueError(f"{route.key}: no price tier covers {w}x{h} at quality {quality!r}")
        usd = tier.usd * request.n
    else:
        usd = _by_time(route, expected_seconds if expected_seconds is not None else p.expected_seconds)
    return usd.quantize(MICRO, rounding=ROUND_UP)


def actual_cost(route: Route, request: ImageRequest, usage: Usage) -> Decimal:
    """What the call cost, from the provider's own figures (images returned, predict time)."""
    route = priced_route(route, request)
    p = route.card.pricing
    if p.unit == "token":
        from .tokens import actual_tokens_cost

        usd = actual_tokens_cost(route, request, usage, *_size(route, request))
    elif p.unit == "image":
        w, h = _size(route, request)
        tier = image_tier(route, w, h, _quality(route, request))
        usd = (tier.usd if tier else Decimal(0)) * usage.images
    else:
        seconds = usage.predict_time_s if usage.predict_time_s is not None else usage.elapsed_s
        usd = _by_time(route, seconds)
    return usd.quantize(MICRO, rounding=ROUND_HALF_EVEN)
