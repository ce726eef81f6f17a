"""The text-to-image LoRA path on a tiny random-weight Stable Diffusion pipeline built from configs.

Random weights only test loading code (the project rule): train two steps through the pipeline trainer,
sign, register, route ``local/tiny-sd+acme``, and load with the pipeline's own ``load_lora_weights``
after verification. The output must differ from the base pipeline's for the same seed (the LoRA is
really applied) and carry the fine-tune assertion.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from finetune_support import colour_dataset, write_card
from tiny_sd import build_tiny_sd

from gateway import Gateway
from gateway.catalog import Catalog, default_data_dir
from gateway.config import Settings
from gateway.finetune.registry import read_metadata
from gateway.finetune.train import TrainConfig, train_lora
from gateway.policy import PolicySet
from gateway.provenance import verify_image
from gateway.provenance.keys import KeyStore, ProvenanceSettings

pytest.importorskip("transformers")


def test_pipeline_lora_trains_signs_routes_and_loads(tmp_path: Path) -> None:
    pipe_dir = build_tiny_sd(tmp_path / "sd", sample_size=32)
    cards = tmp_path / "cards"
    cards.mkdir()
    write_card(cards / "tiny-sd.yaml", pipe_dir)
    providers = (default_data_dir("providers") / "local.yaml", cards / "tiny-sd.yaml")
    home = tmp_path / "home"
    ds = colour_dataset(tmp_path / "ds")
    res = train_lora(
        ds,
        TrainConfig(name="acme", base="tiny-sd", steps=2, rank=4, batch=2, lr=1e-2),
        home=home,
        policy=PolicySet.default(),
        keys=KeyStore(home, ProvenanceSettings()),
        catalog=Catalog.load(providers),
        progress=False,
    )
    meta = read_metadata(res.adapter_path)
    assert meta["gateway.adapter.kind"] == "diffusers-lora" and meta["gateway.base_model"] == "tiny-sd"
    assert all(
        k.startswith("unet.") for k in __import__("safetensors.torch").torch.load_file(res.adapter_path)
    )
    with Gateway(Settings.load(None, home=home, providers=providers)) as gw:
        base = gw.generate("an acme logo", model="tiny-sd", seed=3)
        out = gw.generate("an acme logo", adapter="acme", seed=3)
    assert out.model == "tiny-sd+acme" and out.metadata["adapter"]["name"] == "acme"
    assert out.image.data != base.image.data
    report = verify_image(out.image.data, home=home)
    assert report.c2pa.active is not None and report.c2pa.active.fine_tune is not None
    assert report.c2pa.active.fine_tune["dataset_digest"] == res.dataset_digest
