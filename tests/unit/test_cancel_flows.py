"""Void, reversal and refund flows: tables of (request, view, now) -> (reason, which ledger commands). Pure.

A flow returns the reason and the commands the store must commit; these tables pin both, and the tests below
them pin what the commands carry (the row written, the status change and its condition, the refund's amounts).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from core_tables import (
    AMOUNT,
    CARD,
    MID,
    NEW_RRN,
    NOW,
    OTHER_CARD,
    SALE_RRN,
    TID,
    context,
    flow,
    original,
    request,
    rules,
    view,
)
from hypothesis import given
from hypothesis import strategies as st

from iso_host.core.flows import Decision
from iso_host.core.rules import RuleSettings, business_day_start
from iso_host.ledger.model import (
    ChangeStatus,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    LedgerView,
    RecordRefund,
    RecordTransaction,
    TransactionRecord,
)
from iso_host.vocab import Kind, Reason, Status

VOID_RRN = "000000000008"
SHANGHAI = ZoneInfo("Asia/Shanghai")
SALE = view(original())


def decide(kind: Kind, view_: LedgerView, now: datetime = NOW, settings: RuleSettings | None = None,
           **request_overrides: Any) -> Decision:  # fmt: skip
    """What the flow of ``kind`` decides for a request of it (``request_overrides``) against ``view_`` at ``now``."""
    return flow(kind)(request(kind, **request_overrides), view_, context(now, rules=settings or rules()))


def kinds_of(decision: Decision) -> list[type]:
    return [type(command) for command in decision.commands]


def written(decision: Decision) -> TransactionRecord:
    """The one row the decision records."""
    [row] = [command.transaction for command in decision.commands if isinstance(command, RecordTransaction)]
    return row


E, R, C, F = ExpectRefusedVoids, RecordTransaction, ChangeStatus, RecordRefund  # short names for the tables

VOID_CASES = [
    pytest.param(SALE, NOW, {}, {}, Reason.APPROVED, [E, R, C], id="approved"),
    pytest.param(SALE, NOW, {"max_voids_per_day": 5}, {}, Reason.APPROVED, [E, ExpectVoidsSince, R, C],
                 id="approved-under-a-daily-limit"),
    pytest.param(view(), NOW, {}, {}, Reason.ORIGINAL_NOT_FOUND, [R], id="unknown-original-recorded"),
    pytest.param(SALE, NOW, {}, {"amount_minor": 999}, Reason.AMOUNT_MISMATCH, [E, R], id="wrong-amount-recorded"),
    pytest.param(SALE, NOW, {}, {"card": OTHER_CARD}, Reason.CARD_MISMATCH, [E, R], id="wrong-card-recorded"),
    pytest.param(SALE, NOW, {}, {"operator_permitted": False}, Reason.OPERATOR_NOT_PERMITTED, [E, R],
                 id="operator-recorded"),
    pytest.param(view(original(status=Status.VOIDED)), NOW, {}, {}, Reason.ALREADY_CANCELLED, [E, R],
                 id="second-void-recorded"),
    pytest.param(view(original(batch_settled=True)), NOW, {}, {}, Reason.BATCH_CLOSED, [E, R],
                 id="original-batch-settled"),
    pytest.param(view(original(created_at=NOW - timedelta(hours=13))), NOW, {}, {}, Reason.VOID_WINDOW_EXPIRED,
                 [E, R], id="yesterdays-sale"),
    pytest.param(view(original(refused_void_attempts=3)), NOW, {}, {}, Reason.VOID_LIMIT_EXCEEDED, [E, R],
                 id="refused-attempts-used-up"),
    pytest.param(view(original(), voids_today=5), NOW, {"max_voids_per_day": 5}, {}, Reason.VOID_LIMIT_EXCEEDED,
                 [E, ExpectVoidsSince, R], id="daily-limit-reached"),
    # A request whose own batch has settled writes nothing: the batch takes no row.
    pytest.param(view(original(), request_batch_settled=True), NOW, {}, {}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="own-batch-settled-would-pass"),
    pytest.param(view(original(), request_batch_settled=True), NOW, {}, {"amount_minor": 1}, Reason.AMOUNT_MISMATCH,
                 [], id="own-batch-settled-refused-unrecorded"),
]  # fmt: skip


@pytest.mark.parametrize(("view_", "now", "settings", "overrides", "reason", "commands"), VOID_CASES)
def test_void(view_: LedgerView, now: datetime, settings: dict[str, Any], overrides: dict[str, Any],
              reason: Reason, commands: list[type]) -> None:  # fmt: skip
    """A void is approved with its row and the sale's status change, or refused with its row (it counts)."""
    decision = decide(Kind.VOID, view_, now, rules(**settings), **overrides)
    assert decision.reason is reason
    assert kinds_of(decision) == commands


