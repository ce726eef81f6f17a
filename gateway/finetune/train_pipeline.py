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
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .manifest import Manifest
    from .train import Checkpoints, TrainConfig, Trained

log = logging.getLogger("gateway.finetune")
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
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
    from PIL import Image

    from .train import Progress, Trained

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
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
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
    gen = torch.Generator().manual_seed(cfg.seed)
    start, loss_val = 0, float("nan")
    state = checkpoints.load()
    if state is not None:
        set_peft_model_state_dict(unet, state["lora"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, loss_val = int(state["step"]), float(state["loss"])
    n, t_max = latents.shape[0], int(noise_sched.config.num_train_timesteps)
    v_pred = noise_sched.config.prediction_type == "v_prediction"
    bar = Progress(cfg.steps, start, f"lora {cfg.name}", progress)
    unet.train()
    step = start
    t_loop = time.perf_counter()

    def snapshot() -> None:
        checkpoints.save(
            {
                "step": step,
                "loss": loss_val,
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "lora": get_peft_model_state_dict(unet),
            }
        )

    try:
        while step < cfg.steps:
            idx = torch.randint(0, n, (min(cfg.batch, n),), generator=gen)
            lat, cond = latents[idx], text[idx]
            noise = torch.randn(lat.shape, generator=gen)
            t = torch.randint(0, t_max, (lat.shape[0],), generator=gen)
            target = noise_sched.get_velocity(lat, noise, t) if v_pred else noise
            pred = unet(noise_sched.add_noise(lat, noise, t), t, encoder_hidden_states=cond).sample
            loss = func.mse_loss(pred.float(), target.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            loss_val = float(loss.detach())
            bar.update(loss_val)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                snapshot()
    except KeyboardInterrupt:
        snapshot()
        raise
    finally:
        bar.close()
    tensors = {f"unet.{k}": v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    lora_meta = {"r": cfg.rank, "lora_alpha": cfg.rank, "target_modules": sorted(lora.target_modules or [])}
    return Trained(
        tensors,
        {
            "format": "pt",
            "lora_adapter_metadata": json.dumps(lora_meta, sort_keys=True),
            "gateway.adapter.kind": "diffusers-lora",
        },
        loss_val,
        start,
        time.perf_counter() - t_loop,
    )


__all__ = ["train_pipeline_lora"]
