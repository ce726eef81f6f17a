"""Durable content credentials: every stamped output's manifest, found again through its watermark.

A C2PA manifest lives next to the pixels, so the first re-encode (a CMS resize, a chat app, a
screenshot) drops it. The watermark survives, and it carries a 64-bit nonce unique to the output.
At stamp time we store, under ``<home>/credentials/<key id>/<nonce>.json``, what the manifest said
(the signed manifest store itself, base64, plus the generation facts and the image hash); ``gateway
verify`` on a stripped copy decodes the mark, reads this record back and then finds the audit
record by its request id. This is the lookup side of C2PA's "durable content credentials"
(manifest + watermark + lookup; the Soft Binding Resolution API's ``/matches/byBinding``).

The index is keyed by the soft-binding value, so it is content-addressed in the sense that matters:
whoever holds the mark's key and nonce finds the record, and nothing else does. Files are written
atomically and never rewritten (a nonce is an HMAC of request id and index: one writer per name).
Nothing secret is stored: the watermark key never is, the prompt only as the keyed commitment the
manifest already carries.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..types import atomic_writer

DIRECTORY = "credentials"
_HEX = re.compile(r"^[0-9a-f]+$")

AuditLookup = Callable[[str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Credential:
    """What the gateway knew about one output when it left, indexed by (key id, nonce)."""

    algorithm: str
    key_id: str  # 4 hex digits
    nonce: str  # 16 hex digits (v2)
    request_id: str
    index: int
    provider: str
    model: str
    created: str  # ISO 8601 UTC
    image_sha256: str
    mime: str
    manifest: Mapping[str, Any] | None = None  # the manifest definition we signed (None: C2PA off)
    manifest_store_b64: str | None = None  # the signed C2PA manifest store (JUMBF), base64
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def soft_binding(self) -> str:
        return self.key_id + self.nonce

    def to_dict(self, *, with_store: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out["soft_binding"] = self.soft_binding
        if not with_store:
            store = out.pop("manifest_store_b64")
            out["manifest_store_bytes"] = len(base64.b64decode(store)) if store else 0
        return out


class CredentialStore:
    """The index under one gateway home (``<home>/credentials``)."""

    def __init__(self, home: Path) -> None:
        self.directory = Path(home) / DIRECTORY

    def path(self, key_id: str, nonce: str) -> Path:
        if not (_HEX.match(key_id) and _HEX.match(nonce)):
            raise ValueError("key id and nonce must be lower-case hex")
        return self.directory / key_id / f"{nonce}.json"

    def put(self, cred: Credential) -> Path:
        target = self.path(cred.key_id, cred.nonce)
        with atomic_writer(target, "w") as fh:
            json.dump(cred.to_dict(with_store=True), fh, sort_keys=True)
        return target

    def get(self, key_id: str, nonce: str) -> Credential | None:
        target = self.path(key_id, nonce)
        if not target.is_file():
            return None
        raw = json.loads(target.read_text("utf-8"))
        raw.pop("soft_binding", None)
        known = {k: raw[k] for k in Credential.__dataclass_fields__ if k in raw}
        return Credential(**known)


def audit_lookup_for(url: str, checkpoint_dir: Path) -> AuditLookup:
    """A function request id -> the request's final audit record (with seq and ts), opened lazily.

    Read-only: a missing SQLite file is not created and no checkpoint is written on close.
    """

    def lookup(request_id: str) -> dict[str, Any] | None:
        from ..audit import open_audit

        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            return None
        log = open_audit(url, checkpoint_dir=checkpoint_dir, create=False, checkpoint_on_close=False)
        try:
            found = None
            for rec in log.iter_records():
                if rec.get("request_id") == request_id and rec.get("event") == "request":
                    found = rec
            return found
        finally:
            log.close()

    return lookup


def summarise_audit(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The audit fields a reviewer needs to tie a copy to its request (no prompt, no secrets)."""
    keys = ("seq", "ts", "event", "request_id", "provider", "model", "team", "project", "user",
            "image_sha256s", "cost_usd", "entry_hash")  # fmt: skip
    return {k: rec.get(k) for k in keys if k in rec}


__all__ = ["Credential", "CredentialStore", "audit_lookup_for", "summarise_audit"]