# Decision.detail: why a rule refused, for the log line and the console; an approval has none.
DETAIL_CASES = [
    pytest.param(Kind.VOID, SALE, {}, {}, None, id="void-approved"),
    pytest.param(Kind.VOID, SALE, {}, {"amount_minor": 1_200},
                 "void refused: AMOUNT_MISMATCH (sale 000000000007 10.00, void 12.00)", id="void-amount"),
    pytest.param(Kind.VOID, view(original(created_at=NOW - timedelta(hours=13))), {}, {},
                 "void refused: VOID_WINDOW_EXPIRED (sale 000000000007 at 2024-12-31 23:00:00, business day "
                 "2024-12-31; now 2025-01-01 12:00:00, business day 2025-01-01)", id="void-yesterdays-sale"),
    pytest.param(Kind.VOID, view(original(), voids_today=5), {"max_voids_per_day": 5}, {},
                 "void refused: VOID_LIMIT_EXCEEDED (5 voids this business day, limit 5)", id="void-daily-limit"),
    pytest.param(Kind.VOID, view(original(), request_batch_settled=True), {}, {"open_batch": 2},
                 "void refused: BATCH_OUT_OF_SYNC (the request's batch 1 has settled, the host's open batch is 2)",
                 id="void-own-batch-settled"),
    pytest.param(Kind.VOID, view(original(), request_batch_settled=True), {}, {"amount_minor": 1},
                 "void refused: AMOUNT_MISMATCH (sale 000000000007 10.00, void 0.01)",
                 id="void-own-batch-settled-keeps-the-rules-words"),
    pytest.param(Kind.REFUND, SALE, {}, {"amount_minor": 1_001},
                 "refund refused: AMOUNT_MISMATCH (sale 000000000007 10.00, refunded 0.00, refundable 10.00, refund "
                 "10.01)", id="refund-exceeds-the-original"),
    pytest.param(Kind.REFUND, SALE, {}, {"original_date_mmdd": "1231"},
                 "refund refused: ORIGINAL_NOT_FOUND (MMDD 1231 named, sale 000000000007 is of 0101)",
                 id="refund-naming-another-day"),
    pytest.param(Kind.REVERSAL, SALE, {}, {"amount_minor": 999},
                 "reversal refused: AMOUNT_MISMATCH (sale 000000000007 10.00, reversal 9.99)", id="reversal-amount"),
    pytest.param(Kind.REVERSAL, view(), {"unknown_reversal": "decline"}, {},
                 "reversal refused: ORIGINAL_NOT_FOUND (no original of this terminal and merchant, unknown_reversal "
                 "decline)", id="reversal-unknown-declined"),
    pytest.param(Kind.REVERSAL, view(), {}, {}, None, id="reversal-unknown-approved-without-detail"),
    pytest.param(Kind.REVERSAL, view(original(status=Status.REVERSED)), {}, {}, None, id="reversal-repeat"),
    pytest.param(Kind.REVERSAL, view(original(batch_settled=True)), {}, {},
                 "reversal refused: BATCH_CLOSED (sale 000000000007 is in batch 1, settled)", id="reversal-settled"),
    pytest.param(Kind.REVERSAL, view(original(kind=Kind.REFUND)), {}, {},
                 "reversal refused: NOT_VOIDABLE (refund 000000000007: a refund is not reversible)",
                 id="reversal-of-a-refund"),
    pytest.param(Kind.REVERSAL, view(original(status=Status.PARTIALLY_REFUNDED)), {}, {},
                 "reversal refused: NOT_VOIDABLE (sale 000000000007 is PARTIALLY_REFUNDED, not APPROVED)",
                 id="reversal-of-a-refunded-sale"),
    pytest.param(Kind.REVERSAL, view(original(), request_batch_settled=True), {}, {},
                 "reversal refused: BATCH_CLOSED (the request's batch 1 has settled)", id="reversal-own-batch-settled"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "view_", "settings", "overrides", "detail"), DETAIL_CASES)
