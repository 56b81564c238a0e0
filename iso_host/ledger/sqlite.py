"""The embedded SQLite ledger: WAL, synchronous=FULL, one writer thread that group-commits, readers beside it.

The event loop never touches the database. Every write is a job on a bounded queue; the writer thread
takes whatever has queued, runs each job inside its own savepoint and commits the lot with one fsync,
then wakes each waiting request. A failing job rolls back to its savepoint and fails alone. Reads (originals,
void counts, batch views, reports, the outbox) go to read-only connections on other threads
(``sqlite_readers.py``), after the writes submitted before them: the writer only writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

from iso_host.errors import StoreError
from iso_host.ledger.deadlines import Deadlines, expired, timeout_error, within
from iso_host.ledger.model import (
    BatchView,
    LedgerCommand,
    Original,
    OriginalQuery,
    PendingEvent,
    TerminalRecord,
    TransactionFilter,
    TransactionRecord,
)
from iso_host.ledger.pan_key import CHECK_META_KEY, DEFAULT_PAN_KEY, LEGACY_META_KEY, PanKeySource, settle_pan_key
from iso_host.ledger.schema import MIGRATIONS, Statement
from iso_host.ledger.sql import (
    BATCH_ITEMS,
    BATCH_STATUS,
    BATCH_TOTALS,
    BATCH_UPLOADED,
    COUNT_PENDING_EVENTS,
    COUNT_VOIDS,
    MAX_GROUP_JOBS,
    MAX_QUEUED_JOBS,
    PENDING_EVENTS,
    PRUNE_EVENTS,
    REGISTER_TERMINAL,
    RRN_DIGITS,
    SELECT_TERMINAL,
    batch_view_from_rows,
    mark_events_sent,
    original_from_row,
    original_select,
    pending_event_from_row,
    qmark,
    record_from_row,
    terminal_from_row,
    transactions_select,
    utc_text,
)
from iso_host.ledger.sqlite_jobs import Job, apply_command, resolve, resolve_all, run_batched
from iso_host.ledger.sqlite_readers import Readers, WriteOrder
from iso_host.log import get_logger
from iso_host.private_files import create_private, loose_mode, open_private, private_dir

_STOP: Final = object()
_T = TypeVar("_T")
TIGHT_WAL_PAGES: Final = 64  # after the disk filled: checkpoint every 256 KiB of WAL (SQLite's default: 1000 pages)


def sqlite_statement(sql: Statement) -> str:
    """A migration statement as SQLite spells it."""
    return sql if isinstance(sql, str) else sql.sqlite


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; returns that version."""
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        msg = f"ledger schema version {version} is newer than this iso-host understands ({len(MIGRATIONS)})"
        raise StoreError(msg)
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        connection.execute("BEGIN IMMEDIATE")
        for sql in script:
            connection.execute(sqlite_statement(sql))
        connection.execute(f"PRAGMA user_version = {number}")
        connection.execute("COMMIT")
    return len(MIGRATIONS)


