"""A missing optional extra is found while planning, before anything is reserved or called."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.testing import FakeBedrock

ROOT = Path(__file__).resolve().parent.parent
INSTALL_C2PA = "pip install 'diffusion-gateway[provenance]'"


def _hide(tmp_path: Path, *modules: str) -> Path:
    """A sitecustomize that makes ``modules`` uninstalled for the child interpreter (as in a venv that
    has only the base install and the bedrock extra): ``import`` fails and ``find_spec`` says None."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    )
    return site


def _env(fake: FakeBedrock, home: Path, site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OTEL_"))}
    env.update(
        PYTHONPATH=f"{site}{os.pathsep}{ROOT}",
        GATEWAY_HOME=str(home),
        AWS_ACCESS_KEY_ID=next(iter(fake.credentials)) if fake.credentials else "AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY=next(iter(fake.credentials.values())) if fake.credentials else "x",
        AWS_REGION="us-west-2",
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME=fake.url,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _gateway(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


ARGS = ("a red bicycle", "--provider", "bedrock", "--model", "stability.stable-image-core-v1:1")


def test_missing_c2pa_stops_before_any_reservation_or_call(tmp_path: Path) -> None:
    from gateway.testing import FAKE_AWS_KEY, FAKE_AWS_SECRET

    with FakeBedrock(credentials={FAKE_AWS_KEY: FAKE_AWS_SECRET}) as fake:
        env = _env(fake, tmp_path / "home", _hide(tmp_path, "c2pa"))
        env.update(AWS_ACCESS_KEY_ID=FAKE_AWS_KEY, AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET)
        proc = _gateway(env, "generate", *ARGS, "--json")
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert INSTALL_C2PA in [line.strip().removeprefix("error: ") for line in proc.stderr.splitlines()]
        assert proc.stdout == ""
        assert fake.requests == []  # Bedrock was never called
        ledger = tmp_path / "home" / "ledger.db"
        if ledger.exists():
            with sqlite3.connect(ledger) as db:
                assert db.execute("SELECT COUNT(*) FROM ledger_requests").fetchone() == (0,)

        explained = _gateway(env, "explain", *ARGS, "--json")
        assert explained.returncode == 0, explained.stderr
        plan = json.loads(explained.stdout)
        (cand,) = [c for c in plan["routing"]["candidates"] if c["route"].endswith("stable-image-core-v1:1")]
        assert not cand["eligible"] and INSTALL_C2PA in cand["reason"], cand


def test_missing_backend_client_is_a_usage_error_with_the_install_line(tmp_path: Path) -> None:
    from gateway.testing import FAKE_AWS_KEY, FAKE_AWS_SECRET

    with FakeBedrock(credentials={FAKE_AWS_KEY: FAKE_AWS_SECRET}) as fake:
        env = _env(fake, tmp_path / "home", _hide(tmp_path, "boto3"))
        env.update(AWS_ACCESS_KEY_ID=FAKE_AWS_KEY, AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET)
        proc = _gateway(env, "generate", *ARGS)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "pip install 'diffusion-gateway[bedrock]'" in proc.stderr
        assert fake.requests == []


def test_generate_raises_the_install_line_before_reserving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import Gateway
    from gateway.backends.mock import MockBackend
    from gateway.errors import UsageError
    from gateway.preflight import MissingExtra

    monkeypatch.setitem(sys.modules, "c2pa", None)  # as if the provenance extra were not installed
    mock = MockBackend()
    with Gateway(backends={"local": mock}) as gw:
        plan = gw.explain("a handwritten 7")
        assert not plan.routes.ranked
        with pytest.raises(MissingExtra) as info:
            gw.generate("a handwritten 7")
        assert isinstance(info.value, UsageError) and info.value.exit_code == 2
        assert str(info.value) == INSTALL_C2PA
        assert "c2pa" in info.value.detail
        assert mock.calls == []
        assert gw._core.ledger.report(by=["route"]) == []


def test_install_line_lists_every_missing_extra() -> None:
    from gateway.preflight import install_line

    line = install_line(["provenance", "bedrock", "bedrock"])
    assert line == "pip install 'diffusion-gateway[bedrock,provenance]'"
