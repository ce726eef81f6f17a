"""Read-only access to the ledger and the audit log: the dashboard can look, never touch.

Why not ``open_ledger`` / ``open_audit``: both open their store for *writing* (they create a missing
file, take the write lock to run migrations, and the checkpoint store makes a signing key on demand).
A dashboard must work for an auditor who holds read-only credentials, and must not be able to change
evidence even by accident. So each store is opened read-only at the connection level (SQLite
``mode=ro``; PostgreSQL ``default_transaction_read_only``), and the stores' own query code is reused
through their documented extension hooks (``SqlLedger._read``; the ``AuditLog`` backend hooks). The
totals on the page are therefore computed by exactly the SQL that ``gateway report`` runs, and the
chain is verified by exactly the code that ``gateway audit verify`` runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from ..audit.checkpoints import CheckpointStore
from ..audit.store import AuditLog, RowMaker, default_checkpoint_dir
from ..audit.verify import GENESIS, AuditVerifyReport, Row, as_bytes
from ..errors import AuditWriteError, ConfigError, UsageError
from ..ledger._sql import SqlLedger
from ..ledger.migrations import Query

T = TypeVar("T")
READ_ONLY = "the dashboard opens stores read-only"

# Report dimension -> ledger column (the ledger's own whitelist, restated: SQL is built from these only).
LEDGER_COLUMNS: dict[str, str] = {
    "team": "team",
    "project": "project",
    "use_case": "use_case",
    "user": "user_name",
    "provider": "provider",
    "model": "model",
    "route": "route_key",
}
_SPENT = "SUM(CASE WHEN status IN ('settled', 'expired') THEN actual_micros ELSE 0 END)"
_RESERVED = "SUM(CASE WHEN status = 'reserved' THEN estimated_micros ELSE 0 END)"


def _sqlite_ro(path: Path) -> sqlite3.Connection:
    """A connection that SQLite itself refuses to write through (``mode=ro`` plus ``query_only``)."""
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _pg_connect(conninfo: str, *, autocommit: bool = True) -> Any:
    import psycopg

    return psycopg.connect(
        conninfo, autocommit=autocommit, connect_timeout=10, options="-c default_transaction_read_only=on"
    )


# --------------------------------------------------------------------------- ledger


class _LedgerQueries(SqlLedger):
    """The ledger's own SQL (report, budget_status, recorded_budgets) plus the series the charts need."""

    def _write(self, fn: Callable[[Query], T]) -> T:
        raise UsageError(f"{READ_ONLY}: the ledger cannot be written from here")

    def _is_duplicate(self, exc: BaseException) -> bool:
        return False

    def check_schema(self) -> None:
        """Refuse a database that is not a ledger, or one written by a newer gateway."""
        from ..ledger.migrations import MIGRATIONS

        try:
            applied = {str(r[0]) for r in self._read(lambda q: q("SELECT name FROM ledger_migrations", ()))}
        except Exception as exc:
            raise UsageError(f"{self.url} is not a gateway ledger ({type(exc).__name__})") from None
        unknown = sorted(applied - {m.name for m in MIGRATIONS})
        if unknown:
            raise ConfigError(f"the ledger was written by a newer gateway (migrations {unknown}); upgrade")

    def span_us(self) -> tuple[int, int] | None:
        """(first, last) request time in epoch microseconds; None for an empty ledger."""
        row = self._read(lambda q: q("SELECT MIN(ts_us), MAX(ts_us) FROM ledger_requests", ()))[0]
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def spend_series(
        self, dim: str, since_us: int, until_us: int, size_us: int, offset_us: int = 0
    ) -> list[tuple[int, str, int, int]]:
        """(bucket index, dimension value, spent micros, requests) per time bucket, same sums as report.

        Bucket ``b`` covers ``[b * size_us - offset_us, (b + 1) * size_us - offset_us)``.
        """
        col = LEDGER_COLUMNS[dim]
        size, offset = (
            int(size_us),
            int(offset_us),
        )  # integers we computed, inlined so both engines divide ints
        sql = (
            f"SELECT (ts_us + {offset}) / {size}, {col}, {_SPENT}, COUNT(*) FROM ledger_requests"  # noqa: S608
            " WHERE ts_us >= ? AND ts_us < ? GROUP BY 1, 2 ORDER BY 1, 2"
        )
        rows = self._read(lambda q: q(sql, (since_us, until_us)))
        return [(int(r[0]), str(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows]

    def scope_series(
        self, scope: str, since_us: int, until_us: int, size_us: int, offset_us: int = 0
    ) -> list[tuple[int, str, int, int]]:
        """(bucket, value of the scope's column, spent, reserved) micros: a budget's burn-down inputs."""
        col = "'*'" if scope == "org" else LEDGER_COLUMNS[scope]
        size, offset = int(size_us), int(offset_us)
        sql = (
            f"SELECT (ts_us + {offset}) / {size}, {col}, {_SPENT}, {_RESERVED} FROM ledger_requests"  # noqa: S608
            " WHERE ts_us >= ? AND ts_us < ? GROUP BY 1, 2 ORDER BY 1"
        )
        rows = self._read(lambda q: q(sql, (since_us, until_us)))
        return [(int(r[0]), str(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows]


class SQLiteLedgerReader(_LedgerQueries):
    """One read-only connection shared by threads under a lock; each read is one snapshot."""

    def __init__(self, url: str) -> None:
        from ..ledger.sqlite import parse_sqlite_url

        super().__init__()
        self.url = url
        self.path, _ = parse_sqlite_url(url)
        if not self.path.is_file():
            raise UsageError(f"no ledger at {self.path} (nothing spent yet?); pass --ledger URL")
        self._guard = threading.Lock()
        self._conn = _sqlite_ro(self.path)
        self.check_schema()

    def _read(self, fn: Callable[[Query], T]) -> T:
        with self._guard:
            conn = self._conn

            def q(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return conn.execute(sql, params).fetchall()

            conn.execute("BEGIN")
            try:
                return fn(q)
            finally:
                conn.execute("ROLLBACK")  # nothing to commit: this connection cannot write

    def close(self) -> None:
        with self._guard:
            self._conn.close()


class PostgresLedgerReader(_LedgerQueries):
    """One read-only session (reconnected when broken); reads run REPEATABLE READ, READ ONLY."""

    blocking_io = True

    def __init__(self, url: str) -> None:
        from ..ledger.postgres import parse_postgres_url, redact

        super().__init__()
        self.url = redact(url)
        self._conninfo, self.schema, _ = parse_postgres_url(url)
        self._guard = threading.Lock()
        self._conn: Any = None
        self.check_schema()

    def _session(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = _pg_connect(self._conninfo)
            conn.execute("SELECT set_config('search_path', %s, false)", (self.schema,))
            self._conn = conn
        return self._conn

    def _read(self, fn: Callable[[Query], T]) -> T:
        with self._guard:
            conn = self._session()

            def q(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                cur = conn.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description is not None else []

            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return fn(q)

    def close(self) -> None:
        with self._guard:
            if self._conn is not None:
                self._conn.close()


def open_ledger_reader(url: str) -> _LedgerQueries:
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return SQLiteLedgerReader(url)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return PostgresLedgerReader(url)
    raise ConfigError(f"unsupported ledger URL scheme {scheme!r}; use sqlite:/// or postgresql://")


# --------------------------------------------------------------------------- audit

#: Audit columns the stores generate from the hashed bytes (both engines), usable as filters.
AUDIT_FILTERS: tuple[str, ...] = ("event", "team", "project", "use_case", "user", "provider", "model")
#: The filter columns both stores index: the ones whose distinct values are cheap to list.
FACETS: tuple[str, ...] = ("event", "team", "use_case", "provider", "model")


@dataclass(frozen=True)
class AuditFilter:
    """Which records a list shows. Times are the stored fixed-width ISO strings (they sort as text)."""

    equals: tuple[tuple[str, str], ...] = ()  # (column from AUDIT_FILTERS or request_id, value)
    since_ts: str | None = None
    until_ts: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        parts, params = ["1 = 1"], []
        for col, value in self.equals:
            if col not in (*AUDIT_FILTERS, "request_id"):
                raise ValueError(f"cannot filter the audit log on {col!r}")
            parts.append(f'"{col}" = ?')
            params.append(value)
        if self.since_ts:
            parts.append("ts >= ?")
            params.append(self.since_ts)
        if self.until_ts:
            parts.append("ts < ?")
            params.append(self.until_ts)
        return " AND ".join(parts), params


class AuditReader(AuditLog):
    """An :class:`AuditLog` that cannot append, plus the filtered queries a dashboard needs.

    Everything ``AuditLog`` offers readers (``verify``, ``get``, ``head``, ``inclusion_proof``) works
    unchanged. ``verify`` is cached per head and checkpoint file, so a page view costs one pass over
    the log only when the log or its checkpoints changed.
    """

    table = "audit_log"
    meta = "audit_meta"

    def __init__(self, checkpoints: CheckpointStore) -> None:
        super().__init__(checkpoints=checkpoints, checkpoint_every=0, checkpoint_on_close=False)
        self._verified: tuple[Any, AuditVerifyReport] | None = None
        self._log_id = ""

    # -- hooks every engine provides
    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run read-only SQL with ``?`` placeholders; ``{t}`` is the log table."""
        raise NotImplementedError

    @property
    def log_id(self) -> str:
        return self._log_id

    def _append_rows(self, make_rows: RowMaker) -> list[int]:
        raise AuditWriteError(f"{READ_ONLY}: the audit log cannot be written from here")

    def _fetch(self, seq: int) -> Row | None:
        rows = self.q("SELECT seq, entry_hash, body FROM {t} WHERE seq = ?", (seq,))
        return None if not rows else (int(rows[0][0]), str(rows[0][1]), as_bytes(rows[0][2]))

    def _tail(self) -> tuple[int, str]:
        rows = self.q("SELECT seq, entry_hash FROM {t} ORDER BY seq DESC LIMIT 1")
        return (0, GENESIS) if not rows else (int(rows[0][0]), str(rows[0][1]))

    # -- queries
    def raw(self, seq: int) -> Row | None:
        """(seq, entry hash, stored bytes) of one record: what its hash is computed over."""
        return self._fetch(seq)

    def leaf_hashes(self) -> list[bytes]:
        """Every entry hash in seq order: the leaves of the log's RFC 6962 Merkle tree."""
        return [bytes.fromhex(h) for _, h, _ in self._scan(0)]

    def verify_cached(self) -> AuditVerifyReport:
        cp = self.checkpoints.path
        key = (self._tail(), cp.stat().st_mtime_ns if cp.exists() else None)
        if self._verified is None or self._verified[0] != key:
            self._verified = (key, self.verify())
        return self._verified[1]

    def count(self, flt: AuditFilter) -> int:
        where, params = flt.where()
        return int(self.q(f"SELECT COUNT(*) FROM {{t}} WHERE {where}", params)[0][0])  # noqa: S608

    def page(self, flt: AuditFilter, *, before: int | None, limit: int) -> list[dict[str, Any]]:
        """Newest first; ``before`` is a seq cursor (records with a smaller seq)."""
        where, params = flt.where()
        if before is not None:
            where, params = f"{where} AND seq < ?", [*params, before]
        sql = f"SELECT seq, entry_hash, body FROM {{t}} WHERE {where} ORDER BY seq DESC LIMIT {int(limit)}"  # noqa: S608
        return [flat(r) for r in self.q(sql, params)]

    def events(self, events: Sequence[str], flt: AuditFilter) -> Iterator[dict[str, Any]]:
        """Records of the given event types that match ``flt``, oldest first."""
        where, params = flt.where()
        marks = ", ".join("?" for _ in events)
        sql = f"SELECT seq, entry_hash, body FROM {{t}} WHERE event IN ({marks}) AND {where} ORDER BY seq"  # noqa: S608
        for r in self.q(sql, [*events, *params]):
            yield flat(r)

    def field(self, name: str) -> str:
        """SQL for one top-level field of the stored record, as text (engine-specific JSON access)."""
        raise NotImplementedError

    def attempts(self, flt: AuditFilter) -> list[tuple[str, str, str, float | None]]:
        """(ts, route key, outcome, latency_s) of every attempt record matching ``flt``, oldest first.

        The fields are pulled out by the database's JSON functions: parsing every body in Python costs
        ~60 us a record, which a providers page over a month of traffic cannot afford.
        """
        where, params = flt.where()
        route = f"COALESCE({self.field('route_key')}, provider || '/' || model)"
        sql = (
            f"SELECT ts, {route}, {self.field('outcome')}, {self.field('latency_s')} FROM {{t}}"  # noqa: S608
            f" WHERE event = 'attempt' AND {where} ORDER BY seq"
        )
        return [
            (str(t), str(r), str(o), None if lat is None else float(lat))
            for t, r, o, lat in self.q(sql, params)
        ]

    def facets(self, limit: int = 200) -> dict[str, list[str]]:
        """Distinct values of each indexed filter column (for the filter menus)."""
        out: dict[str, list[str]] = {}
        for col in FACETS:
            sql = (
                f'SELECT DISTINCT "{col}" FROM {{t}} WHERE "{col}" IS NOT NULL ORDER BY 1 LIMIT {int(limit)}'  # noqa: S608
            )
            out[col] = [str(r[0]) for r in self.q(sql)]
        return out

    def ts_span(self) -> tuple[str, str] | None:
        """First and last record time (ts never decreases along seq, so two index lookups)."""
        first = self.q("SELECT ts FROM {t} ORDER BY seq LIMIT 1")
        last = self.q("SELECT ts FROM {t} ORDER BY seq DESC LIMIT 1")
        return None if not first else (str(first[0][0]), str(last[0][0]))


def flat(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row as the record plus seq, ts, prev_hash and entry_hash (what ``AuditLog.get`` returns)."""
    seq, entry_hash, body = int(row[0]), str(row[1]), as_bytes(row[2])
    env = json.loads(body)
    record = env.get("record")
    out: dict[str, Any] = dict(record) if isinstance(record, dict) else {"record": record}
    out.update(
        seq=env.get("seq", seq), ts=env.get("ts"), prev_hash=env.get("prev_hash"), entry_hash=entry_hash
    )
    return out


class SQLiteAuditReader(AuditReader):
    blocking_io = False

    def __init__(self, url: str, checkpoints: CheckpointStore) -> None:
        from ..audit.sqlite import MIGRATIONS, parse_sqlite_url

        super().__init__(checkpoints)
        self.path = parse_sqlite_url(url)[0].resolve()
        self.url = f"sqlite:///{self.path}"
        if not self.path.is_file():
            raise UsageError(f"no audit log at {self.path}; pass --audit URL")
        self._guard = threading.Lock()
        self._conn = _sqlite_ro(self.path)
        try:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            found = self._conn.execute("SELECT value FROM audit_meta WHERE key = 'log_id'").fetchone()
        except sqlite3.Error as exc:
            self._conn.close()
            raise UsageError(f"{self.path} is not a gateway audit log ({exc})") from None
        if version > len(MIGRATIONS):
            self._conn.close()
            raise ConfigError(f"the audit log {self.path} was written by a newer gateway; upgrade")
        self._log_id = "" if found is None else str(found[0])

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._guard:
            return self._conn.execute(sql.replace("{t}", self.table), params).fetchall()

    def field(self, name: str) -> str:
        if not name.isidentifier():
            raise ValueError(f"bad field name {name!r}")
        return f"json_extract(CAST(body AS TEXT), '$.record.{name}')"

    def _scan(self, since_seq: int = 0, until_seq: int | None = None) -> Iterator[Row]:
        conn = _sqlite_ro(self.path)  # its own snapshot: a long verify never holds the page's lock
        try:
            sql, args = "SELECT seq, entry_hash, body FROM audit_log WHERE seq > ?", [since_seq]
            if until_seq is not None:
                sql, args = sql + " AND seq <= ?", [since_seq, until_seq]
            cur = conn.execute(sql + " ORDER BY seq", args)
            while batch := cur.fetchmany(4096):
                for seq, h, body in batch:
                    yield int(seq), str(h), as_bytes(body)
        finally:
            conn.close()

    def _close(self) -> None:
        with self._guard:
            self._conn.close()


class PostgresAuditReader(AuditReader):
    blocking_io = True

    def __init__(self, url: str, checkpoints: CheckpointStore) -> None:
        from ..audit.postgres import split_url
        from ..audit.redact import redact

        super().__init__(checkpoints)
        self._conninfo, ours = split_url(url)
        prefix = ours.get("table_prefix", "gateway_")
        if not prefix.replace("_", "a").isalnum():
            raise UsageError(f"bad table_prefix {prefix!r}")
        self.table, self.meta = f"{prefix}audit_log", f"{prefix}audit_meta"
        self.url = redact(url)
        self._guard = threading.Lock()
        self._conn: Any = None
        try:
            found = self._session().execute(f"SELECT value FROM {self.meta} WHERE key = 'log_id'").fetchone()  # noqa: S608
        except Exception as exc:
            raise UsageError(f"no gateway audit log at {self.url} ({type(exc).__name__})") from None
        self._log_id = "" if found is None else str(found[0])

    def _session(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = _pg_connect(self._conninfo)
        return self._conn

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._guard:
            cur = self._session().execute(sql.replace("{t}", self.table).replace("?", "%s"), params)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            return rows

    def field(self, name: str) -> str:
        if not name.isidentifier():
            raise ValueError(f"bad field name {name!r}")
        return f"((body::jsonb) -> 'record' ->> '{name}')"

    def _scan(self, since_seq: int = 0, until_seq: int | None = None) -> Iterator[Row]:
        conn = _pg_connect(self._conninfo, autocommit=False)
        try:
            sql = f"SELECT seq, entry_hash, convert_to(body, 'UTF8') FROM {self.table} WHERE seq > %s"  # noqa: S608
            args: tuple[int, ...] = (since_seq,)
            if until_seq is not None:
                sql, args = sql + " AND seq <= %s", (since_seq, until_seq)
            with conn.cursor(name="dashboard_scan", binary=True) as cur:
                cur.itersize = 10_000
                cur.execute(sql + " ORDER BY seq", args)
                for seq, h, body in cur:
                    yield int(seq), str(h), as_bytes(body)
        finally:
            conn.close()

    def _close(self) -> None:
        with self._guard:
            if self._conn is not None:
                self._conn.close()


def open_audit_reader(url: str, checkpoint_dir: str | os.PathLike[str] | None = None) -> AuditReader:
    """The audit log at ``url``, read-only; checkpoints default as ``gateway audit`` defaults them."""
    store = CheckpointStore(checkpoint_dir if checkpoint_dir is not None else default_checkpoint_dir(url))
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return SQLiteAuditReader(url, store)
    if scheme in ("postgresql", "postgres"):
        return PostgresAuditReader(url, store)
    raise UsageError("unsupported audit URL: use sqlite:///PATH or postgresql://...")


__all__ = [
    "AUDIT_FILTERS",
    "LEDGER_COLUMNS",
    "AuditFilter",
    "AuditReader",
    "PostgresAuditReader",
    "PostgresLedgerReader",
    "SQLiteAuditReader",
    "SQLiteLedgerReader",
    "flat",
    "open_audit_reader",
    "open_ledger_reader",
]
