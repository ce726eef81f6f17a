"""Who signs checkpoints: a key file, a key management service, or any callable.

Why a seam here: a signing key in the same folder as the checkpoints it signs lets whoever can cut
the log's tail re-sign a shorter history. Moving the key out of the gateway home (a file only the
gateway's user can read) or behind a KMS ``Sign`` call, where the private key never leaves the HSM,
takes that power away from anyone with write access to the home. Every signer exposes its public
key, so verifiers never need to reach the signer itself.

Two algorithms: Ed25519 (the default, a key file) and ECDSA P-256 with SHA-256 (what AWS KMS offers
for asymmetric signing keys). Key ids stay what they were for Ed25519 (the first 16 hex digits of
SHA-256 over the raw public key); an ECDSA key is named by SHA-256 over its DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    PublicKey = Ed25519PublicKey | EllipticCurvePublicKey
else:  # runtime: the union is only for annotations
    PublicKey = Any


@runtime_checkable
class Signer(Protocol):
    """Signs checkpoint messages. ``public_key`` must verify what ``sign`` returns."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, message: bytes) -> bytes: ...


def key_id(public: PublicKey) -> str:
    """16 hex digits naming a public key (Ed25519: raw bytes; ECDSA: DER SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(public, Ed25519PublicKey):
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    else:
        raw = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public: PublicKey, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` over ``message`` verifies under ``public`` (either algorithm)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        if isinstance(public, Ed25519PublicKey):
            public.verify(signature, message)
        else:
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def load_public_key(data: bytes) -> PublicKey:
    """A PEM public key of a supported kind; ValueError otherwise."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(data)
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("not an Ed25519 or ECDSA P-256 public key")


def public_pem(public: PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


class FileSigner:
    """An Ed25519 private key in a PEM file, created (mode 0600) on first use if missing.

    A key readable by group or others is refused: the point of keeping it apart is that only the
    gateway's own user can sign.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self._create = create
        self._key: Ed25519PrivateKey | None = None

    def _load(self) -> Ed25519PrivateKey:
        if self._key is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import (
                Encoding,
                NoEncryption,
                PrivateFormat,
                load_pem_private_key,
            )

            from .checkpoints import create_exclusive

            if not self.path.exists():
                if not self._create:
                    raise FileNotFoundError(f"{self.path}: no signing key")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                new = Ed25519PrivateKey.generate()
                pem = new.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                create_exclusive(self.path, pem, mode=0o600)
            mode = self.path.stat().st_mode
            if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise PermissionError(
                    f"{self.path}: the checkpoint signing key must be readable by its owner only "
                    f"(mode {stat.filemode(mode)}); run chmod 600"
                )
            key = load_pem_private_key(self.path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{self.path}: not an Ed25519 private key")
            self._key = key
        return self._key

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._load().public_key()

    def sign(self, message: bytes) -> bytes:
        return self._load().sign(message)


class CallbackSigner:
    """Any signing service: ``sign(message) -> signature`` plus the public key that verifies it.

    The callback receives the full message (not a digest), so it can hand it to an API that hashes
    itself (KMS ``MessageType=RAW``) or sign locally; it must produce Ed25519 or DER ECDSA P-256.
    """

    def __init__(self, sign: Callable[[bytes], bytes], public_key: PublicKey) -> None:
        self._sign = sign
        self._public = public_key

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._sign(message)


def kms_signer(key: str, *, client: Any = None, region: str | None = None) -> CallbackSigner:
    """A signer whose private key stays in AWS KMS (an ``ECC_NIST_P256`` ``SIGN_VERIFY`` key).

    ``key`` is a key id, ARN or ``alias/...``. The public key is fetched once here; each checkpoint
    is one ``Sign`` call (``ECDSA_SHA_256``, ``MessageType=RAW``). Endpoint and credentials come from
    the standard AWS chain (``AWS_ENDPOINT_URL_KMS`` included), so a KMS-compatible server works too.
    """
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    if client is None:
        import boto3

        client = boto3.client("kms", region_name=region or os.environ.get("AWS_REGION"))
    public = load_der_public_key(client.get_public_key(KeyId=key)["PublicKey"])
    from cryptography.hazmat.primitives.asymmetric import ec

    if not (isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)):
        raise ValueError(f"KMS key {key} is not an ECC_NIST_P256 key")

    def sign(message: bytes) -> bytes:
        out = client.sign(KeyId=key, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
        return bytes(out["Signature"])

    return CallbackSigner(sign, public)


def signer_from_spec(spec: str, *, default_dir: Path) -> Signer:
    """``kms:KEY`` (AWS KMS), or a path to an Ed25519 PEM key (relative paths under ``default_dir``)."""
    if spec.startswith("kms:"):
        return kms_signer(spec[4:])
    path = Path(spec).expanduser()
    return FileSigner(path if path.is_absolute() else default_dir / path)


__all__ = [
    "CallbackSigner",
    "FileSigner",
    "PublicKey",
    "Signer",
    "key_id",
    "kms_signer",
    "load_public_key",
    "public_pem",
    "signer_from_spec",
    "verify_signature",
]
