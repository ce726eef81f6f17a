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
from ._image import ImageDecodeError, decode, encode_png, luma_of, one_compute_thread
from ._model import C2paStatus, ProvenanceInfo, Stamped, WatermarkStatus
from .c2pa_sign import SOFT_BINDING_ALG, SOFT_BINDING_ALG_V2
from .credentials import AuditLookup, CredentialStore
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
        self.home = Path(home)
        self.keys = KeyStore(self.home, self.settings)
        self.credentials = CredentialStore(self.home)

    # ------------------------------------------------------------------ stamping

    def stamp(self, data: bytes, *, info: ProvenanceInfo, watermark: bool, c2pa: bool) -> Stamped:
        """Watermark and/or sign one backend output (PNG/JPEG/WebP bytes as returned)."""
        with one_compute_thread():
            return self._stamp(data, info=info, watermark=watermark, c2pa=c2pa)

    def _stamp(self, data: bytes, *, info: ProvenanceInfo, watermark: bool, c2pa: bool) -> Stamped:
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
        soft: tuple[bytes, str] | None = None  # (soft-binding value, algorithm name)
        if watermark:
            skip = self._why_not_watermark(img.width, img.height, img.frames, provider_c2pa and not c2pa)
            if skip:
                details["watermark_skipped"] = skip
                log.warning("provenance: watermark not embedded for %s: %s", info.request_id, skip)
            else:
                key = self.watermark_key(create=True)
                if key is None:
                    raise ConfigError("no watermark key: set provenance.watermark.key_file or dev_keys: true")
                mark = self._embed(img.pixels, img.mode, key, info, details)
                if mark is not None:
                    pixels, soft = mark
                    out, mime = encode_png(pixels, img.mode, img.info), "image/png"
                    wm_status = "embedded"
        t1 = time.perf_counter()
        c2_status: C2paStatus = "provider" if provider_c2pa and out is data else "absent"
        manifest: dict[str, Any] | None = None
        store = b""
        if c2pa:
            parent = (data, img.mime) if provider_c2pa else None
            out, manifest, store = self._sign(out, mime, info, soft, parent=parent, details=details)
            c2_status = "signed"
        if soft is not None:
            self._remember(out, mime, info, soft, manifest, store, details)
        details["timings_ms"] = {
            "watermark": round((t1 - t0) * 1000, 2),
            "c2pa": round((time.perf_counter() - t1) * 1000, 2),
        }
        return Stamped(out, mime, img.width, img.height, wm_status, c2_status, details)

    def _embed(
        self, pixels: Any, mode: str, key: WatermarkKey, info: ProvenanceInfo, details: dict[str, Any]
    ) -> tuple[Any, tuple[bytes, str]] | None:
        """v2 (the default) where it reads back, else v1; the pixels and the soft binding, or None."""
        from . import watermark_v2 as v2

        if self.settings.watermark.version == 2 and v2.can_embed(pixels.shape[1], pixels.shape[0]):
            n = v2.nonce(key, info.request_id, info.index)
            emb2 = v2.embed_pixels(pixels, mode, key, n)
            if emb2.readback_tag_errors is not None:
                details["watermark"] = {
                    "key_id": key.key_id_hex,
                    "nonce": f"{n:016x}",
                    "psnr_db": round(emb2.psnr_db, 2),
                    "readback_tag_errors": emb2.readback_tag_errors,
                    "method": "tiled sync v2",
                    "algorithm": v2.ALGORITHM,
                }
                return emb2.pixels, (v2.soft_binding(key, n), v2.ALGORITHM)
            details["watermark_v2_fallback"] = "the v2 mark did not read back on this image; v1 embedded"
        payload = key.payload(info.request_id, info.index)
        emb = embed_pixels(pixels, mode, payload)
        if emb.bit_errors and not detect(luma_of(emb.pixels, mode), [key]).found:
            # pragma: no cover - never seen on the images measured; a guard, not a path
            details["watermark_skipped"] = f"mark did not read back ({emb.bit_errors} bit errors)"
            return None
        details["watermark"] = {
            "key_id": key.key_id_hex,
            "nonce": f"{payload.nonce:08x}",
            "psnr_db": round(emb.psnr_db, 2),
            "readback_bit_errors": emb.bit_errors,
            "method": "dwt-dct-svd luma QIM v1",
            "algorithm": SOFT_BINDING_ALG,
        }
        return emb.pixels, (payload.to_bytes(), SOFT_BINDING_ALG)

    def _remember(
        self,
        data: bytes,
        mime: str,
        info: ProvenanceInfo,
        soft: tuple[bytes, str],
        manifest: dict[str, Any] | None,
        store: bytes,
        details: dict[str, Any],
    ) -> None:
        """Index this output's credential by its soft binding (durable content credentials)."""
        import base64
        import datetime as dt
        import hashlib

        from .credentials import Credential

        value, alg = soft
        nonce_len = 8 if alg == SOFT_BINDING_ALG_V2 else 4
        cred = Credential(
            algorithm=alg,
            key_id=value[:2].hex(),
            nonce=value[2 : 2 + nonce_len].hex(),
            request_id=info.request_id,
            index=info.index,
            provider=info.provider,
            model=info.model,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            image_sha256=hashlib.sha256(data).hexdigest(),
            mime=mime,
            manifest=manifest,
            manifest_store_b64=base64.b64encode(store).decode("ascii") if store else None,
        )
        self.credentials.put(cred)
        details["credential"] = {"soft_binding": cred.soft_binding, "stored": True}

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
        soft: tuple[bytes, str] | None,
        *,
        parent: tuple[bytes, str] | None,
        details: dict[str, Any],
    ) -> tuple[bytes, dict[str, Any], bytes]:
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
            soft_binding=soft[0] if soft is not None else None,
            parent_label="provider-output" if parent else None,
            fine_tune=info.fine_tune,
            input_labels=[f"input-{i}" for i in range(len(info.inputs))],
            edit_mode=info.edit_mode,
            soft_binding_alg=soft[1] if soft is not None else c2pa_sign.SOFT_BINDING_ALG,
        )
        p = (parent[0], parent[1], "provider-output") if parent else None
        ins = [(d, m, f"input-{i}", f"edit input {i} (sha256 {h[:16]})")
               for i, (d, m, h) in enumerate(info.inputs)]  # fmt: skip
        try:
            signed, store = c2pa_sign.sign_with_store(data, mime, manifest, material, parent=p, inputs=ins)
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
        return signed, manifest, store

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
        audit_lookup: AuditLookup | None = None,
    ) -> VerifyReport:
        """Check one image with this home's watermark keys; never creates keys.

        A found mark is followed to the credential stored at stamp time, and (with ``audit_lookup``,
        request id -> audit record) to the request's audit record.
        """
        with one_compute_thread():
            return verify_bytes(
                data,
                keys=self.keys.watermark_keys(create=False),
                credentials=self.credentials,
                audit_lookup=audit_lookup,
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
    from .credentials import audit_lookup_for

    lookup = audit_lookup_for(f"sqlite:///{Path(home) / 'audit.db'}", Path(home) / "checkpoints")
    return Provenance(home, settings).verify(
        image, trust_anchors_pem=trust_anchors_pem, policy=policy, request_id=request_id, thorough=thorough,
        source=source, audit_lookup=lookup,
    )  # fmt: skip


__all__ = ["Provenance", "verify_image"]
