"""SQL both ledger stores share: statements (``%s`` placeholders; SQLite turns them into ``?``), row mapping.

One copy of every statement, so that SQLite and PostgreSQL cannot drift apart in what they write or find.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

from iso_host.errors import ConflictError, StoreError
from iso_host.ledger.model import (
    AdvanceBatch,
    BatchItem,
    BatchTotals,
    BatchView,
    Card,
    ChangeStatus,
    ExpectAmendable,
    ExpectBatchTotals,
    ExpectPreauthOpen,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    Original,
    OriginalQuery,
    PendingEvent,
    Precondition,
    RecordDifferences,
    RecordEvent,
    RecordRefund,
    RecordTransaction,
    RecordUpload,
    SaveSession,
    SettleBatch,
    TerminalRecord,
    Totals,
    TransactionFilter,
    TransactionRecord,
)
from iso_host.vocab import Kind, Reason, Status

# Commands of one statement each; uploads and differences are many rows (``many_statement``), preconditions
# are SELECTs (``precondition_select``).
SingleStatement = (
    RecordTransaction | SaveSession | ChangeStatus | RecordRefund | SettleBatch | AdvanceBatch | RecordEvent
)
MAX_GROUP_JOBS: Final = 1_024  # one commit covers at most this many requests
MAX_QUEUED_JOBS: Final = 65_536  # beyond this, callers wait for room (back-pressure, not memory growth)
RRN_DIGITS: Final = 12
_T = TypeVar("_T")


class Row(Protocol):
    """sqlite3.Row and psycopg's dict rows: both read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


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
# A refund keeps count on its sale (refunded_at, not updated_at): the sale itself does not change, which is what a
# sale of a settled batch may not do (invariant settled-batch-unchanged).
RECORD_REFUND: Final = (
    "UPDATE transactions SET refunded_minor = %s, status = %s, refunded_at = %s"
    " WHERE rrn = %s AND refunded_minor = %s AND status IN ('APPROVED', 'PARTIALLY_REFUNDED')"
)
SAVE_SESSION: Final = (
    "UPDATE terminals SET signed_on = %s, batch_number = %s, operator = %s, tpk_under_tmk = %s,"
    " tak_under_tmk = %s, tdk_under_tmk = %s, session_at = %s, keyed = COALESCE(%s, keyed), tpk_kcv = %s,"
    " tak_kcv = %s, tdk_kcv = %s WHERE tid = %s AND mid = %s"
)
REGISTER_TERMINAL: Final = (
    "INSERT INTO terminals (tid, mid, batch_number, created_at) VALUES (%s, %s, 1, %s)"
    " ON CONFLICT (tid, mid) DO NOTHING"
)
SELECT_TERMINAL: Final = (
    "SELECT batch_number, signed_on, operator, tpk_under_tmk, tak_under_tmk, tdk_under_tmk, keyed, tpk_kcv, tak_kcv,"
    " tdk_kcv"
    " FROM terminals WHERE tid = %s AND mid = %s"
)
COUNT_VOIDS: Final = (
    "SELECT COUNT(*) AS n FROM transactions WHERE tid = %s AND mid = %s AND kind = 'void'"
    " AND status = 'APPROVED' AND created_at >= %s"
)
# The kinds that void their original (a refused one counts towards the original's refused-attempt limit), and
# those that close a pre-auth by naming it (the pre-auth's own row never changes: its batch may have settled).
VOID_KINDS: Final = "('void', 'preauth_void', 'completion_void')"
CLOSING_KINDS: Final = "('preauth_void', 'completion')"
# What an adjust and a tip change a sale's worth by, without changing its row (its batch's totals and upload read
# them): the newest approved adjust replaces the amount, the approved tip (one at most) adds to it. ``{t}`` is the
# sale's table or alias in the statement around them; the subqueries use transactions_by_original.
_ADJUSTED: Final = (
    "(SELECT a.amount_minor FROM transactions a WHERE a.original_rrn = {t}.rrn AND a.kind = 'adjust'"
    " AND a.status = 'APPROVED' ORDER BY a.id DESC LIMIT 1)"
)
_TIPPED: Final = (
    "(SELECT SUM(p.amount_minor) FROM transactions p WHERE p.original_rrn = {t}.rrn AND p.kind = 'tip'"
    " AND p.status = 'APPROVED')"
)


