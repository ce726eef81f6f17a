"""The CLI contract: exit codes, one JSON object on stdout with --json, FILE:LINE errors, explain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import COMMANDS, main

REPO = Path(__file__).resolve().parent.parent


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(args)
        code = int(rc or 0)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command_without_importing_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for name in COMMANDS:
        assert name in out
    probe = (
        "import contextlib, io, sys\nfrom gateway.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('gateway.') and m.split('.')[1] in "
        "('client', 'policy', 'ledger', 'audit', 'provenance', 'backends')))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import gateway

    code, out, _ = run(["--version"], capsys)
    assert code == 0 and gateway.__version__ in out


def test_generate_json_prints_exactly_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(["generate", "a handwritten 2", "-n", "2", "--seed", "5", "--out", str(out_dir),
                          "--json", "--team", "qa"], capsys)  # fmt: skip
    assert code == 0, err
    obj = json.loads(out)  # the whole of stdout is one JSON document
    assert out.count("\n") == 1
    assert obj["provider"] == "local" and obj["model"] == "tiny-digits" and obj["seed"] == 5
    assert len(obj["images"]) == 2
    for img in obj["images"]:
        p = Path(img["path"])
        assert p.is_file() and p.parent == out_dir
        import hashlib

        assert hashlib.sha256(p.read_bytes()).hexdigest() == img["sha256"]
    for key in ("cost_usd", "latency_s", "trace_id", "audit_seq", "watermark", "c2pa", "decision"):
        assert key in obj
    assert "generating 2 images" in err  # progress goes to stderr


def test_prompt_without_a_digit_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["generate", "a cat", "--provider", "local", "--json"], capsys)
    assert code == 2 and out == ""
    assert "exactly one digit" in err


def test_denial_exits_3_with_rule_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["generate", "a n.u.d.e 7", "--json"], capsys)
    assert code == 3 and out == ""
    assert "rule ids: sexual-content" in err


def test_budget_exceeded_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = tmp_path / "b.yaml"
    pol.write_text("version: 1\nrules:\n  - id: zero\n    kind: budget\n    scope: org\n    period: day\n"
                   "    limit_usd: '0'\n")  # fmt: skip
    code, _, err = run(["generate", "seven", "--policy", str(REPO / "policies/default.yaml"),
                          "--policy", str(pol)], capsys)  # fmt: skip
    assert code == 4, err
    assert "zero" in err


def test_bad_policy_file_is_file_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = tmp_path / "bad.yaml"
    pol.write_text(
        "version: 1\nrules:\n  - id: x\n    kind: blocklist\n    terms: nope-not-a-list\n    bogus: 1\n"
    )
    code, _, err = run(["generate", "seven", "--policy", str(pol)], capsys)
    assert code == 2
    assert f"{pol}:" in err and "Traceback" not in err


def test_bad_config_file_is_file_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("routing:\n  strategy: fastest\n  max_routes: zero\n")
    code, _, err = run(["explain", "seven", "--config", str(cfg)], capsys)
    assert code == 2
    assert f"{cfg}:3:" in err


def test_explain_under_marketing_shows_why_each_route_was_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["explain", "a lighthouse", "--use-case", "marketing", "--json",
                        "--policy", str(REPO / "policies/default.yaml"),
                        "--policy", str(REPO / "policies/marketing.yaml")], capsys)  # fmt: skip
    assert code == 0
    plan = json.loads(out)
    assert plan["route"] == "bedrock/amazon.titan-image-generator-v2:0"
    reasons = {c["route"]: c["reason"] for c in plan["routing"]["candidates"]}
    assert "end of life since 2026-09-30" in reasons["bedrock/amazon.nova-canvas-v1:0"]
    assert "commercial" in reasons["replicate/black-forest-labs/flux-dev"]
    assert "indemnity" in reasons["replicate/black-forest-labs/flux-schnell"]
    assert all(r is not None for k, r in reasons.items() if k != plan["route"])


def test_providers_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["providers", "--json"], capsys)
    assert code == 0
    rows = {r["route"]: r for r in json.loads(out)["providers"]}
    assert rows["bedrock/amazon.nova-canvas-v1:0"]["status"] == "end_of_life"
    assert rows["bedrock/amazon.titan-image-generator-v2:0"]["indemnity"] == "uncapped"
    assert rows["local/tiny-digits"]["status"] == "active"
    code, out, _ = run(["providers"], capsys)
    assert code == 0 and "tiny-digits" in out and "indemnity" in out


def test_console_script_runs_as_installed(tmp_path: Path) -> None:
    """The real entry point in a subprocess: exit codes survive process boundaries."""
    env = {**os.environ, "GATEWAY_HOME": str(tmp_path / "h")}
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "explain", "seven", "--json"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["route"] == "local/tiny-digits"
    denied = subprocess.run([sys.executable, "-m", "gateway.cli", "generate", "n-u-d-e 7"], env=env,
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert denied.returncode == 3