def test_detail(kind: Kind, view_: LedgerView, settings: dict[str, Any], overrides: dict[str, Any],
                detail: str | None) -> None:  # fmt: skip
    """A refusal says which rule refused and the values it compared; the commands are those of the table above."""
    decision = decide(kind, view_, settings=rules(**settings), **overrides)
    assert decision.detail == detail
    assert (decision.detail is None) is (decision.reason is Reason.APPROVED)


class TestVoidCommands:
    def test_approval_records_the_void_and_voids_the_sale(self) -> None:
        """The void's row names its sale; the sale goes from APPROVED to VOIDED; the card gets its money back."""
        decision = decide(Kind.VOID, SALE)
        row = written(decision)
        assert (row.kind, row.status, row.reason, row.rrn, row.original_rrn) == (
            Kind.VOID, Status.APPROVED, Reason.APPROVED, NEW_RRN, SALE_RRN,
        )  # fmt: skip
        assert (row.mti, row.processing_code, row.amount_minor, row.created_at) == ("0200", "020000", AMOUNT, NOW)
        assert ChangeStatus(SALE_RRN, Status.APPROVED, Status.VOIDED, NOW) in decision.commands
        assert decision.fields["37"] == NEW_RRN
        assert decision.fields["38"] == row.auth_code
        assert decision.balance_changes == ((CARD.pan_hash, AMOUNT),)

    def test_refusal_is_a_declined_row_with_the_dialects_code(self) -> None:
        """A refused void is a DECLINED row with its reason and iso87's code 64, and no approval code."""
        decision = decide(Kind.VOID, SALE, amount_minor=999)
        row = written(decision)
        assert (row.status, row.reason, row.response_code, row.auth_code) == (
            Status.DECLINED, Reason.AMOUNT_MISMATCH, "64", "",
        )  # fmt: skip
        assert row.original_rrn == SALE_RRN
        assert "38" not in decision.fields
        assert decision.balance_changes == ()

    @pytest.mark.parametrize("refused", [0, 1, 2, 3])
    def test_every_decision_about_a_found_original_expects_its_refused_count(self, refused: int) -> None:
        """The store must still count the refused attempts the view counted, or the decision is made again."""
        decision = decide(Kind.VOID, view(original(refused_void_attempts=refused)))
        assert decision.commands[0] == ExpectRefusedVoids(SALE_RRN, refused)

    def test_the_daily_limit_expects_the_voids_since_the_business_day_began(self) -> None:
        """With max_voids_per_day, the approved voids since the day's start are part of what was decided from."""
        settings = rules(max_voids_per_day=5)
        decision = decide(Kind.VOID, view(original(), voids_today=2), settings=settings)
        since = business_day_start(NOW, settings)
        assert ExpectVoidsSince(TID, MID, since, 2) in decision.commands


REVERSED_VOID = view(original(kind=Kind.VOID, rrn=VOID_RRN, original_rrn=SALE_RRN, stan="000008"))

# DESIGN.md "Reversal": idempotent. Only a reversal that takes effect writes anything.
REVERSAL_CASES = [
    pytest.param(SALE, {}, {}, Reason.APPROVED, [R, C], id="sale-reversed"),
    pytest.param(REVERSED_VOID, {}, {}, Reason.APPROVED, [R, C, C], id="void-reversed-restores-its-sale"),
    pytest.param(view(), {}, {}, Reason.APPROVED, [], id="unknown-original-approved-without-effect"),
    pytest.param(view(), {"unknown_reversal": "decline"}, {}, Reason.ORIGINAL_NOT_FOUND, [],
                 id="unknown-original-declined-when-configured"),
    pytest.param(view(original(status=Status.REVERSED)), {}, {}, Reason.APPROVED, [], id="already-reversed-again"),
    pytest.param(view(original(effective_reversal=True)), {}, {}, Reason.APPROVED, [],
                 id="an-effective-reversal-exists"),
    pytest.param(view(original(status=Status.VOIDED)), {}, {}, Reason.APPROVED, [], id="voided-sale-no-effect"),
    pytest.param(view(original(status=Status.DECLINED)), {}, {}, Reason.APPROVED, [], id="declined-sale-no-effect"),
    pytest.param(view(original(status=Status.DECLINED)), {}, {"amount_minor": 1}, Reason.APPROVED, [],
                 id="declined-sale-any-amount"),
    pytest.param(SALE, {}, {"amount_minor": 999}, Reason.AMOUNT_MISMATCH, [], id="amount-differs"),
    pytest.param(view(original(batch_settled=True)), {}, {}, Reason.BATCH_CLOSED, [], id="original-batch-settled"),
    pytest.param(view(original(status=Status.REVERSED, batch_settled=True)), {}, {}, Reason.APPROVED, [],
                 id="repeat-after-settlement-still-approved"),
    pytest.param(view(original(kind=Kind.REFUND)), {}, {}, Reason.NOT_VOIDABLE, [], id="refund-not-reversible"),
    pytest.param(view(original(status=Status.PARTIALLY_REFUNDED)), {}, {}, Reason.NOT_VOIDABLE, [],
                 id="partially-refunded-sale"),
    pytest.param(view(original(), request_batch_settled=True), {}, {}, Reason.BATCH_CLOSED, [],
                 id="own-batch-settled-with-effect"),
    pytest.param(view(original(status=Status.REVERSED), request_batch_settled=True), {}, {}, Reason.APPROVED, [],
                 id="own-batch-settled-repeat"),
]  # fmt: skip


