"""An in-memory ledger with the semantics of the SQL stores, for tests of the core without a database.

It follows ``iso_host/ledger/sql.py`` and the schema's constraints statement by statement: the conditional
UPDATEs (``ChangeStatus``, ``RecordRefund``, ``SettleBatch``), the unique indexes (one RRN, one financial row per
TID, MID, batch and STAN, one effective reversal per original), the foreign key to the original, the triggers that
keep a settled batch immutable (schema v6) and the preconditions' SELECTs. ``apply`` runs a decision's commands
in order and keeps all of them or none. Nothing here waits: every call answers at once, or with ``StoreTimeout``
when the request's deadline has passed on the ``monotonic`` clock it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from iso_host.errors import BatchSettledError, ConflictError, DuplicateError, StoreError
from iso_host.ledger.deadlines import timeout_error
from iso_host.ledger.model import (
    PRECONDITIONS,
    AdvanceBatch,
    BatchItem,
    BatchTotals,
    BatchView,
    ChangeStatus,
    ExpectAmendable,
    ExpectBatchTotals,
    ExpectPreauthOpen,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    LedgerCommand,
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
from iso_host.ledger.sql import RRN_DIGITS
from iso_host.vocab import Kind, Status

BatchKey = tuple[str, str, int]  # (tid, mid, batch_number), as the batches table's primary key
# ledger/sql.py _DEBIT and _CREDIT: gross totals, a voided sale stays in debits, reversed rows count nowhere.
DEBIT_STATUSES = frozenset({Status.APPROVED, Status.VOIDED, Status.PARTIALLY_REFUNDED, Status.REFUNDED})
CREDIT_KINDS = frozenset({Kind.VOID, Kind.REFUND, Kind.COMPLETION_VOID})
DEBIT_KINDS = frozenset({Kind.SALE, Kind.COMPLETION})  # sql.py _DEBIT
VOID_KINDS = frozenset({Kind.VOID, Kind.PREAUTH_VOID, Kind.COMPLETION_VOID})  # sql.py VOID_KINDS
CLOSING_KINDS = frozenset({Kind.PREAUTH_VOID, Kind.COMPLETION})  # sql.py CLOSING_KINDS: they close a pre-auth
REFUNDABLE_STATUSES = frozenset({Status.APPROVED, Status.PARTIALLY_REFUNDED})  # sql.py RECORD_REFUND's WHERE
# schema.py _STATUS_CHANGE_OF_SUBSTANCE: a sale of a settled batch may still keep count of later refunds.
REFUND_BOOKKEEPING = frozenset({Status.PARTIALLY_REFUNDED, Status.REFUNDED})


@dataclass(slots=True)
class Batch:
    """A row of ``batches``: absent rows are open batches."""

    status: str  # uploading | settled
    result: str
    host_totals_json: str
    terminal_totals_json: str
    settled_at: datetime | None


@dataclass(slots=True)
class Ledger:
    """Everything the store holds; ``apply`` works on a copy and keeps it only when every command succeeded."""

    terminals: dict[tuple[str, str], TerminalRecord] = field(default_factory=dict)
    transactions: list[TransactionRecord] = field(default_factory=list)  # in insertion (id) order
    batches: dict[BatchKey, Batch] = field(default_factory=dict)
    uploads: dict[BatchKey, dict[str, tuple[BatchItem, str | None, bool]]] = field(default_factory=dict)
    differences: list[tuple[BatchKey, datetime, RecordDifferences]] = field(default_factory=list)
    outbox: list[tuple[PendingEvent, datetime | None]] = field(default_factory=list)  # (event, sent_at)
    last_event_id: int = 0

    def copy(self) -> Ledger:
        """A copy that commands can change without touching this one (rows are frozen; containers are copied)."""
        return Ledger(
            dict(self.terminals), list(self.transactions), dict(self.batches),
            {key: dict(records) for key, records in self.uploads.items()}, list(self.differences),
            list(self.outbox), self.last_event_id,
        )  # fmt: skip


class MemoryStore:
    """A ``Store`` kept in a few lists and dicts. Tests read ``ledger`` directly to see what was committed."""

    def __init__(
        self, *, pan_hash_key: bytes = b"memory-store-pan-hash-key", monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        assert pan_hash_key, "the PAN hash key must not be empty"
        self._pan_hash_key = pan_hash_key
        self.monotonic = monotonic  # the clock deadlines are read on (the host's own, in tests a fake one)
        self.ledger = Ledger()
        self.last_rrn = 0
        self.is_open = True
        self.commits = 0  # successful applies, like the SQL stores' counter

    @property
    def pan_hash_key(self) -> bytes:
        return self._pan_hash_key

    async def open(self) -> None:
        self.is_open = True

    async def close(self) -> None:
        self.is_open = False

    def _check(self, deadline: float | None) -> None:
        if not self.is_open:
            raise StoreError("ledger memory is closed")
        if deadline is not None and self.monotonic() >= deadline:
            raise timeout_error()

    async def apply(self, commands: Sequence[LedgerCommand], *, deadline: float | None = None) -> None:
        """Run the commands in order on a copy of the ledger; keep the copy only if all of them succeeded."""
        self._check(deadline)
        working = self.ledger.copy()
        for command in commands:
            apply_command(working, command)
        self.ledger = working
        self.commits += 1

    async def next_rrn(self, *, deadline: float | None = None) -> str:
        self._check(deadline)
        self.last_rrn += 1
        assert self.last_rrn < 10**RRN_DIGITS
        return f"{self.last_rrn:0{RRN_DIGITS}d}"

    async def find_original(self, query: OriginalQuery, *, deadline: float | None = None) -> Original | None:
        self._check(deadline)
        return find_original(self.ledger, query)

    async def count_voids(self, tid: str, mid: str, since: datetime, *, deadline: float | None = None) -> int:
        self._check(deadline)
        return count_voids(self.ledger, tid, mid, since)

    async def batch_view(
        self, tid: str, mid: str, batch_number: int, *, with_totals: bool = True, with_items: bool = False,
        deadline: float | None = None,
    ) -> BatchView:  # fmt: skip
        self._check(deadline)
        key = (tid, mid, batch_number)
        row = self.ledger.batches.get(key)
        uploaded = self.ledger.uploads.get(key, {})
        return BatchView(
            tid=tid, mid=mid, batch_number=batch_number, status=row.status if row else "open",
            host_totals=batch_totals(self.ledger, key) if with_totals else BatchTotals(),
            host_items=batch_items(self.ledger, key) if with_items else (),
            uploaded=tuple(_as_read(uploaded[stan][0]) for stan in sorted(uploaded)) if with_items else (),
            settled_host_totals_json=row.host_totals_json if row else None,
            settled_terminal_totals_json=row.terminal_totals_json if row else None,
        )  # fmt: skip

    async def register_terminal(self, tid: str, mid: str) -> TerminalRecord:
        self._check(None)
        return self.ledger.terminals.setdefault((tid, mid), TerminalRecord(batch_number=1))

    async def transactions(self, where: TransactionFilter) -> list[TransactionRecord]:
        self._check(None)
        rows = [
            record for record in self.ledger.transactions
            if (where.tid is None or record.tid == where.tid)
            and (where.batch_number is None or record.batch_number == where.batch_number)
            and (where.status is None or record.status is where.status)
        ]  # fmt: skip
        return rows[: where.limit]

    async def pending_events(self, limit: int) -> list[PendingEvent]:
        self._check(None)
        return [event for event, sent_at in self.ledger.outbox if sent_at is None][:limit]

    async def mark_events_sent(self, ids: Sequence[int], at: datetime) -> None:
        self._check(None)
        marked = set(ids)
        self.ledger.outbox = [(e, at if e.id in marked else sent) for e, sent in self.ledger.outbox]

    async def prune_events(self, sent_before: datetime) -> int:
        self._check(None)
        kept = [(e, sent) for e, sent in self.ledger.outbox if sent is None or sent >= sent_before]
        pruned = len(self.ledger.outbox) - len(kept)
        self.ledger.outbox = kept
        return pruned

    async def count_pending_events(self) -> int:
        self._check(None)
        return sum(1 for _event, sent_at in self.ledger.outbox if sent_at is None)


def apply_command(ledger: Ledger, command: LedgerCommand) -> None:
    """One command as its SQL statement would run it: the same conditions, the same errors."""
    if isinstance(command, PRECONDITIONS):
        check_precondition(ledger, command)
        return
    match command:
        case RecordTransaction():
            insert_transaction(ledger, command.transaction)
        case ChangeStatus():
            change_status(ledger, command)
        case RecordRefund():
            stale = ConflictError(f"transaction {command.rrn} changed while it was being refunded")
            index = _row_index(ledger, command.rrn, stale)
            row = ledger.transactions[index]
            if row.refunded_minor != command.expected_refunded_minor or row.status not in REFUNDABLE_STATUSES:
                raise stale
            ledger.transactions[index] = replace(row, refunded_minor=command.refunded_minor, status=command.new_status)
        case SaveSession():
            was = _terminal(ledger, command.tid, command.mid)
            ledger.terminals[command.tid, command.mid] = TerminalRecord(
                command.batch_number, command.signed_on, command.operator, command.tpk_under_tmk,
                command.tak_under_tmk, command.tdk_under_tmk, was.keyed if command.keyed is None else command.keyed,
                command.tpk_kcv, command.tak_kcv, command.tdk_kcv,
            )  # fmt: skip
        case SettleBatch():
            settle_batch(ledger, command)
        case AdvanceBatch():
            record = _terminal(ledger, command.tid, command.mid)
            ledger.terminals[command.tid, command.mid] = replace(record, batch_number=command.batch_number)
        case RecordUpload():
            assert command.items, "an upload command carries records"
            records = ledger.uploads.setdefault((command.tid, command.mid, command.batch_number), {})
            for item, hashed, foreign in command.items:  # a record sent again replaces its first copy
                records[item.stan] = (item, hashed, foreign)
        case RecordDifferences():
            record_differences(ledger, command)
        case RecordEvent():
            ledger.last_event_id += 1
            event = PendingEvent(ledger.last_event_id, command.event_id, command.tid, command.kind, command.payload)
            ledger.outbox.append((event, None))


def change_status(ledger: Ledger, command: ChangeStatus) -> None:
    """``sql.CHANGE_STATUS`` (``WHERE status = expected``) and its trigger ``transactions_settled_unchanged``."""
    stale = ConflictError(f"transaction {command.rrn} is no longer {command.expected.value}")
    index = _row_index(ledger, command.rrn, stale)
    row = ledger.transactions[index]
    if row.status is not command.expected:
        raise stale
    of_substance = row.status is not command.new and command.new not in REFUND_BOOKKEEPING
    if of_substance and _settled(ledger, (row.tid, row.mid, row.batch_number)):
        raise BatchSettledError("the batch it names has settled")
    ledger.transactions[index] = replace(row, status=command.new)


def settle_batch(ledger: Ledger, command: SettleBatch) -> None:
    """``sql.SETTLE_BATCH``: an upsert that changes no row of a batch that has settled."""
    key = (command.tid, command.mid, command.batch_number)
    if _settled(ledger, key):
        raise ConflictError(f"batch {command.batch_number} of {command.tid} is already settled")
    status, settled_at = ("settled", command.at) if command.close else ("uploading", None)
    ledger.batches[key] = Batch(
        status, command.result, command.host_totals_json, command.terminal_totals_json, settled_at
    )


def insert_transaction(ledger: Ledger, record: TransactionRecord) -> None:
    """The INSERT with its trigger (schema v6), unique indexes (v1, v3) and foreign key (v1), in that order."""
    if _settled(ledger, (record.tid, record.mid, record.batch_number)):
        raise BatchSettledError("the batch it names has settled")
    if any(row.rrn == record.rrn for row in ledger.transactions):
        raise StoreError("ledger write failed: UNIQUE constraint failed: transactions.rrn")
    if record.kind is not Kind.REVERSAL and any(
        (row.tid, row.mid, row.batch_number, row.stan) == (record.tid, record.mid, record.batch_number, record.stan)
        for row in ledger.transactions
        if row.kind is not Kind.REVERSAL
    ):
        raise DuplicateError(f"{record.tid} batch {record.batch_number} STAN {record.stan} exists")
    if (
        record.kind is Kind.REVERSAL
        and record.status is Status.APPROVED
        and any(
            row.kind is Kind.REVERSAL and row.status is Status.APPROVED and row.original_rrn == record.original_rrn
            for row in ledger.transactions
        )
    ):
        raise ConflictError(f"transaction {record.original_rrn} is already reversed")
    if record.original_rrn is not None and all(row.rrn != record.original_rrn for row in ledger.transactions):
        raise StoreError("ledger write failed: FOREIGN KEY constraint failed")
    ledger.transactions.append(record)


def record_differences(ledger: Ledger, command: RecordDifferences) -> None:
    assert command.differences, "a differences command carries differences"
    key = (command.tid, command.mid, command.batch_number)
    known = {d.stan for k, _at, c in ledger.differences if k == key for d in c.differences}
    stans = [d.stan for d in command.differences]
    if len(set(stans)) != len(stans) or known & set(stans):  # batch_differences' primary key
        raise StoreError("ledger write failed: UNIQUE constraint failed: batch_differences")
    ledger.differences.append((key, command.at, command))


def check_precondition(ledger: Ledger, command: Precondition) -> None:
    """``sql.precondition_error``: the ledger moved on since the view the decision was made from."""
    match command:
        case ExpectRefusedVoids():
            found = refused_voids(ledger, command.original_rrn)
            if found != command.count:
                raise ConflictError(f"{command.original_rrn} has {found} refused voids, not {command.count}")
        case ExpectVoidsSince():
            found = count_voids(ledger, command.tid, command.mid, command.since)
            if found != command.count:
                raise ConflictError(f"terminal {command.tid} has {found} approved voids today, not {command.count}")
        case ExpectBatchTotals():
            if batch_totals(ledger, (command.tid, command.mid, command.batch_number)) != command.totals:
                raise ConflictError(f"batch {command.batch_number} of {command.tid} changed while it was settled")
        case ExpectPreauthOpen():
            status = next((row.status for row in ledger.transactions if row.rrn == command.preauth_rrn), None)
            if status is not Status.APPROVED or closed_by(ledger, command.preauth_rrn) is not None:
                raise ConflictError(f"pre-auth {command.preauth_rrn} is no longer open")
        case ExpectAmendable():
            row = next((row for row in ledger.transactions if row.rrn == command.sale_rrn), None)
            worth = effective_minor(ledger, row) if row is not None else None
            if row is None or row.status is not Status.APPROVED or worth != command.effective_minor:
                raise ConflictError(f"sale {command.sale_rrn} changed")


def find_original(ledger: Ledger, query: OriginalQuery) -> Original | None:
    """``sql.original_select``: the newest non-reversal row the query names, within its terminal and merchant."""
    for record in reversed(ledger.transactions):
        if (
            record.kind is not Kind.REVERSAL
            and (record.tid, record.mid) == (query.tid, query.mid)
            and query.rrn in (None, record.rrn)
            and query.stan in (None, record.stan)
            and query.batch_number in (None, record.batch_number)
            and query.auth_code in (None, record.auth_code)
            and (query.created_from is None or query.created_from <= record.created_at)
            and (query.created_before is None or record.created_at < query.created_before)
        ):
            reversed_ = any(
                row.original_rrn == record.rrn and row.kind is Kind.REVERSAL and row.status is Status.APPROVED
                for row in ledger.transactions
            )
            return Original(
                record, batch_settled=_settled(ledger, (record.tid, record.mid, record.batch_number)),
                refused_void_attempts=refused_voids(ledger, record.rrn), effective_reversal=reversed_,
                closed_by=closed_by(ledger, record.rrn), adjusted_minor=adjusted(ledger, record.rrn),
                tip_minor=tipped(ledger, record.rrn),
            )  # fmt: skip
    return None


def refused_voids(ledger: Ledger, original_rrn: str) -> int:
    return sum(
        1 for row in ledger.transactions
        if row.original_rrn == original_rrn and row.kind in VOID_KINDS and row.status is Status.DECLINED
    )  # fmt: skip


def closed_by(ledger: Ledger, original_rrn: str) -> Kind | None:
    """``sql._SELECT_ORIGINAL``'s closed_by: the (first by name) approved pre-auth void or completion naming it."""
    kinds = [row.kind for row in ledger.transactions
             if row.original_rrn == original_rrn and row.kind in CLOSING_KINDS and row.status is Status.APPROVED]
    return min(kinds, key=lambda kind: kind.value) if kinds else None


