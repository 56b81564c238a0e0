"""SQL both ledger stores share: statements (``%s`` placeholders; SQLite turns them into ``?``), row mapping.

One copy of every statement, so that SQLite and PostgreSQL cannot drift apart in what they write or find.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from iso_host.errors import ConflictError, StoreError
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
    Status,
    TerminalRecord,
    TransactionRecord,
)
from iso_host.ledger.store import TransactionFilter

MAX_GROUP_JOBS: Final = 1_024  # one commit covers at most this many requests
MAX_QUEUED_JOBS: Final = 65_536  # beyond this, callers wait for room (back-pressure, not memory growth)
RRN_DIGITS: Final = 12

Row = Mapping[str, Any]  # sqlite3.Row and psycopg's dict rows both read by column name

TRANSACTION_COLUMNS: Final = (
    "kind", "tid", "mid", "batch_number", "stan", "rrn", "auth_code", "amount_minor", "currency", "masked_pan",
    "pan_hash", "status", "response_code", "reason", "mti", "processing_code", "original_rrn", "refunded_minor",
    "operator", "created_at", "updated_at",
)  # fmt: skip
INSERT_TRANSACTION: Final = (
    f"INSERT INTO transactions ({', '.join(TRANSACTION_COLUMNS)})"  # noqa: S608 - constants only
    f" VALUES ({', '.join(['%s'] * len(TRANSACTION_COLUMNS))})"
)
CHANGE_STATUS: Final = "UPDATE transactions SET status = %s, updated_at = %s WHERE rrn = %s AND status = %s"
RECORD_REFUND: Final = (
    "UPDATE transactions SET refunded_minor = %s, status = %s, updated_at = %s"
    " WHERE rrn = %s AND refunded_minor = %s AND status IN ('APPROVED', 'PARTIALLY_REFUNDED')"
)
SAVE_SESSION: Final = (
    "UPDATE terminals SET signed_on = %s, batch_number = %s, operator = %s, tpk_under_tmk = %s,"
    " tak_under_tmk = %s, tdk_under_tmk = %s, session_at = %s WHERE tid = %s AND mid = %s"
)
REGISTER_TERMINAL: Final = (
    "INSERT INTO terminals (tid, mid, batch_number, created_at) VALUES (%s, %s, 1, %s)"
    " ON CONFLICT (tid, mid) DO NOTHING"
)
SELECT_TERMINAL: Final = (
    "SELECT batch_number, signed_on, operator, tpk_under_tmk, tak_under_tmk, tdk_under_tmk"
    " FROM terminals WHERE tid = %s AND mid = %s"
)
COUNT_VOIDS: Final = (
    "SELECT COUNT(*) AS n FROM transactions WHERE tid = %s AND mid = %s AND kind = 'void'"
    " AND status = 'APPROVED' AND created_at >= %s"
)
_SELECT_ORIGINAL: Final = (
    "SELECT t.*,"
    " (SELECT COUNT(*) FROM transactions v WHERE v.original_rrn = t.rrn AND v.kind = 'void'"
    "  AND v.status = 'DECLINED') AS refused_void_attempts,"
    " EXISTS (SELECT 1 FROM transactions r WHERE r.original_rrn = t.rrn AND r.kind = 'reversal'"
    "  AND r.status = 'APPROVED') AS effective_reversal,"
    " EXISTS (SELECT 1 FROM batches b WHERE b.tid = t.tid AND b.mid = t.mid AND b.batch_number = t.batch_number"
    "  AND b.status = 'settled') AS batch_settled"
    " FROM transactions t WHERE t.tid = %s AND t.mid = %s AND t.kind <> 'reversal'"
)


def qmark(sql: str) -> str:
    """The statement with SQLite's ``?`` placeholders."""
    return sql.replace("%s", "?")


def utc_text(moment: datetime) -> str:
    """Times are stored as UTC ISO 8601 text, so that comparing the text compares the times."""
    return moment.astimezone(UTC).isoformat()


def hex_text(value: bytes | None) -> str | None:
    return value.hex().upper() if value is not None else None


def from_hex(value: str | None) -> bytes | None:
    return bytes.fromhex(value) if value is not None else None


def transaction_values(record: TransactionRecord) -> tuple[object, ...]:
    """The values of ``TRANSACTION_COLUMNS`` for a new row."""
    card = record.card
    return (
        record.kind.value, record.tid, record.mid, record.batch_number, record.stan, record.rrn, record.auth_code,
        record.amount_minor, record.currency, card.masked_pan if card else None, card.pan_hash if card else None,
        record.status.value, record.response_code, record.reason.value, record.mti, record.processing_code,
        record.original_rrn, record.refunded_minor, record.operator, utc_text(record.created_at),
        utc_text(record.created_at),
    )  # fmt: skip


