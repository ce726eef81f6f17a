"""Items and requests, derived from a spec alone: deterministic, so any rerun finds the same ids.

Request ``j`` of a label covers images ``j*k .. j*k+k-1`` (``k = images_per_request``); its
idempotency key is ``dataset:<digest16>:<label>:<j>`` and its seed is derived from the spec seed,
the label and ``j``. Image ``i`` of a label has the id ``<label>-<i:06d>-<digest8>`` and a split
drawn from a hash of (digest, label, i): the same item lands in the same split on every machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .spec import ClassSpec, DatasetSpec


@dataclass(frozen=True, slots=True)
class ImageItem:
    id: str
    label: str
    index: int
    split: str


@dataclass(frozen=True, slots=True)
class RequestItem:
    """One generate call: ``n`` images of one label with a fixed prompt and seed."""

    key: str
    label: str
    j: int
    prompt: str
    negative_prompt: str | None
    seed: int
    images: tuple[ImageItem, ...]

    @property
    def n(self) -> int:
        return len(self.images)

    def to_task(self) -> dict[str, Any]:
        """What a worker needs (plain data: crosses process and Ray boundaries)."""
        return {
            "key": self.key,
            "label": self.label,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "n": self.n,
        }


def _unit(*parts: object) -> float:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_of(spec: DatasetSpec, label: str, index: int) -> str:
    u = _unit(spec.digest, "split", label, index)
    acc = 0.0
    names = sorted(spec.split)
    for name in names:
        acc += spec.split[name]
        if u < acc:
            return name
    return names[-1]


def _requests_for(spec: DatasetSpec, cls: ClassSpec) -> list[RequestItem]:
    k = spec.images_per_request
    digest = spec.digest
    out = []
    for j in range((cls.count + k - 1) // k):
        idx = range(j * k, min(cls.count, (j + 1) * k))
        images = tuple(
            ImageItem(f"{cls.label}-{i:06d}-{digest[:8]}", cls.label, i, split_of(spec, cls.label, i))
            for i in idx
        )
        seed = int(_unit(digest, "seed", spec.seed, cls.label, j) * 2**32) % 2**32
        out.append(
            RequestItem(
                key=f"dataset:{digest[:16]}:{cls.label}:{j}",
                label=cls.label,
                j=j,
                prompt=cls.prompts[j % len(cls.prompts)],
                negative_prompt=cls.negative_prompt,
                seed=seed,
                images=images,
            )
        )
    return out


def plan(spec: DatasetSpec) -> list[RequestItem]:
    """Every request of the build, interleaved across labels so a partial build stays balanced."""
    per_label = [_requests_for(spec, c) for c in spec.classes]
    out: list[RequestItem] = []
    for j in range(max(len(r) for r in per_label)):
        out.extend(r[j] for r in per_label if j < len(r))
    return out


__all__ = ["ImageItem", "RequestItem", "plan", "split_of"]