def _amending(ledger: Ledger, original_rrn: str, kind: Kind) -> list[int]:
    return [row.amount_minor for row in ledger.transactions
            if row.original_rrn == original_rrn and row.kind is kind and row.status is Status.APPROVED]  # fmt: skip


def adjusted(ledger: Ledger, original_rrn: str) -> int | None:
    """``sql._ADJUSTED``: the amount of the newest approved adjust naming the sale."""
    amounts = _amending(ledger, original_rrn, Kind.ADJUST)
    return amounts[-1] if amounts else None


def tipped(ledger: Ledger, original_rrn: str) -> int | None:
    """``sql._TIPPED``: the sum of the approved tips naming the sale."""
    amounts = _amending(ledger, original_rrn, Kind.TIP)
    return sum(amounts) if amounts else None


def effective_minor(ledger: Ledger, row: TransactionRecord) -> int:
    """``sql.effective_minor``: adjusted, plus the tip."""
    base = adjusted(ledger, row.rrn)
    return (row.amount_minor if base is None else base) + (tipped(ledger, row.rrn) or 0)


def count_voids(ledger: Ledger, tid: str, mid: str, since: datetime) -> int:
    """``sql.COUNT_VOIDS``: approved voids of the terminal created at or after ``since``."""
    return sum(
        1 for row in ledger.transactions
        if (row.tid, row.mid) == (tid, mid) and row.kind is Kind.VOID and row.status is Status.APPROVED
        and row.created_at >= since
    )  # fmt: skip