@pytest.mark.parametrize(("view_", "settings", "overrides", "reason", "commands"), REVERSAL_CASES)
def test_reversal(view_: LedgerView, settings: dict[str, Any], overrides: dict[str, Any], reason: Reason,
                  commands: list[type]) -> None:  # fmt: skip
    """A reversal takes effect once; every repeat, and every reversal of nothing, is answered without effect."""
    decision = decide(Kind.REVERSAL, view_, settings=rules(**settings), **overrides)
    assert decision.reason is reason
    assert kinds_of(decision) == commands
    if not commands:
        assert decision.balance_changes == ()
        assert "37" not in decision.fields, "nothing recorded: no RRN to give"


class TestReversalCommands:
    def test_a_sale_is_reversed_and_its_money_given_back(self) -> None:
        """The reversal row names the sale, the sale becomes REVERSED only if still APPROVED, the card is refunded."""
        decision = decide(Kind.REVERSAL, SALE)
        row = written(decision)
        assert (row.kind, row.status, row.original_rrn, row.mti) == (Kind.REVERSAL, Status.APPROVED, SALE_RRN, "0400")
        assert decision.commands[1] == ChangeStatus(SALE_RRN, Status.APPROVED, Status.REVERSED, NOW)
        assert decision.balance_changes == ((CARD.pan_hash, AMOUNT),)

    def test_a_void_is_reversed_and_its_sale_restored(self) -> None:
        """Reversing a void makes the void REVERSED and its sale APPROVED again; the card pays again."""
        decision = decide(Kind.REVERSAL, REVERSED_VOID)
        assert written(decision).original_rrn == VOID_RRN
        assert decision.commands[1:] == (
            ChangeStatus(VOID_RRN, Status.APPROVED, Status.REVERSED, NOW),
            ChangeStatus(SALE_RRN, Status.VOIDED, Status.APPROVED, NOW),
        )
        assert decision.balance_changes == ((CARD.pan_hash, -AMOUNT),)


PARTLY = view(original(status=Status.PARTIALLY_REFUNDED, refunded_minor=400))

REFUND_CASES = [
    pytest.param(SALE, {}, Reason.APPROVED, [R, F], id="full"),
    pytest.param(SALE, {"amount_minor": 400}, Reason.APPROVED, [R, F], id="partial"),
    pytest.param(PARTLY, {"amount_minor": 600}, Reason.APPROVED, [R, F], id="rest-of-a-partial"),
    pytest.param(PARTLY, {"amount_minor": 601}, Reason.AMOUNT_MISMATCH, [R], id="over-the-rest-recorded"),
    pytest.param(SALE, {"amount_minor": 1_001}, Reason.AMOUNT_MISMATCH, [R], id="over-refund-recorded"),
    pytest.param(view(original(status=Status.REFUNDED, refunded_minor=AMOUNT)), {}, Reason.ALREADY_CANCELLED, [R],
                 id="fully-refunded"),
    pytest.param(view(original(status=Status.VOIDED)), {}, Reason.ALREADY_CANCELLED, [R], id="voided-sale"),
    pytest.param(view(), {}, Reason.ORIGINAL_NOT_FOUND, [R], id="unknown-original"),
    pytest.param(view(original(batch_settled=True)), {}, Reason.APPROVED, [R, F], id="sale-of-a-settled-batch"),
    pytest.param(view(original(created_at=NOW - timedelta(days=31))), {}, Reason.VOID_WINDOW_EXPIRED, [R],
                 id="older-than-30-days"),
    pytest.param(SALE, {"original_date_mmdd": "0101"}, Reason.APPROVED, [R, F], id="named-date-matches"),
    pytest.param(SALE, {"original_date_mmdd": "1231"}, Reason.ORIGINAL_NOT_FOUND, [R], id="named-date-differs"),
    pytest.param(view(original(), request_batch_settled=True), {}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="own-batch-settled-would-pass"),
    pytest.param(view(original(), request_batch_settled=True), {"amount_minor": 1_001}, Reason.AMOUNT_MISMATCH, [],
                 id="own-batch-settled-refused-unrecorded"),
]  # fmt: skip


