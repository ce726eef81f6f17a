"""PostgreSQL ledger: one budget across many hosts (psycopg 3).

Why it cannot overspend. Each reservation runs in a READ COMMITTED transaction that locks the counter
rows it checks with ``SELECT ... FOR UPDATE`` (in one global order), reads their latest committed
figures, and only then inserts the reservation and bumps the counters. Two reservations against the
same budget therefore run one after the other on that row, while reservations for unrelated teams do
not wait for each other. We chose row locks over SERIALIZABLE: under a storm on one budget SERIALIZABLE
aborts most transactions and turns throughput into retry loops, while a row lock simply queues them.

Counters are created (rarely: a new window or a new budget) in a separate transaction that takes
``SHARE ROW EXCLUSIVE`` on the request table: it waits for in-flight writers and blocks new ones while
it sums history, so no request can slip between the sum and the new counter. Deadlocks and
serialisation failures are retried; a dropped connection is retried once (every write is idempotent
by request id). Sessions set ``lock_timeout`` and ``idle_in_transaction_session_timeout`` so a frozen
client cannot hold a budget row forever.

URL: any libpq URL plus ``schema=<name>`` (default ``public``; created if missing) and ``pool_size=<n>``
(connections per process, default 4).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from ..errors import ConfigError
from ._reads import _COUNTER_COLS, Query
from ._sql import SqlLedger
from .migrations import migrate
from .store import CounterKey, Usage, to_us

T = TypeVar("T")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RETRIES = 8
# One round trip per new connection: schema, and timeouts so a frozen client cannot hold budget rows.
_SESSION = (
    "SELECT set_config('search_path', %s, false), set_config('lock_timeout', '30s', false),"
    " set_config('idle_in_transaction_session_timeout', '60s', false)"
)


def parse_postgres_url(url: str) -> tuple[str, str, int]:
    """Split our options (``schema``, ``pool_size``) off a libpq URL; return (conninfo, schema, pool size)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"not a postgresql URL: {parts.scheme}://...")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("schema", "pool_size")}
    rest = [(k, v) for k, v in query if k not in ("schema", "pool_size")]
    if not any(k == "connect_timeout" for k, _ in rest):
        rest.append(("connect_timeout", "10"))
    schema = ours.get("schema", "public")
    if not _SCHEMA.match(schema):
        raise ConfigError(f"ledger schema must match {_SCHEMA.pattern}, got {schema!r}")
    try:
        size = int(ours.get("pool_size", "4"))
    except ValueError:
        raise ConfigError(f"pool_size must be an integer, got {ours['pool_size']!r}") from None
    if not 1 <= size <= 64:
        raise ConfigError(f"pool_size must be 1..64, got {size}")
    return (
        urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest, quote_via=quote), "")),
        schema,
        size,
    )


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _Pool:
    """A few connections per process, handed to one transaction at a time; forgotten after ``fork``."""

    def __init__(self, conninfo: str, schema: str, size: int) -> None:
        self._conninfo, self._schema, self._size = conninfo, schema, size
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._size)

    def get(self) -> psycopg.Connection[Any]:
        if self._pid != os.getpid():
            self._reset()  # the parent's sockets are not ours: never close them, just drop them
        self._slots.acquire()
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            conn.execute(_SESSION, (self._schema,))
        except BaseException:
            self._slots.release()
            raise
        return conn

    def put(self, conn: psycopg.Connection[Any], *, discard: bool = False) -> None:
        if discard or conn.broken or conn.closed:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        self._slots.release()

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresLedger(SqlLedger):
    blocking_io = True
    inline_init = False
    for_update = " FOR UPDATE"
    group_updates = False
    pipeline = psycopg.Pipeline.is_supported()

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = redact(url)
        conninfo, self.schema, size = parse_postgres_url(url)
        self._pool = _Pool(conninfo, self.schema, size)
        schema = pg_sql.Identifier(self.schema)

        def setup(q: Query, conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gateway-ledger:{self.schema}",))
            conn.execute(pg_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            migrate(q, to_us(dt.datetime.now(dt.UTC)))

        try:
            self._transact(setup, prelude=None)
        except BaseException:
            self._pool.close()
            raise

    def _transact(self, fn: Callable[[Query, psycopg.Connection[Any]], T], prelude: str | None) -> T:
        reconnected = False
        for attempt in range(_RETRIES):
            conn = self._pool.get()
            try:
                # Pipeline mode: statements whose rows we do not read (BEGIN, LOCK, counter UPDATEs, the
                # INSERT, COMMIT) are sent without waiting, so a reserve costs ~4 round trips, not ~9,
                # and the budget row stays locked for less time.
                with self._pipeline(conn), conn.transaction():
                    if prelude:
                        conn.execute(prelude)
                    result = fn(_query(conn), conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                self._pool.put(conn)
                if attempt == _RETRIES - 1:
                    raise
                continue
            except psycopg.OperationalError:
                broken = conn.broken
                self._pool.put(conn, discard=broken)
                if not broken or reconnected:
                    raise
                reconnected = True
                continue
            except BaseException:
                self._pool.put(conn)
                raise
            self._pool.put(conn)
            return result
        raise AssertionError("unreachable")

    def _pipeline(self, conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
        return conn.pipeline() if self.pipeline else nullcontext()

    def _write(self, fn: Callable[[Query], T]) -> T:
        # ROW EXCLUSIVE conflicts with the counter-creating transaction's SHARE ROW EXCLUSIVE only.
        return self._transact(lambda q, _c: fn(q), "LOCK TABLE ledger_requests IN ROW EXCLUSIVE MODE")

    def _init_write(self, fn: Callable[[Query], T]) -> T:
        return self._transact(lambda q, _c: fn(q), "LOCK TABLE ledger_requests IN SHARE ROW EXCLUSIVE MODE")

    def _read(self, fn: Callable[[Query], T]) -> T:
        return self._transact(
            lambda q, _c: fn(q), "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        )

    def _lock(
        self, q: Query, keys: Sequence[CounterKey], seen: Mapping[CounterKey, Usage]
    ) -> dict[CounterKey, Usage]:
        if not keys:
            return {}
        values = ", ".join(["(?, ?, ?, ?)"] * len(keys))
        rows = q(
            f"SELECT {_COUNTER_COLS} FROM ledger_counters WHERE (period, window_start, scope, scope_value)"  # noqa: S608
            f' IN ({values}) ORDER BY period COLLATE "C", window_start, scope COLLATE "C",'
            ' scope_value COLLATE "C" FOR UPDATE',
            [x for k in keys for x in k],
        )
        return {(r[0], int(r[1]), r[2], r[3]): Usage(int(r[4]), int(r[5]), int(r[6])) for r in rows}

    def _is_duplicate(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, pg_errors.UniqueViolation) and exc.diag.constraint_name == "ledger_requests_pkey"
        )

    def drop_schema(self) -> None:
        """Drop this ledger's schema and everything in it (tests; never the ``public`` schema)."""
        if self.schema == "public":
            raise ConfigError("refusing to drop the public schema")
        ident = pg_sql.Identifier(self.schema)
        self._transact(
            lambda _q, c: c.execute(pg_sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident)), None
        )

    def close(self) -> None:
        self._pool.close()


@lru_cache(maxsize=512)
def _returns_rows(sql: str) -> bool:
    return sql.lstrip().upper().startswith("SELECT") or " RETURNING " in sql


def _query(conn: psycopg.Connection[Any]) -> Query:
    def q(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = conn.execute(_pg(sql), params)
        return cur.fetchall() if _returns_rows(sql) else []  # fetching is what waits for the server

    return q