def _is_debit(row: TransactionRecord) -> bool:
    return row.kind in DEBIT_KINDS and row.status in DEBIT_STATUSES


def batch_totals(ledger: Ledger, key: BatchKey) -> BatchTotals:
    """``sql.BATCH_TOTALS``: gross totals, split into domestic (masked PAN from BIN 62) and foreign cards."""
    sides = {False: Totals(), True: Totals()}
    for row in _rows_of_batch(ledger, key):
        foreign = row.card is not None and not row.card.masked_pan.startswith("62")  # no card (QR): domestic
        if _is_debit(row):
            sides[foreign] += Totals(debit_count=1, debit_minor=effective_minor(ledger, row))
        elif row.kind in CREDIT_KINDS and row.status is Status.APPROVED:
            sides[foreign] += Totals(credit_count=1, credit_minor=row.amount_minor)
    return BatchTotals(domestic=sides[False], foreign=sides[True])


def batch_items(ledger: Ledger, key: BatchKey) -> tuple[BatchItem, ...]:
    """``sql.BATCH_ITEMS``: the batch's debits in STAN order, what the terminal is expected to upload."""
    items = [
        BatchItem(row.stan, effective_minor(ledger, row), row.card.masked_pan if row.card else None, row.rrn)
        for row in _rows_of_batch(ledger, key)
        if _is_debit(row)
    ]
    return tuple(sorted(items, key=lambda item: item.stan))


