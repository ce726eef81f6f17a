"""Signed adapters: provenance in the safetensors header, signed with the gateway's provenance key.

An adapter file is an ordinary safetensors file (``format: pt`` and diffusers' ``lora_adapter_metadata``
stay as diffusers writes them, FACTS.md "LoRA adapters"). Our claims go in *separate* top-level header
keys, strings as safetensors requires:

=============================  =============================================================
``gateway.adapter.name``       the adapter's registered name (what ``adapter=`` selects)
``gateway.adapter.kind``       ``unet-peft`` (tiny-digits style UNet2DModel) or ``diffusers-lora``
``gateway.base_model``         base model id (``tiny-digits`` or a pipeline path's name)
``gateway.base_model_sha256``  digest of the base model's weight and config files
``gateway.dataset.digest``     the dataset manifest's Merkle root (gateway/finetune/manifest.py)
``gateway.dataset.name``       dataset name; ``gateway.dataset.owner`` its owner
``gateway.dataset.licence``    the dataset's licence; ``gateway.licence_summary`` files per licence
``gateway.training_config``    JSON: steps, rank, alpha, lr, seed, batch, targets, final loss
``gateway.code_version``       the gateway version that trained it
``gateway.created``            UTC timestamp
``gateway.tensor_sha256``      SHA-256 over the tensor index and the tensor bytes
``gateway.signer_cert``        PEM of the signing certificate (the C2PA leaf)
``gateway.signature_alg``      e.g. es256
``gateway.signature``          base64 signature over the canonical JSON of every other header key
=============================  =============================================================

Verifying = the tensor bytes hash to ``gateway.tensor_sha256``, the signature over the header checks
out with ``gateway.signer_cert``, and that certificate is one this gateway trusts (its own development
root, retired roots, configured trust anchors or production chain). A flipped byte anywhere in the file
breaks one of the three; an adapter from another gateway fails the last.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidBackendRequest, VerificationFailed

if TYPE_CHECKING:
    from ..provenance.keys import KeyStore, SigningMaterial

PREFIX = "gateway."
SIGNATURE = "gateway.signature"
SIGNER_CERT = "gateway.signer_cert"
SIGNATURE_ALG = "gateway.signature_alg"
TENSOR_SHA256 = "gateway.tensor_sha256"
MAX_HEADER = 100 * 1024 * 1024
_HASHES = {
    "es256": "SHA256",
    "es384": "SHA384",
    "es512": "SHA512",
    "ps256": "SHA256",
    "ps384": "SHA384",
    "ps512": "SHA512",
}


class AdapterRejected(VerificationFailed, InvalidBackendRequest):
    """An adapter failed verification (tampered, unsigned, foreign, or for another base model).

    Exit code 6 (verification failed). It is also a backend error, so a refused load is an audited
    attempt whose reservation is released, and it never falls back to another route.
    """


@dataclass(frozen=True)
class Parsed:
    header: Mapping[str, Any]  # tensor index (no __metadata__)
    metadata: Mapping[str, str]
    data_offset: int


def parse(data: bytes) -> Parsed:
    """Split a safetensors file into its tensor index, its metadata and where the tensor bytes start."""
    if len(data) < 8:
        raise AdapterRejected("adapter file is truncated (no safetensors header)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise AdapterRejected("adapter file has a corrupt safetensors header length")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AdapterRejected("adapter file has a corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise AdapterRejected("adapter file has a corrupt safetensors header")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise AdapterRejected("adapter header metadata must map strings to strings")
    return Parsed(header, meta, 8 + n)


def tensor_sha256(data: bytes, parsed: Parsed | None = None) -> str:
    """SHA-256 over the canonical tensor index (names, dtypes, shapes, offsets) and the tensor bytes."""
    p = parsed or parse(data)
    h = hashlib.sha256(_canonical(p.header))
    h.update(memoryview(data)[p.data_offset :])
    return h.hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_payload(metadata: Mapping[str, str]) -> bytes:
    """What the signature covers: every header key except the signature itself."""
    return b"diffusion-gateway adapter v1\n" + _canonical(
        {k: v for k, v in metadata.items() if k != SIGNATURE}
    )


def _sign(payload: bytes, material: SigningMaterial) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if material.callback is not None:
        return material.callback(payload)
    assert material.private_key_pem is not None
    key = serialization.load_pem_private_key(material.private_key_pem, password=None)
    algo = getattr(hashes, _HASHES.get(material.alg, "SHA256"))()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(algo))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(payload)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(payload, padding.PSS(padding.MGF1(algo), padding.PSS.DIGEST_LENGTH), algo)
    raise VerificationFailed(f"unsupported signing key type {type(key).__name__}")


def sign_tensors(tensors: Mapping[str, Any], metadata: Mapping[str, str], material: SigningMaterial) -> bytes:
    """Serialise ``tensors`` with ``metadata`` plus the tensor hash and a signature (bytes of the file)."""
    from safetensors.torch import save

    plain = save(dict(tensors))
    meta = {k: str(v) for k, v in metadata.items()}
    meta[TENSOR_SHA256] = tensor_sha256(plain)
    meta[SIGNER_CERT] = _leaf_pem(material.cert_chain_pem).decode("ascii")
    meta[SIGNATURE_ALG] = material.alg
    meta.setdefault("gateway.created", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    meta[SIGNATURE] = base64.b64encode(_sign(signed_payload(meta), material)).decode("ascii")
    out = save(dict(tensors), metadata=meta)
    assert tensor_sha256(out) == meta[TENSOR_SHA256]  # offsets are relative to the data section
    return out


def _leaf_pem(chain_pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificates(chain_pem)[0].public_bytes(Encoding.PEM)


# ------------------------------------------------------------------------------------------ trust


def trust_bundle(keys: KeyStore) -> str:
    """PEM of every certificate an adapter signer may be, or be issued by, for this gateway home.

    The development root (and retired ones, so adapters outlive a key rotation), configured trust
    anchors, and the configured production chain. Reading never creates keys.
    """
    pems: list[bytes] = []
    d = keys.directory
    for p in [d / "c2pa-root.pem", *sorted((d / "retired").glob("*-c2pa-root.pem"))]:
        if p.is_file():
            pems.append(p.read_bytes())
    anchors = keys.trust_anchors()
    if anchors:
        pems.append(anchors)
    chain = keys.settings.c2pa.cert_chain
    if chain is not None and keys.resolve(chain).is_file():
        pems.append(keys.resolve(chain).read_bytes())
    return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in pems).decode("ascii")


def _trusted(cert: Any, bundle_pem: str) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    if not bundle_pem.strip():
        return False
    for anchor in x509.load_pem_x509_certificates(bundle_pem.encode("ascii")):
        if anchor.fingerprint(_sha256()) == cert.fingerprint(_sha256()):
            return True
        try:
            cert.verify_directly_issued_by(anchor)
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _verify_signature(cert: Any, alg: str, payload: bytes, sig: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    key = cert.public_key()
    algo = getattr(hashes, _HASHES.get(alg, "SHA256"))()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(sig) == 2 * size:  # raw r||s, as KMS/HSM callbacks often return
                sig = encode_dss_signature(int.from_bytes(sig[:size]), int.from_bytes(sig[size:]))
            key.verify(sig, payload, ec.ECDSA(algo))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, payload)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, payload, padding.PSS(padding.MGF1(algo), padding.PSS.AUTO), algo)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Verified:
    """An adapter whose signature, tensor hash and (if asked) base model checked out."""

    metadata: Mapping[str, str]
    file_sha256: str
    tensor_sha256: str
    signer: str

    @property
    def name(self) -> str:
        return self.metadata.get("gateway.adapter.name", "")


def verify_header(metadata: Mapping[str, str], bundle_pem: str) -> str:
    """Check the signature over the header and the signer's trust; return the signer's subject.

    Cheap (no tensor hashing): used when adapters become routes. Loading calls :func:`verify_bytes`.
    """
    from cryptography import x509

    name = metadata.get("gateway.adapter.name", "?")
    missing = [k for k in (SIGNATURE, SIGNER_CERT, TENSOR_SHA256) if not metadata.get(k)]
    if missing:
        raise AdapterRejected(f"adapter {name!r} is not signed (header lacks {', '.join(missing)})")
    try:
        cert = x509.load_pem_x509_certificate(metadata[SIGNER_CERT].encode("ascii"))
        sig = base64.b64decode(metadata[SIGNATURE], validate=True)
    except (ValueError, UnicodeEncodeError):
        raise AdapterRejected(f"adapter {name!r}: unreadable signer certificate or signature") from None
    if not _verify_signature(cert, metadata.get(SIGNATURE_ALG, "es256"), signed_payload(metadata), sig):
        raise AdapterRejected(f"adapter {name!r}: signature does not match its header (tampered?)")
    if not _trusted(cert, bundle_pem):
        raise AdapterRejected(
            f"adapter {name!r}: signed by {cert.subject.rfc4514_string()!r}, which this gateway does not "
            "trust (a foreign adapter: add its root to provenance.c2pa.trust_anchors to accept it)"
        )
    return str(cert.subject.rfc4514_string())


def verify_bytes(data: bytes, bundle_pem: str, *, base_model_sha256: str | None = None) -> Verified:
    """Full check before any weight is applied: header signature, trust, tensor hash, base model."""
    p = parse(data)
    signer = verify_header(p.metadata, bundle_pem)
    name = p.metadata.get("gateway.adapter.name", "?")
    got = tensor_sha256(data, p)
    if got != p.metadata[TENSOR_SHA256]:
        raise AdapterRejected(f"adapter {name!r}: tensor bytes do not match the signed hash (tampered)")
    want = p.metadata.get("gateway.base_model_sha256", "")
    if base_model_sha256 is not None and want != base_model_sha256:
        raise AdapterRejected(
            f"adapter {name!r} was trained on base model {want[:16]}..., not on this base "
            f"({base_model_sha256[:16]}...): refusing to apply it"
        )
    return Verified(p.metadata, hashlib.sha256(data).hexdigest(), got, signer)


__all__ = [
    "AdapterRejected",
    "Verified",
    "parse",
    "sign_tensors",
    "tensor_sha256",
    "trust_bundle",
    "verify_bytes",
    "verify_header",
]
