"""Dataset manifests (hashing, safe decoding, Merkle digest, tamper detection) and the licence gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit.merkle import inclusion_proof, verify_inclusion
from gateway.errors import PolicyDenied
from gateway.finetune.digits_style import write_bold_digits
from gateway.finetune.manifest import (
    MANIFEST_FILE,
    DatasetError,
    build_manifest,
    check_manifest,
    leaves,
    write_manifest,
)
from gateway.policy import PolicySet
from gateway.policy.training_data import check_training_data, evaluate_training_data
from gateway.types import Context


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_bold_digits(tmp_path / "bold", per_class=2)


def _gateway(*args: str, env_home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "GATEWAY_HOME": str(env_home)}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def test_manifest_hashes_every_file_and_is_deterministic(dataset: Path) -> None:
    m = build_manifest(dataset)
    assert len(m.files) == 20
    assert m.labels == tuple(str(d) for d in range(10))
    assert m.licence_summary() == {"CC-BY-4.0": 20}
    assert all(len(f.sha256) == 64 and f.width == 16 and f.mode == "L" for f in m.files)
    assert build_manifest(dataset).digest == m.digest
    # Every file is provably in the dataset: an RFC 6962 inclusion proof against the digest.
    lv = leaves(m.spec_sha256, m.files)
    root = bytes.fromhex(m.digest)
    assert all(verify_inclusion(lv[i], i, len(lv), inclusion_proof(lv, i), root) for i in (0, 1, len(lv) - 1))


@pytest.mark.parametrize("edit", ["flip_byte", "move_label", "yaml"])
def test_any_change_changes_the_digest_and_is_detected(dataset: Path, edit: str) -> None:
    m = build_manifest(dataset)
    write_manifest(dataset, m)
    f = next(p for p in sorted((dataset / "3").glob("*.png")))
    if edit == "flip_byte":
        from PIL import Image

        img = Image.open(f)
        px = img.load()
        assert px is not None
        px[0, 0] = (int(px[0, 0]) + 1) % 256  # type: ignore[call-overload]
        img.save(f)
    elif edit == "move_label":
        f.rename(dataset / "8" / f.name)
    else:
        (dataset / "dataset.yaml").write_text(
            (dataset / "dataset.yaml").read_text().replace("Example", "Other")
        )
    assert build_manifest(dataset).digest != m.digest
    check = check_manifest(dataset)
    assert not check.ok
    assert check.changed or check.added or check.removed


def test_edited_manifest_file_is_caught(dataset: Path) -> None:
    write_manifest(dataset, build_manifest(dataset))
    data = json.loads((dataset / MANIFEST_FILE).read_text())
    data["files"][0]["sha256"] = "0" * 64
    check = check_manifest(dataset, data)
    assert not check.ok and check.error and "digest" in check.error


def test_undecodable_and_unknown_files_are_listed(dataset: Path) -> None:
    (dataset / "4" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (dataset / "5" / "fake.jpg").write_bytes(b"GIF89a....")
    with pytest.raises(DatasetError) as err:
        build_manifest(dataset)
    assert "4/broken.png" in str(err.value) and "5/fake.jpg" in str(err.value)


def test_missing_yaml_and_bad_yaml_are_usage_errors(tmp_path: Path, dataset: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"dataset\.yaml"):
        build_manifest(tmp_path / "empty")
    (dataset / "dataset.yaml").write_text("name: x\nlicence: MIT\nowner: a\nsurprise: 1\n")
    with pytest.raises(Exception, match=r"dataset\.yaml:4"):
        build_manifest(dataset)


# ------------------------------------------------------------------------------- licence gate


def test_default_pack_allows_permissive_and_owned_data(dataset: Path) -> None:
    v = check_training_data(PolicySet.default(), build_manifest(dataset), Context())
    assert v.allowed and v.checked == ("training-data-licences",)


@pytest.mark.parametrize("licence", ["unknown", "CC-BY-NC-4.0", "GPL-3.0-only"])
def test_default_pack_refuses_other_licences_listing_files(dataset: Path, licence: str) -> None:
    text = (dataset / "dataset.yaml").read_text().replace("licence: CC-BY-4.0", f"licence: {licence}")
    (dataset / "dataset.yaml").write_text(text)
    with pytest.raises(PolicyDenied) as err:
        check_training_data(PolicySet.default(), build_manifest(dataset), Context())
    assert err.value.rule_ids == ("training-data-licences",)
    assert err.value.exit_code == 3
    assert "0/" in str(err.value) and licence in str(err.value)


def test_per_file_override_and_sources_and_owner(dataset: Path) -> None:
    one = next(p for p in sorted((dataset / "7").glob("*.png"))).relative_to(dataset).as_posix()
    (dataset / "dataset.yaml").write_text(
        "name: mixed\nowner: ''\nlicence: proprietary\nsource: in-house\n"
        f"files:\n  {one}: {{licence: CC-BY-NC-4.0, source: 'scraped:web'}}\n"
    )
    policy = PolicySet.from_text(
        """
version: 1
rules:
  - {id: licences, kind: training_data, allowed_licences: [proprietary, mit], require_owner: true}
  - {id: no-scrapes, kind: training_data, deny_sources: ['scraped:*'], when: {team: brand}}
"""
    )
    m = build_manifest(dataset)
    v = evaluate_training_data(policy, m, Context(team="brand"))
    assert not v.allowed
    assert set(v.rule_ids) == {"licences", "no-scrapes"}
    files = [f for _, f in v.violations]
    assert any("no owner" in f for f in files)
    assert sum(one in f for f in files) == 2  # refused by both rules
    other = evaluate_training_data(policy, m, Context(team="growth"))
    assert other.checked == ("licences",)


def test_training_rules_do_not_touch_image_requests() -> None:
    from gateway.types import ImageRequest

    d = PolicySet.default().evaluate(ImageRequest(prompt="a 7"), Context())
    assert d.allowed and d.constraints.require_signed_adapters


# ------------------------------------------------------------------------------- CLI


def test_cli_dataset_inspect_json_and_check(dataset: Path, tmp_path: Path) -> None:
    r = _gateway("dataset", "inspect", str(dataset), "--json", env_home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["files_count"] == 20 and len(out["digest"]) == 64
    assert (dataset / MANIFEST_FILE).is_file()
    assert _gateway("dataset", "inspect", str(dataset), "--check", env_home=tmp_path).returncode == 0
    next((dataset / "1").glob("*.png")).write_bytes((dataset / "2").glob("*.png").__next__().read_bytes())
    r = _gateway("dataset", "inspect", str(dataset), "--check", "--json", env_home=tmp_path)
    assert r.returncode == 6
    assert json.loads(r.stdout)["changed"]


def test_cli_train_refuses_unknown_licence_with_exit_3(dataset: Path, tmp_path: Path) -> None:
    text = (dataset / "dataset.yaml").read_text().replace("licence: CC-BY-4.0", "licence: unknown")
    (dataset / "dataset.yaml").write_text(text)
    r = _gateway(
        "train", "lora", str(dataset), "--name", "x", "--steps", "1", "--json", env_home=tmp_path / "h"
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout == ""
    assert "training-data-licences" in r.stderr and "0/" in r.stderr
    assert not (tmp_path / "h" / "adapters" / "x.safetensors").exists()
