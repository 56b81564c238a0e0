"""The statements of one PostgreSQL group commit: runs of inserts merged, preconditions, the terminal lock and the
commit mark; and how a failed command is told to its caller. No connection handling here: ``postgres.py`` runs
the steps (pipelined, or job by job under savepoints) and owns the pool.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg.errors import CheckViolation, TransactionRollback, UniqueViolation
from psycopg.rows import dict_row

from iso_host.errors import BatchSettledError, ConflictError, DuplicateError, StoreError
from iso_host.ledger.model import (
    PRECONDITIONS,
    ExpectAmendable,
    ExpectBatchTotals,
    ExpectPreauthOpen,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    LedgerCommand,
    RecordDifferences,
    RecordEvent,
    RecordTransaction,
    RecordUpload,
    command_terminal,
)
from iso_host.ledger.schema import BATCH_SETTLED_MESSAGE
from iso_host.ledger.sql import (
    OUTBOX_COLUMNS,
    TRANSACTION_COLUMNS,
    condition_error,
    event_values,
    many_statement,
    precondition_error,
    precondition_select,
    statement,
    transaction_values,
)

Connection = psycopg.AsyncConnection[Any]


def first_line(error: BaseException) -> str:
    return next(iter(str(error).strip().splitlines()), type(error).__name__)


def describe(error: BaseException) -> str:
    """One line about an error, never the statement's parameters (they can hold card data): PostgreSQL's
    DETAIL ("Key (rrn)=(...)") is left out, and so is the message of data exceptions (class 22), which
    quotes the offending input."""
    name = type(error).__name__
    if not isinstance(error, psycopg.Error):
        return f"{name}: {error}"
    if error.sqlstate is None:  # raised by the client: connection lost, pool timeout, ...
        return f"{name}: {first_line(error)}"
    detail = "" if error.sqlstate.startswith("22") else f": {error.diag.message_primary}"
    return f"{name} ({error.sqlstate}){detail}"



_COLUMNS: Final = {  # the columns RecordTransaction writes, with their PostgreSQL types
    "kind": "text", "tid": "text", "mid": "text", "batch_number": "int", "stan": "text", "rrn": "text",
    "auth_code": "text", "amount_minor": "bigint", "currency": "text", "masked_pan": "text", "pan_hash": "text",
    "status": "text", "response_code": "text", "reason": "text", "mti": "text", "processing_code": "text",
    "original_rrn": "text", "refunded_minor": "bigint", "operator": "text", "created_at": "text",
    "updated_at": "text",
}  # fmt: skip
assert tuple(_COLUMNS) == TRANSACTION_COLUMNS, "the shared column order (ledger/sql.py)"
_OUTBOX_COLUMNS: Final = {"event_id": "text", "tid": "text", "kind": "text", "payload": "text", "created_at": "text"}
assert tuple(_OUTBOX_COLUMNS) == OUTBOX_COLUMNS, "the shared column order (ledger/sql.py)"


def _insert_many_sql(table: str, columns: dict[str, str]) -> str:
    """Many rows in one statement: one array per column, so the text is the same for any number of rows."""
    arrays = ", ".join(f"%s::{kind}[]" for kind in columns.values())
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"  # noqa: S608 - constants only


_INSERT_MANY_SQL: Final = _insert_many_sql("transactions", _COLUMNS)
_INSERT_EVENTS_SQL: Final = _insert_many_sql("outbox", _OUTBOX_COLUMNS)


# Writes of one terminal are serialised: each group first locks the rows of the terminals it writes for, in one
# order (ORDER BY under FOR UPDATE locks in sort order), so two writers or two hosts never deadlock on them, and a
# precondition or trigger checked after the lock sees every commit of that terminal made before it.
_LOCK_TERMINALS: Final = (
    "SELECT 1 FROM terminals WHERE (tid, mid) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
    " ORDER BY tid, mid FOR UPDATE"
)
# One row per writer: the number of the last group it committed, written in that group's transaction. When a
# COMMIT's answer is lost (server restart, terminated backend), this row tells whether it committed.
MARK_COMMIT: Final = (
    "INSERT INTO ledger_commits (writer, group_number, committed_at) VALUES (%s, %s, %s)"
    " ON CONFLICT (writer) DO UPDATE SET group_number = excluded.group_number, committed_at = excluded.committed_at"
)
COMMITTED_GROUP: Final = "SELECT group_number FROM ledger_commits WHERE writer = %s"

# What a step of a group is: "one" statement (its row count checked for a command), "many" rows of one
# statement, a "check" (a precondition's SELECT), or "plain" (no check).
Step = tuple[str, str, Any, LedgerCommand | None]


def lock_step(commands: Sequence[LedgerCommand]) -> Step | None:
    """The lock on the rows of every terminal the commands write for, or None when they name none."""
    terminals = sorted({t for command in commands if (t := command_terminal(command)) is not None})
    if not terminals:
        return None
    return "plain", _LOCK_TERMINALS, ([tid for tid, _ in terminals], [mid for _, mid in terminals]), None


def steps(commands: list[LedgerCommand]) -> Iterator[Step]:
    """The group's statements in order, each run of inserts merged into one ``INSERT ... SELECT unnest(...)``.

    Transactions and outbox events are gathered apart, so that a run of sales, each with its event, still
    makes two statements.
    """
    rows: list[tuple[object, ...]] = []
    events: list[tuple[object, ...]] = []
    for command in [*commands, None]:
        if isinstance(command, RecordTransaction):
            rows.append(transaction_values(command.transaction))
            continue
        if isinstance(command, RecordEvent):
            events.append(event_values(command))
            continue
        for sql, pending in ((_INSERT_MANY_SQL, rows), (_INSERT_EVENTS_SQL, events)):
            if pending:
                yield "plain", sql, tuple(list(column) for column in zip(*pending, strict=True)), None
                pending.clear()
        if command is not None:
            yield step(command)


def step(command: LedgerCommand) -> Step:
    """The one step that carries out a command."""
    if isinstance(command, PRECONDITIONS):
        return ("check", *precondition_select(command), command)
    if isinstance(command, RecordUpload | RecordDifferences):
        return ("many", *many_statement(command), command)
    return ("one", *statement(command), command)


async def run_step(connection: Connection, one: Step) -> psycopg.AsyncCursor[Any]:
    """Send one step (in a pipeline: queue it); its cursor holds the result."""
    kind, sql, parameters, _command = one
    cursor = connection.cursor(row_factory=dict_row)
    if kind == "many":
        await cursor.executemany(sql, parameters)
    else:
        await cursor.execute(sql, parameters)
    return cursor


async def step_error(one: Step, cursor: psycopg.AsyncCursor[Any]) -> StoreError | None:
    """The error a step's result shows: a precondition that no longer holds, an UPDATE that changed no row."""
    kind, _sql, _parameters, command = one
    if kind == "check":
        assert isinstance(command, PRECONDITIONS)
        return precondition_error(command, await cursor.fetchall())
    if kind == "one":
        assert command is not None
        assert not isinstance(command, RecordUpload | RecordDifferences | ExpectRefusedVoids | ExpectVoidsSince
                              | ExpectBatchTotals | ExpectPreauthOpen | ExpectAmendable), "one statement's"  # fmt: skip
        return condition_error(command, cursor.rowcount)
    return None


def command_error(command: LedgerCommand | None, error: Exception) -> StoreError:
    """What the caller of ``apply`` is told when a command raised."""
    if isinstance(error, CheckViolation) and error.diag.constraint_name == BATCH_SETTLED_MESSAGE:
        return BatchSettledError("the batch it names has settled")
    if isinstance(error, UniqueViolation) and isinstance(command, RecordTransaction):
        record = command.transaction
        if error.diag.constraint_name == "transactions_one_per_stan":
            return DuplicateError(f"{record.tid} batch {record.batch_number} STAN {record.stan} exists")
        if error.diag.constraint_name == "transactions_one_reversal":
            return ConflictError(f"transaction {record.original_rrn} is already reversed")
    if isinstance(error, TransactionRollback):  # deadlock, serialization failure: decide again
        return ConflictError(f"ledger write lost a race with another host: {describe(error)}")
    return StoreError(f"ledger write failed: {describe(error)}")


class CommitOutcomeUnknown(Exception):
    """COMMIT was sent and its answer never came (the connection broke)."""


