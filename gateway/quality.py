"""Request ``quality`` -> the word one model takes, as its provider card maps it. Pure.

Callers say ``low | medium | high | auto`` or a provider's own word (``standard``, ``premium``, ``hd``);
each card lists which of those it honours and what it sends for them (``capabilities.qualities``), so
"high" becomes ``high`` for GPT-image models, ``hd`` for DALL·E 3 and ``premium`` for Nova Canvas. A
card without that list has no quality choice and honours only ``auto``. Routing drops a card that
cannot honour the asked quality (with the reason), and pricing looks up tiers and expected tokens
under the provider's word, so the estimate and the call always agree on what was asked.
"""

from __future__ import annotations

from .catalog import ModelCard

QUALITY_WORDS: tuple[str, ...] = ("low", "medium", "high", "auto")


def provider_quality(card: ModelCard, asked: str | None) -> str | None:
    """The word to send for ``asked`` (the card's default when None); None = send no quality.

    Raises ``ValueError`` when the card cannot honour ``asked``; :func:`quality_reason` says why first.
    """
    if asked is None:
        return card.defaults.quality
    table = card.capabilities.qualities
    if table is None:
        if asked == "auto":
            return card.defaults.quality
        raise ValueError(f"has no quality choice (asked {asked!r})")
    word = table.get(asked)
    if word is None:
        raise ValueError(f"does not offer quality {asked!r} (has {', '.join(sorted(table))})")
    return word


def quality_reason(card: ModelCard, asked: str | None) -> str | None:
    """Why ``card`` cannot honour ``asked``, or None."""
    try:
        provider_quality(card, asked)
    except ValueError as exc:
        return str(exc)
    return None


def pricing_quality(card: ModelCard, asked: str | None) -> str:
    """The quality key for price tiers and expected tokens (``standard`` where nothing is sent)."""
    try:
        word = provider_quality(card, asked)
    except ValueError:
        word = None
    return word or "standard"


__all__ = ["QUALITY_WORDS", "pricing_quality", "provider_quality", "quality_reason"]
