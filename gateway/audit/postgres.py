"""The audit log on PostgreSQL: many connections, processes and hosts appending to one chain.

Ordering: each append transaction (READ COMMITTED) first takes ``pg_advisory_xact_lock(<key of this
log>)``, then reads the tail, then inserts. The lock is held until commit, and under READ COMMITTED the
tail query that follows it sees every transaction committed before the lock was granted, so ``seq``
is gap-free commit order and ``prev_hash`` always names ``seq - 1``. A unique ``seq`` primary key is the
second line of defence: a writer that somehow skipped the lock fails instead of forking the chain.

Tables are ``{prefix}audit_log`` and ``{prefix}audit_meta`` (prefix ``gateway_`` unless the URL says
``?table_prefix=...`` or ``open_audit(table_prefix=...)``), so tests and tenants can share a database.
Dashboard columns are STORED generated columns over the hashed bytes; UPDATE, DELETE and TRUNCATE are
refused by triggers. A broken connection is replaced on the next call (that call itself fails closed).
"""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections.abc import Iterator
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import AuditWriteError, UsageError
from .redact import redact
from .store import AuditLog, RowMaker
from .verify import GENESIS, TS_LEN, Row, as_bytes

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_OUR_PARAMS = ("table_prefix",)
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "(body::jsonb) ->> 'ts'"),
    ("event", "(body::jsonb) -> 'record' ->> 'event'"),
    ("request_id", "(body::jsonb) -> 'record' ->> 'request_id'"),
    ("team", "(body::jsonb) -> 'record' ->> 'team'"),
    ("project", "(body::jsonb) -> 'record' ->> 'project'"),
    ("use_case", "(body::jsonb) -> 'record' ->> 'use_case'"),
    ("user", "(body::jsonb) -> 'record' ->> 'user'"),
    ("provider", "(body::jsonb) -> 'record' ->> 'provider'"),
    ("model", "(body::jsonb) -> 'record' ->> 'model'"),
)
INDEXED: tuple[str, ...] = ("ts", "event", "request_id", "team", "use_case", "provider", "model")

# Statements, with {t} (the log table) and {m} (the meta table) filled from a validated prefix.
_SQL: dict[str, str] = {
    "meta": "CREATE TABLE IF NOT EXISTS {m} (key text PRIMARY KEY, value text NOT NULL)",
    "version": "SELECT value FROM {m} WHERE key = 'schema_version'",
    "set_version": "INSERT INTO {m}(key, value) VALUES ('schema_version', %s) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    "add_log_id": "INSERT INTO {m}(key, value) VALUES ('log_id', %s) ON CONFLICT (key) DO NOTHING",
    "log_id": "SELECT value FROM {m} WHERE key = 'log_id'",
    "tail_ts": "SELECT seq, entry_hash, right(body, 29) FROM {t} ORDER BY seq DESC LIMIT 1",
    "tail": "SELECT seq, entry_hash FROM {t} ORDER BY seq DESC LIMIT 1",
    "insert": "INSERT INTO {t}(seq, entry_hash, body) VALUES (%s, %s, %s)",
    "scan": "SELECT seq, entry_hash, convert_to(body, 'UTF8') FROM {t} WHERE seq > %s",
    "scan_until": "SELECT seq, entry_hash, convert_to(body, 'UTF8') FROM {t} WHERE seq > %s AND seq <= %s",
    "fetch": "SELECT seq, entry_hash, convert_to(body, 'UTF8') FROM {t} WHERE seq = %s",
}


def migrations(prefix: str) -> tuple[tuple[str, ...], ...]:
    """Append-only list; entry i (1-based) moves a log from schema version i-1 to i."""
    t = f"{prefix}audit_log"
    fn = f"{prefix}audit_append_only"
    generated = ", ".join(f'"{name}" text GENERATED ALWAYS AS ({expr}) STORED' for name, expr in _COLUMNS)
    return (
        (
            f"CREATE TABLE {t} (seq bigint PRIMARY KEY, entry_hash text NOT NULL, body text NOT NULL, "
            f"prev_hash text GENERATED ALWAYS AS (substr(body, 15, 64)) STORED, {generated})",
            *(f'CREATE INDEX {t}_{c} ON {t} ("{c}")' for c in INDEXED),
            f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
            f"CREATE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION {fn}()",
            f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
        ),
    )


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Take our own query parameters out of a libpq URL (libpq would refuse unknown ones)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _OUR_PARAMS}
    rest = urlencode([(k, v) for k, v in query if k not in _OUR_PARAMS])
    return urlunsplit(parts._replace(query=rest)), ours


