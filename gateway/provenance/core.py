"""``Provenance``: stamp each output (watermark, then C2PA) and verify images, for one gateway home.

Order matters: the watermark changes pixels, so it goes first and the C2PA manifest then hard-binds the
marked bytes and names the mark in its soft-binding assertion. A backend output that already carries
C2PA is never stripped: our manifest takes it as a ``parentOf`` ingredient. If our signing is off for
such an output, embedding our mark would mean re-encoding it without the provider's manifest, so the
mark is skipped and the bytes leave untouched (``details['watermark_skipped']`` says so).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadResponse, ConfigError
from ._image import ImageDecodeError, decode, encode_png, luma_of
from ._model import C2paStatus, ProvenanceInfo, Stamped, WatermarkStatus
from .keys import KeyStore, ProvenanceSettings
from .verify import VerifyPolicy, VerifyReport, read_c2pa, verify_bytes
from .watermark import MIN_SIDE, WatermarkKey, can_embed, detect, embed_pixels

log = logging.getLogger("gateway.provenance")
_C2PA_MARKERS = (b"caBX", b"c2pa", b"jumb")  # JUMBF box / PNG chunk names: a cheap "maybe C2PA" test


class Provenance:
    """Stamps and verifies for one gateway home; keys live in ``home/keys`` unless settings say otherwise.

    ``settings`` is the ``provenance:`` section of gateway.yaml (see :class:`ProvenanceSettings`).
    """

    def __init__(self, home: Path, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = ProvenanceSettings.parse(settings)
        self.keys = KeyStore(Path(home), self.settings)

    # ------------------------------------------------------------------ stamping

    def stamp(self, data: bytes, *, info: ProvenanceInfo, watermark: bool, c2pa: bool) -> Stamped:
        """Watermark and/or sign one backend output (PNG/JPEG/WebP bytes as returned)."""
        t0 = time.perf_counter()
        try:
            img = decode(data)
        except ImageDecodeError as exc:
            raise BadResponse(f"output image cannot be stamped: {exc}", provider=info.provider) from None
        details: dict[str, Any] = {}
        provider_c2pa = self._provider_c2pa(data, img.mime, details)
        marks = self._third_party(img.pixels, img.mode, details)
        out, mime = data, img.mime
        wm_status: WatermarkStatus = "provider" if marks else "absent"
        payload = None
        if watermark:
            skip = self._why_not_watermark(img.width, img.height, img.frames, provider_c2pa and not c2pa)
            if skip:
                details["watermark_skipped"] = skip
                log.warning("provenance: watermark not embedded for %s: %s", info.request_id, skip)
            else:
                key = self.watermark_key(create=True)
                if key is None:
                    raise ConfigError("no watermark key: set provenance.watermark.key_file or dev_keys: true")
                payload = key.payload(info.request_id, info.index)
                emb = embed_pixels(img.pixels, img.mode, payload)
                if emb.bit_errors and not detect(luma_of(emb.pixels, img.mode), [key]).found:
                    # pragma: no cover - never seen on the images measured; a guard, not a path
                    details["watermark_skipped"] = f"mark did not read back ({emb.bit_errors} bit errors)"
                    payload = None
                else:
                    out, mime = encode_png(emb.pixels, img.mode, img.info), "image/png"
                    wm_status = "embedded"
                    details["watermark"] = {
                        "key_id": key.key_id_hex,
                        "nonce": f"{payload.nonce:08x}",
                        "psnr_db": round(emb.psnr_db, 2),
                        "readback_bit_errors": emb.bit_errors,
                        "method": "dwt-dct-svd luma QIM v1",
                    }
        t1 = time.perf_counter()
        c2_status: C2paStatus = "provider" if provider_c2pa and out is data else "absent"
        if c2pa:
            out = self._sign(out, mime, info, payload, parent=(data, img.mime) if provider_c2pa else None,
                             details=details)  # fmt: skip
            c2_status = "signed"
        details["timings_ms"] = {
            "watermark": round((t1 - t0) * 1000, 2),
            "c2pa": round((time.perf_counter() - t1) * 1000, 2),
        }
        return Stamped(out, mime, img.width, img.height, wm_status, c2_status, details)

    def _why_not_watermark(self, width: int, height: int, frames: int, would_strip: bool) -> str | None:
        if not can_embed(width, height):
            return f"image is {width}x{height}; the watermark needs at least {MIN_SIDE}x{MIN_SIDE}"
        if frames > 1:
            return f"animated image ({frames} frames) is not watermarked"
        if would_strip:
            return "the output carries the provider's C2PA and our signing is off: re-encoding would strip it"
        return None

    def _provider_c2pa(self, data: bytes, mime: str, details: dict[str, Any]) -> bool:
        if not any(m in data for m in _C2PA_MARKERS):
            return False
        result = read_c2pa(data, mime, self.keys.trust_anchors())
        if result.state == "absent" and result.error is None:
            return False
        details["provider_c2pa"] = {
            "state": result.state,
            "signer": dict(result.active.signer) if result.active else None,
            "claim_generator": result.active.claim_generator if result.active else None,
            "error": result.error,
        }
        # Unreadable or not: bytes that look like C2PA are kept as an ingredient, never dropped.
        return True

    @staticmethod
    def _third_party(pixels: Any, mode: str, details: dict[str, Any]) -> list[str]:
        from .thirdparty import detect_all

        found = [m for m in detect_all(pixels, mode) if m.detected]
        if found:
            details["third_party_marks"] = [m.to_dict() for m in found]
        return [m.name for m in found]

    def _sign(
        self,
        data: bytes,
        mime: str,
        info: ProvenanceInfo,
        payload: Any,
        *,
        parent: tuple[bytes, str] | None,
        details: dict[str, Any],
    ) -> bytes:
        try:
            from . import c2pa_sign
        except ImportError as exc:  # pragma: no cover - the provenance extra is missing
            raise ConfigError("C2PA signing needs: pip install 'diffusion-gateway[provenance]'") from exc
        material = self.keys.signing()
        generation: dict[str, Any] = {
            "request_id": info.request_id,
            "index": info.index,
            "provider": info.provider,
            "model": info.model,
            "seed": info.seed,
            "gateway_version": __version__,
        }
        key = self.watermark_key(create=False)
        if key is not None and info.prompt_sha256:
            generation["prompt_commitment"] = key.commit("prompt", info.prompt_sha256)
        manifest = c2pa_sign.build_manifest(
            title=f"{info.request_id}-{info.index}{_EXT.get(mime, '')}",
            gateway_version=__version__,
            generation=generation,
            software_agent=f"{info.provider}/{info.model}",
            soft_binding=payload.to_bytes() if payload is not None else None,
            parent_label="provider-output" if parent else None,
            fine_tune=info.fine_tune,
            input_labels=[f"input-{i}" for i in range(len(info.inputs))],
            edit_mode=info.edit_mode,
        )
        p = (parent[0], parent[1], "provider-output") if parent else None
        ins = [(d, m, f"input-{i}", f"edit input {i} (sha256 {h[:16]})")
               for i, (d, m, h) in enumerate(info.inputs)]  # fmt: skip
        try:
            signed = c2pa_sign.sign(data, mime, manifest, material, parent=p, inputs=ins)
        except Exception as exc:
            import c2pa

            if isinstance(exc, c2pa.C2paError):
                raise ConfigError(f"C2PA signing failed: {type(exc).__name__.lstrip('_')}: {exc}") from None
            raise
        details["c2pa"] = {
            "signer_development": material.development,
            "alg": material.alg,
            "ingredient": parent is not None,
            "input_ingredients": len(info.inputs),
            "manifest_bytes": len(signed) - len(data),
        }
        return signed

    # ------------------------------------------------------------------ keys

    def watermark_key(self, *, create: bool) -> WatermarkKey | None:
        keys = self.keys.watermark_keys(create=create)
        return keys[0] if keys else None

    # ------------------------------------------------------------------ verification

    def verify(
        self,
        data: bytes,
        *,
        trust_anchors_pem: bytes | None = None,
        policy: VerifyPolicy | None = None,
        request_id: str | None = None,
        thorough: bool = False,
        source: str | None = None,
    ) -> VerifyReport:
        """Check one image with this home's watermark keys; never creates keys."""
        return verify_bytes(
            data,
            keys=self.keys.watermark_keys(create=False),
            trust_anchors_pem=trust_anchors_pem
            if trust_anchors_pem is not None
            else self.keys.trust_anchors(),
            policy=policy,
            request_id=request_id,
            thorough=thorough,
            source=source,
        )


_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def verify_image(
    image: bytes | str | os.PathLike[str],
    *,
    home: Path | None = None,
    settings: Mapping[str, Any] | None = None,
    trust_anchors_pem: bytes | None = None,
    policy: VerifyPolicy | None = None,
    request_id: str | None = None,
    thorough: bool = False,
) -> VerifyReport:
    """Verify bytes or a file with the keys of ``home`` (default ``$GATEWAY_HOME`` or ``./.gateway``)."""
    source = None
    if not isinstance(image, bytes):
        source = os.fspath(image)
        image = Path(source).read_bytes()
    if home is None:
        from ..config import default_home

        home = default_home()
    return Provenance(home, settings).verify(
        image, trust_anchors_pem=trust_anchors_pem, policy=policy, request_id=request_id, thorough=thorough,
        source=source,
    )  # fmt: skip


__all__ = ["Provenance", "verify_image"]