def effective_minor(table: str) -> str:
    """A sale's worth in its batch: adjusted, plus its tip (``model.Original.effective_minor``); a row no adjust or
    tip names is worth its own amount."""
    assert table.isidentifier()
    return f"(COALESCE({_ADJUSTED.format(t=table)}, {table}.amount_minor) + COALESCE({_TIPPED.format(t=table)}, 0))"


_SELECT_ORIGINAL: Final = (
    "SELECT t.*,"  # noqa: S608 - constants only
    f" (SELECT COUNT(*) FROM transactions v WHERE v.original_rrn = t.rrn AND v.kind IN {VOID_KINDS}"
    "  AND v.status = 'DECLINED') AS refused_void_attempts,"
    f" (SELECT MIN(c.kind) FROM transactions c WHERE c.original_rrn = t.rrn AND c.kind IN {CLOSING_KINDS}"
    "  AND c.status = 'APPROVED') AS closed_by,"
    f" {_ADJUSTED.format(t='t')} AS adjusted_minor, {_TIPPED.format(t='t')} AS tip_minor,"
    " EXISTS (SELECT 1 FROM transactions r WHERE r.original_rrn = t.rrn AND r.kind = 'reversal'"
    "  AND r.status = 'APPROVED') AS effective_reversal,"
    " EXISTS (SELECT 1 FROM batches b WHERE b.tid = t.tid AND b.mid = t.mid AND b.batch_number = t.batch_number"
    "  AND b.status = 'settled') AS batch_settled"
    " FROM transactions t WHERE t.tid = %s AND t.mid = %s AND t.kind <> 'reversal'"
)


