"""Composition of several policy files: documented precedence, final rules, disable, content hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy import PolicySet
from gateway.types import Context, ImageRequest

ORG = """\
version: 1
name: org
rules:
  - id: words
    kind: blocklist
    terms: [castle, dragon]
  - id: regions
    kind: route
    allowed_regions: ["eu-*", local]
  - id: safety
    kind: blocklist
    final: true
    terms: [forbidden]
  - id: limits
    kind: limits
    max_images: 2
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def allowed(ps: PolicySet, prompt: str, **ctx: str) -> bool:
    return ps.evaluate(ImageRequest(prompt=prompt), Context(**ctx)).allowed


def test_later_file_overrides_rule_by_id_in_place(tmp_path: Path) -> None:
    team = write(
        tmp_path, "team.yaml", "version: 1\nrules:\n  - {id: words, kind: blocklist, terms: [dragon]}\n"
    )
    ps = PolicySet.load([write(tmp_path, "org.yaml", ORG), team])
    assert [r.id for r in ps.rules] == ["words", "regions", "safety", "limits"]  # position kept
    assert allowed(ps, "a castle")  # the team's version replaced the org's
    assert not allowed(ps, "a dragon")
    assert ps.sources == (str(tmp_path / "org.yaml"), str(team))
    placed = ps.placed[0]
    assert (placed.source, placed.line) == (str(team), 3)


def test_order_of_files_matters(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "version: 1\nrules:\n  - {id: x, kind: limits, max_images: 1}\n")
    b = write(tmp_path, "b.yaml", "version: 1\nrules:\n  - {id: x, kind: limits, max_images: 4}\n")
    req = ImageRequest(prompt="p", n=3)
    assert PolicySet.load([a, b]).evaluate(req, Context()).allowed
    assert not PolicySet.load([b, a]).evaluate(req, Context()).allowed


def test_distinct_rules_only_narrow(tmp_path: Path) -> None:
    team = write(
        tmp_path,
        "team.yaml",
        "version: 1\nrules:\n"
        "  - {id: team-regions, kind: route, when: {team: t}, allowed_regions: [us-east-1, local]}\n",
    )
    ps = PolicySet.load([write(tmp_path, "org.yaml", ORG), team])
    c = ps.evaluate(ImageRequest(prompt="p"), Context(team="t")).constraints
    assert c.allowed_regions == ("local",)  # us-east-1 is outside the org's eu-* + local


def test_disable_removes_earlier_rules(tmp_path: Path) -> None:
    team = write(tmp_path, "team.yaml", "version: 1\ndisable: [words, limits]\n")
    ps = PolicySet.load([write(tmp_path, "org.yaml", ORG), team])
    assert [r.id for r in ps.rules] == ["regions", "safety"]
    assert allowed(ps, "a castle")
    assert ps.evaluate(ImageRequest(prompt="p", n=5), Context()).allowed


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("version: 1\nrules:\n  - {id: safety, kind: blocklist, terms: [x]}\n", 3, "is final"),
        ("version: 1\ndisable:\n  - words\n  - safety\n", 4, "is final"),
        ("version: 1\ndisable: [nope]\n", 2, "no earlier rule has id 'nope'"),
    ],
)
def test_final_and_unknown_ids_are_errors(tmp_path: Path, text: str, line: int, message: str) -> None:
    org = write(tmp_path, "org.yaml", ORG)
    team = write(tmp_path, "team.yaml", text)
    with pytest.raises(ConfigError, match=message) as err:
        PolicySet.load([org, team])
    assert str(err.value).startswith(f"{team}:{line}: ")
    if "final" in message:
        assert f"{org}:" in str(err.value)  # says where the final rule was set


def test_duplicate_id_in_one_file(tmp_path: Path) -> None:
    text = "version: 1\nrules:\n" + "  - {id: a, kind: limits, max_images: 1}\n" * 2
    with pytest.raises(
        ConfigError, match=r"dup.yaml:4: rules.1.id: duplicate rule id 'a' \(first defined on line 3\)"
    ):
        PolicySet.load([write(tmp_path, "dup.yaml", text)])


def test_directory_means_its_yaml_files_in_name_order(tmp_path: Path) -> None:
    d = tmp_path / "packs"
    d.mkdir()
    write(d, "10-org.yaml", ORG)
    write(d, "20-team.yaml", "version: 1\ndisable: [words]\n")
    write(d, "notes.txt", "not yaml")
    ps = PolicySet.load([d])
    assert [Path(s).name for s in ps.sources] == ["10-org.yaml", "20-team.yaml"]
    assert allowed(ps, "a castle")
    with pytest.raises(ConfigError, match="no policy files given"):
        PolicySet.load([tmp_path / "empty-dir-does-not-exist"][:0])


def test_hash_is_content_based(tmp_path: Path) -> None:
    a = PolicySet.from_text(ORG)
    reformatted = (
        ORG.replace("terms: [castle, dragon]", "terms:\n      - castle\n      - dragon") + "# a comment\n"
    )
    assert PolicySet.from_text(reformatted).hash == a.hash  # layout and comments do not count
    assert PolicySet.from_text(ORG.replace("dragon", "wyvern")).hash != a.hash
    assert PolicySet.from_text(ORG, "version: 1\ndisable: [words]\n").hash != a.hash
    loaded = PolicySet.load([write(tmp_path, "org.yaml", ORG)])
    assert loaded.hash == a.hash  # where the text came from does not count either
    d = loaded.evaluate(ImageRequest(prompt="a castle"), Context())
    assert d.policy_hash == a.hash
    assert len(a.hash) == 64


def test_decisions_are_cached_per_context_but_prompt_checks_still_run() -> None:
    ps = PolicySet.from_text(ORG)
    first = ps.evaluate(ImageRequest(prompt="a bridge"), Context())
    assert ps.evaluate(ImageRequest(prompt="a bridge"), Context()) is first  # static part reused
    assert not ps.evaluate(ImageRequest(prompt="a castle"), Context()).allowed
