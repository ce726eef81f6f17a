"""Fine-tunes with provable training data: dataset manifests, the LoRA trainer, signed adapters.

``manifest`` (hash, decode and digest a dataset folder), ``train`` (``gateway train lora``),
``signing`` (provenance header + signature in the safetensors file), ``registry`` (adapters in the
gateway home become routes ``local/<base>+<name>``). Importing the package is cheap: torch, diffusers
and peft load only when a run starts or an adapter is applied. See docs/finetune.md.
"""

from __future__ import annotations
