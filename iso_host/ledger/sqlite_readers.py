"""The SQLite ledger's reads: a few read-only connections on threads of their own, never the writer's.

WAL lets a reader see the last committed snapshot while the writer commits, so a long read (a 100,000-sale
batch's totals) stalls nobody's commit. Two guarantees keep every decision as right as when reads went through
the writer's queue:

* ``WriteOrder``: a read waits until every write submitted before it has finished (committed or failed), so it
  sees at least what it would have seen queued behind them on the writer: a reversal sent while its sale's
  commit is still in flight finds the sale, as before. (It never sees a write that will not commit: on the
  writer a read ran inside the group's open transaction and could see rows a failed COMMIT then dropped.)
* A read may be fresher than that, never staler: what it sees is what the same read queued a little later
  would have seen. Decisions taken from it carry their preconditions and conditional updates, re-checked in
  the commit, so a read one commit behind leads to ``ConflictError`` and a new decision (``ledger/model.py``).

Each read runs in one read transaction (one snapshot for all its statements: a batch's state, totals and items
agree) and is interrupted when its request's deadline passes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from iso_host.errors import StoreError
from iso_host.ledger.deadlines import expired, timeout_error, within
from iso_host.ledger.model import (
    PRECONDITIONS,
    AdvanceBatch,
    ExpectBatchTotals,
    LedgerCommand,
    RecordDifferences,
    RecordEvent,
    RecordTransaction,
    RecordUpload,
    SaveSession,
    SettleBatch,
)

_T = TypeVar("_T")

READER_COUNT: Final = 2  # read-only connections (and threads); reads are short but for settlements and reports
PROGRESS_STEPS: Final = 100_000  # SQLite VM steps between two looks at the read's deadline (~1 ms of work)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Which writes a read's snapshot holds: at least every one numbered up to ``number`` (``BatchView.snapshot``)."""

    order: WriteOrder
    number: int


def _terminal_of(command: LedgerCommand) -> tuple[str, str] | None:
    """The terminal whose batches the command may change; None when the command does not say (a status change or
    a refund names a transaction by RRN only)."""
    if isinstance(command, RecordTransaction):
        return command.transaction.tid, command.transaction.mid
    if isinstance(command, SettleBatch | AdvanceBatch | RecordUpload | RecordDifferences):
        return command.tid, command.mid
    return None


class WriteOrder:
    """Numbers the writes as they are submitted, and tells a read when every write submitted before it has
    finished (its group committed, or failed, or the write was skipped for its deadline)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued = 0
        self._finished = 0  # every write numbered up to this one has finished
        self._early: list[int] = []  # finished writes numbered above ``_finished`` (a heap)
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # (needed, tie, future), a heap
        self._tie = itertools.count()
        # The writer thread's own: the newest write run for each terminal, and for writes that name none.
        self._touched: dict[tuple[str, str], int] = {}
        self._touched_all = 0

    def issue(self) -> int:
        """The next write's number (call it before the write is queued)."""
        with self._lock:
            self._issued += 1
            return self._issued

    def finish(self, numbers: Iterable[int]) -> None:
        """These writes have finished (any thread); wakes the reads that waited for them."""
        woken = []
        with self._lock:
            for number in numbers:
                heapq.heappush(self._early, number)
            while self._early and self._early[0] <= self._finished + 1:
                self._finished = max(self._finished, heapq.heappop(self._early))
            while self._waiters and self._waiters[0][0] <= self._finished:
                woken.append(heapq.heappop(self._waiters)[2])
        for future in woken:
            try:
                future.get_loop().call_soon_threadsafe(_wake, future)
            except RuntimeError:  # its event loop has closed: nobody waits any more
                continue

    def snapshot(self) -> Snapshot:
        """Taken by a reader just before its read transaction's first SELECT: every write numbered up to
        ``_finished`` has committed or failed, so the snapshot holds them all."""
        return Snapshot(self, self._finished)

    def touch(self, number: int, commands: tuple[LedgerCommand, ...] | None, *, touches_batches: bool) -> None:
        """The writer ran write ``number`` (its group may yet commit or not): mark the terminals whose batches it
        may have changed, or every terminal when it cannot tell."""
        if commands is None:
            if touches_batches:
                self._touched_all = max(self._touched_all, number)
            return
        for command in commands:
            if isinstance(command, (*PRECONDITIONS, RecordEvent, SaveSession)):
                continue  # reads, the outbox, a terminal's session: no transaction changes
            key = _terminal_of(command)
            if key is None:
                self._touched_all = max(self._touched_all, number)
            else:
                self._touched[key] = max(self._touched.get(key, 0), number)

    def unchanged(self, expect: ExpectBatchTotals) -> bool:
        """On the writer: nothing that could change the terminal's batches has run since ``expect``'s snapshot, so
        the totals it carries are the batch's now (no need to sum the batch again inside the commit)."""
        snapshot = expect.snapshot
        if not isinstance(snapshot, Snapshot) or snapshot.order is not self:
            return False
        return max(self._touched_all, self._touched.get((expect.tid, expect.mid), 0)) <= snapshot.number

    def behind(self) -> asyncio.Future[None] | None:
        """A future done once every write submitted so far has finished; None when they all have."""
        with self._lock:
            if self._finished >= self._issued:
                return None
            future = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (self._issued, next(self._tie), future))
            return future


class Readers:
    """``READER_COUNT`` threads, each with its own read-only connection to the ledger (``mode=ro``, query_only)."""

    def __init__(self, path: Path, count: int = READER_COUNT) -> None:
        self.path = path
        self._count = count
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=self._count, thread_name_prefix="ledger-reader")

    def close(self) -> None:
        """Let the reads already handed over finish (each ends by its deadline), then close every connection."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    async def run(self, work: Callable[[sqlite3.Connection], _T], deadline: float | None) -> _T:
        """``work`` on a reader's connection, in one read transaction, by ``deadline``.

        Raises:
            StoreTimeout: the deadline passed (a read under way is interrupted).
            StoreError: the ledger is closed, or the read failed.
        """
        closed = StoreError(f"ledger {self.path} is closed")
        if (executor := self._executor) is None:
            raise closed
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, self._read, work, deadline)
        except RuntimeError:  # closing: the executor takes no more work
            raise closed from None
        return await within(deadline, future)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=5.0)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA query_only=ON")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _read(self, work: Callable[[sqlite3.Connection], _T], deadline: float | None) -> _T:
        if expired(deadline):  # its caller has answered already
            raise timeout_error()
        try:
            connection = self._connection()
            if deadline is not None:
                connection.set_progress_handler(lambda: expired(deadline), PROGRESS_STEPS)
            connection.execute("BEGIN")  # deferred: the snapshot is taken at the first SELECT, and kept to the end
            try:
                return work(connection)
            finally:
                connection.set_progress_handler(None, 0)
                if connection.in_transaction:  # the read transaction ends: its snapshot no longer holds the WAL
                    connection.execute("ROLLBACK")
        except sqlite3.Error as error:
            if expired(deadline):
                raise timeout_error() from None
            raise StoreError(f"ledger read failed: {error}") from None
