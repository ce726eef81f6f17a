"""``gateway verify`` and ``gateway keys``: exit codes, stdout discipline, files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from provenance_support import digit_image, encode, flip_byte, jpeg_copy, photo, png_chunk_offset

from gateway.cli import main
from gateway.provenance import Provenance, ProvenanceInfo


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    pv = Provenance(home)
    info = ProvenanceInfo("req-cli", "local", "tiny-digits", 1, "cd" * 32)
    stamped = pv.stamp(encode(digit_image()), info=info, watermark=True, c2pa=True).data
    paths = {
        "home": home,
        "stamped": tmp_path / "stamped.png",
        "q75": tmp_path / "copy-q75.jpg",
        "photo": tmp_path / "photo.png",
        "flipped": tmp_path / "flipped.png",
    }
    paths["stamped"].write_bytes(stamped)
    paths["q75"].write_bytes(jpeg_copy(stamped, 75))
    paths["photo"].write_bytes(encode(photo()))
    paths["flipped"].write_bytes(flip_byte(stamped, png_chunk_offset(stamped, b"IDAT") + 50))
    return paths


def test_verify_ok_json(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["verify", str(files["stamped"]), str(files["q75"]), "--json", "--home", str(files["home"])], capsys
    )
    assert code == 0, err
    doc = json.loads(out)  # stdout is exactly one JSON object
    assert doc["ok"] is True
    first, second = doc["images"]
    assert first["watermark"]["found"] is True
    assert first["c2pa"]["state"] == "valid"
    assert first["c2pa"]["active_manifest"]["actions"] == ["c2pa.created", "c2pa.watermarked.bound"]
    assert second["watermark"]["found"] is True
    assert second["c2pa"]["state"] == "absent"


def test_unmarked_photo_exits_6(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["verify", str(files["photo"]), "--json", "--home", str(files["home"])], capsys)
    assert code == 6
    assert json.loads(out)["ok"] is False
    assert "1 of 1 image(s) failed verification" in err


def test_flipped_byte_exits_6_with_invalid_c2pa(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["verify", str(files["flipped"]), "--home", str(files["home"])], capsys)
    assert code == 6
    assert "c2pa: invalid" in out
    assert "assertion.dataHash.mismatch" in out


def test_trust_and_policy_options(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("require_c2pa: trusted\nrequire_watermark: true\n")
    base = ["verify", str(files["stamped"]), "--home", str(files["home"]), "--policy", str(policy)]
    code, out, _ = run(base, capsys)
    assert code == 6
    assert "policy requires a trusted C2PA manifest" in out
    root = files["home"] / "keys" / "c2pa-root.pem"
    code, out, _ = run([*base, "--trust", str(root), "--request-id", "req-cli"], capsys)
    assert code == 0
    assert "c2pa: trusted" in out
    assert "request binding: matches" in out
    policy.write_text("require_c2pa: sometimes\n")
    code, _, err = run(base, capsys)
    assert code == 2
    assert f"{policy}:1:" in err


def test_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, _ = run(["verify", str(tmp_path / "nope.png")], capsys)
    assert code == 2


def test_keys_init_show_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    code, out, err = run(["keys", "init", "--home", str(home), "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert len(doc["created"]) == 4
    assert doc["development"] is True
    code, out, err = run(["keys", "init", "--home", str(home)], capsys)
    assert "keys already exist" in out
    assert "DEVELOPMENT chain" in err
    code, out, _ = run(["keys", "show", "--home", str(home)], capsys)
    assert code == 0
    assert doc["watermark_key_id"] in out
    assert "diffusion-gateway development signer" in out
    assert (home / "keys" / "watermark.key").read_text().strip() not in out
    code, out, _ = run(["keys", "init", "--home", str(home), "--force"], capsys)
    assert out.count("retired  ") == 4
    assert len(list((home / "keys" / "retired").iterdir())) == 4
