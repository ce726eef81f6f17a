"""Every rule kind: a case that denies (or constrains) and a case that allows."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.policy import PolicySet, register_classifier, unregister_classifier
from gateway.types import Budget, Context, Decision, ImageRequest, RateLimit


def policy(rules: str) -> PolicySet:
    return PolicySet.from_text("version: 1\nrules:\n" + textwrap.indent(textwrap.dedent(rules), "  "))


def ev(ps: PolicySet, prompt: str = "a handwritten 7", ctx: Context | None = None, **req: Any) -> Decision:
    return ps.evaluate(ImageRequest(prompt=prompt, **req), ctx or Context())


# ----------------------------------------------------------------------------- blocklist


BLOCK = """
- id: words
  kind: blocklist
  terms: [nude, "nudist*", "*phile", "blow job"]
  allow: [naked eye, "nude lipstick"]
"""


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        ("a NUDE study", "nude"),
        ("nudists on a beach", "nudist*"),
        ("a pedophile", "*phile"),
        ("a blow job", "blow job"),
        ("nude lipstick and a nude model", "nude"),  # the allowed phrase does not cover the second one
    ],
)
def test_blocklist_denies(prompt: str, term: str) -> None:
    d = ev(policy(BLOCK), prompt)
    assert not d.allowed
    assert d.rule_ids == ("words",)
    assert d.reasons == (f"words: prompt contains blocked term {term!r}",)


@pytest.mark.parametrize("prompt", ["Nudeln", "a blowing wind", "nude lipstick", "a stars to the naked eye"])
def test_blocklist_allows(prompt: str) -> None:
    assert ev(policy(BLOCK), prompt).allowed


def test_blocklist_message_and_monitor() -> None:
    ps = policy(
        """
        - id: quiet
          kind: blocklist
          terms: [secret]
          message: not allowed here
        - id: watch
          kind: blocklist
          terms: [castle]
          monitor: true
        """
    )
    assert ev(ps, "a secret").reasons == ("quiet: not allowed here",)
    watched = ev(ps, "a castle")
    assert watched.allowed
    assert watched.rule_ids == ("watch",)
    assert watched.reasons == ("watch (monitor, not enforced): prompt contains blocked term 'castle'",)
    both = ev(ps, "a secret castle")
    assert not both.allowed
    assert both.rule_ids == ("quiet",)


def test_every_matching_rule_is_reported() -> None:
    ps = policy(
        """
        - {id: a, kind: blocklist, terms: [red]}
        - {id: b, kind: blocklist, terms: [blue]}
        - {id: c, kind: limits, max_images: 1}
        - {id: d, kind: blocklist, terms: [green]}
        """
    )
    d = ev(ps, "red and blue", n=2)
    assert d.rule_ids == ("a", "b", "c")
    assert len(d.reasons) == 3
    assert d.policy_hash == ps.hash


# ----------------------------------------------------------------------------- regex


def test_regex_normalized_sees_evasions_and_respects_allow() -> None:
    ps = policy(
        r"""
        - id: combo
          kind: regex
          patterns: ['\bchild\b.*\blingerie\b']
          allow: [child safety lingerie campaign]
        """
    )
    assert not ev(ps, "a CH1LD in L1NGERIE").allowed  # leetspeak, decoded for regex rules too
    assert not ev(ps, "a child in l i n g e r i e").allowed
    assert ev(ps, "a child in a coat").allowed
    assert ev(ps, "our child safety lingerie campaign poster").allowed
    assert ev(ps, "a child in a coat").reasons == ()


def test_regex_raw_target() -> None:
    ps = policy(
        r"""
        - id: email
          kind: regex
          target: raw
          patterns: ['[\w.+-]+@[\w-]+\.\w+']
          message: no personal data
        """
    )
    d = ev(ps, "a card for jane.doe@example.com")
    assert not d.allowed
    assert d.reasons == ("email: no personal data",)
    assert ev(ps, "a card with an @ sign").allowed


def test_regex_allow_needs_normalized_target() -> None:
    with pytest.raises(ConfigError, match=r"<policy>:\d+: .*allow phrases apply to normalized text"):
        policy("- {id: r, kind: regex, target: raw, patterns: [x], allow: [y]}")


# ----------------------------------------------------------------------------- limits


LIMITS = """
- id: lim
  kind: limits
  max_images: 2
  max_width: 512
  max_height: 256
  max_pixels: 100000
  schedulers: [ddim, euler]
  min_steps: 4
  max_steps: 50
  max_guidance_scale: 10
  max_prompt_chars: 30
  allowed_extras: ["style*", quality, disable_safety_checker]
  denied_extras: [disable_safety_checker]
