"""Idempotency keys in the ledger: a repeat of a paid request returns its result and pays nothing.

Why in the ledger, and why inside the reservation's transaction: the key is claimed by the same
transaction that reserves the first route's estimate (:meth:`SqlLedger.reserve` with ``claim=``). So
there is never a claim without money held for it, nor money held for a keyed request without its
claim; two processes racing on one key serialise on the key's primary-key row and exactly one of them
reserves. The loser's transaction rolls back whole (nothing reserved, nothing counted) and it waits
for the winner's result.

A key is scoped to the caller's team: ``(team, idem_key)`` is the primary key. Its row holds the
request fingerprint (a different request under the same key is a usage error), the winning request
id, ``pending`` or ``done``, a lease (a claimer that died stops blocking others when it runs out), an
expiry (after which the key may be reused for anything), and, once done, the result document the
replay is rebuilt from (image hashes point into the archive).
"""

from __future__ import annotations

import abc
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ._reads import Query
from .store import US, to_us

T = TypeVar("T")

MAX_KEY_LEN = 255


class KeyTaken(Exception):
    """Another request holds this key: the reservation was rolled back; wait for its result."""


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What a keyed request claims together with its first reservation."""

    team: str
    key: str
    fingerprint: str
    request_id: str
    lease_s: float = 900.0
    ttl_s: float = 86_400.0


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key as the ledger holds it."""

    team: str
    key: str
    fingerprint: str
    request_id: str
    status: Literal["pending", "done"]
    created_us: int
    lease_us: int
    expires_us: int
    replays: int
    result: Mapping[str, Any] | None

    def live(self, now_us: int) -> bool:
        """Still binding: not expired, and (if pending) its claimer's lease has not run out."""
        if self.expires_us <= now_us:
            return False
        return self.status == "done" or self.lease_us > now_us


_COLS = "team, idem_key, fingerprint, request_id, status, created_us, lease_us, expires_us, replays, result"


def claim_in_tx(q: Query, c: KeyClaim, now_us: int) -> None:
    """Claim ``c`` inside the caller's write transaction, or raise :class:`KeyTaken` (rolling it back).

    A row that expired, or whose pending claimer's lease ran out, is taken over; a live row is not.
    On PostgreSQL a concurrent uncommitted claim of the same key blocks here until it commits or rolls
    back, then the ``WHERE`` sees its outcome: no race can produce two claimers.
    """
    rows = q(
        f"INSERT INTO ledger_idempotency ({_COLS}) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, 0, NULL)"  # noqa: S608
        " ON CONFLICT (team, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint,"
        " request_id = excluded.request_id, status = 'pending', created_us = excluded.created_us,"
        " lease_us = excluded.lease_us, expires_us = excluded.expires_us, replays = 0, result = NULL"
        " WHERE ledger_idempotency.expires_us <= ?"
        " OR (ledger_idempotency.status = 'pending' AND ledger_idempotency.lease_us <= ?)"
        " OR ledger_idempotency.request_id = excluded.request_id"
        " RETURNING request_id",
        (c.team, c.key, c.fingerprint, c.request_id, now_us, now_us + round(c.lease_s * US),
         now_us + round(c.ttl_s * US), now_us, now_us),
    )  # fmt: skip
    if not rows:
        raise KeyTaken(c.key)


def _state(row: tuple[Any, ...]) -> KeyState:
    return KeyState(
        team=row[0],
        key=row[1],
        fingerprint=row[2],
        request_id=row[3],
        status=row[4],
        created_us=int(row[5]),
        lease_us=int(row[6]),
        expires_us=int(row[7]),
        replays=int(row[8]),
        result=None if row[9] is None else json.loads(row[9]),
    )


class IdempotencyKeys(abc.ABC):
    """The key methods every SQL ledger gets (mixed into :class:`~gateway.ledger._sql.SqlLedger`)."""

    @abc.abstractmethod
    def _write(self, fn: Callable[[Query], T]) -> T: ...

    @abc.abstractmethod
    def _read(self, fn: Callable[[Query], T]) -> T: ...

    def key_state(self, team: str, key: str) -> KeyState | None:
        rows = self._read(
            lambda q: q(
                f"SELECT {_COLS} FROM ledger_idempotency WHERE team = ? AND idem_key = ?",  # noqa: S608
                (team, key),
            )
        )
        return _state(rows[0]) if rows else None

    def claim_key(self, claim: KeyClaim, now: dt.datetime) -> None:
        """Claim without a reservation (a cache hit reserves nothing); raises :class:`KeyTaken`."""
        self._write(lambda q: claim_in_tx(q, claim, to_us(now)))

    def complete_key(self, claim: KeyClaim, result: Mapping[str, Any], now: dt.datetime) -> bool:
        """Record the result a repeat will replay; False if the claim was lost (its lease ran out)."""
        doc = json.dumps(result, sort_keys=True, default=str, separators=(",", ":"))
        now_us = to_us(now)
        rows = self._write(
            lambda q: q(
                "UPDATE ledger_idempotency SET status = 'done', result = ?, lease_us = ?"
                " WHERE team = ? AND idem_key = ? AND request_id = ? RETURNING request_id",
                (doc, now_us, claim.team, claim.key, claim.request_id),
            )
        )
        return bool(rows)

    def abandon_key(self, claim: KeyClaim) -> None:
        """The keyed request failed: free the key so a retry runs again (paid results are never lost:
        a request that got images completed its key before anything could fail)."""
        self._write(
            lambda q: q(
                "DELETE FROM ledger_idempotency WHERE team = ? AND idem_key = ? AND request_id = ?"
                " AND status = 'pending'",
                (claim.team, claim.key, claim.request_id),
            )
        )

    def count_replay(self, team: str, key: str) -> None:
        self._write(
            lambda q: q(
                "UPDATE ledger_idempotency SET replays = replays + 1 WHERE team = ? AND idem_key = ?",
                (team, key),
            )
        )

    def prune_keys(self, now: dt.datetime) -> int:
        """Forget expired keys; return how many."""
        rows = self._write(
            lambda q: q(
                "DELETE FROM ledger_idempotency WHERE expires_us <= ? RETURNING idem_key", (to_us(now),)
            )
        )
        return len(rows)
