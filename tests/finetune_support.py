"""Helpers for the fine-tuning tests: a trained tiny-digits adapter, datasets, a tiny SD pipeline.

The tiny Stable Diffusion pipeline is built from configs with random weights (diffusers' own tests do
the same): it exists to test the LoRA *loading* path of a text-to-image pipeline, never image quality.
Its CLIP tokenizer is written from a byte-level vocabulary (no merges), so nothing is downloaded.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

TINY_SD_CARD = """\
schema_version: 1
provider: local
name: Local test pipelines
models:
  - id: tiny-sd
    name: tiny random-weight Stable Diffusion (tests only)
    regions: [local]
    licence: {{name: Apache-2.0, commercial_use: true, source: tests, as_of: 2026-12-01}}
    indemnity: {{level: none, source: tests, as_of: 2026-12-01}}
    training_data: {{disclosed: true, summary: random weights, source: tests, as_of: 2026-12-01}}
    provenance: {{watermark: false, c2pa: false, source: tests, as_of: 2026-12-01}}
    moderation: {{provider_side: false, source: tests, as_of: 2026-12-01}}
    pricing: {{unit: hour, usd_per_hour: "0.10", hardware: cpu, expected_seconds: 1.0, source: tests,
              as_of: 2026-12-01}}
    capabilities: {{min_side: 64, max_side: 64, max_images: 2, steps: true, guidance: true,
                   negative_prompt: true, schedulers: [ddim, ddpm]}}
    defaults: {{width: 64, height: 64, steps: 2, guidance_scale: 1.0, scheduler: ddim}}
    options: {{path: {path}}}
"""


def tiny_sd_pipeline(out: Path) -> Path:
    """Save a random-weight StableDiffusionPipeline (UNet 8/16 channels, 2-block VAE, 1-layer CLIP)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=64,
    )
    tok_dir = out / "_tok"
    tok_dir.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16)
    te = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=len(vocab),
            max_position_embeddings=16,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
        )
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=te,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out / "pipe")
    return out / "pipe"


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table (256 entries)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def write_card(path: Path, pipe_dir: Path) -> Path:
    path.write_text(textwrap.dedent(TINY_SD_CARD.format(path=json.dumps(str(pipe_dir)))))
    return path


def colour_dataset(out: Path, n: int = 4, licence: str = "proprietary", owner: str = "Acme") -> Path:
    """A few flat-colour 64x64 images in one label folder (enough to exercise the text-to-image path)."""
    from PIL import Image

    (out / "logo").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (64, 64), (200, 30 + 40 * i, 30)).save(out / "logo" / f"{i}.png")
    (out / "dataset.yaml").write_text(
        f"name: acme-colours\nowner: {owner}\nlicence: {licence}\nsource: Acme brand team\n"
        "caption: an acme {label}\n"
    )
    return out


def gateway_settings(home: Path, **extra: Any) -> Any:
    from gateway.config import Settings

    return Settings.load(None, home=home, **extra)
