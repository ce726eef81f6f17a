"""Open the audit log the way :class:`~gateway.config.Settings` describes it (keys, pins, witnesses).

One function, so the client, ``gateway audit`` and the dashboard agree on where checkpoints live,
which keys sign and are trusted, and which witnesses must see every head.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store import AuditLog, open_audit

if TYPE_CHECKING:
    from ..config import Settings

_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def audit_from_settings(
    settings: Settings,
    *,
    url: str | None = None,
    checkpoint_dir: Path | None = None,
    public_keys: tuple[str, ...] = (),
    **options: Any,
) -> AuditLog:
    """``open_audit`` with the settings' audit URL, checkpoint folder, signer, pins and witnesses.

    ``public_keys`` (``gateway audit verify --public-key``) add to the configured pins.
    """
    folder = checkpoint_dir if checkpoint_dir is not None else settings.home / "checkpoints"
    signer = None
    if settings.audit_signing_key:
        from .signers import signer_from_spec

        signer = signer_from_spec(settings.audit_signing_key, default_dir=settings.home)
    pinned_ids = [k for k in settings.audit_trusted_keys if _KEY_ID.match(k)]
    pinned_files = [k for k in settings.audit_trusted_keys if not _KEY_ID.match(k)] + list(public_keys)
    return open_audit(
        url or settings.resolved_audit_url,
        checkpoint_dir=folder,
        signer=signer,
        public_keys=pinned_files,
        pinned_ids=pinned_ids,
        witnesses=settings.audit_witnesses,
        witness_quorum=settings.audit_witness_quorum,
        witness_best_effort=settings.audit_witness_best_effort,
        origin=settings.audit_origin,
        **options,
    )


__all__ = ["audit_from_settings"]
