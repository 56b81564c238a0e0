"""What the flows hand the store besides their writes: the preconditions a decision was made from, and the
answers for a batch that has settled. Pure: ``(request, view, context) -> Decision``, no socket, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from iso_host.cards import mask_pan, pan_hash
from iso_host.core.flows import Context, Decision, Request
from iso_host.core.flows.refund import refund
from iso_host.core.flows.reversal import reversal
from iso_host.core.flows.settlement import settlement
from iso_host.core.flows.upload import upload_end
from iso_host.core.flows.void import void
from iso_host.core.rules import RuleSettings, business_day_start
from iso_host.ledger.model import (
    AdvanceBatch,
    BatchTotals,
    BatchView,
    Card,
    ChangeStatus,
    ExpectBatchTotals,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    LedgerView,
    Original,
    RecordTransaction,
    SettleBatch,
    Totals,
    TransactionRecord,
)
from iso_host.ledger.totals_json import totals_to_json
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import load_dialect

NOW = datetime(2025, 1, 1, 12, 30, tzinfo=UTC)
PAN = "4761739001010010"
CARD = Card(mask_pan(PAN), pan_hash(PAN, b"test-pan-hash-key"))
ISO87 = load_dialect("iso87binary")
TID, MID = "TERM0001", "MERCHANT0000001"
SALE_RRN = "000000000007"
HOST_TOTALS = BatchTotals(foreign=Totals(1, 1_000))


def context(rules: RuleSettings | None = None) -> Context:
    return Context(now=NOW, rrn="000000000042", dialect=ISO87, rules=rules or RuleSettings())


def request(kind: Kind, amount_minor: int = 1_000, **fields: object) -> Request:
    values: dict[str, object] = {
        "kind": kind, "mti": "0200", "processing_code": "020000", "tid": TID, "mid": MID, "batch_number": 3,
        "stan": "000042",
        "amount_minor": amount_minor, "currency": "840", "card": CARD, "open_batch": 3,
    }  # fmt: skip
    values.update(fields)
    return Request(**values)  # type: ignore[arg-type]


def original(refused: int = 0, status: Status = Status.APPROVED, settled: bool = False) -> Original:
    record = TransactionRecord(
        kind=Kind.SALE, tid=TID, mid=MID, batch_number=3, stan="000007", rrn=SALE_RRN, auth_code="123456",
        amount_minor=1_000, currency="840", card=CARD, status=status, response_code="00", reason=Reason.APPROVED,
        mti="0200", processing_code="000000", created_at=NOW - timedelta(minutes=5),
    )  # fmt: skip
    return Original(record, batch_settled=settled, refused_void_attempts=refused)


def kinds_of(decision: Decision) -> list[type]:
    return [type(command) for command in decision.commands]


class TestVoidPreconditions:
    @pytest.mark.parametrize(
        ("refused", "amount", "reason", "commands"),
        [
            pytest.param(0, 1_000, Reason.APPROVED, [ExpectRefusedVoids, RecordTransaction, ChangeStatus],
                         id="approved"),
            pytest.param(2, 999, Reason.AMOUNT_MISMATCH, [ExpectRefusedVoids, RecordTransaction], id="third-refusal"),
            pytest.param(3, 999, Reason.VOID_LIMIT_EXCEEDED, [ExpectRefusedVoids, RecordTransaction], id="limit"),
            pytest.param(3, 1_000, Reason.VOID_LIMIT_EXCEEDED, [ExpectRefusedVoids, RecordTransaction],
                         id="right-amount-after-the-limit"),
        ],
    )  # fmt: skip
    def test_every_void_of_a_found_original_expects_its_refused_count(
        self, refused: int, amount: int, reason: Reason, commands: list[type]
    ) -> None:
        """The decision depends on the refused attempts the view counted: the store must find the same count."""
        decision = void(request(Kind.VOID, amount), LedgerView(original(refused)), context())
        assert decision.reason is reason
        assert kinds_of(decision) == commands
        assert decision.commands[0] == ExpectRefusedVoids(SALE_RRN, refused)

    def test_the_per_day_limit_expects_the_days_count(self) -> None:
        """With max_voids_per_day, the approved voids since the business day began are expected too."""
        rules = RuleSettings(max_voids_per_day=5)
        decision = void(request(Kind.VOID), LedgerView(original(), voids_today=2), context(rules))
        since = business_day_start(NOW, rules)
        assert ExpectVoidsSince(TID, MID, since, 2) in decision.commands

    def test_no_original_expects_nothing(self) -> None:
        """A void of nothing is refused and recorded; it depends on no count."""
        decision = void(request(Kind.VOID), LedgerView(), context())
        assert decision.reason is Reason.ORIGINAL_NOT_FOUND
        assert kinds_of(decision) == [RecordTransaction]


class TestRequestsNamingASettledBatch:
    @pytest.mark.parametrize(
        ("flow", "kind", "view", "reason"),
        [
            pytest.param(void, Kind.VOID, LedgerView(original(), request_batch_settled=True),
                         Reason.BATCH_OUT_OF_SYNC, id="void-that-would-pass"),
            pytest.param(void, Kind.VOID, LedgerView(original(settled=True), request_batch_settled=True),
                         Reason.BATCH_CLOSED, id="void-refused-keeps-its-reason"),
            pytest.param(refund, Kind.REFUND, LedgerView(original(), request_batch_settled=True),
                         Reason.BATCH_OUT_OF_SYNC, id="refund-that-would-pass"),
            pytest.param(reversal, Kind.REVERSAL, LedgerView(original(), request_batch_settled=True),
                         Reason.BATCH_CLOSED, id="reversal-with-effect"),
            pytest.param(reversal, Kind.REVERSAL,
                         LedgerView(original(status=Status.REVERSED), request_batch_settled=True),
                         Reason.APPROVED, id="repeated-reversal-stays-idempotent"),
        ],
    )  # fmt: skip
    def test_nothing_is_written_into_it(self, flow: object, kind: Kind, view: LedgerView, reason: Reason) -> None:
        """A request whose own batch has settled writes nothing: a settled batch takes no row."""
        assert callable(flow)
        decision = flow(request(kind), view, context())
        assert decision.reason is reason
        assert decision.commands == ()


def batch(status: str = "open", settled_terminal: BatchTotals | None = None) -> BatchView:
    return BatchView(
        TID, MID, 3, status, HOST_TOTALS,
        settled_host_totals_json=totals_to_json(HOST_TOTALS) if settled_terminal else None,
        settled_terminal_totals_json=totals_to_json(settled_terminal) if settled_terminal else None,
    )  # fmt: skip


class TestSettlement:
    def test_a_close_expects_the_totals_it_compared(self) -> None:
        """A balanced settlement closes only if the batch still adds up to what it compared."""
        decision = settlement(request(Kind.SETTLEMENT, terminal_totals=HOST_TOTALS), LedgerView(batch=batch()),
                              context())  # fmt: skip
        assert decision.reason is Reason.APPROVED
        assert kinds_of(decision) == [ExpectBatchTotals, SettleBatch, AdvanceBatch]
        assert decision.commands[0] == ExpectBatchTotals(TID, MID, 3, HOST_TOTALS)

    def test_out_of_balance_expects_them_too(self) -> None:
        other = BatchTotals(foreign=Totals(2, 2_000))
        decision = settlement(request(Kind.SETTLEMENT, terminal_totals=other), LedgerView(batch=batch()), context())
        assert decision.reason is Reason.OUT_OF_BALANCE
        assert kinds_of(decision) == [ExpectBatchTotals, SettleBatch]

    @pytest.mark.parametrize(
        ("sent", "reason"),
        [(HOST_TOTALS, Reason.APPROVED), (BatchTotals(foreign=Totals(2, 2_000)), Reason.BATCH_OUT_OF_SYNC)],
        ids=["same-totals-same-answer", "other-totals-77"],
    )
    def test_a_repeat_of_a_settled_batch(self, sent: BatchTotals, reason: Reason) -> None:
        """The terminal missed its 00: the same totals get the same answer and change nothing."""
        repeat = request(Kind.SETTLEMENT, terminal_totals=sent, open_batch=4)
        decision = settlement(repeat, LedgerView(batch=batch("settled", settled_terminal=HOST_TOTALS)), context())
        assert decision.reason is reason
        assert decision.commands == ()
        assert decision.next_batch is None

    def test_a_repeated_end_of_upload_changes_nothing(self) -> None:
        """CUP's end of upload (60.3 = 202/207) sent again after the batch closed is answered 00."""
        repeat = request(Kind.UPLOAD_END, open_batch=4)
        decision = upload_end(repeat, LedgerView(batch=batch("settled", settled_terminal=HOST_TOTALS)), context())
        assert decision.reason is Reason.APPROVED
        assert decision.commands == ()


def test_request_defaults_are_the_open_batch() -> None:
    """The builder above names the open batch; a test that moves it says so."""
    assert replace(request(Kind.SALE), batch_number=2).batch_number == 2
