"""``gateway train lora``: a LoRA adapter (peft) trained from a dataset manifest, then signed.

The run, in order, each step able to stop it before any compute is spent:

1. hash and decode every file (:func:`~gateway.finetune.manifest.build_manifest`); the trainer decodes
   the very bytes that were hashed, so the digest in the adapter covers exactly what was learnt;
2. the ``training_data`` policy rules in scope (licences, owner, sources) -> exit 3 listing the files;
3. resolve the base model and its digest; 4. train (seeded; a checkpoint every ``checkpoint_every``
   steps and on Ctrl-C, and a later run with the same inputs resumes from it); 5. sign and write the
   adapter into the gateway home's ``adapters/`` folder, where it becomes a route.

The embedded class-conditional ``tiny-digits`` UNet has no diffusers LoRA mixin, so it is trained with
peft's ``inject_adapter_in_model`` (FACTS.md "LoRA adapters"); any other local diffusers text-to-image
pipeline goes through :mod:`gateway.finetune.train_pipeline` and loads with the pipeline's own LoRA
loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UsageError
from ..types import Context, atomic_write
from ._loop import Checkpoints, Trained, run_lora_loop
from .manifest import Manifest, build_manifest

log = logging.getLogger("gateway.finetune")

TINY_TARGETS = ("conv1", "conv2", "time_emb_proj", "to_q", "to_k", "to_v", "to_out.0")
NULL_CLASS = 10


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the weights (it is hashed: a checkpoint resumes only the same config)."""

    name: str
    base: str = "tiny-digits"
    steps: int = 400
    rank: int = 8
    alpha: int | None = None  # None = rank (scale 1.0, what diffusers assumes for a bare state dict)
    lr: float = 2e-3
    batch: int = 64
    seed: int = 0
    label_dropout: float = 0.1
    targets: tuple[str, ...] = ()  # () = the trainer's defaults
    checkpoint_every: int = 50
    threads: int | None = None  # torch intra-op threads; None = torch's default. 1 on a busy machine.

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name):
            raise UsageError(f"adapter name {self.name!r}: use letters, digits, '.', '_' or '-' (max 64)")
        for what, v in (("steps", self.steps), ("rank", self.rank), ("batch", self.batch)):
            if v < 1:
                raise UsageError(f"--{what} must be at least 1, not {v}")
        if not 0 < self.lr < 1:
            raise UsageError(f"learning rate {self.lr} is out of range")

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else self.rank

    def fingerprint(self, dataset_digest: str, base_sha256: str) -> str:
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        d.pop("threads")
        d.update(dataset=dataset_digest, base=base_sha256, version=1)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class TrainResult:
    adapter_path: Path
    name: str
    base_model: str
    base_model_sha256: str
    dataset_digest: str
    dataset_name: str
    steps: int
    final_loss: float
    seconds: float
    resumed_from: int
    adapter_sha256: str
    licences: Mapping[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0  # seconds = training steps; wall = with imports, model load, signing

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adapter_path"] = str(self.adapter_path)
        d["final_loss"] = round(self.final_loss, 6)
        d["seconds"] = round(self.seconds, 2)
        d["wall_seconds"] = round(self.wall_seconds, 2)
        return d


# ----------------------------------------------------------------------------- tiny-digits trainer


def _digit_tensors(manifest: Manifest, data: Mapping[str, bytes], size: int) -> tuple[Any, Any]:
    """Images -> (N,1,size,size) in [-1, 1] (bright ink on dark, like sklearn's digits) and labels."""
    import numpy as np
    import torch
    from PIL import Image

    xs, ys = [], []
    for f in manifest.files:
        if f.label is None:
            label = NULL_CLASS
        elif f.label.isdigit() and len(f.label) == 1:
            label = int(f.label)
        else:
            raise UsageError(f"{f.path}: tiny-digits label folders must be a digit 0-9 (or no folder)")
        img = (
            Image.open(io.BytesIO(data[f.path])).convert("L").resize((size, size), Image.Resampling.BILINEAR)
        )
        xs.append(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        ys.append(label)
    return torch.tensor(np.stack(xs)).unsqueeze(1), torch.tensor(ys, dtype=torch.long)


def train_unet_peft(
    base_dir: Path,
    manifest: Manifest,
    data: Mapping[str, bytes],
    cfg: TrainConfig,
    checkpoints: Checkpoints,
    progress: bool,
) -> Trained:
    """LoRA on the class-conditional UNet2DModel (epsilon objective, label dropout keeps the null
    class for classifier-free guidance), with peft injected directly into the model."""
    import torch
    import torch.nn.functional as func
    from diffusers import DDPMScheduler, UNet2DModel
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(cfg.seed)
    unet = UNet2DModel.from_pretrained(base_dir / "unet", local_files_only=True, low_cpu_mem_usage=False)
    sched = DDPMScheduler.from_pretrained(base_dir / "scheduler", local_files_only=True)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.lora_alpha,
        target_modules=list(cfg.targets or TINY_TARGETS),
        init_lora_weights=True,
    )
    unet = inject_adapter_in_model(lora, unet)
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n)
    x, y = _digit_tensors(manifest, data, int(unet.config.sample_size))
    n_train, t_max = x.shape[0], int(sched.config.num_train_timesteps)

    def loss_of(gen: Any) -> Any:
        idx = torch.randint(0, n_train, (min(cfg.batch, n_train),), generator=gen)
        clean, labels = x[idx], y[idx].clone()
        shift = int(torch.randint(-1, 2, (1,), generator=gen))
        if shift:
            clean = torch.roll(clean, shifts=shift, dims=3)
        labels[torch.rand(labels.shape[0], generator=gen) < cfg.label_dropout] = NULL_CLASS
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, t_max, (clean.shape[0],), generator=gen)
        return func.mse_loss(unet(sched.add_noise(clean, noise, t), t, class_labels=labels).sample, noise)

    lora_meta = {
        "r": cfg.rank,
        "lora_alpha": cfg.lora_alpha,
        "target_modules": sorted(lora.target_modules or []),
        "init_lora_weights": True,
        "use_dora": False,
    }
    metadata = {
        "format": "pt",
        "lora_adapter_metadata": json.dumps(lora_meta, sort_keys=True),
        "gateway.adapter.kind": "unet-peft",
    }
    return run_lora_loop(unet, loss_of, cfg, checkpoints, progress, metadata=metadata)


