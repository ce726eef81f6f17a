"""Pure helpers shared by the remote backends: redaction, Retry-After, error bodies, token counts,
sizes, image checks.

Nothing here does I/O, so the same code serves the sync and async paths and ``check()``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import re
import warnings
from collections.abc import Iterable, Mapping
from math import gcd
from typing import Any

from ..errors import BadResponse

# Shapes of secrets that must never reach a message, whatever the provider echoes back.
_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\br8_[A-Za-z0-9]{8,}"),  # Replicate API tokens
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"(?i)(signature=)[0-9a-f]{16,}"),
    re.compile(r"(?i)(x-amz-security-token[=:]\s*)\S+"),
    re.compile(r"(?i)(credential=)[^,\s]+"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # OpenAI API keys (sk-..., sk-proj-...)
    re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"),  # Google API keys
    re.compile(r"\bya29\.[0-9A-Za-z_.-]{8,}"),  # Google OAuth access tokens
    re.compile(r"(?i)(api-key[=:]\s*)\S+"),  # Azure's api-key header, echoed
)
MAX_MESSAGE = 300


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove known secrets and secret-shaped strings from ``text``; shorten it to a readable size."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0 if seconds == seconds else None
    return seconds


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms`` first (milliseconds, OpenAI and Google), then ``retry-after``."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    return parse_retry_after(headers.get("retry-after"))


def error_object(body: object) -> Mapping[str, Any]:
    """The ``error`` object of a JSON error answer (``{"error": {...}}`` or the bare object), else {}."""
    err = body.get("error", body) if isinstance(body, Mapping) else {}
    return err if isinstance(err, Mapping) else {}


# The four token counts a token-priced response reports (OpenAI ``usage``, Gemini ``usageMetadata``).
TOKEN_KEYS = ("input_text_tokens", "input_image_tokens", "output_image_tokens", "output_text_tokens")


def no_tokens() -> dict[str, int | None]:
    """Every count unknown (a response that said nothing)."""
    return dict.fromkeys(TOKEN_KEYS)


_THROTTLE_HINT = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


def retry_after_from_text(text: str | None) -> float | None:
    """Replicate's 429 detail says "Your rate limit resets in ~30s." when no header is present."""
    m = _THROTTLE_HINT.search(text or "")
    return float(m.group(1)) if m else None


# --------------------------------------------------------------------------- sizes

# Output sizes of the ~1 megapixel aspect-ratio models (FLUX on Replicate, Stability on Bedrock).
ASPECT_SIZES_1MP: Mapping[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
}


def aspect_ratio_for(width: int, height: int, allowed: Iterable[str]) -> str | None:
    """The allowed ratio name for ``width x height``: its nominal size, or the exact reduced ratio."""
    allowed = tuple(allowed)
    for name in allowed:
        if ASPECT_SIZES_1MP.get(name) == (width, height):
            return name
    g = gcd(width, height)
    exact = f"{width // g}:{height // g}"
    return exact if exact in allowed else None


# --------------------------------------------------------------------------- images

_MAGIC: tuple[tuple[str, bytes, int], ...] = (
    ("image/png", b"\x89PNG\r\n\x1a\n", 0),
    ("image/jpeg", b"\xff\xd8\xff", 0),
    ("image/webp", b"WEBP", 8),
)
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
DEFAULT_MAX_PIXELS = 4096 * 4096


def sniff_mime(data: bytes) -> str | None:
    """The image type from the first bytes (never from a header the server chose)."""
    for mime, magic, offset in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (mime != "image/webp" or data[:4] == b"RIFF"):
            return mime
    return None


def validate_image(
    data: bytes, *, provider: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[str, int, int]:
    """Check that ``data`` is one whole PNG/JPEG/WebP of sane size; return (mime, width, height).

    The dimensions are read from the header and refused above ``max_pixels`` before any pixel is
    decoded (Pillow's decompression-bomb guard is turned into an error too). Truncation is caught by
    the format's end marker and Pillow's ``verify()``; a full decode is left to the caller, who needs
    the pixels anyway. Raises :class:`BadResponse` (retryable: the output was unusable, not unknown).
    """
    from PIL import Image, UnidentifiedImageError

    mime = sniff_mime(data)
    if mime is None:
        raise BadResponse("output is not a PNG, JPEG or WebP image", provider=provider)
    if mime == "image/png" and not data.endswith(b"IEND\xaeB`\x82"):
        raise BadResponse("PNG output is truncated (no IEND chunk)", provider=provider)
    if mime == "image/jpeg" and b"\xff\xd9" not in data[-64:]:
        raise BadResponse("JPEG output is truncated (no end-of-image marker)", provider=provider)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]]) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise BadResponse(
                        f"output image is {width}x{height}, over the {max_pixels}-pixel limit",
                        provider=provider,
                    )
                img.verify()
    except BadResponse:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadResponse("output image is a decompression bomb", provider=provider) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadResponse(f"output image is corrupt ({type(exc).__name__})", provider=provider) from None
    return mime, width, height
