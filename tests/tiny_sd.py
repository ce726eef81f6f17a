"""A tiny Stable Diffusion pipeline with random weights, built from configs (no download).

Only for testing the SDK's code around user pipelines: the local backend's loading and calling
(``AutoPipelineFor*``, few-step schedulers, LCM-LoRA fusing) and the text-to-image LoRA trainer. Random
weights draw noise, which is all such a test needs; diffusers' own tests do the same. The CLIP
tokenizer is written from a byte-level vocabulary (no merges), so any prompt tokenizes offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def build_tiny_sd(
    directory: Path,
    *,
    sample_size: int = 8,
    vae_blocks: int = 2,
    scheduler: Any = None,
    name: str = "tiny-sd",
) -> Path:
    """Save a random-weight StableDiffusionPipeline (UNet 8/16 channels, 1-layer CLIP) and return its
    folder. The default image side is ``sample_size * 2 ** (vae_blocks - 1)``; ``scheduler`` defaults
    to DDIM."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
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
        block_out_channels=(8,) * vae_blocks,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        sample_size=64,
    )
    tok_dir = directory / "_tok"
    tok_dir.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16)
    text_encoder = CLIPTextModel(
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
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler or DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = directory / name
    pipe.save_pretrained(out)
    return out


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table (256 entries)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]
