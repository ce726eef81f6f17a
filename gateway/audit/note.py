"""Tree heads as C2SP signed-note checkpoints (c2sp.org/tlog-checkpoint, c2sp.org/signed-note).

Why this format for what goes to witnesses: it is what the transparency-log ecosystem (Go's checksum
database, Sigstore, the transparency-dev witnesses) reads and cosigns, so an auditor can check our heads
with standard tools rather than ours. A checkpoint note is::

    <origin>
    <tree size, decimal>
    <RFC 6962 root hash, base64>

    — <key name> base64(4-byte key id || signature)

The note text (the three lines, final newline included) is what is signed. Ed25519 keys use signature
type 0x01 and key id SHA-256(name || 0x0A || 0x01 || 32-byte key)[:4]; ECDSA P-256 keys (a KMS key) use
type 0x02 with key id SHA-256(DER SubjectPublicKeyInfo)[:4], as transparency-dev's witness does.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .signers import PublicKey, Signer, verify_signature

DASH = "\u2014 "
MAX_NOTE_BYTES = 1 << 16
MAX_SIGNATURES = 16


class NoteError(ValueError):
    """A note that is malformed or whose signatures do not verify."""


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What a checkpoint note says: the log ``origin`` had ``size`` leaves with this Merkle ``root``."""

    origin: str
    size: int
    root: bytes  # 32 raw bytes

    @property
    def root_hex(self) -> str:
        return self.root.hex()

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"


def note_key_id(name: str, public: PublicKey) -> int:
    """The 32-bit key id a signature line starts with (see the module docstring)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(public, Ed25519PublicKey):
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        digest = hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()
    else:
        digest = hashlib.sha256(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()
    return int(struct.unpack(">I", digest[:4])[0])


def vkey(name: str, public: PublicKey) -> str:
    """A verifier key string ``name+hex id+base64(type || key)`` as Go's ``note`` package prints them."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(public, Ed25519PublicKey):
        blob = b"\x01" + public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    else:
        blob = b"\x02" + public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"{name}+{note_key_id(name, public):08x}+{base64.b64encode(blob).decode('ascii')}"


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"note key names and origins must be non-empty without spaces or '+': {name!r}")


def sign_note(head: TreeHead, signers: Iterable[tuple[str, Signer]]) -> bytes:
    """The signed checkpoint note: ``head.text()``, a blank line, one line per (key name, signer)."""
    _check_name(head.origin)
    lines = [head.text(), "\n"]
    body = head.text().encode()
    for name, signer in signers:
        _check_name(name)
        sig = signer.sign(body)
        blob = struct.pack(">I", note_key_id(name, signer.public_key)) + sig
        lines.append(f"{DASH}{name} {base64.b64encode(blob).decode('ascii')}\n")
    return "".join(lines).encode()


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes


def parse_note(note: bytes) -> tuple[TreeHead, tuple[NoteSignature, ...]]:
    """Split and parse a checkpoint note (signatures not yet checked); NoteError if malformed."""
    if len(note) > MAX_NOTE_BYTES:
        raise NoteError("note too large")
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note contains control characters")
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n"):
        raise NoteError("note has no signature block")
    body, sig_block = text[: split + 1], text[split + 2 :]
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise NoteError("a checkpoint note needs origin, size and root lines")
    origin, size_s, root_b64 = lines[0], lines[1], lines[2]
    if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
        raise NoteError(f"bad tree size {size_s!r}")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except ValueError:
        raise NoteError("root hash is not base64") from None
    if len(root) != 32:
        raise NoteError("root hash is not 32 bytes")
    sigs = []
    for line in sig_block.split("\n")[:-1]:
        if not line.startswith(DASH):
            raise NoteError(f"bad signature line {line[:40]!r}")
        name, _, b64 = line[len(DASH) :].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except ValueError:
            raise NoteError("signature is not base64") from None
        if len(blob) < 5:
            raise NoteError("signature too short")
        sigs.append(NoteSignature(name, int(struct.unpack(">I", blob[:4])[0]), blob[4:]))
    if not sigs or len(sigs) > MAX_SIGNATURES:
        raise NoteError(f"a note carries 1..{MAX_SIGNATURES} signatures, this one {len(sigs)}")
    return TreeHead(origin, int(size_s), root), tuple(sigs)


def open_note(note: bytes, verifiers: Mapping[str, PublicKey] | Sequence[tuple[str, PublicKey]]) -> TreeHead:
    """Parse ``note`` and require a valid signature from a known (name, key); NoteError otherwise.

    As the spec says: signatures from unknown keys are ignored, a known key whose signature fails
    rejects the note, and at least one known key must have signed.
    """
    head, sigs = parse_note(note)
    pairs = list(verifiers.items()) if isinstance(verifiers, Mapping) else list(verifiers)
    known = {(name, note_key_id(name, key)): key for name, key in pairs}
    body = head.text().encode()
    verified = 0
    for s in sigs:
        key = known.get((s.name, s.key_id))
        if key is None:
            continue
        if not verify_signature(key, s.signature, body):
            raise NoteError(f"signature by {s.name} does not verify")
        verified += 1
    if not verified:
        raise NoteError("no signature from a trusted key")
    return head


__all__ = ["NoteError", "TreeHead", "note_key_id", "open_note", "parse_note", "sign_note", "vkey"]
