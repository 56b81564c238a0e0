"""The embedded SQLite ledger: WAL, synchronous=FULL, one writer thread that group-commits.

The event loop never touches the database. Every write is a job on a bounded queue; the writer thread
takes whatever has queued, runs each job inside its own savepoint and commits the lot with one fsync,
then wakes each waiting request. A failing job rolls back to its savepoint and fails alone.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from iso_host.errors import ConflictError, DuplicateError, StoreError
from iso_host.ledger.model import (
    Card,
    ChangeStatus,
    Kind,
    LedgerCommand,
    Original,
    OriginalQuery,
    Reason,
    RecordRefund,
    RecordTransaction,
    SaveSession,
    Status,
    TerminalRecord,
    TransactionRecord,
)
from iso_host.ledger.schema import MIGRATIONS
from iso_host.ledger.store import TransactionFilter

MAX_GROUP_JOBS: Final = 1_024  # one commit covers at most this many requests
MAX_QUEUED_JOBS: Final = 65_536  # beyond this, callers wait for room (back-pressure, not memory growth)
RRN_DIGITS: Final = 12

_STOP: Final = object()


@dataclass(slots=True)
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = field(default=None)


def _resolve(job: _Job) -> None:
    if job.future.done():  # the caller gave up (cancelled); the commit stands regardless
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)


def _resolve_all(jobs: list[_Job]) -> None:
    for job in jobs:
        _resolve(job)


def utc_text(moment: datetime) -> str:
    """Times are stored as UTC ISO 8601 text, so that comparing the text compares the times."""
    return moment.astimezone(UTC).isoformat()


def _insert_transaction(connection: sqlite3.Connection, record: TransactionRecord) -> None:
    card = record.card
    try:
        connection.execute(
            "INSERT INTO transactions (kind, tid, mid, batch_number, stan, rrn, auth_code, amount_minor, currency,"
            " masked_pan, pan_hash, status, response_code, reason, mti, processing_code, original_rrn,"
            " refunded_minor, operator, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.kind.value, record.tid, record.mid, record.batch_number, record.stan, record.rrn,
                record.auth_code, record.amount_minor, record.currency,
                card.masked_pan if card else None, card.pan_hash if card else None,
                record.status.value, record.response_code, record.reason.value, record.mti,
                record.processing_code, record.original_rrn, record.refunded_minor, record.operator,
                utc_text(record.created_at), utc_text(record.created_at),
            ),
        )  # fmt: skip
    except sqlite3.IntegrityError as error:
        text = str(error)
        if "transactions.stan" in text:
            raise DuplicateError(f"{record.tid} batch {record.batch_number} STAN {record.stan} exists") from None
        if "transactions.original_rrn" in text:
            raise ConflictError(f"transaction {record.original_rrn} is already reversed") from None
        raise


def _change_status(connection: sqlite3.Connection, command: ChangeStatus) -> None:
    cursor = connection.execute(
        "UPDATE transactions SET status = ?, updated_at = ? WHERE rrn = ? AND status = ?",
        (command.new.value, utc_text(command.at), command.rrn, command.expected.value),
    )
    if cursor.rowcount != 1:
        raise ConflictError(f"transaction {command.rrn} is no longer {command.expected.value}")


def _record_refund(connection: sqlite3.Connection, command: RecordRefund) -> None:
    cursor = connection.execute(
        "UPDATE transactions SET refunded_minor = ?, status = ?, updated_at = ?"
        " WHERE rrn = ? AND refunded_minor = ? AND status IN ('APPROVED', 'PARTIALLY_REFUNDED')",
        (command.refunded_minor, command.new_status.value, utc_text(command.at), command.rrn,
         command.expected_refunded_minor),
    )  # fmt: skip
    if cursor.rowcount != 1:
        raise ConflictError(f"transaction {command.rrn} changed while it was being refunded")


def _hex(value: bytes | None) -> str | None:
    return value.hex().upper() if value is not None else None


def _unhex(value: str | None) -> bytes | None:
    return bytes.fromhex(value) if value is not None else None


def _save_session(connection: sqlite3.Connection, session: SaveSession) -> None:
    cursor = connection.execute(
        "UPDATE terminals SET signed_on = ?, batch_number = ?, operator = ?, tpk_under_tmk = ?, tak_under_tmk = ?,"
        " tdk_under_tmk = ?, session_at = ? WHERE tid = ? AND mid = ?",
        (
            int(session.signed_on), session.batch_number, session.operator, _hex(session.tpk_under_tmk),
            _hex(session.tak_under_tmk), _hex(session.tdk_under_tmk), session.at.isoformat(), session.tid, session.mid,
        ),
    )  # fmt: skip
    if cursor.rowcount != 1:
        msg = f"terminal {session.tid} is not registered in the ledger"
        raise sqlite3.IntegrityError(msg)


def _apply_command(connection: sqlite3.Connection, command: LedgerCommand) -> None:
    if isinstance(command, RecordTransaction):
        _insert_transaction(connection, command.transaction)
    elif isinstance(command, ChangeStatus):
        _change_status(connection, command)
    elif isinstance(command, RecordRefund):
        _record_refund(connection, command)
    else:
        _save_session(connection, command)


_ORIGINAL_SQL: Final = (
    "SELECT t.*,"
    " (SELECT COUNT(*) FROM transactions v WHERE v.original_rrn = t.rrn AND v.kind = 'void'"
    "  AND v.status = 'DECLINED') AS refused_void_attempts,"
    " EXISTS (SELECT 1 FROM transactions r WHERE r.original_rrn = t.rrn AND r.kind = 'reversal'"
    "  AND r.status = 'APPROVED') AS effective_reversal,"
    " EXISTS (SELECT 1 FROM batches b WHERE b.tid = t.tid AND b.mid = t.mid AND b.batch_number = t.batch_number"
    "  AND b.status = 'settled') AS batch_settled"
    " FROM transactions t WHERE t.tid = ? AND t.mid = ? AND t.kind <> 'reversal'"
)


def find_original(connection: sqlite3.Connection, query: OriginalQuery) -> Original | None:
    sql = _ORIGINAL_SQL
    parameters: list[object] = [query.tid, query.mid]
    for column, value in (("rrn", query.rrn), ("stan", query.stan), ("batch_number", query.batch_number)):
        if value is not None:
            sql += f" AND t.{column} = ?"
            parameters.append(value)
    row = connection.execute(sql + " ORDER BY t.id DESC LIMIT 1", parameters).fetchone()
    if row is None:
        return None
    return Original(
        record=_row_to_record(row), batch_settled=bool(row["batch_settled"]),
        refused_void_attempts=row["refused_void_attempts"], effective_reversal=bool(row["effective_reversal"]),
    )  # fmt: skip


def _row_to_record(row: sqlite3.Row) -> TransactionRecord:
    card = Card(row["masked_pan"], row["pan_hash"]) if row["masked_pan"] is not None else None
    return TransactionRecord(
        kind=Kind(row["kind"]), tid=row["tid"], mid=row["mid"], batch_number=row["batch_number"],
        stan=row["stan"], rrn=row["rrn"], auth_code=row["auth_code"], amount_minor=row["amount_minor"],
        currency=row["currency"], card=card, status=Status(row["status"]), response_code=row["response_code"],
        reason=Reason(row["reason"]), mti=row["mti"], processing_code=row["processing_code"],
        created_at=datetime.fromisoformat(row["created_at"]), original_rrn=row["original_rrn"],
        refunded_minor=row["refunded_minor"], operator=row["operator"],
    )  # fmt: skip


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; returns that version."""
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        msg = f"ledger schema version {version} is newer than this iso-host understands ({len(MIGRATIONS)})"
        raise StoreError(msg)
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        connection.execute("BEGIN IMMEDIATE")
        for statement in script:
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {number}")
        connection.execute("COMMIT")
    return len(MIGRATIONS)


