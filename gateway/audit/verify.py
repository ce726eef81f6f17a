"""Verify a log: one streaming pass over the stored bytes, then a slow look only where it broke.

The stored form of entry ``seq`` is the canonical JSON of an envelope whose keys sort into a fixed
order, so its first bytes are always ``{"prev_hash":"<64 hex>","record":`` ::

    {"prev_hash":"<entry hash of seq-1>","record":{...as given...},"seq":N,"ts":"...Z"}
    entry_hash = SHA-256(0x00 || those bytes)          (an RFC 6962 leaf hash)

Why this shape: the hot loop never parses JSON. Per row it compares the sequence number, hashes the
raw bytes, compares a 89-byte prefix against the previous entry hash and pushes the leaf into a Merkle
frontier (so every checkpoint's root is checked in the same pass). Only at the first anomaly does it
parse and look around to say *what* happened: edited, deleted, reordered, or (from the checkpoints)
truncated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Literal

from .checkpoints import Checkpoint
from .merkle import Frontier, subtree_starts

GENESIS = "0" * 64
PREFIX = b'{"prev_hash":"'
MIDDLE = b'","record":'
TS_LEN = 27  # "YYYY-MM-DDTHH:MM:SS.ffffffZ"

Problem = Literal["edited", "deleted", "reordered", "truncated", "checkpoint", "rewritten", "witness"]
Row = tuple[int, str, bytes]  # (seq, entry_hash hex, stored bytes)


@dataclass(frozen=True)
class AuditVerifyReport:
    """What :meth:`AuditLog.verify` found. ``ok`` is False with the first bad ``seq`` and the problem."""

    ok: bool
    count: int
    first_bad_seq: int | None = None
    problem: Problem | None = None
    detail: str = ""
    root: str = ""  # Merkle root of the first `root_size` records (last checkpoint's; deep: the whole log)
    root_size: int | None = None
    checkpoints: int = 0
    checkpoint_size: int | None = None
    elapsed_s: float = 0.0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    witnesses: tuple[dict[str, Any], ...] = ()  # one finding per witness, when witnesses are configured

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "detail": self.detail,
            "root": self.root,
            "root_size": self.root_size,
            "checkpoints": self.checkpoints,
            "checkpoint_size": self.checkpoint_size,
            "elapsed_s": round(self.elapsed_s, 6),
            "warnings": list(self.warnings),
            "witnesses": list(self.witnesses),
        }

    def raise_for_problem(self) -> None:
        """Raise :class:`~gateway.errors.VerificationFailed` (exit code 6) unless the log verified."""
        if not self.ok:
            from ..errors import VerificationFailed

            raise VerificationFailed(self.summary())

    def summary(self) -> str:
        if self.ok:
            sealed = f", sealed to {self.checkpoint_size} by {self.checkpoints} checkpoint(s)"
            root = f", root of {self.root_size}: {self.root}" if self.root else ""
            seen = f", matches {len(self.witnesses)} witness(es)" if self.witnesses else ""
            return f"audit log OK: {self.count} records{sealed if self.checkpoints else ''}{root}{seen}"
        where = f" at seq {self.first_bad_seq}" if self.first_bad_seq is not None else ""
        return f"audit log verification FAILED: {self.problem}{where}: {self.detail}"


def envelope_bytes(prev_hash: str, record_json: bytes, seq: int, ts: str) -> bytes:
    """The stored bytes of one entry; equal to ``canonical_bytes`` of the envelope dict (tested)."""
    return b"".join(
        (
            PREFIX,
            prev_hash.encode(),
            MIDDLE,
            record_json,
            b',"seq":',
            str(seq).encode(),
            b',"ts":"',
            ts.encode(),
            b'"}',
        )
    )


def verify_rows(
    rows: Iterable[Row],
    checkpoints: Sequence[Checkpoint] = (),
    *,
    deep: bool = False,
    rescan: Callable[[], Iterable[Row]] | None = None,
    warnings: Sequence[str] = (),
) -> AuditVerifyReport:
    """Check the chain, each checkpoint's signed head, and that no checkpoint is longer than the log.

    Why the heads suffice: every entry hashes the previous entry's hash, so a head that matches
    commits to every record before it. ``deep`` also recomputes the Merkle root at every checkpoint
    (and of the whole log), which doubles the hashing; it is the same verdict reached another way,
    and what an auditor holding only roots would check. ``rescan`` lets a failed head be located.
    """
    started = time.perf_counter()
    cps = sorted(checkpoints, key=lambda c: c.size)
    ci, n_cps = 0, len(cps)
    while ci < n_cps and cps[ci].size == 0:
        ci += 1  # an empty-log checkpoint vouches for nothing
    next_size = cps[ci].size if ci < n_cps else -1
    last_ok = 0
    frontier = Frontier()
    stack = frontier._stack  # the hot loop pushes inline; Frontier.push is the readable version
    expected = 1
    prefix = PREFIX + GENESIS.encode() + MIDDLE
    prev = GENESIS
    it = iter(rows)

    def fail(problem: Problem, seq: int | None, detail: str) -> AuditVerifyReport:
        return _report(False, expected - 1, seq, problem, detail, None, cps[:ci], started, warnings)

    for row in it:
        seq, entry_hash, body = row
        if seq != expected:
            return fail(*_diagnose(row, expected, prev, it))
        if type(body) is not bytes:  # e.g. a hand edit in SQLite turned the BLOB into TEXT
            body = as_bytes(body)
            row = (seq, entry_hash, body)
        digest = sha256(b"\x00" + body).digest()
        hx = digest.hex()
        if hx != entry_hash or not body.startswith(prefix):
            return fail(*_diagnose(row, expected, prev, it))
        if deep:
            h, n = digest, expected - 1
            while n & 1:
                h = sha256(b"\x01" + stack.pop() + h).digest()
                n >>= 1
            stack.append(h)
        if expected == next_size:
            frontier.size = expected if deep else 0
            while ci < n_cps and cps[ci].size == expected:
                cp = cps[ci]
                if cp.head != hx or (deep and cp.root != frontier.root().hex()):
                    located = frontier if deep else _frontier_of(rescan, expected)
                    bad = _blame(cp, located, last_ok)
                    return fail(
                        "edited", bad, f"records disagree with the signed checkpoint of size {expected}"
                    )
                ci += 1
            last_ok = expected
            next_size = cps[ci].size if ci < n_cps else -1
        prev = hx
        prefix = PREFIX + hx.encode() + MIDDLE
        expected += 1
    count = expected - 1
    if ci < n_cps:
        longest = cps[-1].size
        detail = f"the log ends at seq {count} but a signed checkpoint says it had {longest} records"
        return _report(False, count, count + 1, "truncated", detail, None, cps[:ci], started, warnings)
    extra = list(warnings)
    if not cps:
        extra.append("no checkpoints: a truncated tail would not be detected")
    elif cps[-1].size < count:
        extra.append(f"records {cps[-1].size + 1}..{count} are after the last checkpoint")
    if deep:
        frontier.size = count
        return _report(True, count, None, None, "", (count, frontier.root().hex()), cps, started, extra)
    sealed = (cps[-1].size, cps[-1].root) if cps else None
    return _report(True, count, None, None, "", sealed, cps, started, extra)


def _frontier_of(rescan: Callable[[], Iterable[Row]] | None, size: int) -> Frontier | None:
    """Rebuild the frontier of the first ``size`` stored entry hashes (already verified by the chain)."""
    if rescan is None:
        return None
    f = Frontier()
    for seq, entry_hash, _ in rescan():
        if seq > size:
            break
        f.push(bytes.fromhex(entry_hash))
    return f if f.size == size else None


def _report(
    ok: bool,
    count: int,
    seq: int | None,
    problem: Problem | None,
    detail: str,
    root: tuple[int, str] | None,
    checked: Sequence[Checkpoint],
    started: float,
    warnings: Sequence[str],
) -> AuditVerifyReport:
    return AuditVerifyReport(
        ok=ok,
        count=count,
        first_bad_seq=seq,
        problem=problem,
        detail=detail,
        root=root[1] if root else "",
        root_size=root[0] if root else None,
        checkpoints=len(checked),
        checkpoint_size=max((c.size for c in checked), default=None),
        elapsed_s=time.perf_counter() - started,
        warnings=tuple(warnings),
    )


def _blame(cp: Checkpoint, ours: Frontier | None, last_ok: int) -> int:
    """The earliest seq that can be blamed when the records disagree with a signed checkpoint.

    The chain verified, so the prefix was rewritten consistently. The first frontier subtree that
    differs from the signed one bounds where from below; so does the last checkpoint that matched.
    """
    if ours is None:
        return last_ok + 1
    starts = subtree_starts(cp.size)
    mine = [h.hex() for h in ours.subtrees]
    first = next((i for i, (a, b) in enumerate(zip(mine, cp.frontier, strict=True)) if a != b), len(mine) - 1)
    return max(starts[first] + 1, last_ok + 1)


def as_bytes(body: object) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    return repr(body).encode()


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        env = json.loads(body)
    except ValueError:
        return None
    return env if isinstance(env, dict) else None


def _body_seq(body: bytes) -> int | None:
    env = _parse(body)
    seq = env.get("seq") if env else None
    return seq if isinstance(seq, int) else None


def _seq_later(rest: Iterator[Row], target: int) -> bool:
    """Whether a record that says it is ``target`` sits further down the log."""
    marker = b',"seq":%d,"ts":"' % target
    return any(as_bytes(row[2])[-(TS_LEN + 2 + len(marker)) : -(TS_LEN + 2)] == marker for row in rest)


def _diagnose(row: Row, expected: int, prev: str, rest: Iterator[Row]) -> tuple[Problem, int, str]:
    """Name what went wrong at the first anomaly (slow path: parses JSON and may read ahead)."""
    seq, entry_hash, body = row[0], row[1], as_bytes(row[2])
    body_seq = _body_seq(body)
    if seq > expected:
        if _seq_later(rest, expected):
            return "reordered", expected, f"record {expected} is stored after record {seq}"
        missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
        return "deleted", expected, f"record(s) {missing} are missing (the next stored record is {seq})"
    if sha256(b"\x00" + body).hexdigest() != entry_hash:
        return "edited", seq, f"record {seq} does not match its entry hash"
    if body_seq is None:
        return "edited", seq, f"record {seq} is not a valid log entry"
    if body_seq != expected:
        if body_seq > expected and not _seq_later(rest, expected):
            return (
                "deleted",
                expected,
                f"record {expected} is missing (renumbered: record {body_seq} stored as {seq})",
            )
        return "reordered", expected, f"position {seq} holds record {body_seq}"
    env = _parse(body) or {}
    if env.get("prev_hash") != prev:
        blamed = max(expected - 1, 1)
        return "edited", blamed, f"record {blamed} changed: record {expected} chains to a different hash"
    return "edited", seq, f"record {seq} is not in canonical form"


__all__ = ["GENESIS", "AuditVerifyReport", "Problem", "as_bytes", "envelope_bytes", "verify_rows"]
