"""Token-priced cost: the estimate from a card's expected tokens, the actual from the provider's counts.

Pure functions, used by :mod:`gateway.ledger.pricing` for cards with ``pricing.unit: token``
(OpenAI GPT-image, Gemini image models). ``cost = (text_in x p_text + image_in x p_image_in +
image_out x p_image_out + text_out x p_text_out) / 1e6``.

The estimate must be an upper bound, because the budget reserves it: output image tokens come from
the card's table for the size and quality (with ``auto`` priced at the card's dearest row for that
size), and text input tokens are bounded by the prompt's UTF-8 byte count (no tokenizer emits more
tokens than bytes), counted once per image because some providers bill the prompt per call, an edit's
input images at the card's ``capabilities.edit.input_image_tokens`` (also per image), and never
below the card's per-image fallback tier (the settle charges it when no usage comes back). When a
response carries no usage at all, the card's per-image tier (or, failing that, the expected
tokens of one image) is the fallback, and :func:`cost_basis` says so for the audit record.
"""

from __future__ import annotations

from decimal import Decimal

from ..backends.base import Usage
from ..catalog import ExpectedTokens, Pricing, Route, TokenPrices
from ..editing import expected_input_tokens
from ..quality import pricing_quality
from ..types import ImageRequest

MILLION = Decimal(1_000_000)


def _prices(p: Pricing) -> TokenPrices:
    if p.usd_per_million_tokens is None:  # the card validator makes this unreachable
        raise ValueError("pricing unit 'token' needs usd_per_million_tokens")
    return p.usd_per_million_tokens


def expected_image_tokens(route: Route, width: int, height: int, quality: str) -> int:
    """Output image tokens for one image: the smallest row of ``quality`` covering the size.

    ``auto`` lets the provider pick, so without an ``auto`` row it is priced at the dearest quality's
    row for the size (an upper bound).
    """
    pixels = width * height
    rows = route.card.pricing.expected_tokens

    def covering(candidates: tuple[ExpectedTokens, ...]) -> list[ExpectedTokens]:
        return [r for r in candidates if r.max_pixels is None or pixels <= r.max_pixels]

    def smallest(q: str) -> ExpectedTokens | None:
        fits = covering(tuple(r for r in rows if r.quality == q))
        return min(fits, key=lambda r: r.max_pixels or 1 << 62) if fits else None

    row = smallest(quality)
    if row is not None:
        return row.output_image_tokens
    if quality == "auto":  # the dearest quality's row for this size
        per_quality = [r for q in {r.quality for r in rows} if (r := smallest(q)) is not None]
        if per_quality:
            return max(r.output_image_tokens for r in per_quality)
    raise ValueError(f"{route.key}: no expected token count covers {width}x{height} at quality {quality!r}")


def token_cost(
    prices: TokenPrices,
    *,
    text_in: int = 0,
    image_in: int = 0,
    image_out: int = 0,
    text_out: int = 0,
) -> Decimal:
    usd = (
        text_in * prices.text_input
        + image_in * prices.image_input
        + image_out * prices.image_output
        + text_out * prices.text_output
    )
    return usd / MILLION


def estimate_tokens_cost(route: Route, request: ImageRequest, width: int, height: int) -> Decimal:
    """Upper bound for ``request`` on a token-priced ``route`` (not yet rounded)."""
    p = route.card.pricing
    quality = pricing_quality(route.card, request.quality)
    per_image = expected_image_tokens(route, width, height, quality)
    prompt_bytes = len(request.prompt.encode()) + len((request.negative_prompt or "").encode())
    image_in = expected_input_tokens(route, request) * request.n
    usd = token_cost(_prices(p), text_in=prompt_bytes * request.n, image_in=image_in,
                     image_out=per_image * request.n)  # fmt: skip
    # The settle may fall back to the per-image tier (no usage reported): reserve that too.
    from .pricing import image_tier

    tier = image_tier(route, width, height, quality)
    return max(usd, tier.usd * request.n) if tier is not None else usd


def has_token_usage(usage: Usage) -> bool:
    return any(
        v is not None
        for v in (
            usage.input_text_tokens,
            usage.input_image_tokens,
            usage.output_image_tokens,
            usage.output_text_tokens,
        )
    )


def actual_tokens_cost(route: Route, request: ImageRequest, usage: Usage, width: int, height: int) -> Decimal:
    """From the provider's counts; without any, the per-image fallback (see :func:`cost_basis`)."""
    p = route.card.pricing
    if has_token_usage(usage):
        return token_cost(
            _prices(p),
            text_in=usage.input_text_tokens or 0,
            image_in=usage.input_image_tokens or 0,
            image_out=usage.output_image_tokens or 0,
            text_out=usage.output_text_tokens or 0,
        )
    from .pricing import image_tier

    quality = pricing_quality(route.card, request.quality)
    tier = image_tier(route, width, height, quality)
    if tier is not None:
        return tier.usd * usage.images
    per_image = expected_image_tokens(route, width, height, quality)
    return token_cost(_prices(p), image_out=per_image) * usage.images


def cost_basis(route: Route, usage: Usage) -> str:
    """How the actual cost was computed, for the audit record: tokens, per_image_fallback, image, time."""
    unit = route.card.pricing.unit
    if unit == "token":
        return "tokens" if has_token_usage(usage) else "per_image_fallback"
    return "image" if unit == "image" else "time"


def usage_tokens(usage: Usage) -> dict[str, int]:
    """The reported token counts (only those present), for audit records and the ledger."""
    fields = {
        "input_text_tokens": usage.input_text_tokens,
        "input_image_tokens": usage.input_image_tokens,
        "output_image_tokens": usage.output_image_tokens,
        "output_text_tokens": usage.output_text_tokens,
    }
    return {k: v for k, v in fields.items() if v is not None}


__all__ = [
    "actual_tokens_cost",
    "cost_basis",
    "estimate_tokens_cost",
    "expected_image_tokens",
    "has_token_usage",
    "token_cost",
    "usage_tokens",
]
