"""What goes into a stamp and what comes out: small frozen records the client and the audit log keep."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

WatermarkStatus = Literal["embedded", "provider", "absent"]
C2paStatus = Literal["signed", "provider", "absent"]


@dataclass(frozen=True)
class ProvenanceInfo:
    """What the gateway knows about one output image when it stamps it.

    ``index`` tells images of one request apart (the watermark nonce binds request id *and* index).
    ``prompt_sha256`` never appears in clear: the manifest carries a keyed commitment to it.
    """

    request_id: str
    provider: str
    model: str
    seed: int | None
    prompt_sha256: str
    index: int = 0
    fine_tune: Mapping[str, Any] | None = None  # base model, adapter name + hash, dataset digest
    inputs: tuple[tuple[bytes, str, str], ...] = field(default=(), repr=False)  # edit: (bytes, mime, sha256)
    edit_mode: str | None = None


@dataclass(frozen=True)
class Stamped:
    """The image as it leaves the gateway, and what provenance it carries.

    ``watermark``: ``embedded`` (ours), ``provider`` (a known third-party mark was detected and kept),
    ``absent``. ``c2pa``: ``signed`` (our manifest; a provider's manifest, if any, is its ingredient),
    ``provider`` (the provider's manifest, untouched), ``absent``. ``details`` says why, for the audit
    record (key id, nonce, PSNR, signer, reasons a step was skipped, timings). No secrets in it.
    """

    data: bytes
    mime: str
    width: int
    height: int
    watermark: WatermarkStatus
    c2pa: C2paStatus
    details: Mapping[str, Any] = field(default_factory=dict)
