"""Train the embedded ``tiny-digits`` model: a class-conditional UNet on scikit-learn's digits.

Why this exists: the gateway must generate real images on a fresh machine with no network and no GPU,
so it ships a model small enough for the wheel (a few MB) yet trained for real, with classifier-free
guidance (label dropout teaches a null class 10, so ``guidance_scale`` really steers the sample).

Run ``python -m gateway.models.train_tiny_digits --out DIR`` to reproduce the shipped weights (seeded;
the model card records the exact command). ``--steps 5`` is the smoke run CI uses.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

NULL_CLASS = 10
SAMPLE_SIZE = 16


def unet_config() -> dict[str, object]:
    """The architecture, kept as data so the model card and the loader agree."""
    return {
        "sample_size": SAMPLE_SIZE,
        "in_channels": 1,
        "out_channels": 1,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "num_class_embeds": NULL_CLASS + 1,
        "norm_num_groups": 8,
    }


def load_training_data() -> tuple[object, object]:
    """Digits 8x8 (0..16) -> bilinear 16x16 in [-1, 1], with their labels."""
    import numpy as np
    import torch
    import torch.nn.functional as func
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = func.interpolate(x, size=(SAMPLE_SIZE, SAMPLE_SIZE), mode="bilinear", align_corners=False)
    x = x * 2.0 - 1.0
    y = torch.tensor(digits.target, dtype=torch.long)
    return x, y


def train(out: Path, steps: int, batch: int, lr: float, seed: int, label_dropout: float) -> dict[str, object]:
    import torch
    import torch.nn.functional as func
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_training_data()
    assert isinstance(x, torch.Tensor)
    assert isinstance(y, torch.Tensor)
    model = UNet2DModel(**unet_config())
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    n = x.shape[0]
    t0 = time.perf_counter()
    loss_val = float("nan")
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        clean, labels = x[idx], y[idx].clone()
        # Random horizontal shifts of one pixel: cheap augmentation for 1,797 images.
        shift = int(torch.randint(-1, 2, (1,), generator=gen))
        if shift:
            clean = torch.roll(clean, shifts=shift, dims=3)
        drop = torch.rand(batch, generator=gen) < label_dropout
        labels[drop] = NULL_CLASS
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noisy = sched.add_noise(clean, noise, t)
        pred = model(noisy, t, class_labels=labels).sample
        loss = func.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        loss_val = float(loss.detach())
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}/{steps} loss {loss_val:.4f} {time.perf_counter() - t0:7.1f}s", flush=True)
    elapsed = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(out / "unet", safe_serialization=True)
    sched.save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "TinyDigitsPipeline",
                "_diffusers_version": _diffusers_version(),
                "unet": ["diffusers", "UNet2DModel"],
                "scheduler": ["diffusers", "DDPMScheduler"],
            },
            indent=2,
        )
        + "\n"
    )
    info = {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "label_dropout": label_dropout,
        "final_loss": round(loss_val, 5),
        "train_seconds": round(elapsed, 1),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _diffusers_version() -> str:
    import diffusers

    return str(diffusers.__version__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label-dropout", type=float, default=0.1)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    info = train(a.out, a.steps, a.batch, a.lr, a.seed, a.label_dropout)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
