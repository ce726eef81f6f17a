"""The optimisation loop both LoRA trainers share: optimiser, seeded sampling, resumable checkpoints.

A trainer builds its model (LoRA already injected, only the LoRA weights requiring grad) and a
``loss_of(gen)`` that draws one batch from ``gen`` and returns the loss; :func:`run_lora_loop` does the
rest the same way for every base model, so a checkpoint written by either resumes bit-for-bit: the
generator, the optimiser state and the LoRA weights are saved together every ``checkpoint_every`` steps
and on Ctrl-C.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..types import atomic_write

if TYPE_CHECKING:
    from .train import TrainConfig

log = logging.getLogger("gateway.finetune")


@dataclass
class Trained:
    """What a trainer hands back: the adapter's tensors and the header keys it adds."""

    tensors: dict[str, Any]
    metadata: dict[str, str]
    final_loss: float
    resumed_from: int
    loop_seconds: float = 0.0  # the optimisation steps alone (no imports, loading or encoding)


class Progress:
    """A tqdm bar on stderr (steps, loss, ETA); silent when disabled."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        import sys

        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            file=sys.stderr,
            disable=not enabled,
            unit="step",
            dynamic_ncols=True,
        )

    def update(self, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


class Checkpoints:
    """One ``checkpoint.pt`` per run folder, written atomically; loaded only for the same fingerprint."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.path = directory / "checkpoint.pt"
        self.fingerprint = fingerprint

    def load(self) -> dict[str, Any] | None:
        import torch

        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)  # our own file
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log.warning("finetune: ignoring %s (another dataset, base or config)", self.path)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save({**state, "fingerprint": self.fingerprint}, buf)
        atomic_write(self.path, buf.getvalue())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def run_lora_loop(
    model: Any,
    loss_of: Callable[[Any], Any],
    cfg: TrainConfig,
    checkpoints: Checkpoints,
    progress: bool,
    *,
    metadata: dict[str, str],
    key_prefix: str = "",
) -> Trained:
    """Train ``model``'s trainable (LoRA) parameters for ``cfg.steps`` steps, resuming a checkpoint.

    ``loss_of(gen)`` must draw all its randomness from ``gen`` (a ``torch.Generator`` seeded with
    ``cfg.seed``): that generator is what a checkpoint saves, so a resumed run sees the same batches.
    The adapter's tensors are the peft state dict, each key behind ``key_prefix``.
    """
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    start, loss_val = 0, float("nan")
    state = checkpoints.load()
    if state is not None:
        set_peft_model_state_dict(model, state["lora"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, loss_val = int(state["step"]), float(state["loss"])
        log.warning("finetune: resuming %s from step %d", cfg.name, start)
    bar = Progress(cfg.steps, start, f"lora {cfg.name}", progress)
    model.train()

    def snapshot(step: int) -> None:
        checkpoints.save(
            {
                "step": step,
                "loss": loss_val,
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "lora": get_peft_model_state_dict(model),
            }
        )

    step = start
    t_loop = time.perf_counter()
    try:
        while step < cfg.steps:
            loss = loss_of(gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            loss_val = float(loss.detach())
            bar.update(loss_val)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                snapshot(step)
    except KeyboardInterrupt:
        snapshot(step)
        log.warning("finetune: interrupted at step %d; run the same command again to resume", step)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t_loop
    tensors = {
        f"{key_prefix}{k}": v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()
    }
    return Trained(tensors, metadata, loss_val, start, seconds)


__all__ = ["Checkpoints", "Progress", "Trained", "run_lora_loop"]
