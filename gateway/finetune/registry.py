"""Registered adapters: the signed files in ``<home>/adapters/`` and the routes made from them.

Every ``NAME.safetensors`` there becomes a route ``local/<base>+NAME`` whose card is derived from the
adapter's signed header and its base model's card: the licence is the dataset's (with the base
model's), indemnity ``none`` (self-hosted: nobody else stands behind the output), training data
disclosed (dataset name, owner, licences and manifest digest), and ``fine_tune`` names the adapter.

Making routes reads only each header and checks its signature (cheap: no tensor hashing), so a
tampered header or a foreign signer is visible in ``gateway explain`` as a dropped route; the tensor
hash and base-model digest are checked by the local backend when it loads the weights.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog import Catalog, FineTune, IndemnityTerms, Licence, ModelCard, ProviderCard, Route, TrainingData
from .signing import MAX_HEADER, AdapterRejected, verify_header

SUFFIX = ".safetensors"


def adapters_dir(home: Path) -> Path:
    return Path(home) / "adapters"


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors ``__metadata__`` of ``path``, reading only the header."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise AdapterRejected(f"{path.name}: truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise AdapterRejected(f"{path.name}: corrupt safetensors header length")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        meta = header.get("__metadata__") or {}
    except (UnicodeDecodeError, ValueError, AttributeError):
        raise AdapterRejected(f"{path.name}: corrupt safetensors header") from None
    if not isinstance(meta, dict):
        raise AdapterRejected(f"{path.name}: corrupt safetensors metadata")
    return {str(k): str(v) for k, v in meta.items()}


@dataclass(frozen=True)
class AdapterEntry:
    """One adapter file as the registry sees it (header only)."""

    name: str
    path: Path
    metadata: dict[str, str]
    signed: bool
    signer: str | None = None
    problem: str | None = None

    @property
    def base_model(self) -> str:
        return self.metadata.get("gateway.base_model", "")

    @property
    def route_key(self) -> str:
        return f"local/{self.base_model}+{self.name}"

    def json_field(self, key: str) -> Any:
        try:
            return json.loads(self.metadata.get(key, "null"))
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        m = self.metadata
        return {
            "name": self.name,
            "path": str(self.path),
            "route": self.route_key,
            "signed": self.signed,
            "signer": self.signer,
            "problem": self.problem,
            "base_model": self.base_model,
            "base_model_sha256": m.get("gateway.base_model_sha256"),
            "dataset_digest": m.get("gateway.dataset.digest"),
            "dataset_name": m.get("gateway.dataset.name"),
            "owner": m.get("gateway.dataset.owner"),
            "licence": m.get("modelspec.license"),
            "licences": self.json_field("gateway.licence_summary"),
            "training_config": self.json_field("gateway.training_config"),
            "code_version": m.get("gateway.code_version"),
            "created": m.get("gateway.created"),
            "tensor_sha256": m.get("gateway.tensor_sha256"),
            "kind": m.get("gateway.adapter.kind"),
        }


def entry_for(path: Path, bundle_pem: str) -> AdapterEntry:
    try:
        meta = read_metadata(path)
    except (AdapterRejected, OSError) as exc:
        return AdapterEntry(path.stem, path, {}, False, problem=str(exc))
    name = meta.get("gateway.adapter.name") or path.stem
    if name != path.stem:
        return AdapterEntry(path.stem, path, meta, False, problem=f"file {path.name} claims to be {name!r}")
    try:
        signer = verify_header(meta, bundle_pem)
    except AdapterRejected as exc:
        return AdapterEntry(name, path, meta, False, problem=str(exc))
    return AdapterEntry(name, path, meta, True, signer=signer)


def scan(home: Path, bundle_pem: str) -> list[AdapterEntry]:
    d = adapters_dir(home)
    if not d.is_dir():
        return []
    return [entry_for(p, bundle_pem) for p in sorted(d.glob(f"*{SUFFIX}")) if p.is_file()]


def find(home: Path, name: str, bundle_pem: str) -> AdapterEntry:
    from ..errors import UsageError

    p = adapters_dir(home) / f"{name}{SUFFIX}"
    if not p.is_file():
        known = [e.name for e in scan(home, bundle_pem)]
        raise UsageError(f"no adapter named {name!r} in {adapters_dir(home)} (have: {known or 'none'})")
    return entry_for(p, bundle_pem)


def _commercial(licences: dict[str, int] | None) -> bool:
    return not any("-NC" in lic.upper() or "NONCOMMERCIAL" in lic.upper() for lic in (licences or {}))


def card_for(entry: AdapterEntry, base: Route, bundle_pem: str) -> ModelCard:
    """The adapter's route card, derived from its signed header and the base model's card."""
    from ..backends.local import resolve_model_dir

    m, b = entry.metadata, base.card
    created = m.get("gateway.created", "")[:10]
    try:
        as_of = dt.date.fromisoformat(created)
    except ValueError:
        as_of = b.licence.as_of
    src = str(entry.path)
    licences = entry.json_field("gateway.licence_summary") or {}
    digest = m.get("gateway.dataset.digest", "")
    dataset = m.get("gateway.dataset.name", "")
    owner = m.get("gateway.dataset.owner", "")
    summary = (
        f"Fine-tuned on dataset {dataset!r} ({m.get('gateway.dataset.files', '?')} files, owner "
        f"{owner or 'not named'}, licences {licences}), manifest digest {digest}. Base model: "
        f"{b.training_data.summary}"
    )
    options = {
        **b.options,
        "path": str(resolve_model_dir(b.id, dict(b.options))),
        "adapter": str(entry.path),
        "adapter_name": entry.name,
        "adapter_tensor_sha256": m.get("gateway.tensor_sha256"),
        "adapter_trust_pem": bundle_pem,
    }
    return b.model_copy(
        update={
            "id": f"{b.id}+{entry.name}",
            "name": f"{b.name} + LoRA {entry.name}",
            "licence": Licence(
                name=f"{m.get('modelspec.license', 'unknown')}; base model: {b.licence.name}",
                commercial_use=b.licence.commercial_use and _commercial(licences),
                source=src,
                as_of=as_of,
            ),
            "indemnity": IndemnityTerms(
                level="none",
                scope="Self-hosted fine-tune; no third party stands behind the output.",
                source=src,
                as_of=as_of,
            ),
            "training_data": TrainingData(disclosed=True, summary=summary, source=src, as_of=as_of),
            "options": options,
            "fine_tune": FineTune(
                name=entry.name,
                kind="adapter",
                base_model=entry.base_model,
                base_model_sha256=m.get("gateway.base_model_sha256"),
                dataset_digest=digest if len(digest) == 64 else "0" * 64,
                dataset_name=dataset,
                owner=owner,
                signed=entry.signed,
                signer=entry.signer,
                problem=entry.problem,
                source=src,
                as_of=as_of,
            ),
        }
    )


def with_adapters(catalog: Catalog, home: Path, bundle_pem: str) -> Catalog:
    """``catalog`` plus one route per registered adapter whose base model is a local route."""
    entries = scan(home, bundle_pem)
    if not entries:
        return catalog
    cards = []
    for e in entries:
        base = catalog.get(f"local/{e.base_model}")
        if base is None or base.card.fine_tune is not None or catalog.get(e.route_key) is not None:
            continue
        cards.append(card_for(e, base, bundle_pem))
    if not cards:
        return catalog
    extra = ProviderCard(
        provider="local", name="Local fine-tunes (signed LoRA adapters)", models=tuple(cards)
    )
    return Catalog([*catalog.cards, extra])


__all__ = [
    "AdapterEntry",
    "adapters_dir",
    "card_for",
    "entry_for",
    "find",
    "read_metadata",
    "scan",
    "with_adapters",
]
