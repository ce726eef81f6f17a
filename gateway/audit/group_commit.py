"""Group commit for the audit log: concurrent appends share one transaction and one fsync.

A caller that finds no write in progress becomes the writer (the *leader*) and writes at once, so a
lone request never waits for a window. Callers arriving while a write is in progress queue their
records; the writer's next transaction takes everything queued, builds the chain over the whole
batch (each caller's records consecutive, in queue order) and commits once. Each caller is released
only when the transaction holding its own records has committed. A leader that is a request thread
leaves as soon as its own records are in, handing the writing to the next queued request (or to a
worker thread when only async callers wait), so nobody's latency grows with other callers' load.
A failed transaction fails every caller in it, with the same fail-closed AuditWriteError.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import AuditWriteError
from .redact import redact

if TYPE_CHECKING:
    from .store import RowMaker
    from .verify import Row


class _Entry:
    """One caller's records waiting in the group-commit queue, and how to tell it the outcome."""

    __slots__ = ("done", "error", "lead", "notify", "payloads", "seqs")

    def __init__(self, payloads: list[bytes], notify: Callable[[_Entry], None] | None = None) -> None:
        self.payloads = payloads
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self.lead = False  # set when a finishing leader hands the writing over to this (sync) caller
        self.notify = notify  # async callers: resolves their future on their loop
        self.done = threading.Event() if notify is None else None

    def wake(self) -> None:
        if self.notify is not None:
            self.notify(self)
        else:
            assert self.done is not None
            self.done.set()


class GroupCommit:
    """The writing half of :class:`gateway.audit.store.AuditLog` (a mixin: it needs the log's
    lock, row maker, record preparation and checkpointing)."""

    _lock: threading.RLock
    _closed: bool
    _dirty: bool
    _checkpoint_every: int
    blocking_io: bool

    def _init_group_commit(self) -> None:
        self._queue: list[_Entry] = []  # records waiting for the current write
        self._queue_lock = threading.Lock()
        self._writing = False  # a leader is writing (its successors are chosen under _queue_lock)
        #: Largest batch written so far (callers per transaction): what grouping achieved.
        self.max_batch = 0

    def _append_rows(self, make_rows: RowMaker) -> list[int]:
        raise NotImplementedError

    def _rows(self, payloads: list[bytes], last_seq: int, last_hash: str, last_ts: str) -> list[Row]:
        raise NotImplementedError

    def _prepare(self, record: Mapping[str, Any]) -> bytes:
        raise NotImplementedError

    def _checkpoint_quietly(self) -> None:
        raise NotImplementedError

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Commit several records in one transaction (all or nothing), consecutive seqs, in order.

        Concurrent callers are group-committed (see the module docstring): this returns once the
        transaction holding these records has committed.
        """
        if not records:
            return []
        entry = _Entry(self._prepared(records))
        with self._queue_lock:
            self._queue.append(entry)
            lead = not self._writing
            self._writing = True
        if not lead:
            assert entry.done is not None
            entry.done.wait()
            lead = entry.lead
        if lead:
            self._lead(until=entry)
        return self._finished(entry)

    async def aappend_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """:meth:`append_many` for an event loop: queues without holding a thread while it waits.

        When no write is in progress a worker thread becomes the writer (the commit's fsync must not
        stall the loop); every other caller's records ride in that writer's next transaction.
        """
        if not records:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolved(_e: _Entry) -> None:
            loop.call_soon_threadsafe(_resolve, future)

        entry = _Entry(self._prepared(records), resolved)
        with self._queue_lock:
            self._queue.append(entry)
            lead = not self._writing
            self._writing = True
        if lead and not self.blocking_io:
            self._lead()  # no fsync to wait for (SQLite NORMAL): write on the loop, no thread hop
        elif lead:
            loop.run_in_executor(None, self._lead)
        await asyncio.shield(future)  # a cancelled caller must not lose track of a committed record
        if entry.error is None and self._seals(entry.seqs):
            await asyncio.to_thread(self._checkpoint_quietly)
            return entry.seqs
        return self._finished(entry)

    def _prepared(self, records: Sequence[Mapping[str, Any]]) -> list[bytes]:
        try:
            return [self._prepare(r) for r in records]
        except AuditWriteError:
            raise
        except Exception as exc:
            raise AuditWriteError(
                f"audit record could not be written: {redact(str(exc)) or type(exc).__name__}"
            ) from exc

    def _finished(self, entry: _Entry) -> list[int]:
        if entry.error is not None:
            raise entry.error
        if self._seals(entry.seqs):
            self._checkpoint_quietly()
        return entry.seqs

    def _seals(self, seqs: list[int]) -> bool:
        """Whether these seqs cross a checkpoint boundary (their appender then signs a checkpoint)."""
        every = self._checkpoint_every
        return bool(every) and (seqs[-1] // every) > ((seqs[0] - 1) // every)

    def _lead(self, until: _Entry | None = None) -> None:
        """Write queued batches until ``until`` (a sync caller's own entry) is done, then hand over.

        A worker thread (``until=None``) drains the queue. A sync caller leaves as soon as its own
        records are committed: the next queued sync caller becomes the writer, or a worker thread
        when only async callers wait, so no caller's latency grows with other callers' load.
        """
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
            try:
                if batch:
                    self._write_batch(batch)
            except BaseException:  # KeyboardInterrupt and the like: whoever waits gets a writer
                with self._queue_lock:
                    self._hand_over(None)
                raise
            with self._queue_lock:
                mine_done = until is None or until.seqs or until.error is not None
                if mine_done and self._hand_over(until):
                    return

    def _hand_over(self, until: _Entry | None) -> bool:
        """Under ``_queue_lock``: stop writing if nothing waits, else pick the next writer. False
        means the current writer (a worker thread) should go on."""
        if not self._queue:
            self._writing = False
            return True
        nxt = next((e for e in self._queue if e.notify is None), None)
        if nxt is not None:
            nxt.lead = True
            nxt.wake()
            return True
        if until is None:
            return False
        # only async callers wait and this writer is a sync caller: a worker thread takes over
        threading.Thread(target=self._lead, name="audit-writer", daemon=True).start()
        return True

    def _write_batch(self, batch: list[_Entry]) -> None:
        payloads = [p for e in batch for p in e.payloads]
        try:
            with self._lock:
                if self._closed:
                    raise AuditWriteError("the audit log is closed")
                seqs = self._append_rows(lambda seq, h, ts: self._rows(payloads, seq, h, ts))
                self._dirty = True
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, AuditWriteError)
                else AuditWriteError(
                    f"audit record could not be written: {redact(str(exc)) or type(exc).__name__}"
                )
            )
            if error is not exc:
                error.__cause__ = exc
            for e in batch:
                e.error = error
                e.wake()
            if not isinstance(exc, Exception):
                raise
            return
        self.max_batch = max(self.max_batch, len(batch))
        start = 0
        for e in batch:
            e.seqs = seqs[start : start + len(e.payloads)]
            start += len(e.payloads)
            e.wake()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