# ----------------------------------------------------------------------------- orchestration


def resolve_base(base: str, catalog: Any = None) -> tuple[str, Path, str]:
    """(base model id, pipeline folder, pipeline class) for a local catalogue id or a folder path."""
    from ..backends.local import resolve_model_dir

    options: dict[str, Any] = {}
    if catalog is not None:
        route = catalog.get(f"local/{base}")
        if route is not None:
            options = dict(route.card.options)
            if "adapter" in options:
                raise UsageError(f"{base!r} is itself an adapter route; train on its base model")
    path = resolve_model_dir(base, options)
    cls = str(json.loads((path / "model_index.json").read_text()).get("_class_name", ""))
    return base, path, cls


def licence_label(manifest: Manifest) -> str:
    """One readable licence string for a card: ``proprietary (Acme)`` or ``CC-BY-4.0 + MIT``."""
    lic = list(manifest.licence_summary())
    text = " + ".join(lic)
    return f"{text} ({manifest.owner})" if manifest.owner else text


def train_lora(
    dataset: str | Path,
    cfg: TrainConfig,
    *,
    home: Path,
    policy: Any,
    keys: Any,
    context: Context | None = None,
    catalog: Any = None,
    out: Path | None = None,
    progress: bool = True,
    force: bool = False,
) -> TrainResult:
    """Run the whole pipeline above; returns where the signed adapter went and what it claims."""
    from ..policy.training_data import check_training_data
    from .basemodel import model_digest
    from .signing import sign_tensors

    data: dict[str, bytes] = {}
    manifest = build_manifest(dataset, keep=data)
    check_training_data(policy, manifest, context or Context())
    base_id, base_dir, cls = resolve_base(cfg.base, catalog)
    base_sha = model_digest(base_dir)
    target = out or (Path(home) / "adapters" / f"{cfg.name}.safetensors")
    if target.exists() and not force:
        raise UsageError(f"{target} exists: pick another --name or pass --force to replace it")
    material = keys.signing()  # fails before training if no key can sign
    work = Path(home) / "adapters" / ".work" / cfg.name
    ckpt = Checkpoints(work, cfg.fingerprint(manifest.digest, base_sha))
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    if cls == "TinyDigitsPipeline":
        trained = train_unet_peft(base_dir, manifest, data, cfg, ckpt, progress)
    else:
        from .train_pipeline import train_pipeline_lora

        trained = train_pipeline_lora(base_dir, manifest, data, cfg, ckpt, progress)
    seconds = trained.loop_seconds
    training_config = {
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("name", "threads")},
        "lora_alpha": cfg.lora_alpha,
        "final_loss": round(trained.final_loss, 6),
        "seconds": round(seconds, 2),
        "resumed_from": trained.resumed_from,
    }
    meta = {
        **trained.metadata,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{base_id}/lora",
        "modelspec.title": cfg.name,
        "modelspec.license": licence_label(manifest),
        "gateway.adapter.name": cfg.name,
        "gateway.base_model": base_id,
        "gateway.base_model_sha256": base_sha,
        "gateway.dataset.digest": manifest.digest,
        "gateway.dataset.name": manifest.name,
        "gateway.dataset.owner": manifest.owner,
        "gateway.dataset.licence": manifest.licence,
        "gateway.dataset.files": str(len(manifest.files)),
        "gateway.licence_summary": json.dumps(manifest.licence_summary(), sort_keys=True),
        "gateway.training_config": json.dumps(training_config, sort_keys=True),
        "gateway.code_version": __version__,
    }
    blob = sign_tensors(trained.tensors, meta, material)
    atomic_write(target, blob)
    ckpt.clear()
    return TrainResult(
        adapter_path=target,
        name=cfg.name,
        base_model=base_id,
        base_model_sha256=base_sha,
        dataset_digest=manifest.digest,
        dataset_name=manifest.name,
        steps=cfg.steps,
        final_loss=trained.final_loss,
        seconds=seconds,
        resumed_from=trained.resumed_from,
        adapter_sha256=hashlib.sha256(blob).hexdigest(),
        licences=manifest.licence_summary(),
        wall_seconds=time.perf_counter() - t0,
    )


__all__ = ["TrainConfig", "TrainResult", "licence_label", "resolve_base", "train_lora"]
