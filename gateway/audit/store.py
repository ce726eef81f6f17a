"""The audit log interface and the logic both stores share; SQLite and PostgreSQL only move bytes.

Ordering with many writers: every append runs in one database transaction that first takes the log's
write lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-scoped advisory lock), then reads the
last entry, then inserts ``seq = last + 1`` chained to the last entry hash, then commits. Writers in
any number of threads, processes or hosts are therefore serialised: ``seq`` is the commit order, has
no gaps, and each entry's ``prev_hash`` is the entry hash of ``seq - 1``. ``ts`` is assigned under the
same lock and never goes backwards (a writer whose clock lags takes the previous entry's time).

Group commit: callers that append while another append is being written queue their records; the
writer of the moment (the *leader*, a caller itself) takes everything queued into its next transaction,
so N concurrent requests cost one transaction and one fsync instead of N. Each caller returns only
when the transaction holding its own records has committed (for SQLite FULL: fsynced). Nobody waits
for a window: a caller that finds no write in progress writes at once, exactly as without grouping.
Within a batch the callers' records keep their queue order and stay consecutive, and the chain is
built over the whole batch, so ordering and verification are unchanged. The async shell uses
:meth:`AuditLog.aappend_many`, which queues without occupying a worker thread per waiting request
(the machinery: :mod:`gateway.audit.group_commit`).

Records are stored exactly as given (after secret scrubbing) inside an envelope whose canonical JSON
is hashed; see :mod:`gateway.audit.verify` for the byte layout and why verify never parses JSON.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AuditWriteError, VerificationFailed
from .canonical import canonical_bytes
from .checkpoints import Checkpoint, CheckpointStore
from .group_commit import GroupCommit
from .merkle import Frontier, consistency_proof, inclusion_proof
from .merkle import root as merkle_root
from .redact import redact, redact_value
from .verify import (
    GENESIS,
    MIDDLE,
    PREFIX,
    TS_LEN,
    AuditVerifyReport,
    Row,
    as_bytes,
    envelope_bytes,
    verify_rows,
)

if TYPE_CHECKING:
    from .signers import Signer
    from .witness import WitnessSet

RESERVED_KEYS = frozenset({"seq", "ts", "prev_hash", "entry_hash"})
Clock = Callable[[], dt.datetime]
#: Given the tail (last seq, its entry hash, its ts), produce the rows to insert.
RowMaker = Callable[[int, str, str], list[Row]]


def format_ts(when: dt.datetime) -> str:
    """Fixed-width UTC ISO 8601 with microseconds; sorts as text and keeps the stored layout fixed."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _logger() -> logging.Logger:
    # stdlib logging: stderr by default (never stdout, which --json owns), and configure_logging()
    # routes the "gateway" logger through the JSON + scrubbing chain.
    return logging.getLogger("gateway.audit")


