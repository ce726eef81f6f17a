"""The request core's archive step: store what is returned, replay idempotent repeats, serve the cache.

The client shells call four hooks around the existing flow, so none of this logic lives in them:

``wait(job)``       before planning: a live, completed key returns its stored result (replay); a key
                    another request is working on is waited for; a different request under the
                    same key is a :class:`~gateway.errors.UsageError`.
``cached(run)``     after the policy allowed the request: a cache hit (seeded exact repeat) is
                    re-stamped from the archived original at cost 0; also refuses ``archive: off``
                    where no policy allows it.
``keep(run, res)``  before the result is returned: every image (and every edit input) goes into the
                    archive, a cacheable result gets its cache entry.
``complete`` / ``abandon``  after the audit write: the key's result document is recorded, or the key
                    is freed when the request failed.

Everything here is pure but for the archive and ledger calls; time comes from the core's clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, PolicyDenied, UsageError
from ..ledger.idempotency import MAX_KEY_LEN, KeyClaim, KeyState
from ..types import Attempt, Context, Decision, GeneratedImage, GenerationResult, ImageRequest
from .store import Archive, ArchiveError, LocalStore, NotArchived

if TYPE_CHECKING:
    from ..catalog import Route
    from ..core import _Core, _Run

US = 1_000_000
_log = logging.getLogger("gateway.archive")
SPOOL_DIR = "archive-spool"


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


class Keeper:
    """Archive, idempotency and cache logic for one :class:`~gateway.core._Core`."""

    def __init__(self, core: _Core, archive: Archive | None) -> None:
        self.core = core
        self.archive = archive
        s = core.settings
        self.idem = s.idempotency
        self.cache_settings = s.cache
        self.store_inputs = s.archive.store_inputs
        # A remote archive that fails must not cost a paid output: it is kept in a local spool under
        # the gateway home instead (and audited as such) until `gateway archive prune` uploads it.
        self.spool = (
            Archive(LocalStore(s.home / SPOOL_DIR)) if archive is not None and archive.blocking_io else None
        )
        if archive is None and not any(
            getattr(r, "kind", "") == "archive" and getattr(r, "allow_off", False) for r in core.policy.rules
        ):
            raise ConfigError(
                "archive: {url: off} needs a policy rule of kind 'archive' with allow_off: true"
            )

    @property
    def blocking_io(self) -> bool:
        return bool(self.archive is not None and self.archive.blocking_io) or self.core.ledger.blocking_io

    def _now(self) -> dt.datetime:
        return self.core.clock()

    # ------------------------------------------------------------------ idempotency keys

    def job(self, request: ImageRequest, context: Context, key: str | None, seed: int | None) -> Job | None:
        if key is None:
            return None
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LEN or not key.isprintable():
            raise UsageError(f"idempotency key must be 1..{MAX_KEY_LEN} printable characters")
        if self.archive is None:
            raise UsageError("idempotency keys need the archive (a replay returns images from it)")
        return Job(context.team, key, fingerprint(request, context, seed))

    def step(self, job: Job | None) -> Step:
        """One look at the key (the shells loop: ``wait`` means sleep ``poll_s`` and look again)."""
        if job is None:
            return ("run", None)
        state = self.core.ledger.key_state(job.team, job.key)
        return decide(job, state, int(self._now().timestamp() * US))

    def claim(self, job: Job | None, request_id: str) -> KeyClaim | None:
        return None if job is None else job.claim(request_id, self.idem.ttl_s, self.idem.lease_s)

    def replay(self, run: _Run, job: Job, doc: Mapping[str, Any]) -> GenerationResult:
        """The original result, images fetched byte-exact from the archive; audited as a replay."""
        images = []
        for d in doc["images"]:
            data = self.fetch(d["sha256"])
            images.append(
                GeneratedImage(
                    data,
                    int(d["width"]),
                    int(d["height"]),
                    d["mime"],
                    dict(d.get("metadata") or {}),
                    d["watermark"],
                    d["c2pa"],
                )
            )
        dec = doc.get("decision") or {}
        result = GenerationResult(
            request_id=doc["request_id"],
            images=tuple(images),
            provider=doc["provider"],
            model=doc["model"],
            seed=doc.get("seed"),
            cost_usd=Decimal(doc["cost_usd"]),
            estimated_cost_usd=Decimal(doc["estimated_cost_usd"]),
            latency_s=float(doc["latency_s"]),
            decision=Decision(
                True,
                tuple(dec.get("rule_ids", ())),
                tuple(dec.get("reasons", ())),
                policy_hash=dec.get("policy_hash", ""),
            ),
            attempts=tuple(Attempt(**a) for a in doc.get("attempts", ())),
            trace_id=doc.get("trace_id"),
            audit_seq=doc.get("audit_seq"),
            quarantined=tuple(doc.get("quarantined", ())),
            metadata=dict(doc.get("metadata") or {}),
            replayed=True,
            cache_hit=bool(doc.get("cache_hit", False)),
        )
        self.core.ledger.count_replay(job.team, job.key)
        self.core.record(
            run,
            "replayed",
            replay_request_id=run.plan.request_id,
            request_id=result.request_id,
            idempotency_key_sha256=_key_hash(job),
            provider=result.provider,
            model=result.model,
            cost_usd="0",
            original_cost_usd=str(result.cost_usd),
            original_audit_seq=result.audit_seq,
            image_sha256s=[i.sha256 for i in images],
        )
        return result

    def complete(self, run: _Run, result: GenerationResult) -> None:
        if run.claim is None:
            return
        if result.cache_hit:  # nothing was reserved, so nothing claimed the key yet
            try:
                self.core.ledger.claim_key(run.claim, self._now())
            except Exception:
                return
        self.core.ledger.complete_key(run.claim, result_doc(result), self._now())

    def abandon(self, run: _Run) -> None:
        if run.claim is not None:
            self.core.ledger.abandon_key(run.claim)

    # ------------------------------------------------------------------ archive

    def fetch(self, sha256: str) -> bytes:
        """Bytes from the archive, or from the local spool where a failed remote write left them."""
        assert self.archive is not None
        try:
            return self.archive.get(sha256)
        except (NotArchived, ArchiveError):
            if self.spool is None or not self.spool.has(sha256):
                raise
            return self.spool.get(sha256)

    def _put(self, run: _Run, data: bytes, **kw: Any) -> str:
        assert self.archive is not None
        try:
            return self.archive.put(data, **kw)
        except ArchiveError as exc:
            if self.spool is None:
                raise
            _log.warning("archive: %s; kept in the local spool instead", exc)
            run.spooled.append(str(exc))
            return self.spool.put(data, **kw)

    def keep(self, run: _Run, result: GenerationResult) -> GenerationResult:
        """Store every returned image and edit input before the result is returned."""
        if self.archive is None:
            return result
        now, ctx, rid = self._now(), run.plan.context, result.request_id
        for i, img in enumerate(result.images):
            self._put(
                run,
                img.data,
                kind="output",
                mime=img.mime,
                request_id=rid,
                team=ctx.team,
                now=now,
                extra={"provider": result.provider, "model": result.model, "index": i},
            )
        inputs: tuple[bytes, ...] = tuple(getattr(run.plan.request, "images", ()) or ())
        mask = getattr(run.plan.request, "mask", None)
        if self.store_inputs:
            for data in (*inputs, *((mask,) if isinstance(mask, bytes) else ())):
                self._put(run, data, kind="input", mime=_mime(data), request_id=rid, team=ctx.team, now=now)
        for rec in reversed(run.records):
            if rec["event"] == "request":
                rec["archive"] = self.archive.url
                if run.spooled:
                    rec["archive_spooled"] = True
                    rec["archive_error"] = run.spooled[0]
                if self.store_inputs and inputs:
                    rec["input_sha256s"] = [hashlib.sha256(d).hexdigest() for d in inputs]
                break
        if not result.cache_hit:
            self._remember(run, result)
        return result

    def keep_quarantined(self, run: _Run, raw: Sequence[bytes], quarantined: list[dict[str, Any]]) -> None:
        """Archive each quarantined image (kept out of the result, never discarded: it was paid for);
        its audit record then carries the sha256 an auditor fetches it by."""
        if self.archive is None:
            return
        ctx, now = run.plan.context, self._now()
        for q in quarantined:
            i = q.get("index")
            data = (
                q.pop("data", None)
                if "data" in q
                else (raw[i] if isinstance(i, int) and i < len(raw) else None)
            )
            if not isinstance(data, bytes):
                continue
            q["sha256"] = self._put(
                run,
                data,
                kind="quarantined",
                mime=_mime(data),
                request_id=run.plan.request_id,
                team=ctx.team,
                now=now,
                extra={"rule_id": q.get("rule_id")},
            )
            q["archive"] = self.archive.url

    # ------------------------------------------------------------------ result cache

    def _cache_policy(self, ctx: Context) -> tuple[bool, float, bool]:
        from ..policy.archive_rules import cache_rule_for

        rule = cache_rule_for(self.core.policy.rules, ctx)
        enabled = self.cache_settings.enabled if rule is None else rule.enabled
        ttl = self.cache_settings.ttl_s if rule is None or rule.ttl_s is None else rule.ttl_s
        return enabled, ttl, bool(rule is not None and rule.across_teams)

    def cache_key(self, run: _Run, route: Route) -> str | None:
        """The cache key of this request on ``route``, or None when it must not be cached."""
        if self.archive is None or run.seed_given is None:
            return None  # never without a seed the caller chose
        enabled, _ttl, across = self._cache_policy(run.plan.context)
        if not enabled:
            return None
        call = self.core.call_for(route, run.plan.request, "")
        ctx = run.plan.context
        return digest(
            {
                "route": route.key,
                "request": call.request.model_dump(),
                "options": call.options,
                "policy": run.plan.decision.policy_hash,
                "team": "*" if across else ctx.team,
            }
        )

    def cached(self, run: _Run) -> GenerationResult | None:
        """A re-stamped copy of a cached result, or None (also: refuse a forbidden ``archive: off``)."""
        if self.archive is None:
            from ..policy.archive_rules import archive_off_allowed

            if archive_off_allowed(self.core.policy.rules, run.plan.context) is None:
                raise PolicyDenied(
                    "the archive is off and no policy allows that for this request",
                    rule_ids=["archive.required"],
                    decision=run.plan.decision,
                )
            return None
        ranked = run.plan.routes.ranked
        if not ranked:
            return None
        route = ranked[0].route
        key = self.cache_key(run, route)
        if key is None:
            return None
        entry = self.archive.get_ref(f"cache/{key}")
        if entry is None or int(entry.get("expires_us", 0)) <= int(self._now().timestamp() * US):
            return None
        try:
            originals = [self.fetch(sha) for sha in entry["image_sha256s"]]
        except NotArchived:
            return None  # pruned: a miss, not an error
        return self._restamp(run, route, entry, originals)

    def _restamp(
        self, run: _Run, route: Route, entry: Mapping[str, Any], originals: list[bytes]
    ) -> GenerationResult:
        """New request id, new watermark payload, new C2PA manifest with the original as ingredient."""
        from ..backends.base import BackendResult, Usage

        core = self.core
        call = core.call_for(route, run.plan.request, run.plan.request_id)
        backend_result = BackendResult(
            tuple(originals),
            Usage(images=len(originals), elapsed_s=0.0),
            seed=entry.get("seed"),
            metadata=dict(entry.get("metadata") or {}),
        )
        processed = core.process_outputs(run, route, backend_result)
        result = core.finish(run, route, call, backend_result, processed, Decimal(0))
        for rec in reversed(run.records):
            if rec["event"] == "request":
                rec.update(
                    cache_hit=True,
                    cached_from_request_id=entry["request_id"],
                    cached_from_sha256s=list(entry["image_sha256s"]),
                )
                break
        return dataclasses.replace(
            result,
            cache_hit=True,
            metadata={**dict(result.metadata), "cached_from_request_id": entry["request_id"]},
        )

    def _remember(self, run: _Run, result: GenerationResult) -> None:
        assert self.archive is not None
        route = next(
            (
                c.route
                for c in run.plan.routes.ranked
                if c.route.provider == result.provider and c.route.model == result.model
            ),
            None,
        )
        if route is None or not result.images:
            return
        key = self.cache_key(run, route)
        if key is None:
            return
        _enabled, ttl, _across = self._cache_policy(run.plan.context)
        now_us = int(self._now().timestamp() * US)
        self.archive.put_ref(
            f"cache/{key}",
            {
                "request_id": result.request_id,
                "image_sha256s": [i.sha256 for i in result.images],
                "seed": result.seed,
                "provider": result.provider,
                "model": result.model,
                "stored_us": now_us,
                "expires_us": now_us + int(ttl * US),
                "team": run.plan.context.team,
                "metadata": canonical(dict(result.metadata)),
            },
        )


def _key_hash(job: Job) -> str:
    """Audit records carry the key's hash: a key may be a caller's secret-ish request token."""
    return hashlib.sha256(f"{job.team}\x00{job.key}".encode()).hexdigest()


def _mime(data: bytes) -> str:
    from ..outputs import sniff

    return sniff(data) or "application/octet-stream"
