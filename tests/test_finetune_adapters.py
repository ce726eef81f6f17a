"""A real (short) LoRA run on tiny-digits, signed adapters, routing, policy and output provenance."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import Gateway
from gateway.config import Settings
from gateway.errors import NoEligibleRoute, VerificationFailed
from gateway.finetune import _loop as train_loop
from gateway.finetune.basemodel import model_digest
from gateway.finetune.digits_style import write_bold_digits
from gateway.finetune.manifest import build_manifest
from gateway.finetune.registry import entry_for, read_metadata
from gateway.finetune.signing import (
    AdapterRejected,
    parse,
    sign_tensors,
    trust_bundle,
    verify_bytes,
)
from gateway.finetune.train import TrainConfig, TrainResult, train_lora
from gateway.policy import PolicySet
from gateway.provenance import verify_image
from gateway.provenance.keys import KeyStore, ProvenanceSettings

TINY = Path(__file__).resolve().parent.parent / "gateway" / "models" / "tiny_digits"


def _train(home: Path, ds: Path, name: str = "brand-bold", **cfg: Any) -> TrainResult:
    conf = {"steps": 3, "batch": 8, "checkpoint_every": 2, **cfg}
    return train_lora(
        ds,
        TrainConfig(name=name, **conf),
        home=home,
        policy=PolicySet.default(),
        keys=KeyStore(home, ProvenanceSettings()),
        progress=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult, Path]:
    root = tmp_path_factory.mktemp("ft")
    ds = write_bold_digits(root / "bold", per_class=2)
    home = root / "home"
    return home, _train(home, ds), ds


@pytest.fixture
def home(trained: tuple[Path, TrainResult, Path], tmp_path: Path) -> Path:
    """A private copy of the trained home (tests that tamper must not spoil the others)."""
    dst = tmp_path / "home"
    shutil.copytree(trained[0], dst, ignore=shutil.ignore_patterns("*.db", "*.db-*"))
    return dst


def _adapter(home: Path, name: str = "brand-bold") -> Path:
    return home / "adapters" / f"{name}.safetensors"


def _gw(home: Path, **extra: Any) -> Gateway:
    return Gateway(Settings.load(None, home=home, **extra))


# ------------------------------------------------------------------------------------ training


def test_training_writes_a_signed_adapter_with_provenance_header(
    trained: tuple[Path, TrainResult, Path],
) -> None:
    home, res, ds = trained
    assert res.adapter_path == _adapter(home) and res.steps == 3 and res.final_loss > 0
    assert res.dataset_digest == build_manifest(ds).digest
    assert res.base_model == "tiny-digits" and res.base_model_sha256 == model_digest(TINY)
    meta = read_metadata(res.adapter_path)
    # Provenance is in its own top-level keys; diffusers' LoraConfig JSON stays loadable as-is.
    from peft import LoraConfig

    cfg = LoraConfig(**json.loads(meta["lora_adapter_metadata"]))
    assert cfg.r == 8
    for key in (
        "gateway.base_model_sha256",
        "gateway.dataset.digest",
        "gateway.licence_summary",
        "gateway.dataset.owner",
        "gateway.training_config",
        "gateway.code_version",
        "gateway.signature",
        "gateway.signer_cert",
        "gateway.tensor_sha256",
        "modelspec.license",
    ):
        assert meta[key], key
    assert json.loads(meta["gateway.licence_summary"]) == {"CC-BY-4.0": 20}
    assert json.loads(meta["gateway.training_config"])["steps"] == 3
    v = verify_bytes(
        res.adapter_path.read_bytes(),
        trust_bundle(KeyStore(home, ProvenanceSettings())),
        base_model_sha256=model_digest(TINY),
    )
    assert v.file_sha256 == res.adapter_sha256


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(path)


def test_seeded_and_resumable_from_the_last_checkpoint(
    trained: tuple[Path, TrainResult, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    _, first, ds = trained
    again = _train(tmp_path / "a", ds)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            _tensors(first.adapter_path).values(), _tensors(again.adapter_path).values(), strict=True
        )
    )
    calls = {"n": 0}
    original = train_loop.Progress.update

    def interrupt_at_two(self: Any, loss: float) -> None:
        original(self, loss)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_loop.Progress, "update", interrupt_at_two)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", ds)
    assert (tmp_path / "b" / "adapters" / ".work" / "brand-bold" / "checkpoint.pt").is_file()
    monkeypatch.setattr(train_loop.Progress, "update", original)
    resumed = _train(tmp_path / "b", ds)
    assert resumed.resumed_from == 2
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            _tensors(first.adapter_path).values(), _tensors(resumed.adapter_path).values(), strict=True
        )
    )
    assert not (tmp_path / "b" / "adapters" / ".work" / "brand-bold" / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------ signatures


def _flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_tensor_byte_is_refused_before_any_weight_is_applied(home: Path) -> None:
    path = _adapter(home)
    _flip(path, len(path.read_bytes()) - 7)
    bundle = trust_bundle(KeyStore(home, ProvenanceSettings()))
    with pytest.raises(AdapterRejected, match="tampered"):
        verify_bytes(path.read_bytes(), bundle)
    with _gw(home) as gw, pytest.raises(AdapterRejected, match="tampered") as err:
        gw.generate("a handwritten 3", adapter="brand-bold", seed=1)
    assert err.value.exit_code == 6 and isinstance(err.value, VerificationFailed)
    with _gw(home) as gw:
        events = [(r["event"], r.get("outcome")) for r in gw._core.audit.iter_records()]
        assert ("attempt", "AdapterRejected") in events  # the refused load is an audited attempt
        assert gw._core.ledger.budget_status  # ledger still usable


def test_flipped_header_byte_drops_the_route_with_a_reason(home: Path) -> None:
    path = _adapter(home)
    data = path.read_bytes()
    at = data.index(b'"gateway.dataset.digest":"') + len(b'"gateway.dataset.digest":"') + 3
    _flip(path, at)
    assert not entry_for(path, trust_bundle(KeyStore(home, ProvenanceSettings()))).signed
    with _gw(home) as gw:
        plan = gw.explain("a handwritten 3", adapter="brand-bold")
        cand = next(c for c in plan.routes.candidates if c.route.key == "local/tiny-digits+brand-bold")
        assert cand.stage == "policy" and "not validly signed" in str(cand.reason)
        with pytest.raises(NoEligibleRoute, match="signature"):
            gw.generate("a handwritten 3", adapter="brand-bold")


def test_foreign_adapter_is_refused(home: Path, tmp_path: Path) -> None:
    path = _adapter(home)
    p = parse(path.read_bytes())
    meta = {k: v for k, v in p.metadata.items() if not k.startswith(("gateway.signature", "gateway.signer"))}
    other = KeyStore(tmp_path / "other", ProvenanceSettings())
    path.write_bytes(sign_tensors(_tensors(path), meta, other.signing()))
    # Valid under the other gateway's keys, refused by ours.
    assert verify_bytes(path.read_bytes(), trust_bundle(other)).name == "brand-bold"
    mine = trust_bundle(KeyStore(home, ProvenanceSettings()))
    with pytest.raises(AdapterRejected, match="does not trust"):
        verify_bytes(path.read_bytes(), mine)
    e = entry_for(path, mine)
    assert not e.signed and "foreign" in str(e.problem)


def test_unsigned_adapter_is_refused(home: Path) -> None:
    from safetensors.torch import save_file

    path = _adapter(home)
    meta = {k: v for k, v in read_metadata(path).items() if not k.startswith("gateway.signature")}
    save_file(_tensors(path), str(path), metadata=meta)
    with pytest.raises(AdapterRejected, match="not signed"):
        verify_bytes(path.read_bytes(), trust_bundle(KeyStore(home, ProvenanceSettings())))


def test_base_model_mismatch_is_refused(home: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import UNet2DModel
    from safetensors.torch import load_file, save_file

    from gateway.backends.lora import apply_to_unet

    variant = tmp_path / "variant"
    shutil.copytree(TINY, variant)
    w = variant / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(w)
    first = next(iter(sd))
    sd[first] = sd[first] + 1e-3
    save_file(sd, str(w), metadata={"format": "pt"})
    assert model_digest(variant) != model_digest(TINY)
    unet = UNet2DModel.from_pretrained(variant / "unet", local_files_only=True, low_cpu_mem_usage=False)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    opts = {
        "adapter": str(_adapter(home)),
        "adapter_trust_pem": trust_bundle(KeyStore(home, ProvenanceSettings())),
    }
    with pytest.raises(AdapterRejected, match="base model"):
        apply_to_unet(unet, variant, opts)
    after = unet.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------------------------ routing, policy


def test_adapter_is_a_route_with_a_derived_card(home: Path) -> None:
    with _gw(home) as gw:
        route = gw._core.catalog.get("local/tiny-digits+brand-bold")
        assert route is not None
        card = route.card
        assert card.indemnity.level == "none" and card.training_data.disclosed
        assert "CC-BY-4.0" in card.licence.name and card.licence.commercial_use
        assert card.fine_tune is not None and card.fine_tune.signed and card.fine_tune.kind == "adapter"
        assert card.fine_tune.dataset_digest in card.training_data.summary
        plain = gw.explain("a handwritten 3")
        assert plain.routes.ranked[0].route.key == "local/tiny-digits"
        assert "local/tiny-digits+brand-bold" not in [c.route.key for c in plain.routes.ranked]
        chosen = gw.explain("a handwritten 3", adapter="brand-bold")
        assert [c.route.key for c in chosen.routes.ranked] == ["local/tiny-digits+brand-bold"]
        with pytest.raises(NoEligibleRoute):
            gw.generate("a handwritten 3", adapter="nope")


def test_policy_requires_brand_adapters_for_a_use_case(home: Path, tmp_path: Path) -> None:
    pack = tmp_path / "brand.yaml"
    pack.write_text(
        "version: 1\nrules:\n"
        "  - {id: brand-adapters, kind: route, when: {use_case: brand}, require_adapter: ['brand-*']}\n"
    )
    from gateway.catalog import default_data_dir

    with _gw(home, policies=(default_data_dir("policies") / "default.yaml", pack)) as gw:
        brand = gw.explain("a handwritten 3", use_case="brand")
        assert [c.route.key for c in brand.routes.ranked] == ["local/tiny-digits+brand-bold"]
        base = next(c for c in brand.routes.candidates if c.route.key == "local/tiny-digits")
        assert "requires an adapter" in str(base.reason)
        other = gw.explain("a handwritten 3")
        assert other.routes.ranked[0].route.key == "local/tiny-digits"


# ------------------------------------------------------------------------------------ provenance


def test_adapter_output_names_base_adapter_and_dataset_everywhere(home: Path) -> None:
    with _gw(home) as gw:
        r = gw.generate("a handwritten 3", adapter="brand-bold", seed=5)
        base = gw.generate("a handwritten 3", seed=5)
        records = list(gw._core.audit.iter_records())
    sha = hashlib.sha256(_adapter(home).read_bytes()).hexdigest()
    meta = read_metadata(_adapter(home))
    assert r.model == "tiny-digits+brand-bold" and r.image.data != base.image.data
    report = verify_image(r.image.data, home=home)
    assert report.ok
    assert report.c2pa.active is not None
    ft = report.c2pa.active.fine_tune
    assert ft is not None
    assert ft["base_model"] == "tiny-digits" and ft["adapter"] == "brand-bold" and ft["adapter_sha256"] == sha
    assert ft["dataset_digest"] == meta["gateway.dataset.digest"]
    assert ft["base_model_sha256"] == model_digest(TINY)
    assert "fine-tune: base tiny-digits, adapter brand-bold" in report.summary()
    req = [x for x in records if x["event"] == "request"]
    assert req[0]["fine_tune"]["adapter_sha256"] == sha and "fine_tune" not in req[1]
    base_report = verify_image(base.image.data, home=home)
    assert base_report.c2pa.active is not None and base_report.c2pa.active.fine_tune is None


def test_remote_fine_tune_card_is_routed_and_named(tmp_path: Path) -> None:
    from gateway.catalog import Catalog, ProviderCard
    from gateway.finetune.provenance import fine_tune_provenance

    card = {
        "provider": "replicate",
        "name": "Replicate fine-tunes",
        "models": [
            {
                "id": "acme/brand-flux:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
                "name": "Acme brand FLUX LoRA (trained version)",
                "regions": ["us"],
                "licence": {
                    "name": "FLUX.1 schnell Apache-2.0 + proprietary data",
                    "commercial_use": True,
                    "source": "contract",
                    "as_of": "2026-12-01",
                },
                "indemnity": {"level": "none", "source": "replicate terms", "as_of": "2026-12-01"},
                "training_data": {
                    "disclosed": True,
                    "summary": "Acme logos",
                    "source": "manifest",
                    "as_of": "2026-12-01",
                },
                "provenance": {"source": "x", "as_of": "2026-12-01"},
                "moderation": {"provider_side": False, "source": "x", "as_of": "2026-12-01"},
                "pricing": {
                    "unit": "second",
                    "usd_per_second": "0.001",
                    "hardware": "H100",
                    "source": "x",
                    "as_of": "2026-12-01",
                },
                "fine_tune": {
                    "name": "brand-flux",
                    "base_model": "black-forest-labs/flux-schnell",
                    "dataset_digest": "ab" * 32,
                    "dataset_manifest": "s3://acme/brand/dataset.manifest.json",
                    "source": "replicate training 123",
                    "as_of": "2026-12-01",
                },
            }
        ],
    }
    cat = Catalog([ProviderCard.model_validate(card)])
    route = cat.routes[0]
    assert route.card.fine_tune is not None and route.card.fine_tune.kind == "remote"
    ft = fine_tune_provenance(route, {})
    assert ft is not None and ft["dataset_digest"] == "ab" * 32 and ft["adapter"] == "brand-flux"
    import datetime as dt

    from gateway.routing import plan_routes
    from gateway.types import Decision, ImageRequest

    d = PolicySet.default().evaluate(ImageRequest(prompt="a logo"), __import__("gateway").Context())
    plan = plan_routes(
        cat, ImageRequest(prompt="a logo", adapter="brand-flux"), d, today=dt.date(2026, 12, 1), now=0
    )
    assert [c.route.key for c in plan.ranked] == [route.key]  # remote: no local signature needed
    plain = plan_routes(cat, ImageRequest(prompt="a logo"), d, today=dt.date(2026, 12, 1), now=0)
    assert not plain.ranked and isinstance(d, Decision)


# ------------------------------------------------------------------------------------ CLI


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "GATEWAY_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def test_cli_adapters_and_generate_with_adapter(home: Path, tmp_path: Path) -> None:
    r = _cli(home, "adapters", "list", "--json")
    assert r.returncode == 0, r.stderr
    (entry,) = json.loads(r.stdout)["adapters"]
    assert entry["route"] == "local/tiny-digits+brand-bold" and entry["signed"]
    r = _cli(home, "adapters", "show", "brand-bold", "--json")
    assert json.loads(r.stdout)["dataset_digest"] == entry["dataset_digest"]
    r = _cli(home, "adapters", "verify", "brand-bold", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"]
    r = _cli(
        home, "generate", "a handwritten 4", "--adapter", "brand-bold", "--json", "--out", str(tmp_path / "o")
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "tiny-digits+brand-bold" and out["metadata"]["adapter"]["name"] == "brand-bold"
    r = _cli(home, "verify", out["images"][0]["path"])
    assert r.returncode == 0 and "adapter brand-bold" in r.stdout
    _flip(_adapter(home), len(_adapter(home).read_bytes()) - 3)
    r = _cli(home, "adapters", "verify", "brand-bold", "--json")
    assert r.returncode == 6 and not json.loads(r.stdout)["ok"] and "tampered" in r.stderr