# Gross totals (DESIGN.md, CUP.md): sales and completions are debits (a voided one stays), voids, completion
# voids and refunds are credits; pre-auths, their voids and reversed rows count nowhere. A debit counts at its
# effective amount (an adjust or a tip changes a sale's amount, not the count: it is the same purchase). Foreign
# cards are all but UnionPay's (BIN 62), as CUP settlement splits them; a payment without a card (a QR payment) is
# UnionPay's.
_DEBIT: Final = "kind IN ('sale', 'completion') AND status IN ('APPROVED', 'VOIDED', 'PARTIALLY_REFUNDED', 'REFUNDED')"
_CREDIT: Final = "kind IN ('void', 'refund', 'completion_void') AND status = 'APPROVED'"
_SUMS: Final = ", ".join(
    f"SUM(CASE WHEN {condition} THEN {value} ELSE 0 END) AS {name}"
    for name, condition, value in (
        ("debit_count", _DEBIT, "1"), ("debit_minor", _DEBIT, effective_minor("transactions")),
        ("credit_count", _CREDIT, "1"), ("credit_minor", _CREDIT, "amount_minor"),
    )
)  # fmt: skip
BATCH_TOTALS: Final = " ".join((
    "SELECT CASE WHEN masked_pan IS NULL OR masked_pan LIKE '62%%' THEN 0 ELSE 1 END AS foreign_card,", _SUMS,
    # kind <> 'reversal' adds nothing to the result and lets the planner use transactions_one_per_stan.
    "FROM transactions WHERE tid = %s AND mid = %s AND batch_number = %s AND kind <> 'reversal' GROUP BY 1",
))  # fmt: skip
# What the terminal is expected to upload: the batch's debits, at their effective amounts.
BATCH_ITEMS: Final = (
    f"SELECT stan, {effective_minor('transactions')} AS amount_minor, masked_pan, rrn FROM transactions"  # noqa: S608
    " WHERE tid = %s AND mid = %s"
    f" AND batch_number = %s AND kind <> 'reversal' AND {_DEBIT} ORDER BY stan"
)
BATCH_UPLOADED: Final = (
    "SELECT stan, amount_minor, masked_pan, NULL AS rrn FROM batch_uploads"
    " WHERE tid = %s AND mid = %s AND batch_number = %s ORDER BY stan"
)
BATCH_STATUS: Final = (
    "SELECT status, host_totals, terminal_totals FROM batches WHERE tid = %s AND mid = %s AND batch_number = %s"
)
_SETTLE_BATCH: Final = (
    "INSERT INTO batches (tid, mid, batch_number, status, opened_at, settled_at, result, host_totals,"
    " terminal_totals) VALUES (%s, %s, %s, %s, %s, {settled_at}, %s, %s, %s)"
    " ON CONFLICT (tid, mid, batch_number) DO UPDATE SET status = excluded.status, settled_at = excluded.settled_at,"
    " result = excluded.result, host_totals = excluded.host_totals, terminal_totals = excluded.terminal_totals"
    " WHERE batches.status <> 'settled'"
)
SETTLE_BATCH: Final = _SETTLE_BATCH.format(settled_at="%s")  # the upload begins: not settled yet (NULL)
# A batch closes no earlier than its last row changed: a row decided after the settlement read the clock but
# committed before it (the settlement's totals then include it) must not look "changed after settlement".
CLOSE_BATCH: Final = _SETTLE_BATCH.format(
    settled_at=(
        "(SELECT CASE WHEN MAX(t.updated_at) > %s THEN MAX(t.updated_at) ELSE %s END FROM transactions t"
        " WHERE t.tid = %s AND t.mid = %s AND t.batch_number = %s)"
    )
)
ADVANCE_BATCH: Final = "UPDATE terminals SET batch_number = %s WHERE tid = %s AND mid = %s"
_UPLOAD_COLUMNS: Final = "tid, mid, batch_number, stan, amount_minor, masked_pan, pan_hash, foreign_card, uploaded_at"
_DIFFERENCE_COLUMNS: Final = (
    "tid, mid, batch_number, stan, difference, rrn, host_amount_minor, terminal_amount_minor, masked_pan, recorded_at"
)


OUTBOX_COLUMNS: Final = ("event_id", "tid", "kind", "payload", "created_at")
INSERT_EVENT: Final = (
    f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) VALUES ({', '.join(['%s'] * len(OUTBOX_COLUMNS))})"  # noqa: S608
)
PENDING_EVENTS: Final = "SELECT id, event_id, tid, kind, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s"
PRUNE_EVENTS: Final = "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < %s"
COUNT_PENDING_EVENTS: Final = "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL"


def event_values(command: RecordEvent) -> tuple[object, ...]:
    """The values of ``OUTBOX_COLUMNS`` for a new outbox row."""
    return command.event_id, command.tid, command.kind, command.payload, utc_text(command.at)


def power_of_two_chunks(items: Sequence[_T], largest: int) -> list[Sequence[_T]]:
    """``items`` cut into runs whose lengths are powers of two, at most ``largest`` long.

    A statement with one placeholder group per row has a new text for every row count, and both drivers cache
    statements by text: cut this way, one table is written by at most log2(largest) + 1 texts.
    """
    assert largest > 0
    assert largest & (largest - 1) == 0, "largest is a power of two"
    chunks: list[Sequence[_T]] = []
    start = 0
    while start < len(items):
        size = min(largest, 1 << ((len(items) - start).bit_length() - 1))
        chunks.append(items[start : start + size])
        start += size
    assert sum(len(chunk) for chunk in chunks) == len(items)
    return chunks


MAX_IDS_PER_STATEMENT: Final = 512