class SqliteStore:
    """A SQLite ledger file, used by one host process at a time (a lock file enforces it)."""

    def __init__(self, path: str, *, group_commit: bool = True) -> None:
        self.path = Path(path)
        self.max_group_jobs = MAX_GROUP_JOBS if group_commit else 1
        self._jobs: queue.Queue[_Job | object] = queue.Queue(maxsize=MAX_QUEUED_JOBS)
        self._thread: threading.Thread | None = None
        self._lock_file: TextIO | None = None
        self._pan_hash_key = b""
        self._last_rrn = 0
        self.commits = 0  # how many database transactions the writer committed (for benchmarks)

    @property
    def pan_hash_key(self) -> bytes:
        assert self._pan_hash_key, "store not open"
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
        handle = lock_path.open("w")
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
        row = connection.execute("SELECT value FROM meta WHERE key = 'pan_hash_key'").fetchone()
        if row is None:
            key = os.urandom(32).hex()
            connection.execute("INSERT INTO meta (key, value) VALUES ('pan_hash_key', ?)", (key,))
            row = (key,)
        self._pan_hash_key = bytes.fromhex(row[0])
        last = connection.execute("SELECT MAX(rrn) FROM transactions").fetchone()[0]
        self._last_rrn = int(last) if last and last.isdigit() else 0
        return connection

    async def open(self) -> None:
        """Open (creating and migrating) the ledger and start the writer thread.

        Raises:
            StoreError: the file cannot be opened or is held by another process.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            connection = await asyncio.to_thread(self._open_in_thread)
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"ledger {self.path}: {error}") from None
        self._thread = threading.Thread(target=self._writer, args=(connection,), name="ledger-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Finish queued writes, then stop the writer and release the file."""
        if self._thread is not None:
            await asyncio.to_thread(self._jobs.put, _STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def _submit(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._thread is None:
            raise StoreError(f"ledger {self.path} is closed")
        loop = asyncio.get_running_loop()
        job = _Job(work, loop, loop.create_future())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            await asyncio.to_thread(self._jobs.put, job)
        return await job.future

    async def apply(self, commands: Sequence[LedgerCommand]) -> None:
        def work(connection: sqlite3.Connection) -> None:
            for command in commands:
                _apply_command(connection, command)

        await self._submit(work)

    async def find_original(self, query: OriginalQuery) -> Original | None:
        result: Original | None = await self._submit(lambda connection: find_original(connection, query))
        return result

    async def count_voids(self, tid: str, mid: str, since: datetime) -> int:
        def work(connection: sqlite3.Connection) -> int:
            row = connection.execute(
                "SELECT COUNT(*) FROM transactions WHERE tid = ? AND mid = ? AND kind = 'void'"
                " AND status = 'APPROVED' AND created_at >= ?",
                (tid, mid, utc_text(since)),
            ).fetchone()
            return int(row[0])

        result: int = await self._submit(work)
        return result

    async def next_rrn(self) -> str:
        self._last_rrn += 1
        assert self._last_rrn < 10**RRN_DIGITS
        return f"{self._last_rrn:0{RRN_DIGITS}d}"

    async def register_terminal(self, tid: str, mid: str) -> TerminalRecord:
        def work(connection: sqlite3.Connection) -> TerminalRecord:
            now = datetime.now(UTC).isoformat()
            connection.execute(
                "INSERT INTO terminals (tid, mid, batch_number, created_at) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (tid, mid) DO NOTHING",
                (tid, mid, now),
            )
            row = connection.execute(
                "SELECT batch_number, signed_on, operator, tpk_under_tmk, tak_under_tmk, tdk_under_tmk"
                " FROM terminals WHERE tid = ? AND mid = ?",
                (tid, mid),
            ).fetchone()
            return TerminalRecord(
                batch_number=row["batch_number"], signed_on=bool(row["signed_on"]), operator=row["operator"],
                tpk_under_tmk=_unhex(row["tpk_under_tmk"]), tak_under_tmk=_unhex(row["tak_under_tmk"]),
                tdk_under_tmk=_unhex(row["tdk_under_tmk"]),
            )  # fmt: skip

        result: TerminalRecord = await self._submit(work)
        return result

    async def transactions(self, where: TransactionFilter) -> list[TransactionRecord]:
        return await asyncio.to_thread(read_transactions, self.path, where)

    def _writer(self, connection: sqlite3.Connection) -> None:
        # The writer's loop: it ends only when close() queues _STOP.
        stopping = False
        while not stopping:
            group: list[_Job] = []
            first = self._jobs.get()
            if first is _STOP:
                break
            assert isinstance(first, _Job)
            group.append(first)
            while len(group) < self.max_group_jobs:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                assert isinstance(job, _Job)
                group.append(job)
            self._commit_group(connection, group)
        connection.close()
        self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        """Jobs queued behind the stop marker are answered with an error, never left waiting."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                job.error = StoreError(f"ledger {self.path} is closing")
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_resolve, job)

    def _commit_group(self, connection: sqlite3.Connection, group: list[_Job]) -> None:
        """Commit a group in one transaction. The fast path runs the jobs back to back; only when one
        fails is the group rolled back and replayed job by job under savepoints, so it fails alone."""
        try:
            connection.execute("BEGIN IMMEDIATE")
            if not self._run_jobs(connection, group, isolated=False):
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
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # A caller whose event loop has already closed (shutdown) has nobody left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve_all, jobs)

    @staticmethod
    def _run_jobs(connection: sqlite3.Connection, group: list[_Job], *, isolated: bool) -> bool:
        """Run every job; returns False at the first failure when not isolated."""
        for job in group:
            if isolated:
                connection.execute("SAVEPOINT job")
            try:
                job.result, job.error = job.work(connection), None
            except Exception as error:  # whatever a job raises, it fails alone
                if not isolated:
                    return False
                connection.execute("ROLLBACK TO job")
                job.error = (
                    error if isinstance(error, StoreError)
                    else StoreError(f"ledger write failed: {error.__class__.__name__}: {error}")
                )  # fmt: skip
            if isolated:
                connection.execute("RELEASE job")
        return True


def read_transactions(path: Path, where: TransactionFilter) -> list[TransactionRecord]:
    """Read transactions through a separate connection (safe while a host is writing, thanks to WAL)."""
    if not path.exists():
        raise StoreError(f"ledger {path} does not exist")
    clauses, parameters = [], []
    for column, value in (("tid", where.tid), ("batch_number", where.batch_number), ("status", where.status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value.value if isinstance(value, Status) else value)
    sql = "SELECT * FROM transactions"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY id LIMIT ?"
    parameters.append(where.limit)
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        connection.row_factory = sqlite3.Row
        return [_row_to_record(row) for row in connection.execute(sql, parameters)]
    except sqlite3.Error as error:
        raise StoreError(f"ledger {path}: {error}") from None
    finally:
        connection.close()
