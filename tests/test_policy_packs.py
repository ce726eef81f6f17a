"""The shipped packs: they validate, the default serves every active model, the stricter packs do what
their names promise, and the default survives the evasion corpus with no false positive."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.catalog import Catalog, default_data_dir
from gateway.policy import PolicySet
from gateway.routing import plan_routes
from gateway.types import Context, Decision, ImageRequest

POLICIES = default_data_dir("policies")
DEFAULT = POLICIES / "default.yaml"
CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "policy_evasion.yaml").read_text(encoding="utf-8"))
TODAY = dt.date.today()


def pack(*names: str) -> PolicySet:
    return PolicySet.load([DEFAULT, *(POLICIES / f"{n}.yaml" for n in names)])


def ev(ps: PolicySet, prompt: str = "a handwritten 7", **ctx: Any) -> Decision:
    return ps.evaluate(ImageRequest(prompt=prompt), Context(**ctx))


def test_every_pack_loads_alone_after_the_default_and_all_together() -> None:
    names = [p.stem for p in sorted(POLICIES.glob("*.yaml")) if p.stem != "default"]
    assert set(names) >= {"marketing", "synthetic-data", "eu-residency"}
    for name in names:
        assert pack(name).rules
    assert len(pack(*names).rules) > len(PolicySet.default().rules)
    assert PolicySet.default().sources == (str(DEFAULT),)


# ----------------------------------------------------------------------------- default pack


def _active_routes(catalog: Catalog) -> list[Any]:
    return [r for r in catalog if r.lifecycle(TODAY) == "active"]


def test_default_pack_lets_every_active_model_serve_an_ordinary_request() -> None:
    catalog = Catalog.default()
    active = _active_routes(catalog)
    assert {r.provider for r in active} >= {"local"}
    ps = PolicySet.default()
    for route in active:
        req = ImageRequest(prompt="a handwritten 7", provider=route.provider, model=route.model)
        decision = ps.evaluate(req, Context())
        assert decision.allowed, (route.key, decision.reasons)
        plan = plan_routes(catalog, req, decision, today=TODAY, now=0.0)
        dropped = {c.route.key: c.reason for c in plan.candidates if not c.eligible}
        assert [c.route.key for c in plan.ranked] == [route.key], dropped.get(route.key)


def test_default_pack_denies_obvious_requests() -> None:
    ps = PolicySet.default()
    d = ev(ps, "a nude teenager")
    assert not d.allowed
    assert set(d.rule_ids) == {"minors-sexualised", "sexual-content"}
    assert d.reasons[0] == "minors-sexualised: prompt combines minors with sexual content"
    big = ps.evaluate(ImageRequest(prompt="a cat", n=9, width=4096, height=4096), Context())
    assert big.rule_ids == ("request-limits",)
    unsafe = ps.evaluate(ImageRequest(prompt="a cat", extras={"disable_safety_checker": True}), Context())
    assert not unsafe.allowed
    assert not ev(ps).capture_prompt
    assert ev(ps).constraints.exclude_end_of_life


@pytest.mark.parametrize("case", CORPUS["denied"], ids=lambda c: c["trick"])
def test_evasions_are_denied(case: dict[str, str]) -> None:
    d = ev(PolicySet.default(), case["prompt"])
    assert not d.allowed, case
    assert case["rule"] in d.rule_ids, (case, d.reasons)


@pytest.mark.parametrize("prompt", CORPUS["allowed"])
def test_innocent_look_alikes_are_allowed(prompt: str) -> None:
    d = ev(PolicySet.default(), prompt)
    assert d.allowed, d.reasons
    assert d.reasons == ()


def test_corpus_size() -> None:
    assert len(CORPUS["denied"]) >= 30
    assert len(CORPUS["allowed"]) >= 30
    assert len({c["trick"] for c in CORPUS["denied"]}) >= 20


# ----------------------------------------------------------------------------- marketing


def test_marketing_pack_only_touches_marketing() -> None:
    ps, base = pack("marketing"), PolicySet.default()
    other = ev(ps, use_case="research")
    assert other.constraints == ev(base).constraints
    assert other.provenance == ev(base).provenance
    assert other.budgets == ()
    assert not ps.needs_output_check(Context(use_case="research"))
    assert ev(ps, "a poster with Mickey Mouse", use_case="research").allowed


def test_marketing_pack_requirements() -> None:
    ps = pack("marketing")
    d = ev(ps, "a summer poster", use_case="marketing", team="brand", user="ann")
    assert d.allowed
    c, p = d.constraints, d.provenance
    assert (c.commercial_use_required, c.min_indemnity, c.exclude_legacy) == (True, "capped", True)
    assert (p.watermark_required, p.c2pa_required) == (True, True)
    assert [(b.id, b.scope_value) for b in d.budgets] == [("marketing-team-budget", "brand")]
    assert [(r.id, r.scope_value) for r in d.rate_limits] == [("marketing-user-rate", "ann")]
    assert ps.needs_output_check(Context(use_case="marketing"))
    assert ev(ps, "p1kachu on a beach ball", use_case="marketing").rule_ids == ("marketing-third-party-ip",)
    styled = ev(ps, "a poster in the style of Monet", use_case="marketing")
    assert styled.allowed  # monitor mode: reported, not enforced
    assert "marketing-artist-style" in styled.rule_ids
    assert styled.reasons[0].startswith("marketing-artist-style (monitor, not enforced)")


def test_marketing_routes_only_to_indemnified_commercial_models() -> None:
    catalog = Catalog.default()
    d = ev(pack("marketing"), "a summer poster", use_case="marketing")
    plan = plan_routes(catalog, ImageRequest(prompt="a summer poster"), d, today=TODAY, now=0.0)
    for cand in plan.ranked:
        card = cand.route.card
        assert card.licence.commercial_use
        assert card.indemnity.level in ("capped", "uncapped")
        assert cand.route.lifecycle(TODAY) == "active"
    assert "local/tiny-digits" not in {c.route.key for c in plan.ranked}  # no indemnity


# ----------------------------------------------------------------------------- synthetic data


def test_synthetic_data_pack() -> None:
    ps = pack("synthetic-data")
    d = ev(ps, "a handwritten 7", use_case="synthetic-data-ocr", project="digits")
    assert d.allowed
    assert d.capture_prompt is True
    assert (d.constraints.training_data_disclosure_required, d.constraints.commercial_use_required) == (
        True,
        True,
    )
    assert (d.provenance.watermark_required, d.provenance.on_missing) == (True, "deny")
    assert [(b.scope, b.scope_value) for b in d.budgets] == [("project", "digits")]
    assert ev(ps, "a handwritten 7").capture_prompt is False  # other use cases keep the default
    pii = ev(ps, "a badge for ann@example.com", use_case="synthetic-data")
    assert pii.rule_ids == ("synthetic-data-no-personal-data",)
    assert not ev(ps, "call +44 20 7946 0958", use_case="synthetic-data").allowed
    assert ev(ps, "a 1024x1024 digit from 1999", use_case="synthetic-data").allowed


# ----------------------------------------------------------------------------- EU residency


def test_eu_residency_pack() -> None:
    ps = pack("eu-residency")
    eu = ev(ps, tags=("eu-residency",))
    assert eu.constraints.allowed_regions == ("eu-*", "local")
    assert ev(ps).constraints.allowed_regions is None
    assert not ev(ps, "mail ann@example.eu", tags=("eu-residency",)).allowed
    catalog = Catalog.default()
    plan = plan_routes(catalog, ImageRequest(prompt="a handwritten 7"), eu, today=TODAY, now=0.0)
    assert plan.ranked
    for cand in plan.ranked:
        assert any(r == "local" or r.startswith("eu-") for r in cand.route.card.regions)
    assert any(c.reason and "outside the allowed" in c.reason for c in plan.candidates)


def test_eu_residency_rules_are_final(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    loosen = tmp_path / "loosen.yaml"
    loosen.write_text("version: 1\ndisable: [eu-residency-regions]\n")
    with pytest.raises(ConfigError, match="is final"):
        PolicySet.load([DEFAULT, POLICIES / "eu-residency.yaml", loosen])