def mark_events_sent(ids: Sequence[int], at: datetime) -> list[tuple[str, tuple[object, ...]]]:
    """The UPDATEs that mark outbox rows as acknowledged by the broker (a few statement texts, whatever the count)."""
    assert ids, "marks at least one event"
    updates = []
    for chunk in power_of_two_chunks(ids, MAX_IDS_PER_STATEMENT):
        placeholders = ", ".join(["%s"] * len(chunk))
        updates.append((f"UPDATE outbox SET sent_at = %s WHERE id IN ({placeholders})", (utc_text(at), *chunk)))  # noqa: S608
    return updates


def pending_event_from_row(row: Row) -> PendingEvent:
    return PendingEvent(int(row["id"]), row["event_id"], row["tid"], row["kind"], row["payload"])


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


def _settle_statement(c: SettleBatch) -> tuple[str, tuple[object, ...]]:
    at, status = utc_text(c.at), "settled" if c.close else "uploading"
    key = (c.tid, c.mid, c.batch_number)
    if not c.close:
        return SETTLE_BATCH, (*key, status, at, None, c.result, c.host_totals_json, c.terminal_totals_json)
    return CLOSE_BATCH, (*key, status, at, at, at, *key, c.result, c.host_totals_json, c.terminal_totals_json)


def _session_statement(s: SaveSession) -> tuple[str, tuple[object, ...]]:
    keys = (hex_text(s.tpk_under_tmk), hex_text(s.tak_under_tmk), hex_text(s.tdk_under_tmk))
    keyed = None if s.keyed is None else int(s.keyed)
    checks = (hex_text(s.tpk_kcv), hex_text(s.tak_kcv), hex_text(s.tdk_kcv))
    return SAVE_SESSION, (int(s.signed_on), s.batch_number, s.operator, *keys, utc_text(s.at), keyed, *checks, s.tid,
                          s.mid)  # fmt: skip


def statement(command: SingleStatement) -> tuple[str, tuple[object, ...]]:  # noqa: PLR0911 - one case per command
    """The one SQL statement that carries out a command, and its parameters."""
    match command:
        case RecordTransaction():
            return INSERT_TRANSACTION, transaction_values(command.transaction)
        case ChangeStatus():
            return CHANGE_STATUS, (command.new.value, utc_text(command.at), command.rrn, command.expected.value)
        case RecordRefund():
            return RECORD_REFUND, (command.refunded_minor, command.new_status.value, utc_text(command.at),
                                   command.rrn, command.expected_refunded_minor)  # fmt: skip
        case SettleBatch():
            return _settle_statement(command)
        case AdvanceBatch():
            return ADVANCE_BATCH, (command.batch_number, command.tid, command.mid)
        case SaveSession():
            return _session_statement(command)
        case RecordEvent():
            return INSERT_EVENT, event_values(command)


UPLOAD_ONE: Final = (
    f"INSERT INTO batch_uploads ({_UPLOAD_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})"  # noqa: S608 - constants only
    " ON CONFLICT (tid, mid, batch_number, stan) DO UPDATE SET amount_minor = excluded.amount_minor,"
    " masked_pan = excluded.masked_pan, pan_hash = excluded.pan_hash, foreign_card = excluded.foreign_card"
)
DIFFERENCE_ONE: Final = f"INSERT INTO batch_differences ({_DIFFERENCE_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})"  # noqa: S608


def many_statement(command: RecordUpload | RecordDifferences) -> tuple[str, list[tuple[object, ...]]]:
    """One single-row statement and its rows, for ``executemany``: one statement text whatever the row count,
    and no limit on the rows (one multi-row INSERT stops at 65,535 parameters on PostgreSQL)."""
    at = utc_text(command.at)
    if isinstance(command, RecordUpload):
        assert command.items, "an upload command carries records"
        by_stan = {  # a record sent twice in one upload: the last copy counts, as across uploads
            item.stan: (command.tid, command.mid, command.batch_number, item.stan, item.amount_minor, item.masked_pan,
                        pan_hash, int(foreign), at)
            for item, pan_hash, foreign in command.items
        }  # fmt: skip
        return UPLOAD_ONE, list(by_stan.values())
    assert command.differences, "a differences command carries differences"
    rows: list[tuple[object, ...]] = [
        (command.tid, command.mid, command.batch_number, d.stan, d.difference.value, d.rrn, d.host_amount_minor,
         d.terminal_amount_minor, d.masked_pan, at)
        for d in command.differences
    ]  # fmt: skip
    return DIFFERENCE_ONE, rows


