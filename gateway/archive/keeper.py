"""The request core's archive step: store what is returned, replay idempotent repeats, serve the cache.

The client shells call these hooks around the existing flow, so none of this logic lives in them:

``step(job)``       before planning: a live, completed key returns its stored result (replay); a key
                    another request is working on is waited for; a different request under the
                    same key is a :class:`~gateway.errors.UsageError` (see :mod:`.keys`).
``cached(run)``     after the policy allowed the request: a cache hit (seeded exact repeat) is
                    re-stamped from the archived original at cost 0 (see :mod:`.cache`); also refuses
                    ``archive: off`` where no policy allows it.
``keep(run, res)``  before the result is returned: every image (and every edit input) goes into the
                    archive, a cacheable result gets its cache entry.
``complete`` / ``abandon``  after the audit write: the key's result document is recorded, or the key
                    is freed when the request failed.

Everything here is pure but for the archive and ledger calls; time comes from the core's clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, UsageError
from ..ledger.idempotency import MAX_KEY_LEN, KeyClaim, KeyTaken
from ..types import Attempt, Context, Decision, GeneratedImage, GenerationResult, ImageRequest
from .cache import ResultCache
from .keys import Job, Step, canonical, decide, digest, fingerprint, given_seed, result_doc
from .store import Archive, ArchiveError, LocalStore, NotArchived

if TYPE_CHECKING:
    from ..core import _Core
    from ..run import _Run

US = 1_000_000
_log = logging.getLogger("gateway.archive")
SPOOL_DIR = "archive-spool"
__all__ = [
    "SPOOL_DIR",
    "Job",
    "Keeper",
    "canonical",
    "decide",
    "digest",
    "fingerprint",
    "given_seed",
    "result_doc",
]


class Keeper(ResultCache):
    """Archive, idempotency and cache logic for one :class:`~gateway.core._Core`."""

    def __init__(self, core: _Core, archive: Archive | None) -> None:
        self.core = core
        self.archive = archive
        s = core.settings
        self.idem = s.idempotency
        self.cache_settings = s.cache
        self.store_inputs = s.archive.store_inputs
        self._sync_lock = threading.Lock()
        self._sync_pool: ThreadPoolExecutor | None = None
        self._sync_pid = os.getpid()
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
            except KeyTaken:  # another request won the key meanwhile: its result stands
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
        puts: list[tuple[bytes, dict[str, Any]]] = [
            (img.data, {"kind": "output", "mime": img.mime,
                        "extra": {"provider": result.provider, "model": result.model, "index": i}})
            for i, img in enumerate(result.images)
        ]  # fmt: skip
        inputs: tuple[bytes, ...] = tuple(getattr(run.plan.request, "images", ()) or ())
        mask = getattr(run.plan.request, "mask", None)
        if self.store_inputs:
            for data in (*inputs, *((mask,) if isinstance(mask, bytes) else ())):
                puts.append((data, {"kind": "input", "mime": _mime(data)}))

        def put(item: tuple[bytes, dict[str, Any]]) -> str:
            return self._put(run, item[0], request_id=rid, team=ctx.team, now=now, **item[1])

        if not self.archive.blocking_io:
            # A local store: write every file now (so a full disk fails here, before the audit
            # record), fsync them in a worker while the caller appends the audit record, and join in
            # durable(): one disk wait per request instead of one per file plus the audit's.
            shas = [put((data, {**kw, "defer_sync": True})) for data, kw in puts]
            run.archive_sync = self._syncer().submit(self.archive.sync, shas)
        elif len(puts) > 1:
            # Remote stores: the images' round trips overlap (boto3 clients are thread-safe).
            with ThreadPoolExecutor(max_workers=min(8, len(puts)), thread_name_prefix="archive") as pool:
                list(pool.map(put, puts))
        else:
            for item in puts:
                put(item)
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

    def durable(self, run: _Run) -> None:
        """Wait until the archived files of ``run`` are on disk (see :meth:`keep`); raises
        :class:`~gateway.archive.store.ArchiveError` when they could not be made durable."""
        if run.archive_sync is not None:
            fut, run.archive_sync = run.archive_sync, None
            fut.result()

    async def adurable(self, run: _Run) -> None:
        """The awaited twin of :meth:`durable`: the event loop keeps serving other requests."""
        if run.archive_sync is not None:
            fut, run.archive_sync = run.archive_sync, None
            await asyncio.wrap_future(fut)

    def _syncer(self) -> ThreadPoolExecutor:
        with self._sync_lock:
            # A forked child inherits the pool object but not its threads: it makes its own.
            if self._sync_pool is None or self._sync_pid != os.getpid():
                self._sync_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="archive-sync")
                self._sync_pid = os.getpid()
            return self._sync_pool

    def close(self) -> None:
        """Finish pending fsyncs and stop the worker (the core closes the archive after this)."""
        with self._sync_lock:
            pool, self._sync_pool = self._sync_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def keep_failed(self, run: _Run, raw: Sequence[bytes], reason: str) -> str | None:
        """Archive the paid outputs of a request that failed after the backend call (kind
        ``quarantined``); best effort: the local quarantine already holds them, and the original error
        must reach the caller. Returns the archive URL, or None when nothing was archived."""
        if self.archive is None or not raw:
            return None
        ctx, now = run.plan.context, self._now()
        try:
            for i, data in enumerate(raw):
                self._put(run, data, kind="quarantined", mime=_mime(data), request_id=run.plan.request_id,
                          team=ctx.team, now=now, extra={"reason": reason[:200], "index": i})  # fmt: skip
        except Exception as exc:  # never mask the request's own error
            _log.warning("archive: paid outputs of a failed request not archived: %s", type(exc).__name__)
            return None
        return self.archive.url

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


def _key_hash(job: Job) -> str:
    """Audit records carry the key's hash: a key may be a caller's secret-ish request token."""
    return hashlib.sha256(f"{job.team}\x00{job.key}".encode()).hexdigest()


def _mime(data: bytes) -> str:
    from ..outputs import sniff

    return sniff(data) or "application/octet-stream"
