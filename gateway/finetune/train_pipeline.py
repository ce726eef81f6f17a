"""Text-to-image LoRA for any local diffusers pipeline with a UNet, a VAE and a text encoder.

The recipe of diffusers' ``examples/text_to_image/train_text_to_image_lora.py`` reduced to what a
brand fine-tune needs: the UNet gets a peft LoRA through diffusers' own ``add_adapter`` (attention
projections by default), images are encoded to latents once, captions come from ``dataset.yaml``
(``caption`` template with ``{label}``, or per-file ``caption``), and the loss follows the scheduler's
``prediction_type`` (epsilon or v-prediction). The adapter is saved in diffusers' LoRA layout
(``unet.``-prefixed peft keys) so the local backend loads it with ``pipe.load_lora_weights``; alpha
equals the rank, the scale a loader assumes for a bare state dict.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ._loop import run_lora_loop

if TYPE_CHECKING:
    from ._loop import Checkpoints, Trained
    from .manifest import Manifest
    from .train import TrainConfig

PIPELINE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _captions(manifest: Manifest) -> list[str]:
    spec = manifest.spec
    out = []
    for f in manifest.files:
        over = spec.files.get(f.path)
        text = (
            over.caption
            if over is not None and over.caption
            else spec.caption.replace("{label}", f.label or "")
        )
        out.append(text.strip() or spec.name)
    return out


def train_pipeline_lora(
    base_dir: Path,
    manifest: Manifest,
    data: Mapping[str, bytes],
    cfg: TrainConfig,
    checkpoints: Checkpoints,
    progress: bool,
) -> Trained:
    import numpy as np
    import torch
    import torch.nn.functional as func
    from diffusers import DDPMScheduler, DiffusionPipeline
    from peft import LoraConfig
    from PIL import Image

    if cfg.alpha is not None and cfg.alpha != cfg.rank:
        raise UsageError("pipeline LoRA uses alpha = rank (what load_lora_weights assumes); drop --alpha")
    torch.manual_seed(cfg.seed)
    pipe = DiffusionPipeline.from_pretrained(base_dir, local_files_only=True, low_cpu_mem_usage=False)
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        if getattr(pipe, part, None) is None:
            raise UsageError(f"{type(pipe).__name__} has no {part}: text-to-image LoRA needs a UNet pipeline")
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    for m in (unet, vae, te):
        m.requires_grad_(False)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.rank,
        init_lora_weights="gaussian",
        target_modules=list(cfg.targets or PIPELINE_TARGETS),
    )
    unet.add_adapter(lora)
    side = int(unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    with torch.no_grad():
        pix = []
        for f in manifest.files:
            img = (
                Image.open(io.BytesIO(data[f.path]))
                .convert("RGB")
                .resize((side, side), Image.Resampling.BICUBIC)
            )
            pix.append(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        x = torch.tensor(np.stack(pix)).permute(0, 3, 1, 2)
        latents = vae.encode(x).latent_dist.mode() * float(vae.config.scaling_factor)
        ids = tok(
            _captions(manifest),
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        text = te(ids)[0]
    n, t_max = latents.shape[0], int(noise_sched.config.num_train_timesteps)
    v_pred = noise_sched.config.prediction_type == "v_prediction"

    def loss_of(gen: Any) -> Any:
        idx = torch.randint(0, n, (min(cfg.batch, n),), generator=gen)
        lat, cond = latents[idx], text[idx]
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, t_max, (lat.shape[0],), generator=gen)
        target = noise_sched.get_velocity(lat, noise, t) if v_pred else noise
        pred = unet(noise_sched.add_noise(lat, noise, t), t, encoder_hidden_states=cond).sample
        return func.mse_loss(pred.float(), target.float())

    lora_meta = {"r": cfg.rank, "lora_alpha": cfg.rank, "target_modules": sorted(lora.target_modules or [])}
    metadata = {
        "format": "pt",
        "lora_adapter_metadata": json.dumps(lora_meta, sort_keys=True),
        "gateway.adapter.kind": "diffusers-lora",
    }
    return run_lora_loop(unet, loss_of, cfg, checkpoints, progress, metadata=metadata, key_prefix="unet.")


__all__ = ["train_pipeline_lora"]