REFUSED_VOIDS: Final = (
    f"SELECT COUNT(*) AS n FROM transactions WHERE original_rrn = %s AND kind IN {VOID_KINDS}"  # noqa: S608
    " AND status = 'DECLINED'"
)
PREAUTH_STATE: Final = (
    "SELECT (SELECT status FROM transactions WHERE rrn = %s) AS status,"  # noqa: S608 - constants only
    f" (SELECT COUNT(*) FROM transactions WHERE original_rrn = %s AND kind IN {CLOSING_KINDS}"
    " AND status = 'APPROVED') AS closings"
)
AMENDABLE_STATE: Final = (
    f"SELECT t.status, {effective_minor('t')} AS effective_minor FROM transactions t WHERE t.rrn = %s"  # noqa: S608
)


def precondition_select(command: Precondition) -> tuple[str, tuple[object, ...]]:
    """The SELECT whose rows tell whether a precondition still holds (``precondition_error`` reads them)."""
    match command:
        case ExpectRefusedVoids():
            return REFUSED_VOIDS, (command.original_rrn,)
        case ExpectVoidsSince():
            return COUNT_VOIDS, (command.tid, command.mid, utc_text(command.since))
        case ExpectBatchTotals():
            return BATCH_TOTALS, (command.tid, command.mid, command.batch_number)
        case ExpectPreauthOpen():
            return PREAUTH_STATE, (command.preauth_rrn, command.preauth_rrn)
        case ExpectAmendable():
            return AMENDABLE_STATE, (command.sale_rrn,)


def precondition_error(command: Precondition, rows: Sequence[Row]) -> ConflictError | None:
    """``ConflictError`` when the rows of ``precondition_select`` show the ledger moved on since the view."""
    match command:
        case ExpectRefusedVoids():
            found = int(rows[0]["n"])
            if found != command.count:
                return ConflictError(f"{command.original_rrn} has {found} refused voids, not {command.count}")
        case ExpectVoidsSince():
            found = int(rows[0]["n"])
            if found != command.count:
                return ConflictError(f"terminal {command.tid} has {found} approved voids today, not {command.count}")
        case ExpectBatchTotals():
            if batch_totals_from_rows(rows) != command.totals:
                return ConflictError(f"batch {command.batch_number} of {command.tid} changed while it was settled")
        case ExpectPreauthOpen():
            status, closings = rows[0]["status"], int(rows[0]["closings"])
            if status != Status.APPROVED.value or closings:
                return ConflictError(f"pre-auth {command.preauth_rrn} is no longer open ({status}, closed {closings})")
        case ExpectAmendable():
            status, worth = (rows[0]["status"], int(rows[0]["effective_minor"])) if rows else (None, None)
            if status != Status.APPROVED.value or worth != command.effective_minor:
                return ConflictError(f"sale {command.sale_rrn} changed ({status}, worth {worth})")
    return None


def batch_totals_from_rows(rows: Sequence[Row]) -> BatchTotals:
    totals = {0: Totals(), 1: Totals()}
    for row in rows:
        totals[int(row["foreign_card"])] = Totals(
            int(row["debit_count"] or 0), int(row["debit_minor"] or 0),
            int(row["credit_count"] or 0), int(row["credit_minor"] or 0),
        )  # fmt: skip
    return BatchTotals(domestic=totals[0], foreign=totals[1])


