"""Checkpoint key rotation as a signed statement inside the log itself.

Why in the log: a verifier that pins the old key must learn the new one from something the old key
vouched for, and the log is the one place every verifier already reads. The statement names both keys
and carries two signatures over the same message: the old key's (authorisation) and the new key's
(proof that whoever rotated holds it). It is sealed by a checkpoint under the old key before the new
key signs anything, so the order "old key says: trust new key" is itself in the tamper-evident record.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from .canonical import canonical_bytes
from .signers import PublicKey, Signer, key_id, load_public_key, public_pem, verify_signature

if TYPE_CHECKING:
    from .store import AuditLog

EVENT = "audit.key_rotation"
DOMAIN = b"diffusion-gateway/audit-key-rotation/v1\n"
_MARKER = b'"event":"audit.key_rotation"'


def _message(log_id: str, old_id: str, new_id: str, new_pem: str) -> bytes:
    fields = {"log_id": log_id, "new_key": new_pem, "new_key_id": new_id, "old_key_id": old_id}
    return DOMAIN + canonical_bytes(fields)


def rotate_key(log: AuditLog, new: Signer) -> dict[str, Any]:
    """Seal, record the rotation signed by both keys, seal under the old key, then sign with ``new``."""
    old = log.checkpoints.signer
    old_id, new_id = key_id(old.public_key), key_id(new.public_key)
    if old_id == new_id:
        from ..errors import UsageError

        raise UsageError("the new checkpoint key is the current one")
    pem = public_pem(new.public_key).decode("ascii")
    msg = _message(log.log_id, old_id, new_id, pem)
    record = {
        "event": EVENT,
        "old_key_id": old_id,
        "new_key_id": new_id,
        "new_key": pem,
        "old_signature": base64.b64encode(old.sign(msg)).decode("ascii"),
        "new_signature": base64.b64encode(new.sign(msg)).decode("ascii"),
    }
    log.checkpoint()
    seq = log.append(record)
    log.checkpoint()
    log.checkpoints.signer = new
    log.checkpoints._public_written = False
    log.checkpoints.extra_keys[new_id] = new.public_key
    return {"seq": seq, "old_key_id": old_id, "new_key_id": new_id}


def trust_rotations(log: AuditLog) -> bool:
    """Add keys introduced by valid rotation statements (in log order) to the trusted set."""
    store = log.checkpoints
    trusted: dict[str, PublicKey] = dict(store.trusted_keys())
    added = False
    for _, _, body in log._scan(0):
        raw = bytes(body) if not isinstance(body, bytes) else body
        if _MARKER not in raw:
            continue
        try:
            rec = json.loads(raw)["record"]
            if rec.get("event") != EVENT:
                continue
            old = trusted.get(str(rec["old_key_id"]))
            if old is None:
                continue
            new = load_public_key(str(rec["new_key"]).encode())
            new_id = key_id(new)
            if new_id != rec["new_key_id"]:
                continue
            msg = _message(log.log_id, str(rec["old_key_id"]), new_id, str(rec["new_key"]))
            ok = verify_signature(old, base64.b64decode(rec["old_signature"]), msg) and verify_signature(
                new, base64.b64decode(rec["new_signature"]), msg
            )
        except (ValueError, KeyError, TypeError):
            continue
        if ok and new_id not in trusted:
            trusted[new_id] = new
            store.extra_keys[new_id] = new
            added = True
    return added


__all__ = ["EVENT", "rotate_key", "trust_rotations"]
