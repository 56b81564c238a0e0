"""What every flow takes and returns. A flow is a pure function: (request, context) → Decision."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from iso_host.core.rules import Attempt, RuleSettings
from iso_host.core.terminals import WorkingKeys
from iso_host.core.test_cards import HoldChange, TestCard
from iso_host.ledger.model import (
    BatchItem,
    BatchTotals,
    Card,
    LedgerCommand,
    LedgerView,
    OriginalQuery,
    TransactionRecord,
)
from iso_host.security import IccKey
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import Dialect, KindRule

MAX_COMMANDS_PER_DECISION = 8


@dataclass(frozen=True, slots=True)
class ChipData:
    """What admission keeps of a request's field 55 (ICC data, EMV TLV): the data objects an application cryptogram
    is computed over, 9F10, the cryptogram (9F26) and its type (9F27), never 5A (PAN) or 57 (track 2 equivalent);
    and, when there is an ARQC to verify and the test card has an issuer master key, the card's ICC key, derived
    from it in admission while the PAN was in clear."""

    tags: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)  # (tag in upper-case hex, value), in order
    icc_key: IccKey | None = None  # its repr shows the scheme only
    counter_key: str | None = None  # with icc_key: the card's keyed PAN hash and PAN sequence number, for its ATC
    highest_atc: int | None = None  # with icc_key: the highest ATC of the card's ARQCs that verified (None: none yet)

    def values(self) -> dict[str, bytes]:
        """Tag -> value, as ``security.emv`` computes over them."""
        return dict(self.tags)


@dataclass(frozen=True, slots=True)
class Request:
    """A classified, validated request from a known terminal: what flows decide from, read once in admission.
    Holds no clear card data (no PAN, track, PIN block): the card is masked and hashed."""

    kind: Kind
    mti: str
    processing_code: str  # F3 as sent ("" when absent)
    tid: str
    mid: str
    batch_number: int
    stan: str
    amount_minor: int | None
    currency: str
    card: Card | None
    pin_incorrect: bool = False  # F52 carried a PIN the test card table does not know for this card
    pin_blocked: bool = False  # F52 came for a card that took [rules] pin_tries wrong PINs (PIN_TRIES_EXCEEDED)
    test_card: TestCard | None = None  # the configured test card with this PAN (its balance at this moment)
    operator: str | None = None  # where the dialect carries one (CUP F63)
    operator_permitted: bool = True  # may this operator void (terminal configuration)
    original_date_mmdd: str | None = None  # CUP refunds name the original's date (61.3)
    original_auth_code: str | None = None  # CUP pre-auth voids and completions name the pre-auth's approval code (F38)
    open_batch: int = 1  # the batch the host holds open for this terminal
    batch_named: bool = False  # the terminal named its batch (else the host chose it: the one it holds open)
    key_layout: str | None = None  # sign-on: the key-block layout the terminal asks for (CUP 60.3)
    name: str = ""  # what the dialect calls this kind (a generic flow's kind has a name of its own)
    rule: KindRule | None = None  # the dialect's entry for the kind: a generic flow's reply fields and download
    download_ask: tuple[tuple[str, bytes], ...] = ()  # the download kinds: the tags the request's TLV asks with
    merchant_name: str | None = None  # the terminal's own (configuration), for a parameter download
    terminal_totals: BatchTotals | None = None  # settlement: what the terminal counted
    after_upload: bool = False  # iso87 settlement 96xxxx: the upload is over
    upload: tuple[tuple[BatchItem, str | None, bool], ...] | None = None  # batch upload: (item, PAN hash, foreign)
    original_queries: tuple[OriginalQuery, ...] = ()  # void, reversal, refund: how the request names its original
    chip: ChipData | None = None  # field 55, when the request carried it (a chip card's sale or pre-auth)

    def attempt(self) -> Attempt:
        """What the eligibility rules see of a void, reversal or refund."""
        assert self.amount_minor is not None, "the pipeline requires F4 for these kinds"
        named_rrn = next((query.rrn for query in self.original_queries if query.rrn is not None), None)
        return Attempt(self.amount_minor, self.card.pan_hash if self.card else None, self.operator_permitted,
                       self.original_auth_code, named_rrn, self.batch_number)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Context:
    """What the host hands a flow besides the request: the time, fresh references and fresh keys."""

    now: datetime
    rrn: str | None
    dialect: Dialect
    rules: RuleSettings = field(default_factory=RuleSettings)
    tmk: bytes | None = field(default=None, repr=False)  # sign-on only: the terminal's master key
    fresh_keys: WorkingKeys | None = None  # sign-on only: random double-length keys to issue

    def __post_init__(self) -> None:
        assert self.now.tzinfo is not None, "flows compute with aware times only"


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """The terminal's new session after sign-on or sign-off."""

    signed_on: bool
    keys: WorkingKeys
    batch_number: int
    operator: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A flow's answer: why, which response fields to set, and what the ledger must record first."""

    reason: Reason
    fields: dict[str, str] = field(default_factory=dict)
    commands: tuple[LedgerCommand, ...] = ()
    session: SessionUpdate | None = None  # applied to the terminal in memory once the commands are committed
    next_batch: int | None = None  # settlement closed the batch: the terminal's open batch from now on
    balance_changes: tuple[tuple[str, int], ...] = ()  # (PAN hash, minor units) for test cards, after the commit
    holds: tuple[HoldChange, ...] = ()  # pre-auth holds on test cards to add or release, after the commit
    chip_counters: tuple[tuple[str, int], ...] = ()  # (ChipData.counter_key, ATC) of a verified ARQC, after the commit
    response_code: str | None = None  # a scenario's forced code, instead of the dialect's for the reason
    # Why a rule refused, in words an operator reads (the console's inspector, the log line's detail): the rule's
    # name and the values it compared, e.g. "void refused: VOID_WINDOW_EXPIRED (sale at 10:02, window 30 min)".
    detail: str | None = None

    def code(self, dialect: Dialect) -> str:
        """Field 39: a scenario's forced code, else the dialect's code for the reason."""
        return self.response_code or dialect.response_code(self.reason)

    def __post_init__(self) -> None:
        assert len(self.commands) <= MAX_COMMANDS_PER_DECISION
        assert "39" not in self.fields, "field 39 comes from the dialect's reason table"