def _as_read(item: BatchItem) -> BatchItem:
    """``sql.BATCH_UPLOADED``: an uploaded record is read back without an RRN (the table keeps none)."""
    return BatchItem(item.stan, item.amount_minor, item.masked_pan, None)


def _rows_of_batch(ledger: Ledger, key: BatchKey) -> list[TransactionRecord]:
    return [
        row for row in ledger.transactions
        if (row.tid, row.mid, row.batch_number) == key and row.kind is not Kind.REVERSAL
    ]  # fmt: skip


def _row_index(ledger: Ledger, rrn: str, missing: ConflictError) -> int:
    """Where the row with this RRN is; an UPDATE of a row that is not there changes none: ``missing``."""
    for index, row in enumerate(ledger.transactions):
        if row.rrn == rrn:
            return index
    raise missing


def _settled(ledger: Ledger, key: BatchKey) -> bool:
    row = ledger.batches.get(key)
    return row is not None and row.status == "settled"


def _terminal(ledger: Ledger, tid: str, mid: str) -> TerminalRecord:
    """The terminal's row; an UPDATE of an unregistered terminal changes no row (sql.condition_error)."""
    record = ledger.terminals.get((tid, mid))
    if record is None:
        raise StoreError(f"ledger write failed: terminal {tid} is not registered in the ledger")
    return record
