"""Ledger values: what a flow may ask the store to record. Plain data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from iso_host.vocab import Kind, Reason, Status


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    """Which transactions ``Store.transactions`` lists (the operator's ``ledger list``)."""

    tid: str | None = None
    batch_number: int | None = None
    status: Status | None = None
    limit: int = 1_000


@dataclass(frozen=True, slots=True)
class Card:
    """A card as the ledger may know it: never the clear PAN, track data, PIN block or CVV."""

    masked_pan: str
    pan_hash: str


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One financial transaction, as written to and read from the ledger."""

    kind: Kind
    tid: str
    mid: str
    batch_number: int
    stan: str
    rrn: str
    auth_code: str
    amount_minor: int
    currency: str
    card: Card | None
    status: Status
    response_code: str
    reason: Reason
    mti: str
    processing_code: str
    created_at: datetime
    original_rrn: str | None = None
    refunded_minor: int = 0  # of a sale: how much of it has been refunded so far
    operator: str | None = None

    def __post_init__(self) -> None:
        assert self.amount_minor >= 0, "amounts are unsigned minor units"
        assert 0 <= self.refunded_minor <= self.amount_minor, "a sale is refunded at most in full"
        assert len(self.rrn) == 12, "an RRN is 12 characters (ISO 8583:1987 field 37)"
        assert self.created_at.tzinfo is not None, "ledger times are timezone-aware"


@dataclass(frozen=True, slots=True)
class RecordTransaction:
    """Ledger command: insert a transaction row."""

    transaction: TransactionRecord


@dataclass(frozen=True, slots=True)
class ChangeStatus:
    """Ledger command: move a transaction from one status to another, only if it still has ``expected``.

    The condition is checked by the database in the same transaction, so of two hosts racing to cancel
    one sale exactly one succeeds; the other gets ``ConflictError`` and decides again.
    """

    rrn: str
    expected: Status
    new: Status
    at: datetime


@dataclass(frozen=True, slots=True)
class RecordRefund:
    """Ledger command: add a refund to a sale whose refunded amount is still ``expected_refunded_minor``."""

    rrn: str
    expected_refunded_minor: int
    refunded_minor: int
    new_status: Status
    at: datetime

    def __post_init__(self) -> None:
        assert self.refunded_minor > self.expected_refunded_minor, "a refund refunds something"


@dataclass(frozen=True, slots=True)
class SaveSession:
    """Ledger command: a terminal signed on (working keys wrapped under its TMK) or off (no keys)."""

    tid: str
    mid: str
    signed_on: bool
    batch_number: int
    operator: str | None
    tpk_under_tmk: bytes | None
    tak_under_tmk: bytes | None
    tdk_under_tmk: bytes | None
    at: datetime
    # Whether the terminal has been keyed, so that it must MAC until an operator resets it: True at sign-on, False
    # only by an operator's reset; None leaves it as it is (a sign-off).
    keyed: bool | None = None
    # The check values of the clear keys (E(key, zeros), 3 bytes): the host checks the keys it unwraps at start
    tpk_kcv: bytes | None = None
    tak_kcv: bytes | None = None
    tdk_kcv: bytes | None = None

    def __post_init__(self) -> None:
        assert self.signed_on or self.tak_under_tmk is None, "a signed-off terminal keeps no keys"
        assert (self.tak_kcv is None) or (self.tak_under_tmk is not None), "a check value goes with its key"


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    """A terminal's row: its open batch and its session, keys still wrapped under the TMK."""

    batch_number: int
    signed_on: bool = False
    operator: str | None = None
    tpk_under_tmk: bytes | None = None
    tak_under_tmk: bytes | None = None
    tdk_under_tmk: bytes | None = None
    keyed: bool = False  # signed on at least once since an operator last reset it: its MACs are mandatory
    tpk_kcv: bytes | None = None  # the clear keys' check values (None: no key, or a session stored before schema v8)
    tak_kcv: bytes | None = None
    tdk_kcv: bytes | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """A transaction a void, reversal or refund refers to, with what the rules need to know about it."""

    record: TransactionRecord
    batch_settled: bool = False
    refused_void_attempts: int = 0
    effective_reversal: bool = False  # an approved reversal already points at it
    # A pre-auth: the kind of the approved row that closed it (a pre-auth void or a completion), None while open.
    # A pre-auth's own row never changes for these (its batch may have settled): its state is read from them.
    closed_by: Kind | None = None
    # A sale: the amount of the newest approved adjust naming it (an offline sale the merchant corrected), and the
    # sum of the approved tips naming it (at most one); None when there is none. Its own row never changes for them.
    adjusted_minor: int | None = None
    tip_minor: int | None = None

    @property
    def base_minor(self) -> int:
        """The sale's amount as the newest adjust left it (its own amount when it was never adjusted)."""
        return self.record.amount_minor if self.adjusted_minor is None else self.adjusted_minor

    @property
    def effective_minor(self) -> int:
        """What the sale is worth in its batch's totals and upload: its adjusted amount plus its tip (sql.py
        ``effective_minor``). Its own amount for every row without an adjust or a tip."""
        return self.base_minor + (self.tip_minor or 0)


@dataclass(frozen=True, slots=True)
class OriginalQuery:
    """How a request names its original; always within one terminal and merchant."""

    tid: str
    mid: str
    rrn: str | None = None
    stan: str | None = None
    batch_number: int | None = None
    auth_code: str | None = None  # CUP F38: a pre-auth is named by its approval code (and its date)
    date_mmdd: str | None = None  # CUP 61.3: the original's local date as the terminal names it
    # The date as times: the host turns ``date_mmdd`` into them (core/originals.py named_day); the store reads only
    # these.
    created_from: datetime | None = None
    created_before: datetime | None = None

    def __post_init__(self) -> None:
        named = (self.rrn, self.stan, self.auth_code)
        assert any(value is not None for value in named), "an original is named by RRN, STAN or approval code"
        assert (self.created_from is None) == (self.created_before is None), "a day has a start and an end"


@dataclass(frozen=True, slots=True)
class LedgerView:
    """What a flow may know of the ledger when it decides; loaded by the host, never by the flow."""

    original: Original | None = None
    voids_today: int = 0  # approved voids of this terminal in the current business day
    batch: BatchView | None = None  # settlement and batch upload
    # The batch the request names has settled: nothing more may be written into it. Loaded when the request
    # names another batch than the one the host holds open, and whenever the ledger refused a write for it.
    request_batch_settled: bool = False
    # What the original itself names, and what that names in turn, where cancelling or reversing the original
    # reaches past it (KINDS ``linked``): a completion's pre-auth; a completion void's completion, then its pre-auth.
    lineage: tuple[Original, ...] = ()


@dataclass(frozen=True, slots=True)
class Totals:
    """Gross batch totals, CUP convention: debits = approved sales and completions (a voided one stays), credits =
    approved voids, completion voids and refunds; pre-auths and reversed transactions count nowhere. A sale counts
    at its effective amount (adjusted, plus its tip); adjusts and tips count no row of their own. Amounts in
    minor units."""

    debit_count: int = 0
    debit_minor: int = 0
    credit_count: int = 0
    credit_minor: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.debit_count + other.debit_count, self.debit_minor + other.debit_minor,
                      self.credit_count + other.credit_count, self.credit_minor + other.credit_minor)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchTotals:
    """A batch's totals split as CUP splits them: domestic (UnionPay, BIN 62) and foreign cards."""

    domestic: Totals = Totals()
    foreign: Totals = Totals()

    @property
    def overall(self) -> Totals:
        return self.domestic + self.foreign

    def __add__(self, other: BatchTotals) -> BatchTotals:
        return BatchTotals(self.domestic + other.domestic, self.foreign + other.foreign)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One transaction of a batch as either side knows it, for finding differences after an upload."""

    stan: str
    amount_minor: int
    masked_pan: str | None = None
    rrn: str | None = None


class Difference(enum.StrEnum):
    MISSING_ON_HOST = "missing_on_host"  # the terminal uploaded it; the host never approved it
    MISSING_ON_TERMINAL = "missing_on_terminal"  # the host approved it; the terminal did not upload it
    AMOUNT_DIFFERS = "amount_differs"


@dataclass(frozen=True, slots=True)
class BatchDifference:
    stan: str
    difference: Difference
    host_amount_minor: int | None
    terminal_amount_minor: int | None
    rrn: str | None = None
    masked_pan: str | None = None


@dataclass(frozen=True, slots=True)
class BatchView:
    """What settlement decides from: the batch's state, the host's totals, what the terminal uploaded."""

    tid: str
    mid: str
    batch_number: int
    status: str  # open | uploading | settled
    host_totals: BatchTotals
    host_items: tuple[BatchItem, ...] = ()  # loaded only at the end of an upload
    uploaded: tuple[BatchItem, ...] = ()
    # What the settlement that closed (or began to upload) the batch recorded, to answer its repeat alike.
    settled_host_totals_json: str | None = None
    settled_terminal_totals_json: str | None = None
    # The store's mark of the snapshot the view was read from (SQLite: which writes it holds), handed on in
    # ExpectBatchTotals; opaque, and no part of what the view says.
    snapshot: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SettleBatch:
    """Ledger command: record a settlement attempt; close the batch and open the next, or start an upload.

    Only a batch that is not settled yet can be settled (the database checks), so a repeated 0500 cannot
    close a batch twice.
    """

    tid: str
    mid: str
    batch_number: int
    result: str  # balanced | out_of_balance
    close: bool  # True: status settled and the terminal's open batch becomes batch_number + 1
    host_totals_json: str
    terminal_totals_json: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AdvanceBatch:
    """Ledger command: the terminal's open batch becomes ``batch_number`` (after a settled batch)."""

    tid: str
    mid: str
    batch_number: int


