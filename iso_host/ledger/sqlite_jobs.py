"""What the SQLite writer thread runs: jobs, each command as its statement, and the batched fast path.

Everything here runs on the writer thread, inside the transaction ``sqlite.py`` opens; a job's future is
resolved on its caller's event loop.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from iso_host.errors import BatchSettledError, ConflictError, DuplicateError, StoreError
from iso_host.ledger.model import (
    PRECONDITIONS,
    ExpectBatchTotals,
    LedgerCommand,
    Precondition,
    RecordDifferences,
    RecordEvent,
    RecordTransaction,
    RecordUpload,
)
from iso_host.ledger.schema import BATCH_SETTLED_MESSAGE
from iso_host.ledger.sql import (
    OUTBOX_COLUMNS,
    TRANSACTION_COLUMNS,
    condition_error,
    event_values,
    many_statement,
    power_of_two_chunks,
    precondition_error,
    precondition_select,
    qmark,
    statement,
    transaction_values,
)
from iso_host.ledger.sqlite_readers import WriteOrder

MAX_BATCH_ROWS: Final = 512  # SQLite binds at most 32,766 parameters in one statement (3.32+); a power of two
assert MAX_BATCH_ROWS * len(TRANSACTION_COLUMNS) <= 32_766


@dataclass(slots=True)
class Job:
    work: Callable[[sqlite3.Connection], Any]
    commands: tuple[LedgerCommand, ...] | None  # an apply() job: the fast path batches its inserts
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    deadline: float | None = None  # time.monotonic(): past it the job is not run, nor committed
    number: int = 0  # its place in the order of writes (sqlite_readers.WriteOrder)
    touches_batches: bool = True  # a job of commands=None that may change transactions (not a terminal's row)
    result: Any = None
    error: BaseException | None = field(default=None)


def resolve(job: Job) -> None:
    if job.future.done():  # the caller gave up (cancelled); the commit stands regardless
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)


def resolve_all(jobs: list[Job]) -> None:
    for job in jobs:
        resolve(job)


def check_precondition(connection: sqlite3.Connection, command: Precondition, order: WriteOrder | None) -> None:
    if isinstance(command, ExpectBatchTotals) and order is not None and order.unchanged(command):
        return  # the view's snapshot holds every write of the terminal's so far: its totals are the batch's now
    sql, parameters = precondition_select(command)
    if (failed := precondition_error(command, connection.execute(qmark(sql), parameters).fetchall())) is not None:
        raise failed


def apply_command(connection: sqlite3.Connection, command: LedgerCommand, order: WriteOrder | None = None) -> None:
    if isinstance(command, PRECONDITIONS):
        check_precondition(connection, command, order)
        return
    try:
        if isinstance(command, RecordUpload | RecordDifferences):
            many_sql, rows = many_statement(command)
            connection.executemany(qmark(many_sql), rows)
            return
        sql, parameters = statement(command)
        cursor = connection.execute(qmark(sql), parameters)
    except sqlite3.IntegrityError as error:
        raise integrity_error(command, error) from None
    if (failed := condition_error(command, cursor.rowcount)) is not None:
        raise failed


def integrity_error(command: LedgerCommand, error: sqlite3.IntegrityError) -> StoreError:
    """SQLite names the index's columns: (…, stan) is the duplicate check, (original_rrn) the one-reversal one;
    the settled-batch triggers (schema v6) name themselves."""
    text = str(error)
    if BATCH_SETTLED_MESSAGE in text:
        return BatchSettledError("the batch it names has settled")
    if isinstance(command, RecordTransaction):
        record = command.transaction
        if "transactions.stan" in text:
            return DuplicateError(f"{record.tid} batch {record.batch_number} STAN {record.stan} exists")
        if "transactions.original_rrn" in text:
            return ConflictError(f"transaction {record.original_rrn} is already reversed")
    return StoreError(f"ledger write failed: {text}")



@functools.lru_cache(maxsize=32)
def _insert_rows_sql(table: str, columns: tuple[str, ...], count: int) -> str:
    """An INSERT of ``count`` rows (statement text from constants only)."""
    assert 0 < count <= MAX_BATCH_ROWS
    row = "(" + ", ".join(["?"] * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([row] * count)  # noqa: S608


class _Inserts:
    """Rows of one table waiting to go in as multi-row INSERTs."""

    def __init__(self, table: str, columns: tuple[str, ...]) -> None:
        self.table, self.columns = table, columns
        self.rows: list[tuple[object, ...]] = []

    def flush(self, connection: sqlite3.Connection) -> None:
        # One multi-row INSERT: SQLite then runs the whole run of rows in one call that releases the GIL
        # once, where executemany gives it up and waits to take it back for every row.
        # Runs of power-of-two lengths: a few statement texts per table, however groups vary in size.
        for rows in power_of_two_chunks(self.rows, MAX_BATCH_ROWS):
            sql = _insert_rows_sql(self.table, self.columns, len(rows))
            connection.execute(sql, [value for row in rows for value in row])
        self.rows.clear()


def run_batched(connection: sqlite3.Connection, group: list[Job], order: WriteOrder | None = None) -> bool:
    """The fast path: runs of inserts go to SQLite in one ``executemany``; False at the first failure.

    The writer thread shares the GIL with the event loop, so Python work per row is what group commit
    saves after the fsync: one call for a whole run of inserts instead of one per row.
    """
    transactions = _Inserts("transactions", TRANSACTION_COLUMNS)
    events = _Inserts("outbox", OUTBOX_COLUMNS)

    def flush() -> None:
        transactions.flush(connection)
        events.flush(connection)

    try:
        for job in group:
            job.result, job.error = None, None
            if job.commands is None:
                flush()
                job.result = job.work(connection)
            else:
                for command in job.commands:
                    if isinstance(command, RecordTransaction):
                        transactions.rows.append(transaction_values(command.transaction))
                    elif isinstance(command, RecordEvent):
                        events.rows.append(event_values(command))
                    else:
                        flush()
                        apply_command(connection, command, order)
            if order is not None:
                order.touch(job.number, job.commands, touches_batches=job.touches_batches)
        flush()
    except Exception:  # replayed job by job under savepoints, where the failure is told to its own job
        return False
    return True
