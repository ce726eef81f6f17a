"""``gateway api-keys ...`` then ``gateway serve``, end to end, as a user runs them.

The server is a real subprocess on the embedded default (the shipped tiny-digits model, the default
policy pack, SQLite under $GATEWAY_HOME); the caller is the official openai client. SIGTERM stops it
cleanly (exit 0).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
from pathlib import Path

import openai
import pytest
from cli_support import GATEWAY, gateway_serve
from click.testing import CliRunner
from PIL import Image

from gateway.cli import cli


def run_cli(*args: str) -> dict[str, object]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out: dict[str, object] = json.loads(res.stdout)
    return out


def test_api_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    made = run_cli("api-keys", "create", "--name", "web", "--team", "design", "--use-case", "concept-art",
                   "--budget-usd", "2.50", "--budget-period", "month", "--json")  # fmt: skip
    secret = str(made["secret"])
    assert secret.startswith("gwk_")
    assert float(str(made["budget_usd"])) == 2.5
    listed = run_cli("api-keys", "list", "--json")
    assert [k["name"] for k in listed["keys"]] == ["web"]  # type: ignore[index,union-attr]
    assert secret not in json.dumps(listed)
    db = (Path(os.environ["GATEWAY_HOME"]) / "ledger.db").read_bytes()
    assert secret.encode() not in db
    assert secret.split("_", 2)[-1].encode() not in db  # only a salted hash is stored
    again = subprocess.run([*GATEWAY, "api-keys", "create", "--name", "web", "--team", "x"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 2
    assert "exists" in again.stderr
    assert again.stdout == ""
    assert run_cli("api-keys", "revoke", "web", "--json")["revoked"]
    assert run_cli("api-keys", "list", "--json")["keys"] == []
    gone = subprocess.run([*GATEWAY, "api-keys", "revoke", "web"], capture_output=True, timeout=120)
    assert gone.returncode == 2


def test_serve_the_embedded_default_to_the_openai_client(tmp_path: Path) -> None:
    secret = str(run_cli("api-keys", "create", "--name", "e2e", "--team", "design", "--json")["secret"])
    with gateway_serve() as base_url, openai.OpenAI(base_url=base_url, api_key=secret, max_retries=0) as c:
        raw = c.images.with_raw_response.generate(prompt="a handwritten 7", model="tiny-digits", size="64x64")
        img = Image.open(io.BytesIO(base64.b64decode(raw.parse().data[0].b64_json or "")))
        assert img.size == (64, 64)
        assert raw.headers["x-gateway-route"] == "local/tiny-digits"
        assert int(raw.headers["x-gateway-audit-seq"]) >= 1
        assert {m.id for m in c.models.list().data} >= {"local/tiny-digits"}
        with pytest.raises(openai.BadRequestError, match="digit"):
            c.images.generate(prompt="a lighthouse", model="tiny-digits")
    verify = CliRunner().invoke(cli, ["audit", "verify"])
    assert verify.exit_code == 0, verify.output