class SqliteStore:
    """A SQLite ledger file, used by one host process at a time (a lock file enforces it)."""

    def __init__(self, path: str, *, group_commit: bool = True, pan_key: PanKeySource | None = DEFAULT_PAN_KEY) -> None:
        self.path = Path(path)
        self._pan_key_source = pan_key  # None: opened without the key (reading, listing)
        self.max_group_jobs = MAX_GROUP_JOBS if group_commit else 1
        self._jobs: queue.Queue[Job | object] = queue.Queue(maxsize=MAX_QUEUED_JOBS)
        self._thread: threading.Thread | None = None
        self._lock_file: TextIO | None = None
        self._pan_hash_key = b""
        self._last_rrn = 0
        self._deadlines = Deadlines()
        self._disk_full = False  # the last commit failed for space; the next success says so in the log
        self._order = WriteOrder()  # a read waits for the writes submitted before it
        self._readers = Readers(self.path)
        self.commits = 0  # how many database transactions the writer committed (for benchmarks)

    @property
    def pan_hash_key(self) -> bytes:
        assert self._pan_hash_key, "store not open, or opened without its PAN key"
        return self._pan_hash_key

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = os.fdopen(open_private(lock_path), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            msg = f"ledger {self.path} is in use by another iso-host process (lock {lock_path})"
            raise StoreError(msg) from None
        self._lock_file = handle

    def _open_in_thread(self) -> sqlite3.Connection:
        connection = self._connect()
        migrate(connection)
        if self._pan_key_source is not None:
            self._settle_pan_key(connection, self._pan_key_source)
        last = connection.execute("SELECT MAX(rrn) FROM transactions").fetchone()[0]
        self._last_rrn = int(last) if last and last.isdigit() else 0
        return connection

    def _settle_pan_key(self, connection: sqlite3.Connection, source: PanKeySource) -> None:
        """The PAN hash key from outside the ledger; the ledger keeps its check value, and loses an old copy of it."""
        meta = dict(connection.execute("SELECT key, value FROM meta WHERE key IN (?, ?)",
                                       (LEGACY_META_KEY, CHECK_META_KEY)).fetchall())  # fmt: skip
        settled = settle_pan_key(
            source, legacy_hex=meta.get(LEGACY_META_KEY), stored_check=meta.get(CHECK_META_KEY), ledger=str(self.path)
        )
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CHECK_META_KEY, settled.check))
        if settled.drop_legacy:
            connection.execute("PRAGMA secure_delete = ON")  # the deleted row's bytes are overwritten, not freed
            connection.execute("DELETE FROM meta WHERE key = ?", (LEGACY_META_KEY,))
        connection.execute("COMMIT")
        if settled.drop_legacy:  # the page that held the key, copied back from the WAL, and the WAL emptied
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._pan_hash_key = settled.key

    async def open(self) -> None:
        """Open (creating and migrating) the ledger and start the writer thread.

        The ledger file and its lock are created 0600 in a directory created 0700; SQLite gives its WAL and
        shared-memory files the ledger file's mode.

        Raises:
            StoreError: the file cannot be opened or is held by another process, or the PAN key is not the ledger's.
        """
        try:
            private_dir(self.path.parent)
            self._take_lock()
            create_private(self.path)
            if (mode := loose_mode(self.path)) is not None:
                get_logger().warning("ledger_file_readable", ledger=str(self.path), mode=f"{mode:04o}",
                                     hint=f"chmod 600 {self.path}*")  # fmt: skip
            connection = await asyncio.to_thread(self._open_in_thread)
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"ledger {self.path}: {error}") from None
        self._readers.open()
        self._thread = threading.Thread(target=self._writer, args=(connection,), name="ledger-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Finish queued writes, then stop the writer and release the file."""
        if self._thread is not None:
            await asyncio.to_thread(self._jobs.put, _STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            await asyncio.to_thread(self._readers.close)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def _submit(
        self, work: Callable[[sqlite3.Connection], Any], commands: tuple[LedgerCommand, ...] | None = None,
        deadline: float | None = None, *, touches_batches: bool = True,
    ) -> Any:  # fmt: skip
        if self._thread is None:
            raise StoreError(f"ledger {self.path} is closed")
        loop = asyncio.get_running_loop()
        job = Job(work, commands, loop, loop.create_future(), deadline, number=self._order.issue(),
                  touches_batches=touches_batches)  # fmt: skip
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            await within(deadline, asyncio.to_thread(self._jobs.put, job))
        # Past the deadline the writer skips the job if it has not begun it, and leaves it out of the commit if
        # it has: the caller answers SYSTEM_ERROR knowing that nothing of it will land (but in the COMMIT itself).
        self._deadlines.watch(deadline, job.future)
        return await job.future

    async def apply(self, commands: Sequence[LedgerCommand], *, deadline: float | None = None) -> None:
        def work(connection: sqlite3.Connection) -> None:
            for command in commands:
                apply_command(connection, command, self._order)

        await self._submit(work, tuple(commands), deadline)

    async def _read(self, work: Callable[[sqlite3.Connection], _T], deadline: float | None = None) -> _T:
        """``work`` on a reader, once every write submitted before this call has finished (``sqlite_readers.py``)."""
        if self._thread is None:
            raise StoreError(f"ledger {self.path} is closed")
        if (behind := self._order.behind()) is not None:
            await within(deadline, behind)
        return await self._readers.run(work, deadline)

    async def find_original(self, query: OriginalQuery, *, deadline: float | None = None) -> Original | None:
        def work(connection: sqlite3.Connection) -> Original | None:
            row = connection.execute(*_qmarked(original_select(query))).fetchone()
            return original_from_row(row) if row is not None else None

        return await self._read(work, deadline)

    async def count_voids(self, tid: str, mid: str, since: datetime, *, deadline: float | None = None) -> int:
        def work(connection: sqlite3.Connection) -> int:
            row = connection.execute(qmark(COUNT_VOIDS), (tid, mid, utc_text(since))).fetchone()
            return int(row[0])

        return await self._read(work, deadline)

    async def batch_view(
        self, tid: str, mid: str, batch_number: int, *, with_totals: bool = True, with_items: bool = False,
        deadline: float | None = None,
    ) -> BatchView:  # fmt: skip
        key = (tid, mid, batch_number)

        def work(connection: sqlite3.Connection) -> BatchView:
            snapshot = self._order.snapshot()  # before the first SELECT takes the snapshot

            def rows(sql: str, wanted: bool = True) -> list[sqlite3.Row]:
                return connection.execute(qmark(sql), key).fetchall() if wanted else []

            return batch_view_from_rows(
                key, rows(BATCH_STATUS), rows(BATCH_TOTALS, with_totals), rows(BATCH_ITEMS, with_items),
                rows(BATCH_UPLOADED, with_items), snapshot=snapshot,
            )

        return await self._read(work, deadline)

    async def next_rrn(self, *, deadline: float | None = None) -> str:  # a counter in memory: nothing to wait for
        self._last_rrn += 1
        assert self._last_rrn < 10**RRN_DIGITS
        return f"{self._last_rrn:0{RRN_DIGITS}d}"

    async def register_terminal(self, tid: str, mid: str) -> TerminalRecord:
        def work(connection: sqlite3.Connection) -> TerminalRecord:
            connection.execute(qmark(REGISTER_TERMINAL), (tid, mid, datetime.now(UTC).isoformat()))
            return terminal_from_row(connection.execute(qmark(SELECT_TERMINAL), (tid, mid)).fetchone())

        result: TerminalRecord = await self._submit(work, touches_batches=False)
        return result

    async def transactions(self, where: TransactionFilter) -> list[TransactionRecord]:
        if self._thread is None:  # not opened (``ledger list`` beside a running host): a connection of its own
            return await asyncio.to_thread(read_transactions, self.path, where)

        def work(connection: sqlite3.Connection) -> list[TransactionRecord]:
            return [record_from_row(row) for row in connection.execute(*_qmarked(transactions_select(where)))]

        return await self._read(work)

    async def pending_events(self, limit: int) -> list[PendingEvent]:
        def work(connection: sqlite3.Connection) -> list[PendingEvent]:
            return [pending_event_from_row(row) for row in connection.execute(qmark(PENDING_EVENTS), (limit,))]

        return await self._read(work)

    async def mark_events_sent(self, ids: Sequence[int], at: datetime) -> None:
        updates = mark_events_sent(ids, at)

        def work(connection: sqlite3.Connection) -> None:
            for sql, parameters in updates:
                connection.execute(qmark(sql), parameters)

        await self._submit(work, touches_batches=False)

    async def prune_events(self, sent_before: datetime) -> int:
        def work(connection: sqlite3.Connection) -> int:
            return connection.execute(qmark(PRUNE_EVENTS), (utc_text(sent_before),)).rowcount

        result: int = await self._submit(work, touches_batches=False)
        return result

    async def count_pending_events(self) -> int:
        def work(connection: sqlite3.Connection) -> int:
            return int(connection.execute(COUNT_PENDING_EVENTS).fetchone()[0])

        return await self._read(work)

    def _writer(self, connection: sqlite3.Connection) -> None:
        # The writer's loop: it ends only when close() queues _STOP.
        stopping = False
        while not stopping:
            group: list[Job] = []
            first = self._jobs.get()
            if first is _STOP:
                break
            assert isinstance(first, Job)
            group.append(first)
            while len(group) < self.max_group_jobs:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                assert isinstance(job, Job)
                group.append(job)
            live = []
            for job in group:
                if not expired(job.deadline):
                    live.append(job)
                    continue
                job.error = timeout_error()  # its caller has answered already: run nothing of it
                self._order.finish((job.number,))
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(resolve, job)
            if live:
                self._commit_group(connection, live)
        connection.close()
        self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        """Jobs queued behind the stop marker are answered with an error, never left waiting."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, Job):
                job.error = StoreError(f"ledger {self.path} is closing")
                self._order.finish((job.number,))
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(resolve, job)

    def _commit_group(self, connection: sqlite3.Connection, group: list[Job]) -> None:
        """Commit a group in one transaction. The fast path runs the jobs back to back; only when one
        fails, or one's deadline passed meanwhile, is the group rolled back and replayed job by job under
        savepoints, so it fails alone."""
        if self._disk_full:  # first give the WAL back, or new frames would take the room the checkpoint needs
            self._checkpoint_for_space(connection)
        try:
            connection.execute("BEGIN IMMEDIATE")
            if not self._run_jobs(connection, group, isolated=False) or any(expired(j.deadline) for j in group):
                connection.execute("ROLLBACK")
                connection.execute("BEGIN IMMEDIATE")
                self._run_jobs(connection, group, isolated=True)
            connection.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            for job in group:
                job.result, job.error = None, StoreError(f"ledger commit failed: {error}")
            if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                self._checkpoint_for_space(connection)
        self._order.finish(job.number for job in group)  # committed or failed: the reads behind them may run
        by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        for job in group:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # A caller whose event loop has already closed (shutdown) has nobody left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve_all, jobs)

    def _checkpoint_for_space(self, connection: sqlite3.Connection) -> None:
        """The disk is full: move the WAL into the database file and truncate it, which gives back the WAL's
        space (old copies of pages included) as soon as the database file can grow by the new pages.

        Without this the WAL keeps every frame since the last checkpoint that could not finish, and each byte
        freed on the disk goes to new frames instead of letting the checkpoint complete. While the disk stays
        full, every group tries again before it writes; one line is logged when it fills and one when the WAL
        is given back.
        """
        try:
            busy, wal_frames, moved = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            truncated = not busy and wal_frames == moved
            outcome = "WAL checkpointed and truncated" if truncated else "checkpoint incomplete (a reader holds it)"
        except sqlite3.Error as error:
            truncated, outcome = False, f"checkpoint failed: {error}"
        log = get_logger()
        if truncated and self._disk_full:
            # Room is short: from now on the WAL is checkpointed every TIGHT_WAL_PAGES pages, so that it
            # never again holds more than the disk can give the database file.
            connection.execute(f"PRAGMA wal_autocheckpoint={TIGHT_WAL_PAGES}")
            log.warning("ledger_disk_room", ledger=str(self.path), detail=outcome,
                        wal_autocheckpoint_pages=TIGHT_WAL_PAGES)  # fmt: skip
        elif not truncated and not self._disk_full:
            log.warning("ledger_disk_full", ledger=str(self.path), detail=outcome,
                        hint="requests get SYSTEM_ERROR (96) until the disk has room")  # fmt: skip
        self._disk_full = not truncated

    def _run_jobs(self, connection: sqlite3.Connection, group: list[Job], *, isolated: bool) -> bool:
        """Run every job; returns False at the first failure when not isolated."""
        if not isolated:
            return run_batched(connection, group, self._order)
        for job in group:
            if expired(job.deadline):
                job.result, job.error = None, timeout_error()
                continue
            connection.execute("SAVEPOINT job")
            try:
                job.result, job.error = job.work(connection), None
            except Exception as error:  # whatever a job raises, it fails alone
                connection.execute("ROLLBACK TO job")
                job.error = (
                    error if isinstance(error, StoreError)
                    else StoreError(f"ledger write failed: {error.__class__.__name__}: {error}")
                )  # fmt: skip
            connection.execute("RELEASE job")
            self._order.touch(job.number, job.commands, touches_batches=job.touches_batches)
        return True


def _qmarked(select: tuple[str, tuple[object, ...]]) -> tuple[str, tuple[object, ...]]:
    return qmark(select[0]), select[1]


def read_transactions(path: Path, where: TransactionFilter) -> list[TransactionRecord]:
    """Read transactions through a separate connection (safe while a host is writing, thanks to WAL)."""
    if not path.exists():
        raise StoreError(f"ledger {path} does not exist")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        connection.row_factory = sqlite3.Row
        return [record_from_row(row) for row in connection.execute(*_qmarked(transactions_select(where)))]
    except sqlite3.Error as error:
        raise StoreError(f"ledger {path}: {error}") from None
    finally:
        connection.close()
