"""What an output's provenance says about the fine-tune that drew it (C2PA assertion + audit record).

Local adapters: taken from what the backend actually verified and applied (``metadata["adapter"]``),
not from the card, so the manifest names the exact file (SHA-256) whose signature was checked.
Remote fine-tunes: from their card's ``fine_tune`` declaration (the dataset manifest the company keeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..catalog import Route

ASSERTION_VERSION = 1


def fine_tune_provenance(route: Route, metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fine-tune fields for this output, or None for a plain base model."""
    got = metadata.get("adapter")
    ft = route.card.fine_tune
    if isinstance(got, Mapping):
        out = {
            "version": ASSERTION_VERSION,
            "kind": "adapter",
            "base_model": got.get("base_model"),
            "base_model_sha256": got.get("base_model_sha256"),
            "adapter": got.get("name"),
            "adapter_sha256": got.get("sha256"),
            "adapter_tensor_sha256": got.get("tensor_sha256"),
            "dataset_digest": got.get("dataset_digest"),
            "dataset_name": got.get("dataset_name"),
            "dataset_owner": got.get("dataset_owner"),
            "licence": got.get("licence"),
            "signer": got.get("signer"),
        }
    elif ft is None:
        return None
    else:
        out = {
            "version": ASSERTION_VERSION,
            "kind": ft.kind,
            "base_model": ft.base_model,
            "base_model_sha256": ft.base_model_sha256,
            "adapter": ft.name,
            "adapter_sha256": ft.adapter_sha256,
            "dataset_digest": ft.dataset_digest,
            "dataset_name": ft.dataset_name,
            "dataset_manifest": ft.dataset_manifest,
            "dataset_owner": ft.owner,
            "licence": route.card.licence.name,
        }
    return {k: v for k, v in out.items() if v is not None}


__all__ = ["fine_tune_provenance"]