class AuditLog(GroupCommit, abc.ABC):
    """Append-only, hash-chained, checkpointed evidence. Thread-safe; one instance per process is plenty.

    ``append`` never returns without the record being committed: any failure raises
    :class:`~gateway.errors.AuditWriteError` and the caller must fail closed.
    """

    #: True when calls wait on disk or network long enough that an event loop should use a thread.
    blocking_io: bool = True
    #: The URL with any password removed (safe to print).
    url: str = ""

    def __init__(
        self,
        *,
        checkpoints: CheckpointStore,
        clock: Clock | None = None,
        checkpoint_every: int = 1000,
        checkpoint_on_close: bool = True,
        scrub: bool = True,
        witnesses: WitnessSet | None = None,
        origin: str | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        self.witnesses = witnesses
        self._origin = origin
        self._clock = clock or _utcnow
        self._checkpoint_every = max(0, checkpoint_every)
        self._checkpoint_on_close = checkpoint_on_close
        self._scrub = scrub
        self._lock = threading.RLock()
        self._dirty = False
        self._closed = False
        self._init_group_commit()

    # ------------------------------------------------------------------ backend hooks

    @property
    @abc.abstractmethod
    def log_id(self) -> str:
        """A random id made with the log; checkpoints name it, so one folder cannot vouch for another log."""

    @abc.abstractmethod
    def _append_rows(self, make_rows: RowMaker) -> list[int]:
        """In one transaction holding the write lock: read the tail, insert ``make_rows(tail)``, commit."""

    @abc.abstractmethod
    def _scan(self, since_seq: int = 0, until_seq: int | None = None) -> Iterator[Row]:
        """Stream (seq, entry_hash, stored bytes) with since_seq < seq [<= until_seq], in seq order."""

    @abc.abstractmethod
    def _fetch(self, seq: int) -> Row | None: ...

    @abc.abstractmethod
    def _tail(self) -> tuple[int, str]:
        """(last seq, its entry hash), or (0, GENESIS) for an empty log."""

    @abc.abstractmethod
    def _close(self) -> None: ...

    @property
    def origin(self) -> str:
        """The log's name in its C2SP checkpoint notes (and the key name that signs them)."""
        return self._origin or f"diffusion-gateway/audit/{self.log_id}"

    # ------------------------------------------------------------------ writing

    def append(self, record: Mapping[str, Any]) -> int:
        """Commit one record; returns its seq. Raises AuditWriteError on any failure (fail closed)."""
        return self.append_many([record])[0]

    def _prepare(self, record: Mapping[str, Any]) -> bytes:
        if not isinstance(record, Mapping):
            raise AuditWriteError(f"an audit record must be a mapping, not {type(record).__name__}")
        clash = RESERVED_KEYS.intersection(record)
        if clash:
            raise AuditWriteError(f"audit record uses reserved key(s): {', '.join(sorted(clash))}")
        event = record.get("event")
        if not isinstance(event, str) or not event:
            raise AuditWriteError("an audit record needs a non-empty string 'event'")
        value = redact_value(dict(record)) if self._scrub else record
        try:
            return canonical_bytes(value)
        except (TypeError, ValueError) as exc:
            raise AuditWriteError(f"audit record is not serialisable: {exc}") from None

    def _rows(self, payloads: list[bytes], last_seq: int, last_hash: str, last_ts: str) -> list[Row]:
        ts = format_ts(self._clock())
        if last_ts and ts < last_ts:
            ts = last_ts  # never let time run backwards along the chain
        rows: list[Row] = []
        for offset, payload in enumerate(payloads, 1):
            seq = last_seq + offset
            body = envelope_bytes(last_hash, payload, seq, ts)
            last_hash = sha256(b"\x00" + body).hexdigest()
            rows.append((seq, last_hash, body))
        return rows

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> Checkpoint:
        """Sign the current head (size, Merkle root, last entry hash) into the checkpoint folder.

        Hashes only the records added since the last valid checkpoint (its frontier is signed too),
        and verifies them first: a log that already fails is never sealed.
        """
        with self._lock:
            prev = self.checkpoints.latest(self.log_id)
            last_seq, last_hash = self._tail()
            if prev is not None and last_seq < prev.size:
                raise VerificationFailed(
                    f"audit log truncated: it ends at seq {last_seq}, checkpoint says {prev.size}"
                )
            if prev is not None and last_seq == prev.size:
                if prev.head != last_hash:
                    raise VerificationFailed(
                        f"audit log edited: record {last_seq} differs from its checkpoint"
                    )
                if self.witnesses:
                    self.witnesses.retry_gaps()
                self._dirty = False
                return prev
            frontier = Frontier()
            head, expected = GENESIS, 1
            if prev is not None:
                frontier = Frontier(prev.size, [bytes.fromhex(h) for h in prev.frontier])
                head, expected = prev.head, prev.size + 1
                anchor = self._fetch(prev.size) if prev.size else None
                if anchor is not None and anchor[1] != prev.head:
                    raise VerificationFailed(
                        f"audit log edited: record {prev.size} differs from its checkpoint"
                    )
            for seq, entry_hash, stored in self._scan(expected - 1, last_seq):
                body = as_bytes(stored)
                digest = sha256(b"\x00" + body).digest()
                ok = seq == expected and digest.hex() == entry_hash
                if not ok or not body.startswith(PREFIX + head.encode() + MIDDLE):
                    raise VerificationFailed(
                        f"audit log fails verification at seq {expected}; not sealing it"
                    )
                frontier.push(digest)
                head, expected = entry_hash, expected + 1
            cp = Checkpoint(
                log_id=self.log_id,
                size=frontier.size,
                root=frontier.root().hex(),
                head=head,
                ts=format_ts(self._clock()),
                key_id="",
                frontier=tuple(h.hex() for h in frontier.subtrees),
            )
            signed = self.checkpoints.append(cp)
            self._dirty = False
            if self.witnesses:
                self._witness(signed)
            return signed

    def _witness(self, cp: Checkpoint) -> None:
        """Hand the signed head, as a C2SP checkpoint note, to every witness (quorum or raise)."""
        from .note import TreeHead, sign_note

        assert self.witnesses is not None
        head = TreeHead(self.origin, cp.size, bytes.fromhex(cp.root))
        note = sign_note(head, [(self.origin, self.checkpoints.signer)])
        self.witnesses.retry_gaps()
        self.witnesses.submit(head, note)

    def _checkpoint_quietly(self) -> None:
        try:
            self.checkpoint()
        except AuditWriteError:
            raise  # witnesses below quorum: fail closed, as for any record that cannot be secured
        except Exception as exc:  # the records are committed; a failed seal must not undo the request
            _logger().error("audit checkpoint failed: %s: %s", type(exc).__name__, redact(str(exc)))

    # ------------------------------------------------------------------ reading

    def verify(self, *, deep: bool = False) -> AuditVerifyReport:
        """Check every record and every signed checkpoint; see :func:`gateway.audit.verify.verify_rows`.

        ``deep`` also recomputes the Merkle root at every checkpoint (slower; same verdict).
        """
        cps, problems = self.checkpoints.read_all(self.log_id)
        if problems and any("untrusted key" in p for p in problems):
            from .rotation import trust_rotations

            if trust_rotations(self):
                cps, problems = self.checkpoints.read_all(self.log_id)
        if problems:
            count = self._tail()[0]
            return AuditVerifyReport(
                ok=False,
                count=count,
                problem="checkpoint",
                detail="; ".join(problems[:5]),
                checkpoints=len(cps),
            )
        warnings: list[str] = []
        if not self.checkpoints.pinned:
            warnings.append(
                "checkpoint keys are not pinned (audit_trusted_keys): any *.pub in the checkpoint "
                "folder is trusted"
            )
        report = verify_rows(self._scan(0), cps, deep=deep, rescan=lambda: self._scan(0), warnings=warnings)
        if not self.witnesses:
            return report
        from .witness.verify import with_witnesses

        return with_witnesses(self, report)

    def head(self) -> tuple[int, str]:
        """(number of records, entry hash of the last one); (0, 64 zeros) when empty."""
        return self._tail()

    def get(self, seq: int) -> dict[str, Any] | None:
        """The record at ``seq`` as stored, plus seq, ts, prev_hash and entry_hash; None if absent."""
        row = self._fetch(seq)
        return None if row is None else _flat(row)

    def iter_records(self, since_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Every record after ``since_seq`` in seq order (streamed)."""
        for row in self._scan(since_seq):
            yield _flat(row)

    def inclusion_proof(self, seq: int, size: int | None = None) -> dict[str, Any]:
        """RFC 6962 audit path for record ``seq`` in the tree of the first ``size`` records (default: all)."""
        leaves = [bytes.fromhex(h) for _, h, _ in self._scan(0, size)]
        n = len(leaves)
        if not 1 <= seq <= n:
            raise IndexError(f"seq {seq} is not in a log of {n} records")
        proof = inclusion_proof(leaves, seq - 1)
        return {
            "seq": seq,
            "size": n,
            "leaf": leaves[seq - 1].hex(),
            "root": merkle_root(leaves).hex(),
            "path": [h.hex() for h in proof],
        }

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[str]:
        """RFC 6962 proof that the first ``old_size`` records are a prefix of the first ``new_size``."""
        leaves = [bytes.fromhex(h) for _, h, _ in self._scan(0, new_size)]
        return [h.hex() for h in consistency_proof(leaves, old_size)]

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Seal what this handle appended (one checkpoint) and release the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._dirty and self._checkpoint_on_close:
                    self._checkpoint_quietly()
            finally:
                self._closed = True
                self._close()
                if self.witnesses:
                    self.witnesses.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flat(row: Row) -> dict[str, Any]:
    seq, entry_hash, body = row
    env = json.loads(as_bytes(body))
    record = env.get("record")
    out: dict[str, Any] = dict(record) if isinstance(record, dict) else {"record": record}
    out.update(
        seq=env.get("seq", seq), ts=env.get("ts"), prev_hash=env.get("prev_hash"), entry_hash=entry_hash
    )
    return out


def last_ts(body: bytes | None) -> str:
    """The ts of a stored entry without parsing it (fixed layout: ``..."ts":"<27 chars>"}``)."""
    if not body:
        return ""
    return body[-(TS_LEN + 2) : -2].decode("ascii", errors="replace")


def default_checkpoint_dir(url: str) -> Path:
    """``<folder of the SQLite file>/checkpoints``; for a server database ``$GATEWAY_HOME/checkpoints``."""
    import os

    if url.startswith("sqlite:"):
        from .sqlite import sqlite_path

        path = sqlite_path(url)
        if path is not None:
            return path.parent / "checkpoints"
    return Path(os.environ.get("GATEWAY_HOME") or ".gateway").expanduser().resolve() / "checkpoints"


def open_audit(
    url: str,
    *,
    checkpoint_dir: str | Path | None = None,
    signing_key: str | Path | None = None,
    public_keys: Sequence[str | Path] = (),
    clock: Clock | None = None,
    checkpoint_every: int = 1000,
    checkpoint_on_close: bool = True,
    table_prefix: str | None = None,
    create: bool = True,
    signer: Signer | None = None,
    pinned_ids: Sequence[str] = (),
    witnesses: Sequence[str] | WitnessSet = (),
    witness_quorum: int | None = None,
    witness_best_effort: bool = False,
    origin: str | None = None,
) -> AuditLog:
    """Open (creating if needed) the audit log at ``sqlite:///path`` or ``postgresql://...``.

    Checkpoints go to ``checkpoint_dir`` (one folder per log; see :mod:`gateway.audit.checkpoints`).
    ``create=False`` refuses to create a missing SQLite file (what ``gateway audit verify`` wants).
    ``signer``/``signing_key`` and ``public_keys``/``pinned_ids`` move and pin the checkpoint keys;
    ``witnesses`` (URLs, see :mod:`gateway.audit.witness`) receive every signed head.
    """
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(url)
    store = CheckpointStore(
        folder, signing_key=signing_key, public_keys=public_keys, signer=signer, pinned_ids=pinned_ids
    )
    witness_set = None
    if witnesses:
        from .witness import WitnessSet, open_witness

        if isinstance(witnesses, WitnessSet):
            witness_set = witnesses
        else:
            witness_set = WitnessSet(
                [open_witness(u, folder) for u in witnesses],
                quorum=witness_quorum,
                best_effort=witness_best_effort,
                state_dir=folder,
            )
    common: dict[str, Any] = {
        "checkpoints": store,
        "clock": clock,
        "checkpoint_every": checkpoint_every,
        "checkpoint_on_close": checkpoint_on_close,
        "witnesses": witness_set,
        "origin": origin,
    }
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteAuditLog

        return SQLiteAuditLog(url, create=create, **common)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresAuditLog

        return PostgresAuditLog(url, table_prefix=table_prefix, **common)
    from ..errors import UsageError

    raise UsageError(f"unsupported audit URL {redact(url)!r}: use sqlite:///PATH or postgresql://...")


__all__ = ["AuditLog", "AuditVerifyReport", "format_ts", "open_audit"]
