"""The opt-in result cache: a seeded exact repeat served from the archive at cost 0, re-stamped.

A mixin of :class:`~gateway.archive.keeper.Keeper` (it uses the keeper's core, archive and spool).
An entry lives at ``refs/cache/<key>.json`` in the archive and points at the original images; the key
covers the first-ranked route, the request after the card's defaults are filled (seed included), the
card's options, the policy hash and the team (``*`` where a ``cache`` rule allows ``across_teams``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import PolicyDenied
from ..types import Context, GenerationResult
from .keys import canonical, digest
from .store import Archive, NotArchived

if TYPE_CHECKING:
    from ..archive.settings import CacheSettings
    from ..catalog import Route
    from ..core import _Core
    from ..run import _Run

US = 1_000_000


class ResultCache:
    core: _Core
    archive: Archive | None
    cache_settings: CacheSettings

    def _now(self) -> dt.datetime:
        return self.core.clock()

    def fetch(self, sha256: str) -> bytes:
        raise NotImplementedError

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