@dataclass(frozen=True, slots=True)
class RecordUpload:
    """Ledger command: keep uploaded batch records (a record sent again replaces the first copy)."""

    tid: str
    mid: str
    batch_number: int
    items: tuple[tuple[BatchItem, str | None, bool], ...]  # (item, pan hash, foreign card)
    at: datetime


@dataclass(frozen=True, slots=True)
class RecordDifferences:
    tid: str
    mid: str
    batch_number: int
    differences: tuple[BatchDifference, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """Ledger command: put an event in the outbox, in the same transaction as the change it tells of.

    ``payload`` is the event's JSON text, written once: the relay publishes exactly these bytes, so a
    re-published event is the same event (same ``event_id``) and consumers can de-duplicate.
    """

    event_id: str
    tid: str | None  # None: a host-wide event (a control change that names no terminal)
    kind: str
    payload: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An outbox row the relay has not yet had acknowledged by the broker."""

    id: int  # outbox order: the order events were committed in
    event_id: str
    tid: str | None
    kind: str
    payload: str


@dataclass(frozen=True, slots=True)
class ExpectRefusedVoids:
    """Precondition: the original still has exactly ``count`` refused void attempts.

    A void is decided from the count the view showed (the refused-attempt limit); if another attempt committed
    meanwhile, the store refuses the whole decision with ``ConflictError`` and the request decides again.
    """

    original_rrn: str
    count: int


@dataclass(frozen=True, slots=True)
class ExpectVoidsSince:
    """Precondition: the terminal still has exactly ``count`` approved voids since ``since`` (per-day limit)."""

    tid: str
    mid: str
    since: datetime
    count: int


@dataclass(frozen=True, slots=True)
class ExpectBatchTotals:
    """Precondition: the batch's host totals are still ``totals``, the ones its settlement compared.

    A sale or void that committed while the settlement compared makes the settlement decide again. ``snapshot``
    (the view's) lets a store that knows nothing of the terminal was written since skip summing the batch again.
    """

    tid: str
    mid: str
    batch_number: int
    totals: BatchTotals
    snapshot: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ExpectPreauthOpen:
    """Precondition: the pre-auth is still open: APPROVED, and no approved pre-auth void or completion names it.

    A completion or pre-auth void closes its pre-auth by naming it, without changing the pre-auth's row; of two
    racing to close one pre-auth (on two hosts), the second finds it closed and decides again.
    """

    preauth_rrn: str


@dataclass(frozen=True, slots=True)
class ExpectAmendable:
    """Precondition: the sale is still APPROVED (not voided, refunded or reversed) and still worth
    ``effective_minor`` (no adjust or tip committed since the view).

    An adjust or a tip changes what its sale is worth by naming it, without changing the sale's row; of two racing
    tips (on two hosts) the second finds the sale changed and decides again (and is refused: tipped already).
    """

    sale_rrn: str
    effective_minor: int


Precondition = ExpectRefusedVoids | ExpectVoidsSince | ExpectBatchTotals | ExpectPreauthOpen | ExpectAmendable
PRECONDITIONS: Final = (ExpectRefusedVoids, ExpectVoidsSince, ExpectBatchTotals, ExpectPreauthOpen, ExpectAmendable)

LedgerCommand = (
    RecordTransaction
    | SaveSession
    | ChangeStatus
    | RecordRefund
    | SettleBatch
    | AdvanceBatch
    | RecordUpload
    | RecordDifferences
    | RecordEvent
    | ExpectRefusedVoids
    | ExpectVoidsSince
    | ExpectBatchTotals
    | ExpectPreauthOpen
    | ExpectAmendable
)


def command_terminal(command: LedgerCommand) -> tuple[str, str] | None:
    """The terminal whose ledger state a command reads or writes; None for host-wide and rrn-only commands.

    Writes of one terminal are serialised in the database (PostgreSQL locks the terminal's row first), so a
    precondition checked inside the transaction cannot be overtaken by another host's commit.
    """
    match command:
        case RecordTransaction():
            return command.transaction.tid, command.transaction.mid
        case (
            SaveSession()
            | SettleBatch()
            | AdvanceBatch()
            | RecordUpload()
            | RecordDifferences()
            | ExpectVoidsSince()
            | ExpectBatchTotals()
        ):
            return command.tid, command.mid
        case _:
            return None
