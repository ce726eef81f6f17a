"""Optional quality gates: near-duplicate removal (perceptual hash) and a user scoring hook.

Gates decide what is *listed*, never what is paid: a dropped image was bought, is kept in the build
folder's record (``dropped.jsonl``) and in the gateway's archive, and is not bought again on a rerun.
Dedupe runs over the finished items in plan order, so which of two near-twins is kept does not depend
on which worker finished first.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from typing import Any

Hook = Callable[[bytes, dict[str, Any]], float]


def phash(png: bytes) -> str:
    """64-bit DCT perceptual hash (``imagehash.phash``) as 16 hex digits."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.open(io.BytesIO(png))))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def load_hook(spec: str) -> Hook:
    """Import ``module:function``; a missing one is a usage error before anything is generated."""
    from ..errors import UsageError

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"quality hook {spec!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise UsageError(f"quality hook {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


class Deduper:
    """Keeps the hashes of listed images per label; ``seen`` says whether a new one is a near-twin."""

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self._kept: dict[str, list[str]] = {}

    def seen(self, label: str, h: str) -> str | None:
        for other in self._kept.get(label, ()):
            if hamming(h, other) <= self.max_distance:
                return other
        self._kept.setdefault(label, []).append(h)
        return None


__all__ = ["Deduper", "hamming", "load_hook", "phash"]