def _key(prefix: str, purpose: str) -> int:
    digest = sha256(f"diffusion-gateway/audit/{prefix}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresAuditLog(AuditLog):
    """See the module docstring."""

    blocking_io = True

    def __init__(self, url: str, *, table_prefix: str | None = None, **common: Any) -> None:
        super().__init__(**common)
        self._conninfo, ours = split_url(url)
        prefix = table_prefix if table_prefix is not None else ours.get("table_prefix", "gateway_")
        if not _PREFIX_RE.match(prefix):
            raise UsageError(f"table_prefix must match {_PREFIX_RE.pattern}, not {prefix!r}")
        self.prefix = prefix
        self.table = f"{prefix}audit_log"
        self.meta = f"{prefix}audit_meta"
        self.url = redact(url)
        self._append_key = _key(prefix, "append")
        self._sql = {k: v.replace("{t}", self.table).replace("{m}", self.meta) for k, v in _SQL.items()}
        self._db_lock = threading.Lock()
        try:
            self._conn = self._connect()
            self._log_id = self._migrate()
        except Exception as exc:
            raise AuditWriteError(f"cannot open the audit log at {self.url}: {redact(str(exc))}") from exc

    def _connect(self, *, autocommit: bool = True) -> Any:
        import psycopg

        conn = psycopg.connect(self._conninfo, autocommit=autocommit, connect_timeout=10)
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        return conn

    def _live(self) -> Any:
        if self._conn.closed or self._conn.broken:
            with contextlib.suppress(Exception):
                self._conn.close()  # release the dead socket now, not in a finaliser
            self._conn = self._connect()
        return self._conn

    def _migrate(self) -> str:
        conn = self._conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key(self.prefix, "migrate"),))
            conn.execute(self._sql["meta"])
            row = conn.execute(self._sql["version"]).fetchone()
            version = int(row[0]) if row else 0
            for number, statements in enumerate(migrations(self.prefix), 1):
                if number > version:
                    for sql in statements:
                        conn.execute(sql)
            conn.execute(self._sql["set_version"], (str(len(migrations(self.prefix))),))
            conn.execute(self._sql["add_log_id"], (uuid.uuid4().hex,))
            found = conn.execute(self._sql["log_id"]).fetchone()
        return str(found[0])

    @property
    def log_id(self) -> str:
        return self._log_id

    def _append_rows(self, make_rows: RowMaker) -> list[int]:
        with self._db_lock:
            conn = self._live()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._append_key,))
                cur.execute(self._sql["tail_ts"])
                tail = cur.fetchone()
                seq, head, end = tail if tail is not None else (0, GENESIS, "")
                rows = make_rows(int(seq), str(head), end[:TS_LEN])
                cur.executemany(self._sql["insert"], [(s, h, body.decode("utf-8")) for s, h, body in rows])
        return [r[0] for r in rows]

    def _scan(self, since_seq: int = 0, until_seq: int | None = None) -> Iterator[Row]:
        # Its own connection and a server-side cursor: constant memory, and appends are not blocked.
        conn = self._connect(autocommit=False)
        try:
            sql = self._sql["scan"] if until_seq is None else self._sql["scan_until"]
            args = (since_seq,) if until_seq is None else (since_seq, until_seq)
            with conn.cursor(name="audit_scan", binary=True) as cur:
                cur.itersize = 10_000
                cur.execute(sql + " ORDER BY seq", args)
                yield from cur
        finally:
            conn.close()

    def _fetch(self, seq: int) -> Row | None:
        with self._db_lock:
            row = self._live().execute(self._sql["fetch"], (seq,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), as_bytes(row[2]))

    def _tail(self) -> tuple[int, str]:
        with self._db_lock:
            row = self._live().execute(self._sql["tail"]).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def _close(self) -> None:
        with self._db_lock:
            self._conn.close()

    def drop(self) -> None:
        """Remove this log's tables and trigger function (tests and tenant teardown; irreversible)."""
        self._dirty = False  # nothing left to seal
        with self._connect() as conn, conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            conn.execute(f"DROP TABLE IF EXISTS {self.meta}")
            conn.execute(f"DROP FUNCTION IF EXISTS {self.prefix}audit_append_only()")


__all__ = ["PostgresAuditLog", "split_url"]
