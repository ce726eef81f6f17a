"""Signing material: the C2PA certificate chain and the watermark key, development or production.

Development (the embedded default): ``gateway keys init`` — or the first stamp — writes under
``<home>/keys``::

    c2pa-root.pem      P-256 root CA certificate: the trust anchor to hand to verifiers
    c2pa-signer.pem    P-256 leaf (not a CA; digitalSignature; EKU emailProtection; SKI/AKI)
    c2pa-signer.key    the leaf's private key (0600)
    watermark.key      32-byte HMAC key, hex (0600)
    retired/           earlier keys moved aside by ``--force`` (old watermarks still verify)

The root's private key is used once to sign the leaf and then discarded, so a stolen home directory
cannot mint new signers. The chain is trusted by nobody else, and every use logs that it is a
development chain. FACTS.md: C2PA rejects a self-signed leaf; the leaf alone goes in ``sign_cert``.

Production: ``provenance.c2pa.cert_chain`` + ``private_key`` (PEM files), or ``provenance.c2pa.signer``
— a callable ``(bytes) -> signature`` (or ``"module:function"``) backed by a KMS or HSM so the key never
enters the process — plus ``provenance.watermark.key_file``. No timestamp authority unless
``tsa_url`` is set: the wheel never needs the network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from .watermark import MAX_KEYS, WatermarkKey

log = logging.getLogger("gateway.provenance")

ROOT_CERT, LEAF_CERT, LEAF_KEY, WM_KEY = (
    "c2pa-root.pem",
    "c2pa-signer.pem",
    "c2pa-signer.key",
    "watermark.key",
)
_STRICT = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
SignFn = Callable[[bytes], bytes]


class C2paSettings(BaseModel):
    model_config = _STRICT
    cert_chain: Path | None = Field(
        default=None, description="PEM: leaf first, then intermediates (no root)."
    )
    private_key: Path | None = Field(default=None, description="PEM private key of the leaf.")
    signer: Any = Field(
        default=None, description="Callable (bytes)->signature or 'module:function' (KMS/HSM)."
    )
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    tsa_url: str | None = Field(default=None, description="RFC 3161 timestamp authority; None = offline.")
    trust_anchors: Path | None = Field(default=None, description="PEM roots that verify() trusts.")


class WatermarkSettings(BaseModel):
    model_config = _STRICT
    key_file: Path | None = None
    retired_key_files: tuple[Path, ...] = ()
    version: Literal[1, 2] = Field(
        default=2, description="Mark new outputs with v2 (re-synchronising) or v1; verify reads both."
    )


class ProvenanceSettings(BaseModel):
    """The ``provenance:`` section of gateway.yaml. Relative paths resolve against the gateway home."""

    model_config = _STRICT
    keys_dir: Path | None = None
    dev_keys: bool = Field(default=True, description="Create a development chain when none is configured.")
    # Read by the client (gateway/outputs.py), not here: whether remote outputs get our mark / manifest.
    watermark_remote: bool = True
    c2pa_remote: bool = True
    c2pa: C2paSettings = C2paSettings()
    watermark: WatermarkSettings = WatermarkSettings()

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> ProvenanceSettings:
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"provenance.{where}: {err['msg']}") from None


@dataclass(frozen=True, repr=False)
class SigningMaterial:
    """What c2pa needs to sign: the chain, and either the key PEM or a signing callback."""

    cert_chain_pem: bytes
    alg: str
    private_key_pem: bytes | None = None
    callback: SignFn | None = None
    tsa_url: str | None = None
    development: bool = False

    def __repr__(self) -> str:
        cb = self.callback is not None
        return f"SigningMaterial(alg={self.alg}, development={self.development}, callback={cb})"


@dataclass(frozen=True)
class InitResult:
    directory: Path
    created: tuple[Path, ...]
    retired: tuple[Path, ...]
    watermark_key_id: str


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_new(path: Path, data: bytes, secret: bool) -> None:
    """Create ``path`` exclusively (never overwrite a key by accident), 0600 for secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise key creation between processes (two first requests must not mint two chains)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: creation is still exclusive per file
        yield
        return
    with open(directory / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def make_dev_chain(common_name: str = "diffusion-gateway development") -> tuple[bytes, bytes, bytes]:
    """(root cert PEM, leaf cert PEM, leaf key PEM): a P-256 root CA and a leaf it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _utcnow()
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diffusion-gateway (development, untrusted)")
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} root CA"), org])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} signer"), org])
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(leaf_name)
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return root.public_bytes(pem), leaf.public_bytes(pem), key_pem


def init_keys(directory: Path, *, force: bool = False) -> InitResult:
    """Create what is missing (or, with ``force``, retire everything and start again)."""
    retired: list[Path] = []
    created: list[Path] = []
    with _locked(directory):
        names = (ROOT_CERT, LEAF_CERT, LEAF_KEY, WM_KEY)
        if force:
            stamp = _utcnow().strftime("%Y%m%dT%H%M%S%fZ")
            (directory / "retired").mkdir(exist_ok=True, mode=0o700)
            for name in names:
                src = directory / name
                if src.exists():
                    dst = directory / "retired" / f"{stamp}-{name}"
                    src.rename(dst)
                    retired.append(dst)
        if not all((directory / n).exists() for n in (ROOT_CERT, LEAF_CERT, LEAF_KEY)):
            for n in (ROOT_CERT, LEAF_CERT, LEAF_KEY):
                (directory / n).unlink(missing_ok=True)  # a half-written chain is useless: start clean
            root, leaf, key = make_dev_chain()
            for name, data, secret in (
                (ROOT_CERT, root, False),
                (LEAF_CERT, leaf, False),
                (LEAF_KEY, key, True),
            ):
                _write_new(directory / name, data, secret)
                created.append(directory / name)
        if not (directory / WM_KEY).exists():
            _write_new(directory / WM_KEY, secrets.token_bytes(32).hex().encode() + b"\n", True)
            created.append(directory / WM_KEY)
        wm_key = read_watermark_key(directory / WM_KEY)
    return InitResult(directory, tuple(created), tuple(retired), wm_key.key_id_hex)


def read_watermark_key(path: Path) -> WatermarkKey:
    """A key file holds the secret as hex (64 characters for 32 bytes); the message never quotes it."""
    try:
        text = path.read_text(encoding="ascii").strip()
        return WatermarkKey(bytes.fromhex(text))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable watermark key ({type(exc).__name__})") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({type(exc).__name__})") from None


def _resolve_callable(spec: Any) -> SignFn:
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    if isinstance(spec, str) and ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"provenance.c2pa.signer: cannot load {spec!r} ({type(exc).__name__})"
            ) from None
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    raise ConfigError("provenance.c2pa.signer must be a callable or 'module:function'")


class KeyStore:
    """Finds (and for the development default, creates) the signing material for one gateway home."""

    def __init__(self, home: Path, settings: ProvenanceSettings) -> None:
        self.home = Path(home)
        self.settings = settings
        self.directory = self.resolve(settings.keys_dir) if settings.keys_dir else self.home / "keys"
        self._warned = False

    def resolve(self, p: Path) -> Path:
        return p if p.is_absolute() else self.home / p

    @property
    def production_c2pa(self) -> bool:
        c = self.settings.c2pa
        return c.cert_chain is not None or c.signer is not None

    def _ensure_dev(self) -> None:
        if not self.settings.dev_keys:
            raise ConfigError(
                "no provenance keys configured and provenance.dev_keys is false: set "
                "provenance.c2pa.cert_chain + private_key (or signer) and provenance.watermark.key_file"
            )
        names = (ROOT_CERT, LEAF_CERT, LEAF_KEY, WM_KEY)
        if not all((self.directory / n).exists() for n in names):
            init_keys(self.directory)
        if not self._warned:
            log.warning(
                "provenance: signing with the DEVELOPMENT C2PA chain in %s; it is trusted by nobody else. "
                "Configure provenance.c2pa for production.",
                self.directory,
            )
            self._warned = True

    def signing(self) -> SigningMaterial:
        c = self.settings.c2pa
        if not self.production_c2pa:
            self._ensure_dev()
            return SigningMaterial(
                cert_chain_pem=_read(self.directory / LEAF_CERT, "certificate"),
                private_key_pem=_read(self.directory / LEAF_KEY, "private key"),
                alg="es256",
                development=True,
            )
        if c.cert_chain is None:
            raise ConfigError("provenance.c2pa.signer needs provenance.c2pa.cert_chain (the public chain)")
        if c.signer is None and c.private_key is None:
            raise ConfigError("provenance.c2pa.cert_chain needs provenance.c2pa.private_key or signer")
        chain = _read(self.resolve(c.cert_chain), "certificate chain")
        if c.signer is not None:
            return SigningMaterial(chain, c.alg, callback=_resolve_callable(c.signer), tsa_url=c.tsa_url)
        assert c.private_key is not None
        return SigningMaterial(
            chain, c.alg, private_key_pem=_read(self.resolve(c.private_key), "key"), tsa_url=c.tsa_url
        )

    def watermark_keys(self, *, create: bool) -> list[WatermarkKey]:
        """Current key first, then retired ones (so marks made before a rotation still verify)."""
        w = self.settings.watermark
        if w.key_file is not None:
            current = [read_watermark_key(self.resolve(w.key_file))]
        elif (self.directory / WM_KEY).exists() or (create and self._create_ok()):
            current = [read_watermark_key(self.directory / WM_KEY)]
        else:
            current = []
        retired = [read_watermark_key(self.resolve(p)) for p in w.retired_key_files]
        retired_dir = self.directory / "retired"
        if retired_dir.is_dir():
            retired += [read_watermark_key(p) for p in sorted(retired_dir.glob(f"*-{WM_KEY}"), reverse=True)]
        keys: list[WatermarkKey] = []
        for k in current + retired:
            if k.secret not in {x.secret for x in keys}:
                keys.append(k)
        return keys[:MAX_KEYS]

    def _create_ok(self) -> bool:
        if not self.settings.dev_keys:
            return False
        with _locked(self.directory):
            if not (self.directory / WM_KEY).exists():
                _write_new(self.directory / WM_KEY, secrets.token_bytes(32).hex().encode() + b"\n", True)
        return True

    def trust_anchors(self) -> bytes | None:
        """Roots configured for verification (the development root is never trusted implicitly)."""
        p = self.settings.c2pa.trust_anchors
        return _read(self.resolve(p), "trust anchors") if p is not None else None

    @property
    def dev_root_path(self) -> Path:
        return self.directory / ROOT_CERT