def batch_view_from_rows(
    key: tuple[str, str, int],
    status_rows: Sequence[Row],
    totals_rows: Sequence[Row],
    items: Sequence[Row],
    uploaded: Sequence[Row],
    *,
    snapshot: object = None,
) -> BatchView:
    """Assemble a BatchView from the rows of BATCH_STATUS, BATCH_TOTALS, BATCH_ITEMS and BATCH_UPLOADED."""
    tid, mid, batch_number = key
    return BatchView(
        tid=tid, mid=mid, batch_number=batch_number,
        status=str(status_rows[0]["status"]) if status_rows else "open",
        settled_host_totals_json=status_rows[0]["host_totals"] if status_rows else None,
        settled_terminal_totals_json=status_rows[0]["terminal_totals"] if status_rows else None,
        host_totals=batch_totals_from_rows(totals_rows),
        host_items=tuple(batch_item_from_row(row) for row in items),
        uploaded=tuple(batch_item_from_row(row) for row in uploaded), snapshot=snapshot,
    )  # fmt: skip


def batch_item_from_row(row: Row) -> BatchItem:
    return BatchItem(str(row["stan"]), int(row["amount_minor"]), row["masked_pan"], row["rrn"])


def condition_error(command: SingleStatement, rowcount: int) -> StoreError | None:
    """The error of an UPDATE whose condition no longer held (it changed no row), else None."""
    if rowcount == 1 or isinstance(command, RecordTransaction | RecordEvent):
        return None
    if isinstance(command, SettleBatch):
        return ConflictError(f"batch {command.batch_number} of {command.tid} is already settled")
    if isinstance(command, AdvanceBatch):
        return StoreError(f"ledger write failed: terminal {command.tid} is not registered in the ledger")
    if isinstance(command, ChangeStatus):
        return ConflictError(f"transaction {command.rrn} is no longer {command.expected.value}")
    if isinstance(command, RecordRefund):
        return ConflictError(f"transaction {command.rrn} changed while it was being refunded")
    return StoreError(f"ledger write failed: terminal {command.tid} is not registered in the ledger")


def original_select(query: OriginalQuery) -> tuple[str, tuple[object, ...]]:
    """The newest non-reversal transaction the query names, within its terminal and merchant (and, where it names a
    day, made on that day)."""
    sql, parameters = _SELECT_ORIGINAL, list[object]([query.tid, query.mid])
    named = (("rrn", query.rrn), ("stan", query.stan), ("batch_number", query.batch_number),
             ("auth_code", query.auth_code))  # fmt: skip
    for column, value in named:
        if value is not None:
            sql += f" AND t.{column} = %s"
            parameters.append(value)
    if query.created_from is not None and query.created_before is not None:
        sql += " AND t.created_at >= %s AND t.created_at < %s"  # UTC ISO text: text order is time order
        parameters += [utc_text(query.created_from), utc_text(query.created_before)]
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
        closed_by=Kind(row["closed_by"]) if row["closed_by"] is not None else None,
        adjusted_minor=_optional_int(row["adjusted_minor"]), tip_minor=_optional_int(row["tip_minor"]),
    )  # fmt: skip


def _optional_int(value: Any) -> int | None:
    """A minor-units column that may be NULL (PostgreSQL's SUM of BIGINT is NUMERIC: a Decimal)."""
    return None if value is None else int(value)


def terminal_from_row(row: Row) -> TerminalRecord:
    return TerminalRecord(
        batch_number=row["batch_number"], signed_on=bool(row["signed_on"]), operator=row["operator"],
        tpk_under_tmk=from_hex(row["tpk_under_tmk"]), tak_under_tmk=from_hex(row["tak_under_tmk"]),
        tdk_under_tmk=from_hex(row["tdk_under_tmk"]), keyed=bool(row["keyed"]), tpk_kcv=from_hex(row["tpk_kcv"]),
        tak_kcv=from_hex(row["tak_kcv"]), tdk_kcv=from_hex(row["tdk_kcv"]),
    )  # fmt: skip
