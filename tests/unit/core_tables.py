"""The one place unit tests build core objects: requests, contexts, originals, views, terminals, hosts.

Tests of the rules, flows, admission and pipeline build everything through these functions and reach the flows
only through ``flow(kind)``, so that a change in how the core spells a ``Request``, a ``Host`` or its flow table
is one edit here. Every builder takes keyword overrides of the one object it builds; the defaults describe one
terminal, one card and one approved sale of the open batch, five minutes before ``NOW``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from log_audit import remember_secret

from iso_host.cards import mask_pan, pan_hash
from iso_host.core.admission import Admission
from iso_host.core.flows import FLOWS, KINDS, Context, Flow, Request
from iso_host.core.pipeline import Host
from iso_host.core.rules import Attempt, RuleSettings
from iso_host.core.scenarios import Scenario, ScenarioBook
from iso_host.core.terminals import TerminalState, WorkingKeys, random_working_keys
from iso_host.core.test_cards import CardBook, TestCard
from iso_host.events.record import EventSink
from iso_host.ledger.model import (
    BatchTotals,
    BatchView,
    Card,
    LedgerView,
    Original,
    OriginalQuery,
    Totals,
    TransactionRecord,
)
from iso_host.ledger.store import Store
from iso_host.terminal.client import MacKeys, TerminalClient
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import Message, builtin_dialect_names, load_dialect

NOW: Final = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # STYLE.md's NOW, at noon: no business-day edge nearby
TID: Final = "TERM0001"
MID: Final = "MERCHANT0000001"
BATCH: Final = 1  # the batch a freshly registered terminal holds open
PAN: Final = "4761739001010010"
OTHER_PAN: Final = "4000000000000002"
PAN_HASH_KEY: Final = b"memory-store-pan-hash-key"  # MemoryStore's default, so cards built here match its hashes
CARD: Final = Card(mask_pan(PAN), pan_hash(PAN, PAN_HASH_KEY))
OTHER_CARD: Final = Card(mask_pan(OTHER_PAN), pan_hash(OTHER_PAN, PAN_HASH_KEY))
SALE_RRN: Final = "000000000007"  # the original's
NEW_RRN: Final = "000000000042"  # the one the host hands the request being decided
SALE_STAN: Final = "000007"
AMOUNT: Final = 1_000
# The flows and rules compute business days in this zone; left to None they would use the machine's.
RULES: Final = RuleSettings(timezone=ZoneInfo("UTC"))
DIALECTS: Final = {name: load_dialect(name) for name in builtin_dialect_names()}
HOST_TOTALS: Final = BatchTotals(foreign=Totals(debit_count=1, debit_minor=AMOUNT))

# Fixed double-length keys (odd parity), registered so the run's log audit fails if one is ever logged.
TMK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TAK: Final = bytes.fromhex("3D3D3D3D3D3D3D3D4C4C4C4C4C4C4C4C")
TPK: Final = bytes.fromhex("1010101010101010A1A1A1A1A1A1A1A1")
BDK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # ANSI X9.24-1 Annex A test BDK
remember_secret(TMK, TAK, TPK, BDK, PAN, OTHER_PAN)

# How each kind is spelled on an iso87 wire (the flows record the MTI and processing code of what they decide).
WIRE_NAMES: Final = {
    Kind.SALE: ("0200", "000000"), Kind.VOID: ("0200", "020000"), Kind.REFUND: ("0200", "200000"),
    Kind.REVERSAL: ("0400", "000000"), Kind.SETTLEMENT: ("0500", "920000"), Kind.BATCH_UPLOAD: ("0320", "000000"),
    Kind.UPLOAD_END: ("0320", ""), Kind.ECHO: ("0800", ""), Kind.SIGNON: ("0800", ""), Kind.SIGNOFF: ("0800", ""),
    Kind.BALANCE: ("0200", "310000"),
    Kind.ANSWER: ("0820", ""), Kind.DOWNLOAD_STATUS: ("0820", ""), Kind.DOWNLOAD: ("0800", ""),
    Kind.DOWNLOAD_END: ("0800", ""), Kind.PARAMETERS: ("0800", ""),
    Kind.PREAUTH: ("0100", "030000"), Kind.PREAUTH_VOID: ("0100", "200000"), Kind.COMPLETION: ("0200", "000000"),
    Kind.COMPLETION_VOID: ("0200", "200000"), Kind.ADJUST: ("0220", "000000"), Kind.TIP: ("0220", "000000"),
}  # fmt: skip
assert set(WIRE_NAMES) == set(Kind), "every kind has its spelling here"
ORIGINAL_FLAGS: Final = frozenset(
    {"batch_settled", "refused_void_attempts", "effective_reversal", "closed_by", "adjusted_minor", "tip_minor"}
)


def flow(kind: Kind) -> Flow:
    """The flow the pipeline routes ``kind`` to."""
    return FLOWS[kind]


def request(kind: Kind = Kind.SALE, **overrides: Any) -> Request:
    """A validated request of ``kind`` from ``TID``, paid with ``CARD``, naming the sale ``SALE_RRN`` if it names one
    (a reversal by its STAN, as iso87 F11 does); ``mti`` and ``processing_code`` are spelled as iso87 spells them."""
    mti, processing_code = WIRE_NAMES[kind]
    values: dict[str, Any] = {
        "kind": kind, "mti": mti, "processing_code": processing_code, "tid": TID, "mid": MID, "batch_number": BATCH,
        "open_batch": BATCH, "stan": "000042", "amount_minor": AMOUNT, "currency": "840", "card": CARD,
    }  # fmt: skip
    if KINDS[kind].original:
        by_rrn = OriginalQuery(TID, MID, rrn=SALE_RRN)
        values["original_queries"] = (OriginalQuery(TID, MID, stan=SALE_STAN),) if kind is Kind.REVERSAL else (by_rrn,)
    if kind is Kind.SETTLEMENT:
        values["terminal_totals"] = HOST_TOTALS
    if kind is Kind.BATCH_UPLOAD:
        values["upload"] = ()
    return Request(**(values | overrides))


def rules(**overrides: Any) -> RuleSettings:
    """The ``[rules]`` table: defaults, business days in UTC, and ``overrides``."""
    return dataclasses.replace(RULES, **overrides)


def attempt(**overrides: Any) -> Attempt:
    """What the eligibility rules see of a void or refund: ``AMOUNT`` on ``CARD`` by a permitted operator."""
    values: dict[str, Any] = {"amount_minor": AMOUNT, "pan_hash": CARD.pan_hash, "operator_permitted": True}
    return Attempt(**(values | overrides))


def context(now: datetime = NOW, *, rules: RuleSettings = RULES, dialect: str = "iso87binary",
            rrn: str | None = NEW_RRN) -> Context:  # fmt: skip
    """What the host hands a flow: ``now``, a fresh RRN, the dialect and the rules."""
    return Context(now=now, rrn=rrn, dialect=DIALECTS[dialect], rules=rules)


SALE_RECORD: Final = TransactionRecord(
    kind=Kind.SALE, tid=TID, mid=MID, batch_number=BATCH, stan=SALE_STAN, rrn=SALE_RRN, auth_code="123456",
    amount_minor=AMOUNT, currency="840", card=CARD, status=Status.APPROVED, response_code="00",
    reason=Reason.APPROVED, mti="0200", processing_code="000000", created_at=NOW - timedelta(minutes=5),
)  # fmt: skip


def record(**overrides: Any) -> TransactionRecord:
    """A ledger row: the approved sale ``SALE_RRN`` unless overridden."""
    return dataclasses.replace(SALE_RECORD, **overrides)


def original(**overrides: Any) -> Original:
    """The original as the view shows it; overrides name ``TransactionRecord`` or ``Original`` fields."""
    flags = {name: overrides.pop(name) for name in list(overrides) if name in ORIGINAL_FLAGS}
    return Original(record(**overrides), **flags)


def view(original: Original | None = None, **overrides: Any) -> LedgerView:
    """What the flow may know of the ledger: the original, the voids today, the batch, whether it has settled."""
    return LedgerView(original, **overrides)


def batch(status: str = "open", **overrides: Any) -> BatchView:
    """The batch ``BATCH`` of ``TID`` with one sale in it, as settlement sees it."""
    values: dict[str, Any] = {"tid": TID, "mid": MID, "batch_number": BATCH, "status": status,
                              "host_totals": HOST_TOTALS}  # fmt: skip
    return BatchView(**(values | overrides))


def terminal(**overrides: Any) -> TerminalState:
    """``TID`` as configured: its TMK, the batch a new ledger holds open, nothing else."""
    values: dict[str, Any] = {"tid": TID, "mid": MID, "batch_number": BATCH, "tmk": TMK}
    return TerminalState(**(values | overrides))


def keyed_terminal(dialect_name: str, **overrides: Any) -> TerminalState:
    """A terminal able to MAC in ``dialect_name``: signed on with ``TAK``/``TPK`` where it must sign on, else with
    them as static keys."""
    keys = WorkingKeys(tpk=TPK, tak=TAK)
    if DIALECTS[dialect_name].security.require_signon:
        return terminal(**({"signed_on": True, "session_keys": keys} | overrides))
    return terminal(**({"static_keys": keys} | overrides))


def mac_keys(dialect_name: str, key: bytes = TAK) -> MacKeys:
    """How a terminal holding ``key`` MACs its requests in this dialect."""
    algorithm = DIALECTS[dialect_name].security.mac_algorithm
    assert algorithm is not None
    return MacKeys(algorithm, key, key)


def client(dialect_name: str, tid: str = TID, mid: str = MID) -> TerminalClient:
    """A terminal that builds and frames requests; it is never connected."""
    return TerminalClient(DIALECTS[dialect_name], tid, mid)


def message(dialect_name: str, template: str, *, sender: TerminalClient | None = None, **values: Any) -> Message:
    """A request built from the dialect's template as a terminal builds it (``sender``'s next STAN, else STAN 1),
    for ``PAN``, ``AMOUNT`` and ``BATCH`` unless ``values`` say otherwise."""
    defaults: dict[str, Any] = {"pan": PAN, "amount": AMOUNT, "batch": BATCH}
    return (sender or client(dialect_name)).build(template, NOW, **(defaults | values))


def frame_body(dialect_name: str, request_message: Message, mac: MacKeys | None = None) -> bytes:
    """What ``Host.handle`` takes: the frame without its length header (TPDU and header included), MAC'd with
    ``mac`` if given. ``request_message`` is left as it was."""
    framed = client(dialect_name).frame(Message(request_message.mti, dict(request_message.fields)), mac)
    return framed[DIALECTS[dialect_name].length_header.size_bytes :]


def admission(dialect_name: str, terminals: dict[str, TerminalState] | None = None,
              cards: CardBook | None = None) -> Admission:  # fmt: skip
    """The admission checks of a dialect for ``terminals`` (default: one plain ``terminal()``)."""
    known = terminals if terminals is not None else {TID: terminal()}
    return Admission(DIALECTS[dialect_name], known, cards if cards is not None else card_book())


def card_book(cards: dict[str, TestCard] | None = None, key: bytes = PAN_HASH_KEY) -> CardBook:
    return CardBook((cards or {}).items(), lambda pan: pan_hash(pan, key))


class Ticks:
    """A monotonic clock that moves only when told, for deadlines without waiting."""

    def __init__(self, start_s: float = 1_000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.now_s += seconds


def host(
    dialect_name: str, store: Store, *, terminals: dict[str, TerminalState] | None = None,
    clock: Callable[[], datetime] = lambda: NOW, monotonic: Callable[[], float] = time.monotonic,
    rules: RuleSettings = RULES, cards: dict[str, TestCard] | None = None, scenarios: tuple[Scenario, ...] = (),
    events: EventSink | None = None, ledger_deadline_s: float = 5.0,
) -> Host:  # fmt: skip
    """A host as ``iso-host serve`` builds one, without socket and without locks (one request at a time here).

    Deadlines are read on ``monotonic``, which must be the clock the store reads them on: a test that moves time
    hands the same ``Ticks`` to both."""
    known = terminals if terminals is not None else {TID: keyed_terminal(dialect_name)}
    return Host(
        DIALECTS[dialect_name], store, known, clock, monotonic=monotonic,
        cards=card_book(cards, store.pan_hash_key), key_source=random_working_keys,
        rules=rules, scenarios=ScenarioBook(scenarios), events=events, ledger_deadline_s=ledger_deadline_s,
    )  # fmt: skip
