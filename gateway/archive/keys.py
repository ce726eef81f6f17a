"""Idempotency and cache keys: canonical request digests, and what to do about a key's ledger row.

Pure functions only (no I/O, no clock reads), shared by both client shells and the tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from ..errors import UsageError
from ..ledger.idempotency import KeyClaim, KeyState
from ..types import Context, GenerationResult, ImageRequest


def canonical(value: Any) -> Any:
    """JSON-ready form of a request value: bytes (input images, masks) become their sha256."""
    if isinstance(value, bytes | bytearray):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def digest(doc: Any) -> str:
    text = json.dumps(canonical(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(request: ImageRequest, context: Context, given_seed: int | None) -> str:
    """What a repeat under one key must match: the request as the caller asked it (the seed only if
    the caller chose it: an auto-drawn seed differs on every call) and the whole context."""
    req = request.model_dump()
    req["seed"] = given_seed
    return digest({"request": req, "context": context.model_dump()})


def given_seed(prompt_or_request: str | ImageRequest, options: Mapping[str, Any]) -> int | None:
    """The seed the caller chose, before the core draws one for an unseeded request."""
    if options.get("seed") is not None:
        return int(options["seed"])
    return prompt_or_request.seed if isinstance(prompt_or_request, ImageRequest) else None


@dataclass(frozen=True, slots=True)
class Job:
    """One keyed request as the keeper tracks it across waits and retries."""

    team: str
    key: str
    fingerprint: str

    def claim(self, request_id: str, ttl_s: float, lease_s: float = 900.0) -> KeyClaim:
        return KeyClaim(self.team, self.key, self.fingerprint, request_id, lease_s=lease_s, ttl_s=ttl_s)


Step = tuple[Literal["run", "wait", "replay"], Mapping[str, Any] | None]


def decide(job: Job, state: KeyState | None, now_us: int) -> Step:
    """What to do about ``job`` given the key's row: pure, so both shells (and tests) share it."""
    if state is None or not state.live(now_us):
        return ("run", None)
    if state.fingerprint != job.fingerprint:
        raise UsageError(
            f"idempotency key {job.key!r} was already used by team {job.team!r} for a different request"
            f" ({state.request_id}); use a new key for a new request"
        )
    if state.status == "done" and state.result is not None:
        return ("replay", state.result)
    return ("wait", None)


def result_doc(result: GenerationResult) -> dict[str, Any]:
    """What a replay is rebuilt from: the result without image bytes (those are in the archive)."""
    d = result.to_dict()
    d["images"] = [
        {
            "sha256": img.sha256,
            "width": img.width,
            "height": img.height,
            "mime": img.mime,
            "watermark": img.watermark,
            "c2pa": img.c2pa,
            "metadata": canonical(dict(img.metadata)),
        }
        for img in result.images
    ]
    d.pop("replayed", None)
    return d
