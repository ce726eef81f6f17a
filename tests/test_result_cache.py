"""The opt-in result cache: a seeded exact repeat is served from the archive at cost 0, re-stamped.

Real provenance (watermark + c2pa-python signing), real SQLite ledger and audit log, MockBackend route.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from archive_support import Counting, ledger_rows, make

from gateway.config import Settings
from gateway.provenance.c2pa_sign import read as read_c2pa


def _cache_on(settings: Settings, ttl_s: float = 3600) -> Settings:
    return settings.model_copy(
        update={"cache": settings.cache.model_copy(update={"enabled": True, "ttl_s": ttl_s})}
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def _nonce(img: object) -> str:
    return str(img.metadata["provenance"]["watermark"]["nonce"])  # type: ignore[attr-defined]


def test_a_seeded_repeat_is_a_cache_hit_at_cost_zero_and_re_stamped(settings: Settings) -> None:
    fn = Counting()
    with make(_cache_on(settings), fn) as gw:
        first = gw.generate("a lighthouse", seed=7, team="design")
        hit = gw.generate("a lighthouse", seed=7, team="design")
        assert fn.calls == 1 and hit.cache_hit and not first.cache_hit
        assert hit.cost_usd == 0 and hit.request_id != first.request_id and not hit.replayed
        assert hit.to_dict()["cache_hit"] is True
        # a new output: new watermark payload, new manifest whose ingredient is the cached original
        assert hit.images[0].data != first.images[0].data
        assert _nonce(hit.images[0]) != _nonce(first.images[0])
        assert hit.images[0].watermark == "embedded" and hit.images[0].c2pa == "signed"
        manifest = read_c2pa(hit.images[0].data, "image/png")
        assert manifest.active is not None and len(manifest.ingredients) == 1
        assert hit.metadata["cached_from_request_id"] == first.request_id
        # paid once; the hit is audited as one, and its image is archived like any other output
        assert [r[1] for r in ledger_rows(gw)] == ["settled"]
        rec = gw._core.audit.get(hit.audit_seq)  # type: ignore[arg-type]
        assert rec is not None and rec["event"] == "request" and rec["cache_hit"] is True
        assert rec["cost_usd"] == "0" and rec["cached_from_request_id"] == first.request_id
        assert gw._core.keeper.archive.get(hit.images[0].sha256) == hit.images[0].data  # type: ignore[union-attr]


def test_never_without_a_seed_and_never_when_off(settings: Settings) -> None:
    fn = Counting()
    with make(_cache_on(settings), fn) as gw:
        gw.generate("a boat")
        assert not gw.generate("a boat").cache_hit
    with make(settings, fn) as gw:  # default: off
        gw.generate("a boat", seed=1)
        assert not gw.generate("a boat", seed=1).cache_hit
    assert fn.calls == 4


def test_different_parameters_or_policy_miss(settings: Settings, tmp_path: Path) -> None:
    fn = Counting()
    s = _cache_on(settings)
    with make(s, fn) as gw:
        gw.generate("a boat", seed=1)
        assert not gw.generate("a boat", seed=1, width=320).cache_hit
        assert not gw.generate("a boat", seed=2).cache_hit
        assert not gw.generate("a boat", seed=1, n=2).cache_hit
    pol = tmp_path / "extra.yaml"
    pol.write_text("version: 1\nrules:\n  - id: quiet\n    kind: privacy\n    capture_prompt: false\n")
    with make(s.model_copy(update={"policies": (*s.policy_paths, pol)}), fn) as gw:
        assert not gw.generate("a boat", seed=1).cache_hit  # another policy hash
    assert fn.calls == 5


def test_entries_expire(settings: Settings) -> None:
    now = [dt.datetime(2026, 12, 1, tzinfo=dt.UTC)]
    fn = Counting()
    with make(_cache_on(settings, ttl_s=60), fn, clock=lambda: now[0]) as gw:
        gw.generate("a boat", seed=1)
        now[0] += dt.timedelta(seconds=59)
        assert gw.generate("a boat", seed=1).cache_hit
        now[0] += dt.timedelta(seconds=2)
        assert not gw.generate("a boat", seed=1).cache_hit
    assert fn.calls == 2


def test_never_across_teams_unless_a_policy_allows_it(settings: Settings, tmp_path: Path) -> None:
    fn = Counting()
    with make(_cache_on(settings), fn) as gw:
        gw.generate("a boat", seed=1, team="red")
        assert not gw.generate("a boat", seed=1, team="blue").cache_hit
    pol = tmp_path / "shared.yaml"
    pol.write_text("version: 1\nrules:\n  - id: shared-cache\n    kind: cache\n    across_teams: true\n")
    with make(settings.model_copy(update={"policies": (*settings.policy_paths, pol)}), fn) as gw:
        gw.generate("a boat", seed=1, team="red")
        assert gw.generate("a boat", seed=1, team="blue").cache_hit
    assert fn.calls == 3


def test_a_policy_rule_enables_the_cache_per_use_case(settings: Settings, tmp_path: Path) -> None:
    pol = tmp_path / "cache.yaml"
    pol.write_text("version: 1\nrules:\n  - id: synthetic-cache\n    kind: cache\n    ttl_s: 600\n"
                   "    when: {use_case: [synthetic]}\n")  # fmt: skip
    fn = Counting()
    with make(settings.model_copy(update={"policies": (*settings.policy_paths, pol)}), fn) as gw:
        gw.generate("a boat", seed=1, use_case="synthetic")
        assert gw.generate("a boat", seed=1, use_case="synthetic").cache_hit
        gw.generate("a boat", seed=1)
        assert not gw.generate("a boat", seed=1).cache_hit  # use case "general": no rule, cache off
    assert fn.calls == 3


def test_a_cache_hit_under_an_idempotency_key_replays_as_the_hit(settings: Settings) -> None:
    fn = Counting()
    with make(_cache_on(settings), fn) as gw:
        gw.generate("a boat", seed=1)
        hit = gw.generate("a boat", seed=1, idempotency_key="k")
        again = gw.generate("a boat", seed=1, idempotency_key="k")
    assert hit.cache_hit and again.replayed and again.request_id == hit.request_id and fn.calls == 1
    assert [i.data for i in again.images] == [i.data for i in hit.images]
