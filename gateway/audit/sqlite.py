"""The audit log on SQLite (the default): one file, WAL, durable commits, many writer processes.

Ordering: ``BEGIN IMMEDIATE`` takes SQLite's single write lock before the tail is read, so appends
from any number of processes on one machine serialise (others wait up to ``timeout`` seconds) and each
sees the previous writer's committed tail. ``synchronous=FULL`` by default: a returned seq has been
fsynced. ``?synchronous=normal`` trades the last few commits on power loss for speed (WAL keeps the
file consistent either way).

The dashboard columns (ts, event, team, use_case, provider, model, request_id, ...) are *generated*
from the hashed bytes, so they cannot disagree with what verify checks; UPDATE and DELETE are refused
by triggers (a guard against accidents, not attackers: that is what the hashes are for).
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ..errors import AuditWriteError, UsageError
from .store import AuditLog, RowMaker, last_ts
from .verify import GENESIS, Row, as_bytes

TABLE = "audit_log"
META = "audit_meta"

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "$.ts"),
    ("event", "$.record.event"),
    ("request_id", "$.record.request_id"),
    ("team", "$.record.team"),
    ("project", "$.record.project"),
    ("use_case", "$.record.use_case"),
    ("user", "$.record.user"),
    ("provider", "$.record.provider"),
    ("model", "$.record.model"),
)
INDEXED: tuple[str, ...] = ("ts", "event", "request_id", "team", "use_case", "provider", "model")


def _generated(name: str, path: str) -> str:
    return f"\"{name}\" TEXT GENERATED ALWAYS AS (json_extract(CAST(body AS TEXT), '{path}')) VIRTUAL"


# Append-only: each entry is a tuple of statements run in one transaction; never edit a shipped one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"CREATE TABLE {META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE {TABLE} (seq INTEGER PRIMARY KEY, entry_hash TEXT NOT NULL, body BLOB NOT NULL, "
        "prev_hash TEXT GENERATED ALWAYS AS (substr(CAST(body AS TEXT), 15, 64)) VIRTUAL, "
        + ", ".join(_generated(n, p) for n, p in _COLUMNS)
        + ")",
        *(f'CREATE INDEX {TABLE}_{c} ON {TABLE}("{c}")' for c in INDEXED),
        f"CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE} "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        f"CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE} "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    ),
)
_SYNC = ("OFF", "NORMAL", "FULL", "EXTRA")


def parse_sqlite_url(url: str) -> tuple[Path, dict[str, str]]:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (SQLAlchemy's spelling) plus ``?k=v``."""
    rest = url.split(":", 1)[1] if ":" in url else ""
    if not rest.startswith("///") or len(rest) <= 3:
        raise UsageError(f"bad SQLite audit URL {url!r}: use sqlite:///PATH")
    path, _, query = rest[3:].partition("?")
    if path == ":memory:":
        raise UsageError("an in-memory audit log would vanish: give the SQLite audit log a file path")
    return Path(path).expanduser(), dict(parse_qsl(query))


def sqlite_path(url: str) -> Path | None:
    try:
        return parse_sqlite_url(url)[0].resolve()
    except UsageError:
        return None


class SQLiteAuditLog(AuditLog):
    """See the module docstring. URL options: ``synchronous`` (off|normal|full|extra), ``timeout`` (s)."""

    def __init__(self, url: str, *, create: bool = True, **common: Any) -> None:
        super().__init__(**common)
        path, params = parse_sqlite_url(url)
        self.path = path.resolve()
        self.url = f"sqlite:///{self.path}"
        sync = params.get("synchronous", "full").upper()
        if sync not in _SYNC:
            raise UsageError(f"synchronous must be one of {', '.join(_SYNC).lower()}, not {sync.lower()!r}")
        self._sync = sync
        self._timeout = float(params.get("timeout", "30"))
        # With FULL every commit waits for fsync: an event loop should not wait on that inline.
        self.blocking_io = sync in ("FULL", "EXTRA")
        if not create and not self.path.exists():
            raise UsageError(f"no audit log at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
            self._log_id = self._migrate()
        except sqlite3.Error as exc:
            raise AuditWriteError(f"cannot open the audit log {self.path}: {exc}") from exc
        self._db_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        return conn

    def _migrate(self) -> str:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            version = int(c.execute("PRAGMA user_version").fetchone()[0])
            for number, statements in enumerate(MIGRATIONS, 1):
                if number > version:
                    for sql in statements:
                        c.execute(sql)
                    c.execute(f"PRAGMA user_version={number}")
            c.execute(
                "INSERT OR IGNORE INTO audit_meta(key, value) VALUES ('log_id', ?)", (uuid.uuid4().hex,)
            )
            row = c.execute("SELECT value FROM audit_meta WHERE key = 'log_id'").fetchone()
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return str(row[0])

    @property
    def log_id(self) -> str:
        return self._log_id

    def _append_rows(self, make_rows: RowMaker) -> list[int]:
        with self._db_lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                tail = c.execute(
                    "SELECT seq, entry_hash, body FROM audit_log ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, head, body = tail if tail is not None else (0, GENESIS, None)
                rows = make_rows(seq, head, last_ts(body))
                c.executemany("INSERT INTO audit_log(seq, entry_hash, body) VALUES (?, ?, ?)", rows)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        return [r[0] for r in rows]

    def _scan(self, since_seq: int = 0, until_seq: int | None = None) -> Iterator[Row]:
        # A connection of its own: a long verify or export neither holds this handle's lock nor
        # blocks writers (WAL gives the reader a stable snapshot).
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            sql = "SELECT seq, entry_hash, body FROM audit_log WHERE seq > ?"
            args: tuple[int, ...] = (since_seq,)
            if until_seq is not None:
                sql += " AND seq <= ?"
                args = (since_seq, until_seq)
            cur = conn.execute(sql + " ORDER BY seq", args)
            while batch := cur.fetchmany(4096):
                yield from batch
        finally:
            conn.close()

    def _fetch(self, seq: int) -> Row | None:
        with self._db_lock:
            row = self._conn.execute(
                "SELECT seq, entry_hash, body FROM audit_log WHERE seq = ?", (seq,)
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), as_bytes(row[2]))

    def _tail(self) -> tuple[int, str]:
        with self._db_lock:
            row = self._conn.execute(
                "SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def _close(self) -> None:
        with self._db_lock:
            self._conn.close()


__all__ = ["SQLiteAuditLog", "parse_sqlite_url"]
