"""Signed checkpoints (tree heads), kept apart from the log they vouch for.

Why apart: a hash chain catches an edited or deleted record in the middle, but someone who can write
the database can also cut off its tail, and the shorter chain still verifies. A checkpoint says "this
log had ``size`` records, its Merkle root was ``root`` and its last entry hash was ``head``", signed with
an Ed25519 key. Kept outside the database (a separate folder, ideally shipped to write-once storage),
it turns a truncated tail into a detectable lie.

Layout of a checkpoint folder (one folder per log)::

    checkpoints.jsonl    one signed checkpoint per line, appended under an exclusive file lock
    signing-key.pem      the Ed25519 private key (mode 0600), created on first use unless a key
                         path outside the folder or a signer (KMS, callback) is given
    signing-key.pub      its public key (``key-<id>.pub`` for later keys); unless keys are pinned,
                         every ``*.pub`` here is trusted by verify, which is why production
                         configurations pin them (``audit_trusted_keys``)

The signature covers a domain-separation prefix plus the canonical JSON of every other field, the
frontier included, so the next checkpoint can extend this one without rehashing the whole log.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .canonical import canonical_bytes, canonical_json
from .signers import FileSigner, PublicKey, Signer, key_id, load_public_key, public_pem, verify_signature

if TYPE_CHECKING:
    from collections.abc import Mapping

CHECKPOINT_FILE = "checkpoints.jsonl"
KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "signing-key.pub"
DOMAIN = b"diffusion-gateway/audit-checkpoint/v1\n"
_TAIL_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: the log ``log_id`` had ``size`` records with this Merkle ``root``."""

    log_id: str
    size: int
    root: str  # hex RFC 6962 Merkle tree hash over the first `size` entry hashes
    head: str  # hex entry hash of record `size` (64 zeros for an empty log)
    ts: str
    key_id: str
    frontier: tuple[str, ...]  # hex subtree roots, lets the next checkpoint extend this one
    signature: str = ""  # base64 Ed25519 over DOMAIN + canonical JSON of the other fields

    def signed_fields(self) -> dict[str, Any]:
        return {
            "v": 1,
            "log_id": self.log_id,
            "size": self.size,
            "root": self.root,
            "head": self.head,
            "ts": self.ts,
            "key_id": self.key_id,
            "frontier": list(self.frontier),
        }

    def message(self) -> bytes:
        return DOMAIN + canonical_bytes(self.signed_fields())

    def to_json(self) -> str:
        return canonical_json({**self.signed_fields(), "sig": self.signature})

    def to_dict(self) -> dict[str, Any]:
        return {**self.signed_fields(), "sig": self.signature}

    @classmethod
    def from_json(cls, line: str) -> Checkpoint:
        """Parse one line; raises ValueError on anything malformed."""
        import json

        try:
            d = json.loads(line)
            if d.get("v") != 1:
                raise ValueError(f"unknown checkpoint version {d.get('v')!r}")
            cp = cls(
                log_id=str(d["log_id"]),
                size=int(d["size"]),
                root=str(d["root"]),
                head=str(d["head"]),
                ts=str(d["ts"]),
                key_id=str(d["key_id"]),
                frontier=tuple(str(h) for h in d["frontier"]),
                signature=str(d["sig"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed checkpoint: {exc}") from None
        if cp.size < 0 or len(cp.frontier) != cp.size.bit_count():
            raise ValueError("malformed checkpoint: frontier does not match size")
        return cp


class CheckpointStore:
    """Append and read signed checkpoints in one folder; create or load the signing key lazily.

    ``signing_key`` points at a PEM Ed25519 private key kept elsewhere (a secrets mount) and ``signer``
    at any :class:`~gateway.audit.signers.Signer` (a KMS key); ``public_keys`` pins the keys verify
    trusts (PEM files) and ``pinned_ids`` pins key ids, so a ``*.pub`` an intruder drops into the
    folder is not trusted. ``extra_keys`` are keys trusted through a signed rotation statement.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        signing_key: str | os.PathLike[str] | None = None,
        public_keys: Sequence[str | os.PathLike[str]] = (),
        signer: Signer | None = None,
        pinned_ids: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CHECKPOINT_FILE
        key_path = Path(signing_key) if signing_key is not None else self.directory / KEY_FILE
        self.signer: Signer = signer if signer is not None else FileSigner(key_path)
        self._pinned = tuple(Path(p) for p in public_keys)
        self._pinned_ids = frozenset(pinned_ids)
        self.extra_keys: dict[str, PublicKey] = {}
        self._public_written = False

    @property
    def pinned(self) -> bool:
        """Whether verify trusts only configured keys (not whatever ``*.pub`` the folder holds)."""
        return bool(self._pinned or self._pinned_ids)

    # ------------------------------------------------------------------ keys

    def public_key(self) -> PublicKey:
        """The signer's public key; written into the folder once so verifiers can find it."""
        public = self.signer.public_key
        if not self._public_written:
            self._write_public(public)
            self._public_written = True
        return public

    def _write_public(self, public: PublicKey) -> None:
        kid = key_id(public)
        first = self.directory / PUBLIC_KEY_FILE
        if first.exists():
            try:
                if key_id(load_public_key(first.read_bytes())) == kid:
                    return
            except ValueError:
                pass
            target = self.directory / f"key-{kid}.pub"
            if target.exists():
                return
        else:
            target = first
        self.directory.mkdir(parents=True, exist_ok=True)
        create_exclusive(target, public_pem(public), mode=0o644)

    def trusted_keys(self) -> dict[str, PublicKey]:
        """key_id -> public key: pinned files, folder keys whose id is pinned, else every ``*.pub``.

        Keys introduced by a verified rotation statement (``extra_keys``) are added in every case.
        """
        keys: dict[str, PublicKey] = {}
        if self._pinned:
            for p in self._pinned:
                key = load_public_key(p.read_bytes())
                keys[key_id(key)] = key
        folder: dict[str, PublicKey] = {}
        if not self._pinned or self._pinned_ids:
            for p in sorted(self.directory.glob("*.pub")):
                try:
                    key = load_public_key(p.read_bytes())
                except ValueError as exc:
                    raise ValueError(f"{p}: {exc}") from None
                folder[key_id(key)] = key
        if self._pinned_ids:
            keys.update({k: v for k, v in folder.items() if k in self._pinned_ids})
        elif not self._pinned:
            keys.update(folder)
        keys.update(self.extra_keys)
        return keys

    # ------------------------------------------------------------------ write

    def sign(self, unsigned: Checkpoint) -> Checkpoint:
        kid = key_id(self.public_key())
        cp = Checkpoint(**{**_fields(unsigned), "key_id": kid, "signature": ""})
        sig = base64.b64encode(self.signer.sign(cp.message())).decode("ascii")
        return Checkpoint(**{**_fields(cp), "signature": sig})

    def append(self, unsigned: Checkpoint) -> Checkpoint:
        """Sign and durably append one checkpoint line (exclusive lock, one write, fsync)."""
        cp = self.sign(unsigned)
        self.directory.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as fh, _locked(fh):
            fh.write(cp.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            _fsync_dir(self.directory)
        return cp

    # ------------------------------------------------------------------ read

    def verify_signature(self, cp: Checkpoint, keys: Mapping[str, PublicKey]) -> bool:
        key = keys.get(cp.key_id)
        if key is None:
            return False
        try:
            sig = base64.b64decode(cp.signature, validate=True)
        except ValueError:
            return False
        return verify_signature(key, sig, cp.message())

    def read_all(self, log_id: str) -> tuple[list[Checkpoint], list[str]]:
        """Every checkpoint of this folder, signature-checked: (good ones, problems as text)."""
        if not self.path.exists():
            return [], []
        text = self.path.read_text(encoding="utf-8")
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            return [], []
        try:
            keys = self.trusted_keys()
        except (OSError, ValueError) as exc:
            return [], [f"cannot load the checkpoint public keys: {exc}"]
        if not keys:
            return [], [f"{self.directory}: checkpoints exist but no trusted public key to check them"]
        good: list[Checkpoint] = []
        problems: list[str] = []
        for n, line in lines:
            where = f"{self.path}:{n}"
            try:
                cp = Checkpoint.from_json(line)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if not self.verify_signature(cp, keys):
                problems.append(f"{where}: bad signature or untrusted key {cp.key_id}")
            elif cp.log_id != log_id:
                problems.append(f"{where}: checkpoint of another log ({cp.log_id}, this log is {log_id})")
            else:
                good.append(cp)
        return good, problems

    def latest(self, log_id: str) -> Checkpoint | None:
        """The largest valid checkpoint of ``log_id``, reading only the file's tail when it can."""
        if not self.path.exists():
            return None
        own = self.public_key()
        keys = {key_id(own): own}
        keys.update(self.trusted_keys())
        for lines in (self._tail_lines(), None):
            if lines is None:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            cands = []
            for line in lines:
                try:
                    cp = Checkpoint.from_json(line)
                except ValueError:
                    continue
                if cp.log_id == log_id:
                    cands.append(cp)
            for cp in sorted(cands, key=lambda c: c.size, reverse=True):
                if self.verify_signature(cp, keys):
                    return cp
            if self.path.stat().st_size <= _TAIL_BYTES:
                break
        return None

    def _tail_lines(self) -> list[str]:
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            start = max(0, end - _TAIL_BYTES)
            fh.seek(start)
            data = fh.read()
        lines = data.decode("utf-8", errors="replace").splitlines()
        return lines[1:] if start > 0 else lines


def _fields(cp: Checkpoint) -> dict[str, Any]:
    return {f: getattr(cp, f) for f in Checkpoint.__slots__}


def create_exclusive(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``path`` only if absent: temp file + hard link, so a racing process loses cleanly."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _locked(fh: IO[str]) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: appends of one short line are still atomic enough
        yield
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["Checkpoint", "CheckpointStore", "create_exclusive", "key_id"]
