"""API keys: who may call the HTTP server, and in whose name.

A key *fixes* the request's context: team, project, user and the use cases it may ask for come from
the key, never from the request body, so a client cannot claim another team's budget or policy. A key
may also carry a budget of its own, enforced by the same ledger as every other budget.

Storage. Keys live beside the ledger (same SQLite file or PostgreSQL schema, so every worker and host
that shares the ledger shares the keys) in one table of their own, created on first use; the ledger's
own migration list is left alone. Only a salted hash of each secret is stored; the secret is shown
once, when the key is made.

Secret format ``gwk_<key id>_<secret>``: the public id finds the row, the secret is checked against
its hash in constant time. The secret carries 256 random bits, so a fast keyed hash (HMAC-SHA256 with
a per-key salt) is as safe as a slow password KDF would be, and costs microseconds per request
instead of tens of milliseconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from ..errors import InvalidRequestError, UsageError
from ..ledger import open_ledger
from ..ledger._sql import SqlLedger
from ..ledger.pricing import from_micros
from ..ledger.store import US, to_us
from ..types import Budget, Context

PREFIX = "gwk_"
_SECRET = re.compile(r"^gwk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")
BudgetPeriod = Literal["day", "month"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gateway_api_keys (
        key_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        salt TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        team TEXT NOT NULL,
        project TEXT NOT NULL,
        user_name TEXT NOT NULL,
        use_cases TEXT NOT NULL,
        budget_micros BIGINT,
        budget_period TEXT,
        created_us BIGINT NOT NULL,
        revoked_us BIGINT
    )""",
    # One live key per name (a revoked name may be reused).
    "CREATE UNIQUE INDEX IF NOT EXISTS gateway_api_keys_live_name ON gateway_api_keys (name)"
    " WHERE revoked_us IS NULL",
)
_COLS = (
    "key_id, name, team, project, user_name, use_cases, budget_micros, budget_period, created_us, revoked_us"
)


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (never its secret). ``use_cases[0]`` is the default use case."""

    key_id: str
    name: str
    team: str
    project: str
    user: str
    use_cases: tuple[str, ...]
    budget_usd: Decimal | None = None
    budget_period: BudgetPeriod | None = None
    created: dt.datetime | None = None
    revoked: dt.datetime | None = None

    @property
    def tag(self) -> str:
        """The tag every request made with this key carries (and so every audit record). Not
        ``api-key:...``: the audit scrubber rightly drops any value after a secret-sounding name."""
        return f"key:{self.name}"

    def context(self, use_case: str | None = None, end_user: str | None = None) -> Context:
        """The context a request with this key runs in; ``use_case`` must be one the key allows."""
        chosen = use_case or self.use_cases[0]
        tags = [self.tag]
        if end_user:
            tags.append(f"end-user:{end_user[:128]}")
        return Context(
            team=self.team, project=self.project, use_case=chosen, user=self.user, tags=tuple(tags)
        )

    def budget(self) -> Budget | None:
        """The key's own budget, counted on the key's user scope (each key has its own user by default)."""
        if self.budget_usd is None or self.budget_period is None:
            return None
        return Budget(
            id=f"key:{self.name}",
            scope="user",
            scope_value=self.user,
            period=self.budget_period,
            limit_usd=self.budget_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key_id": self.key_id,
            "team": self.team,
            "project": self.project,
            "user": self.user,
            "use_cases": list(self.use_cases),
            "budget_usd": None if self.budget_usd is None else str(self.budget_usd),
            "budget_period": self.budget_period,
            "created": self.created.isoformat() if self.created else None,
            "revoked": self.revoked.isoformat() if self.revoked else None,
        }


@dataclass
class _Cached:
    key: ApiKey | None
    until: float


@dataclass
class KeyStore:
    """Create, list, revoke and authenticate keys in the ledger's database.

    ``cache_s``: how long a verified key is trusted without asking the database again; a revocation
    reaches every worker within that time (default 2 s).
    """

    url: str
    cache_s: float = 2.0
    _ledger: SqlLedger = field(init=False)
    _cache: dict[str, _Cached] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        ledger = open_ledger(self.url)
        if not isinstance(ledger, SqlLedger):  # pragma: no cover - every shipped store is SQL
            ledger.close()
            raise UsageError(f"API keys need a SQL ledger store, not {type(ledger).__name__}")
        self._ledger = ledger
        self._ensure_schema()

    @property
    def blocking_io(self) -> bool:
        return bool(self._ledger.blocking_io)

    def _ensure_schema(self) -> None:
        def tx(q: Any) -> None:
            for statement in _SCHEMA:
                q(statement, ())

        try:
            self._ledger._write(tx)
        except Exception:
            # Two processes creating the table at once on PostgreSQL: the loser sees a duplicate
            # catalogue row. The table exists now, so one more try settles it.
            self._ledger._write(tx)

    # ------------------------------------------------------------------ administration

    def create(
        self,
        name: str,
        *,
        team: str,
        project: str = "default",
        user: str | None = None,
        use_cases: Sequence[str] = (),
        budget_usd: Decimal | None = None,
        budget_period: BudgetPeriod | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """Make a key; returns it and its secret (shown once: only a salted hash is kept)."""
        if not _NAME.match(name):
            raise InvalidRequestError(f"key name must match {_NAME.pattern}, got {name!r}")
        if (budget_usd is None) != (budget_period is None):
            raise InvalidRequestError("a key budget needs both --budget-usd and --budget-period")
        if budget_usd is not None and budget_usd < 0:
            raise InvalidRequestError("a key budget must not be negative")
        cases = tuple(dict.fromkeys(use_cases)) or ("general",)
        # Validate the context now, so a bad team name fails here and not on the first request.
        Context(team=team, project=project, use_case=cases[0], user=user or f"key-{name}")
        for c in cases:
            Context(use_case=c)
        key = ApiKey(
            key_id=secrets.token_hex(6),
            name=name,
            team=team,
            project=project,
            user=user or f"key-{name}",
            use_cases=cases,
            budget_usd=budget_usd,
            budget_period=budget_period,
            created=now or dt.datetime.now(dt.UTC),
        )
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        row = (
            key.key_id,
            key.name,
            salt,
            _hash(salt, secret),
            key.team,
            key.project,
            key.user,
            json.dumps(list(key.use_cases)),
            None if budget_usd is None else int(budget_usd * US),
            budget_period,
            to_us(key.created or dt.datetime.now(dt.UTC)),
        )

        def tx(q: Any) -> None:
            if q("SELECT 1 FROM gateway_api_keys WHERE name = ? AND revoked_us IS NULL", (name,)):
                raise InvalidRequestError(f"a live key named {name!r} exists; revoke it first")
            q(
                "INSERT INTO gateway_api_keys (key_id, name, salt, secret_hash, team, project, user_name,"
                " use_cases, budget_micros, budget_period, created_us) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )

        self._ledger._write(tx)
        return key, f"{PREFIX}{key.key_id}_{secret}"

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else " WHERE revoked_us IS NULL"
        rows = self._ledger._read(
            lambda q: q(f"SELECT {_COLS} FROM gateway_api_keys{where} ORDER BY name, created_us", ())  # noqa: S608
        )
        return [_key(r) for r in rows]

    def revoke(self, name: str, now: dt.datetime | None = None) -> ApiKey:
        when = to_us(now or dt.datetime.now(dt.UTC))

        def tx(q: Any) -> list[tuple[Any, ...]]:
            return q(  # type: ignore[no-any-return]
                f"UPDATE gateway_api_keys SET revoked_us = ? WHERE name = ? AND revoked_us IS NULL"  # noqa: S608
                f" RETURNING {_COLS}",
                (when, name),
            )

        rows = self._ledger._write(tx)
        if not rows:
            raise InvalidRequestError(f"no live key named {name!r}")
        with self._lock:
            self._cache.clear()
        return _key(rows[0])

    # ------------------------------------------------------------------ authentication

    def authenticate(self, presented: str) -> ApiKey | None:
        """The live key whose secret this is, or None. Constant-time on the secret; cached briefly."""
        m = _SECRET.match(presented.strip())
        if m is None:
            return None
        digest = hashlib.sha256(presented.encode()).hexdigest()  # cache key: never the secret itself
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit.until > now:
                return hit.key
        key = self._lookup(m.group(1), m.group(2))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = _Cached(key, now + self.cache_s)
        return key

    def _lookup(self, key_id: str, secret: str) -> ApiKey | None:
        rows = self._ledger._read(
            lambda q: q(
                f"SELECT {_COLS}, salt, secret_hash FROM gateway_api_keys WHERE key_id = ?",  # noqa: S608
                (key_id,),
            )
        )
        if not rows:
            _hash("0" * 32, secret)  # same work whether or not the id exists
            return None
        row = rows[0]
        ok = hmac.compare_digest(_hash(str(row[-2]), secret), str(row[-1]))
        key = _key(row[:-2])
        return key if ok and key.revoked is None else None

    def close(self) -> None:
        self._ledger.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hash(salt: str, secret: str) -> str:
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


def _when(us: Any) -> dt.datetime | None:
    if us is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(us))


def _key(r: Sequence[Any]) -> ApiKey:
    budget = None if r[6] is None else from_micros(int(r[6]))
    return ApiKey(
        key_id=str(r[0]),
        name=str(r[1]),
        team=str(r[2]),
        project=str(r[3]),
        user=str(r[4]),
        use_cases=tuple(json.loads(r[5])),
        budget_usd=budget,
        budget_period=r[7],
        created=_when(r[8]),
        revoked=_when(r[9]),
    )


__all__ = ["PREFIX", "ApiKey", "KeyStore"]
