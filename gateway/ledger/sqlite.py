"""SQLite ledger: the embedded default, safe for many processes on one host.

Why it cannot overspend: every write runs in ``BEGIN IMMEDIATE``, which takes SQLite's single writer
lock before the first read, so check-then-reserve is serialised across all threads and processes that
open the file. WAL lets readers (``gateway report``) run beside writers. ``synchronous=NORMAL`` is the
default: in WAL mode a committed transaction survives a process crash and the database is never
corrupted, but the last commits may roll back on power loss; ``?synchronous=full`` makes every commit
durable at several times the cost (numbers in docs/ledger.md).

URL forms: ``sqlite:///abs/path.db`` and ``sqlite:////abs/path.db`` (absolute), ``sqlite:rel/path.db``
(relative to the working directory); query options ``synchronous=normal|full`` and ``timeout=<seconds>``
(how long a writer waits for the lock, default 30).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError
from ._reads import Query
from ._sql import SqlLedger
from .migrations import migrate
from .store import to_us

T = TypeVar("T")
_MIN_SQLITE = (3, 35, 0)  # RETURNING


def parse_sqlite_url(url: str) -> tuple[Path, dict[str, str]]:
    """``sqlite:///abs.db`` -> (/abs.db, options). Loud on anything else: a typo must not make a new file."""
    if not url.startswith("sqlite:"):
        raise ConfigError(f"not a sqlite URL: {url!r}")
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    rest = url[len("sqlite:") :].split("?", 1)[0]
    if rest.startswith("//"):
        if parts.netloc:
            raise ConfigError(f"sqlite URL has a host ({parts.netloc!r}); use sqlite:///absolute/path.db")
        path = Path("/" + rest.lstrip("/"))
    elif rest:
        path = Path(rest)
    else:
        raise ConfigError(f"sqlite URL without a path: {url!r}")
    unknown = set(options) - {"synchronous", "timeout"}
    if unknown:
        raise ConfigError(f"unknown sqlite ledger options {sorted(unknown)} in {url!r}")
    if options.get("synchronous", "normal").lower() not in ("normal", "full", "extra"):
        raise ConfigError(f"synchronous must be normal, full or extra in {url!r}")
    return path.expanduser().resolve(), options


class SQLiteLedger(SqlLedger):
    """One connection per process (reopened after ``fork``), shared by threads under a lock."""

    blocking_io = False

    def __init__(self, url: str) -> None:
        super().__init__()
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise ConfigError(
                f"the SQLite ledger needs SQLite >= 3.35, this Python has {sqlite3.sqlite_version}"
            )
        self.url = url
        self.path, options = parse_sqlite_url(url)
        self._synchronous = options.get("synchronous", "normal").upper()
        self._timeout = float(options.get("timeout", "30"))
        self._lock_ = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._write(lambda q: migrate(q, to_us(dt.datetime.now(dt.UTC))))
        except BaseException:
            self.close()
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # After fork the parent's connection must not be touched (SQLite's locks are per process).
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            _with_retry(lambda: conn.execute("PRAGMA journal_mode=WAL"), self._timeout)
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _run(self, begin: str, fn: Callable[[Query], T]) -> T:
        with self._lock_:
            conn = self._connection()

            def q(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return conn.execute(sql, params).fetchall()

            conn.execute(begin)
            try:
                result = fn(q)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _write(self, fn: Callable[[Query], T]) -> T:
        return self._run("BEGIN IMMEDIATE", fn)

    def _read(self, fn: Callable[[Query], T]) -> T:
        return self._run("BEGIN", fn)  # one snapshot for multi-query reads

    def _is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def close(self) -> None:
        with self._lock_:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _with_retry(fn: Callable[[], object], timeout_s: float) -> None:
    """Switching to WAL needs a moment of exclusive access; many processes opening at once may collide."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