def statement(command: LedgerCommand) -> tuple[str, tuple[object, ...]]:
    """The one SQL statement that carries out a command, and its parameters."""
    if isinstance(command, RecordTransaction):
        return INSERT_TRANSACTION, transaction_values(command.transaction)
    if isinstance(command, ChangeStatus):
        return CHANGE_STATUS, (command.new.value, utc_text(command.at), command.rrn, command.expected.value)
    if isinstance(command, RecordRefund):
        return RECORD_REFUND, (command.refunded_minor, command.new_status.value, utc_text(command.at), command.rrn,
                               command.expected_refunded_minor)  # fmt: skip
    s = command
    keys = (hex_text(s.tpk_under_tmk), hex_text(s.tak_under_tmk), hex_text(s.tdk_under_tmk))
    return SAVE_SESSION, (int(s.signed_on), s.batch_number, s.operator, *keys, s.at.isoformat(), s.tid, s.mid)


def condition_error(command: LedgerCommand, rowcount: int) -> StoreError | None:
    """The error of an UPDATE whose condition no longer held (it changed no row), else None."""
    if rowcount == 1 or isinstance(command, RecordTransaction):
        return None
    if isinstance(command, ChangeStatus):
        return ConflictError(f"transaction {command.rrn} is no longer {command.expected.value}")
    if isinstance(command, RecordRefund):
        return ConflictError(f"transaction {command.rrn} changed while it was being refunded")
    return StoreError(f"ledger write failed: terminal {command.tid} is not registered in the ledger")


def original_select(query: OriginalQuery) -> tuple[str, tuple[object, ...]]:
    """The newest non-reversal transaction the query names, within its terminal and merchant."""
    sql, parameters = _SELECT_ORIGINAL, list[object]([query.tid, query.mid])
    for column, value in (("rrn", query.rrn), ("stan", query.stan), ("batch_number", query.batch_number)):
        if value is not None:
            sql += f" AND t.{column} = %s"
            parameters.append(value)
    return sql + " ORDER BY t.id DESC LIMIT 1", tuple(parameters)


def transactions_select(where: TransactionFilter) -> tuple[str, tuple[object, ...]]:
    clauses, parameters = [], []
    for column, value in (("tid", where.tid), ("batch_number", where.batch_number), ("status", where.status)):
        if value is not None:
            clauses.append(f"{column} = %s")
            parameters.append(value.value if isinstance(value, Status) else value)
    # Only column names from the tuple above are formatted in; values are parameters.
    sql = "SELECT * FROM transactions" + (" WHERE " + " AND ".join(clauses) if clauses else "")  # noqa: S608
    return sql + " ORDER BY id LIMIT %s", (*parameters, where.limit)


def record_from_row(row: Row) -> TransactionRecord:
    card = Card(row["masked_pan"], row["pan_hash"]) if row["masked_pan"] is not None else None
    return TransactionRecord(
        kind=Kind(row["kind"]), tid=row["tid"], mid=row["mid"], batch_number=row["batch_number"],
        stan=row["stan"], rrn=row["rrn"], auth_code=row["auth_code"], amount_minor=row["amount_minor"],
        currency=row["currency"], card=card, status=Status(row["status"]), response_code=row["response_code"],
        reason=Reason(row["reason"]), mti=row["mti"], processing_code=row["processing_code"],
        created_at=datetime.fromisoformat(row["created_at"]), original_rrn=row["original_rrn"],
        refunded_minor=row["refunded_minor"], operator=row["operator"],
    )  # fmt: skip


def original_from_row(row: Row) -> Original:
    return Original(
        record=record_from_row(row), batch_settled=bool(row["batch_settled"]),
        refused_void_attempts=int(row["refused_void_attempts"]), effective_reversal=bool(row["effective_reversal"]),
    )  # fmt: skip


def terminal_from_row(row: Row) -> TerminalRecord:
    return TerminalRecord(
        batch_number=row["batch_number"], signed_on=bool(row["signed_on"]), operator=row["operator"],
        tpk_under_tmk=from_hex(row["tpk_under_tmk"]), tak_under_tmk=from_hex(row["tak_under_tmk"]),
        tdk_under_tmk=from_hex(row["tdk_under_tmk"]),
    )  # fmt: skip
