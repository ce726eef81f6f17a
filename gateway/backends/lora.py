"""Applying a signed LoRA adapter inside the local backend, only after it verified.

The local backend calls in here when a route's card options name an ``adapter`` file (routes
``local/<base>+<name>`` are made by :mod:`gateway.finetune.registry`). The file is read once; those
bytes are verified (signature over the header, trust in the signer, tensor hash, base-model digest of
the folder actually being loaded) and only then parsed into tensors, so no weight from an unverified
or swapped file ever reaches the model (no check-then-reopen race).

Two ways in, matching how the adapter was trained (``gateway.adapter.kind``):

* ``unet-peft``: a UNet without diffusers' LoRA mixin (tiny-digits' ``UNet2DModel``): peft's
  ``inject_adapter_in_model`` + ``set_peft_model_state_dict``, refusing missing or unexpected keys;
* ``diffusers-lora``: any diffusers pipeline with a LoRA loader: ``pipe.load_lora_weights(state_dict)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidBackendRequest


def _verified(
    options: Mapping[str, Any], base_dir: Path
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(state dict, header metadata, provenance info) of the adapter named in ``options``."""
    from safetensors.torch import load

    from ..finetune.basemodel import model_digest
    from ..finetune.signing import AdapterRejected, verify_bytes

    path = Path(str(options["adapter"]))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdapterRejected(
            f"adapter file {path} cannot be read ({type(exc).__name__})", provider="local"
        ) from None
    try:
        v = verify_bytes(
            data, str(options.get("adapter_trust_pem", "")), base_model_sha256=model_digest(base_dir)
        )
    except AdapterRejected as exc:
        raise AdapterRejected(str(exc), provider="local") from None
    want = options.get("adapter_name")
    if want is not None and v.name != want:
        raise AdapterRejected(
            f"adapter file {path} is {v.name!r}, not the registered {want!r}", provider="local"
        )
    m = v.metadata
    info = {
        "name": v.name,
        "sha256": v.file_sha256,
        "tensor_sha256": v.tensor_sha256,
        "base_model": m.get("gateway.base_model"),
        "base_model_sha256": m.get("gateway.base_model_sha256"),
        "dataset_digest": m.get("gateway.dataset.digest"),
        "dataset_name": m.get("gateway.dataset.name"),
        "dataset_owner": m.get("gateway.dataset.owner"),
        "licence": m.get("modelspec.license"),
        "signer": v.signer,
    }
    return load(data), dict(m), info


def apply_to_unet(unet: Any, base_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Verify the adapter and inject it into ``unet`` (in place). Returns the provenance info."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    state, meta, info = _verified(options, base_dir)
    if meta.get("gateway.adapter.kind") != "unet-peft":
        raise InvalidBackendRequest(f"adapter {info['name']!r} is not a UNet adapter", provider="local")
    cfg = json.loads(meta.get("lora_adapter_metadata", "{}"))
    inject_adapter_in_model(LoraConfig(**cfg), unet)
    result = set_peft_model_state_dict(unet, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if unexpected or missing:
        raise InvalidBackendRequest(
            f"adapter {info['name']!r} does not fit this model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected LoRA tensors)",
            provider="local",
        )
    return info


def apply_to_pipeline(pipe: Any, base_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Verify the adapter and load it with the pipeline's own LoRA loader."""
    state, meta, info = _verified(options, base_dir)
    if meta.get("gateway.adapter.kind") != "diffusers-lora":
        raise InvalidBackendRequest(f"adapter {info['name']!r} is not a pipeline LoRA", provider="local")
    if not hasattr(pipe, "load_lora_weights"):
        raise InvalidBackendRequest(f"{type(pipe).__name__} has no LoRA loader", provider="local")
    pipe.load_lora_weights(state, adapter_name=str(info["name"]).replace(".", "_"))
    return info


__all__ = ["apply_to_pipeline", "apply_to_unet"]
