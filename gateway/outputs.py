"""Step 5 of a request: decode and validate outputs, run output policy checks, add provenance.

Kept apart from the client so the sync and async shells share it unchanged (the async shell runs it in
a worker thread: classifiers and watermarking are CPU work that must not block the event loop).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import BadResponse, PolicyDenied
from .types import Context, Decision, GeneratedImage

if TYPE_CHECKING:
    from .policy import PolicySet
    from .provenance import Provenance, ProvenanceInfo

# Formats a backend may hand us, by magic bytes. Anything else is refused before decoding.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"RIFF", "image/webp"),
)
MAX_PIXELS = 4096 * 4096
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk with its fixed CRC: the last 8 bytes of every PNG


def sniff(data: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if data.startswith(magic) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime
    return None


def inspect_image(data: bytes, provider: str = "") -> tuple[str, int, int]:
    """Check magic bytes, size (before any pixel is decoded) and integrity; return (mime, width, height).

    PNG, what every built-in backend returns by default, is checked without inflating it: the IEND
    chunk must end the data and Pillow's ``verify()`` walks every chunk's CRC-32, which catches a
    truncated or corrupted transfer for ~30 µs instead of the 2-9 ms a full decode of a 512-1024 px
    image costs (measured in benchmarks/bench_overhead.py). Steps that need the pixels (watermark,
    C2PA, image classifiers) decode them anyway and refuse what does not decode. JPEG and WebP have
    no such per-chunk checksum, so they are still fully decoded here.
    """
    from PIL import Image

    mime = sniff(data)
    if mime is None:
        raise BadResponse("output is not a PNG, JPEG or WebP image", provider=provider)
    if mime == "image/png" and not data.endswith(_PNG_END):
        raise BadResponse("output image does not decode: PNG is truncated (no IEND)", provider=provider)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadResponse(f"output of {img.width}x{img.height} is too large", provider=provider)
                width, height = img.width, img.height
                if mime == "image/png":
                    img.verify()  # every chunk's CRC, up to IEND; pixels stay compressed
                else:
                    img.load()  # decodes every byte: catches truncated files
                return mime, width, height
    except BadResponse:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise BadResponse(f"output image does not decode: {type(exc).__name__}", provider=provider) from None


@dataclass
class Processed:
    images: list[GeneratedImage] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class OutputStep:
    """What step 5 needs: the policy (output classifiers) and provenance (watermark, C2PA)."""

    policy: PolicySet
    provenance: Provenance | None
    watermark_remote: bool = True
    c2pa_remote: bool = True

    def wants_c2pa(self, decision: Decision, *, local: bool) -> bool:
        """Whether outputs of this request get our C2PA manifest (planning asks, to check c2pa is there)."""
        return local or self.c2pa_remote or decision.provenance.c2pa_required

    def signs_c2pa(self, decision: Decision, *, local: bool) -> bool:
        """:meth:`wants_c2pa`, and there is a provenance step to do the signing."""
        return self.provenance is not None and self.wants_c2pa(decision, local=local)

    def trivial(
        self, decision: Decision, context: Context, *, local: bool, provider_watermark: bool = False
    ) -> bool:
        """Whether step 5 is only the format checks here: no classifier in scope, nothing to stamp,
        no provenance required (so nothing can be quarantined). The async shell then runs it inline
        instead of paying a worker-thread round trip for ~0.1 ms of work."""
        req = decision.provenance
        if req.watermark_required or req.c2pa_required or self.policy.needs_output_check(context):
            return False
        want_wm = not provider_watermark and (local or self.watermark_remote)
        return self.provenance is None or not (want_wm or self.wants_c2pa(decision, local=local))

    def process(
        self,
        raw: Sequence[bytes],
        *,
        decision: Decision,
        context: Context,
        info: ProvenanceInfo,
        local: bool,
        metadata: dict[str, Any],
        provider_watermark: bool = False,
    ) -> Processed:
        """Validate, check and stamp ``raw``; denied outputs raise, quarantined ones are listed.

        Where the provider card says the provider already embeds an invisible watermark (Titan),
        ours is not layered on top (it could weaken theirs, and AWS forbids degrading provenance):
        the image reports ``watermark="provider"`` and gets our C2PA manifest.
        """
        out = Processed()
        checked = [inspect_image(data, info.provider) for data in raw]
        findings = self.policy.check_outputs(raw, decision, context)
        deny = [f for f in findings if f.action == "deny"]
        if deny:
            raise PolicyDenied(
                "an output image was denied by policy: " + "; ".join(f.reason for f in deny),
                rule_ids=sorted({f.rule_id for f in deny}),
                decision=decision,
            )
        held = {f.index: f for f in findings}
        req = decision.provenance
        want_wm = not provider_watermark and (local or self.watermark_remote or req.watermark_required)
        want_c2pa = self.wants_c2pa(decision, local=local)
        for i, data in enumerate(raw):
            if i in held:
                f = held[i]
                out.quarantined.append(
                    {"index": i, "rule_id": f.rule_id, "reason": f.reason, "score": round(f.score, 4)}
                )
                continue
            mime, width, height = checked[i]
            wm, c2pa, details = "absent", "absent", {}
            if self.provenance is not None and (want_wm or want_c2pa):
                stamped = self.provenance.stamp(
                    data, info=replace(info, index=i), watermark=want_wm, c2pa=want_c2pa
                )
                data, mime, width, height = stamped.data, stamped.mime, stamped.width, stamped.height
                wm, c2pa, details = stamped.watermark, stamped.c2pa, dict(stamped.details)
            if provider_watermark and wm == "absent":
                wm = "provider"
            missing = [name for name, need, have in (
                ("watermark", req.watermark_required, wm),
                ("c2pa", req.c2pa_required, c2pa),
            ) if need and have == "absent"]  # fmt: skip
            if missing:
                reason = f"required provenance missing: {', '.join(missing)}"
                if req.on_missing == "deny":
                    raise PolicyDenied(reason, rule_ids=["provenance.required"], decision=decision)
                out.quarantined.append({"index": i, "rule_id": "provenance.required", "reason": reason})
                continue
            out.images.append(
                GeneratedImage(
                    data=data,
                    width=width,
                    height=height,
                    mime=mime,
                    metadata={**metadata, "provenance": details} if details else dict(metadata),
                    watermark=wm,
                    c2pa=c2pa,
                )
            )
        return out