"""


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        ({"n": 3}, "n=3 exceeds 2 images"),
        ({"width": 640}, "width 640 exceeds 512"),
        ({"height": 320}, "height 320 exceeds 256"),
        ({"width": 512, "height": 256}, "512x256 exceeds 100000 pixels"),
        ({"scheduler": "ddpm"}, "scheduler 'ddpm' is not one of ['ddim', 'euler']"),
        ({"steps": 2}, "steps 2 below 4"),
        ({"steps": 60}, "steps 60 exceeds 50"),
        ({"guidance_scale": 12.5}, "guidance_scale 12.5 exceeds 10"),
        ({"prompt": "x" * 31}, "prompt is 31 characters, limit 30"),
        ({"extras": {"seed_mode": 1}}, "extras ['seed_mode'] are not allowed"),
        ({"extras": {"disable_safety_checker": True}}, "extras ['disable_safety_checker'] are not allowed"),
    ],
)
def test_limits_deny(req: dict[str, Any], fragment: str) -> None:
    prompt = req.pop("prompt", "a handwritten 7")
    d = ev(policy(LIMITS), prompt, **req)
    assert not d.allowed
    assert d.rule_ids == ("lim",)
    assert fragment in d.reasons[0]


def test_limits_allow_within_bounds_and_unset_values() -> None:
    ps = policy(LIMITS)
    assert ev(ps, n=2, width=256, height=256, scheduler="ddim", steps=20, guidance_scale=3.0,
              extras={"style_preset": "x", "quality": "hd"}).allowed  # fmt: skip
    assert ev(ps).allowed  # unset sizes are bounded by the provider card, not here


def test_limits_refuse_inverted_steps() -> None:
    with pytest.raises(ConfigError, match="min_steps is greater than max_steps"):
        policy("- {id: l, kind: limits, min_steps: 10, max_steps: 5}")


def test_empty_allowed_extras_forbids_all() -> None:
    ps = policy("- {id: l, kind: limits, allowed_extras: []}")
    assert not ev(ps, extras={"anything": 1}).allowed
    assert ev(ps).allowed


# ----------------------------------------------------------------------------- static effects


def test_route_constraints_merge_most_restrictive() -> None:
    ps = policy(
        """
        - id: org
          kind: route
          allowed_regions: ["eu-*", "us-*", local]
          denied_providers: [replicate]
          min_indemnity: capped
          max_cost_usd: "0.50"
          exclude_end_of_life: false
        - id: team
          kind: route
          when: {team: growth}
          allowed_regions: ["eu-west-*", local, "ap-*"]
          denied_providers: [bedrock]
          min_indemnity: none
          commercial_use_required: true
          max_cost_usd: 0.2
        """
    )
    org = ev(ps).constraints
    assert org.allowed_regions == ("eu-*", "us-*", "local")
    assert org.min_indemnity == "capped"
    assert org.max_cost_usd == Decimal("0.50")
    assert org.exclude_end_of_life is False
    assert org.commercial_use_required is False
    growth = ev(ps, ctx=Context(team="growth"))
    c = growth.constraints
    assert c.allowed_regions == ("eu-west-*", "local")  # "ap-*" is not allowed by the org rule
    assert c.denied_providers == ("replicate", "bedrock")
    assert c.min_indemnity == "capped"  # a narrower rule cannot lower it
    assert c.commercial_use_required is True
    assert c.max_cost_usd == Decimal("0.2")
    assert growth.rule_ids == ("org", "team")
    assert growth.allowed


def test_glob_intersection_fails_closed_when_unprovable() -> None:
    ps = policy(
        """
        - {id: a, kind: route, allowed_models: ["*-large*"]}
        - {id: b, kind: route, allowed_models: ["stability.*"]}
        """
    )
    assert ev(ps).constraints.allowed_models == ()


def test_route_defaults_when_no_rule() -> None:
    c = ev(policy("- {id: p, kind: privacy, capture_prompt: false}")).constraints
    assert c.allowed_providers is None
    assert c.exclude_end_of_life is True


def test_provenance_merge() -> None:
    ps = policy(
        """
        - {id: wm, kind: provenance, watermark_required: true}
        - {id: c2pa, kind: provenance, when: {use_case: marketing}, c2pa_required: true, on_missing: deny}
        - {id: soft, kind: provenance, when: {use_case: marketing}, on_missing: quarantine}
        """
    )
    p = ev(ps).provenance
    assert (p.watermark_required, p.c2pa_required, p.on_missing) == (True, False, "quarantine")
    p = ev(ps, ctx=Context(use_case="marketing")).provenance
    assert (p.watermark_required, p.c2pa_required, p.on_missing) == (True, True, "deny")


def test_budgets_and_rate_limits_resolve_scope_values() -> None:
    ps = policy(
        """
        - {id: org-month, kind: budget, scope: org, period: month, limit_usd: "1000"}
        - {id: team-day, kind: budget, scope: team, period: day, limit_usd: 25.5, warn_at: 0.5}
        - {id: vip, kind: budget, when: {user: "*@vip.example"}, scope: user, period: week, limit_usd: 5}
        - {id: per-user, kind: rate_limit, scope: user, requests: 10, per: minute}
        """
    )
    d = ev(ps, ctx=Context(team="growth", user="ann"))
    assert d.budgets == (
        Budget("org-month", "org", "*", "month", Decimal("1000")),
        Budget("team-day", "team", "growth", "day", Decimal("25.5"), 0.5),
    )
    assert d.rate_limits == (RateLimit("per-user", "user", "ann", 10, "minute"),)
    vip = ev(ps, ctx=Context(user="bo@vip.example"))
    assert [b.id for b in vip.budgets] == ["org-month", "team-day", "vip"]
    assert vip.budgets[2].scope_value == "bo@vip.example"


def test_privacy_explicit_false_wins() -> None:
    ps = policy(
        """
        - {id: everyone, kind: privacy, when: {team: "*"}, capture_prompt: true}
        - {id: hr, kind: privacy, when: {team: hr}, capture_prompt: false}
        """
    )
    assert ev(ps, ctx=Context(team="data")).capture_prompt is True
    assert ev(ps, ctx=Context(team="hr")).capture_prompt is False
    assert ev(policy("- {id: r, kind: limits, max_images: 4}")).capture_prompt is False


# ----------------------------------------------------------------------------- scope


def test_scope_globs_tags_and_unless() -> None:
    ps = policy(
        """
        - id: s
          kind: blocklist
          terms: [castle]
          when: {team: ["growth-*", brand], project: "p?", tags: ["eu-*"]}
          unless: {user: "admin@*"}
        """
    )
    hit = Context(team="growth-emea", project="p1", tags=("x", "eu-residency"))
    assert not ev(ps, "a castle", ctx=hit).allowed
    assert not ev(ps, "a castle", ctx=hit.model_copy(update={"team": "brand"})).allowed
    for miss in (
        hit.model_copy(update={"team": "Growth-emea"}),  # case-sensitive
        hit.model_copy(update={"project": "p10"}),
        hit.model_copy(update={"tags": ("us",)}),
        hit.model_copy(update={"user": "admin@corp"}),
    ):
        assert ev(ps, "a castle", ctx=miss).allowed, miss


# ----------------------------------------------------------------------------- classifiers


class _Scores:
    def __init__(self, score: float, calls: list[int]) -> None:
        self.score, self.calls = score, calls

    def scores(self, items: Sequence[Any]) -> list[float]:
        self.calls.append(len(items))
        if self.score < 0:
            raise RuntimeError("model exploded")
        return [self.score for _ in items]


@pytest.fixture
def fake_classifiers() -> Iterator[dict[str, list[int]]]:
    built: dict[str, list[int]] = {"image": [], "text": [], "image-built": [], "text-built": []}

    def image() -> _Scores:
        built["image-built"].append(1)
        return _Scores(0.7, built["image"])

    def text() -> _Scores:
        built["text-built"].append(1)
        return _Scores(0.95, built["text"])

    register_classifier("test-image", "image", image, requires=("json",))
    register_classifier("test-text", "text", text)
    register_classifier("test-broken", "image", lambda: _Scores(-1, []))
    register_classifier("test-missing", "image", image, requires=("no_such_module_xyz",))
    yield built
    for name in ("test-image", "test-text", "test-broken", "test-missing"):
        unregister_classifier(name)


def test_prompt_classifier(fake_classifiers: dict[str, list[int]]) -> None:
    ps = policy("- {id: tox, kind: prompt_classifier, classifier: test-text, threshold: 0.9}")
    assert fake_classifiers["text-built"] == []  # loading a policy builds nothing
    d = ev(ps, "anything")
    assert not d.allowed
    assert d.reasons == ("tox: prompt classifier 'test-text' scored 0.95 (threshold 0.9)",)
    assert ev(policy("- {id: tox, kind: prompt_classifier, classifier: test-text, threshold: 0.99}")).allowed
    assert fake_classifiers["text-built"] == [1]  # built once, cached


def _png(color: tuple[int, int, int] = (200, 200, 200), size: int = 256) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def test_output_classifier_quarantine_and_deny(fake_classifiers: dict[str, list[int]]) -> None:
    ps = policy(
        """
        - {id: q, kind: output_classifier, classifier: test-image, threshold: 0.5}
        - {id: strict, kind: output_classifier, classifier: test-image, threshold: 0.6, action: deny,
           when: {use_case: marketing}}
        - {id: lax, kind: output_classifier, classifier: test-image, threshold: 0.9}
        """
    )
    img = [_png(), _png((10, 10, 10))]
    d = ev(ps)
    found = ps.check_outputs(img, d, Context())
    assert [(f.index, f.rule_id, f.action) for f in found] == [(0, "q", "quarantine"), (1, "q", "quarantine")]
    assert found[0].score == pytest.approx(0.7)
    assert "test-image score 0.70 >= threshold 0.5" in found[0].reason
    mk = Context(use_case="marketing")
    assert {(f.rule_id, f.action) for f in ps.check_outputs(img, d, mk)} == {
        ("q", "quarantine"),
        ("strict", "deny"),
    }
    assert fake_classifiers["image"] == [2, 2]  # one scoring pass per call, shared by the rules


def test_output_check_does_nothing_without_rules(fake_classifiers: dict[str, list[int]]) -> None:
    ps = policy(
        """
        - {id: q, kind: output_classifier, classifier: test-image, when: {use_case: marketing}}
        """
    )
    assert ps.check_outputs([_png()], ev(ps), Context()) == []
    assert not ps.needs_output_check(Context())
    assert ps.needs_output_check(Context(use_case="marketing"))
    assert fake_classifiers["image-built"] == []
    assert ps.check_outputs([], ev(ps), Context(use_case="marketing")) == []


def test_output_classifier_fails_closed(fake_classifiers: dict[str, list[int]]) -> None:
    ps = policy("- {id: q, kind: output_classifier, classifier: test-broken, action: deny}")
    found = ps.check_outputs([_png()], ev(ps), Context())
    assert [(f.rule_id, f.action, f.score) for f in found] == [("q", "deny", 1.0)]
    assert "failed (RuntimeError)" in found[0].reason


def test_classifier_names_and_packages_are_checked_at_load(fake_classifiers: dict[str, list[int]]) -> None:
    with pytest.raises(
        ConfigError, match=r"<policy>:5: rules.0.output_classifier.classifier: .*unknown image"
    ):
        policy("- id: q\n  kind: output_classifier\n  classifier: nope\n")
    with pytest.raises(ConfigError, match="unknown text classifier 'test-image'"):
        policy("- {id: q, kind: prompt_classifier, classifier: test-image}")
    with pytest.raises(ConfigError, match=r"needs the Python module 'no_such_module_xyz'.*\[safety\]"):
        policy("- {id: q, kind: output_classifier, classifier: test-missing}")


def test_real_nsfw_classifier_on_a_generated_image() -> None:
    """The shipped open_nsfw weights, run for real: a flat grey image is safe; threshold 0 flags all."""
    ps = policy(
        """
        - {id: nsfw, kind: output_classifier, classifier: nsfw, threshold: 0.5}
        - {id: all, kind: output_classifier, classifier: nsfw, threshold: 0.0, when: {use_case: audit-all}}
        """
    )
    img = [_png((180, 190, 200))]
    assert ps.check_outputs(img, ev(ps), Context()) == []
    found = ps.check_outputs(img, ev(ps), Context(use_case="audit-all"))
    assert [f.rule_id for f in found] == ["all"]
    assert 0.0 <= found[0].score < 0.5


def test_real_profanity_classifier() -> None:
    ps = policy("- {id: prof, kind: prompt_classifier, classifier: profanity, threshold: 0.9}")
    assert ev(ps, "a handwritten 7").allowed
    d = ev(ps, "f u c k this stupid idiot")  # decoded before scoring
    assert not d.allowed
    assert d.rule_ids == ("prof",)