@pytest.mark.parametrize(("view_", "overrides", "reason", "commands"), REFUND_CASES)
def test_refund(view_: LedgerView, overrides: dict[str, Any], reason: Reason, commands: list[type]) -> None:
    """A refund is approved up to what remains refundable, and a refused refund is recorded like a void."""
    decision = decide(Kind.REFUND, view_, **overrides)
    assert decision.reason is reason
    assert kinds_of(decision) == commands


class TestRefundCommands:
    @pytest.mark.parametrize(
        ("view_", "amount", "expected"),
        [
            pytest.param(SALE, AMOUNT, RecordRefund(SALE_RRN, 0, AMOUNT, Status.REFUNDED, NOW), id="full"),
            pytest.param(SALE, 400, RecordRefund(SALE_RRN, 0, 400, Status.PARTIALLY_REFUNDED, NOW), id="partial"),
            pytest.param(PARTLY, 600, RecordRefund(SALE_RRN, 400, AMOUNT, Status.REFUNDED, NOW), id="completing"),
        ],
    )  # fmt: skip
    def test_the_refund_is_counted_on_its_sale(self, view_: LedgerView, amount: int, expected: RecordRefund) -> None:
        """The sale's refunded amount moves from what the view saw (the store checks it) to the new total."""
        decision = decide(Kind.REFUND, view_, amount_minor=amount)
        assert decision.commands[1] == expected
        assert written(decision).original_rrn == SALE_RRN
        assert decision.balance_changes == ((CARD.pan_hash, amount),)

    def test_a_refund_naming_another_day_names_no_original(self) -> None:
        """CUP refunds name the original's date (61.3): another day's sale is not the original, and the refusal
        recorded does not point at it."""
        decision = decide(Kind.REFUND, SALE, original_date_mmdd="1231")
        assert written(decision).original_rrn is None

    def test_the_named_date_is_the_local_date_of_the_rules_zone(self) -> None:
        """A sale at 20:00 UTC on 1 January was made on 2 January in Shanghai, where the terminal named it."""
        evening = view(original(created_at=datetime.fromisoformat("2025-01-01T20:00:00+00:00")))
        later = datetime.fromisoformat("2025-01-02T01:00:00+00:00")
        shanghai = rules(timezone=SHANGHAI)
        assert decide(Kind.REFUND, evening, later, shanghai, original_date_mmdd="0102").reason is Reason.APPROVED
        named_in_utc = decide(Kind.REFUND, evening, later, shanghai, original_date_mmdd="0101")
        assert named_in_utc.reason is Reason.ORIGINAL_NOT_FOUND

    @given(refunded=st.integers(0, AMOUNT), asked=st.integers(0, 2 * AMOUNT))
    def test_any_amount_is_refunded_at_most_once(self, refunded: int, asked: int) -> None:
        """Whatever was refunded before, a refund is approved exactly when it fits in the rest, and the sale is
        REFUNDED exactly when the rest is used up."""
        status = Status.APPROVED if refunded == 0 else Status.PARTIALLY_REFUNDED
        if refunded == AMOUNT:
            status = Status.REFUNDED
        decision = decide(Kind.REFUND, view(original(status=status, refunded_minor=refunded)), amount_minor=asked)
        fits = 0 < asked <= AMOUNT - refunded
        assert (decision.reason is Reason.APPROVED) is fits
        if fits:
            counted = decision.commands[1]
            assert isinstance(counted, RecordRefund)
            assert (counted.expected_refunded_minor, counted.refunded_minor) == (refunded, refunded + asked)
            assert (counted.new_status is Status.REFUNDED) is (refunded + asked == AMOUNT)