Flow = Callable[[Request, LedgerView, Context], Decision]
NO_VIEW = LedgerView()


def authorization_code(rrn: str) -> str:
    """A six-digit approval code derived from the RRN, so replays of one ledger see the same codes."""
    digest = hashlib.sha256(rrn.encode("ascii")).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 1_000_000:06d}"


def new_record(request: Request, context: Context, reason: Reason, *, original_rrn: str | None = None,
               amount_minor: int | None = None, response_code: str | None = None) -> TransactionRecord:  # fmt: skip
    """The ledger row for this request: APPROVED or DECLINED with its reason and response code."""
    assert context.rrn is not None, "the pipeline allocates an RRN for every financial request"
    amount = request.amount_minor if amount_minor is None else amount_minor
    assert amount is not None
    return TransactionRecord(
        kind=request.kind, tid=request.tid, mid=request.mid, batch_number=request.batch_number, stan=request.stan,
        rrn=context.rrn, auth_code=authorization_code(context.rrn) if reason is Reason.APPROVED else "",
        amount_minor=amount, currency=request.currency, card=request.card,
        status=Status.APPROVED if reason is Reason.APPROVED else Status.DECLINED,
        response_code=response_code or context.dialect.response_code(reason), reason=reason, mti=request.mti,
        processing_code=request.processing_code, created_at=context.now, original_rrn=original_rrn,
        operator=request.operator,
    )  # fmt: skip


def batch_out_of_sync(context: Context) -> Decision:
    """The answer to a request that names a batch which has settled: nothing more is written into it, and the
    terminal learns that its batch is not the host's (CUP 77: settle or sign on again)."""
    return Decision(Reason.BATCH_OUT_OF_SYNC, reply_fields(context))


def hhmmss(moment: datetime) -> str:
    """F12, local time: ``strftime("%H%M%S")`` at a sixth of its cost."""
    return f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"


def mmdd(moment: datetime) -> str:
    """F13, local date: ``strftime("%m%d")``."""
    return f"{moment.month:02d}{moment.day:02d}"


def reply_fields(context: Context, record: TransactionRecord | None = None) -> dict[str, str]:
    """Host time, and for a recorded transaction its RRN and (when approved) its approval code."""
    fields = {"12": hhmmss(context.now), "13": mmdd(context.now)}
    if record is not None:
        fields["37"] = record.rrn
        if record.auth_code:
            fields["38"] = record.auth_code
    return fields
