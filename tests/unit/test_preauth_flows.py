"""The pre-authorisation family's flows: tables of (request, view, now) -> (reason, which ledger commands), and what
each decision does to a test card (balance changes, holds). Pure. Then the test cards' holds themselves.

A pre-auth holds its amount; its void and reversal release it; a completion releases it and takes its own amount; a
completion void (and a completion's reversal) gives that back and holds the pre-auth again; reversing a pre-auth void
holds again, reversing a completion void releases again. The completion void's rows come from the view's lineage.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from core_tables import (
    AMOUNT,
    CARD,
    NEW_RRN,
    NOW,
    OTHER_CARD,
    PAN,
    card_book,
    context,
    flow,
    original,
    request,
    rules,
    view,
)

from iso_host.core.flows import Decision
from iso_host.core.rules import RuleSettings
from iso_host.core.test_cards import Hold, Release, TestCard
from iso_host.ledger.model import (
    ChangeStatus,
    ExpectPreauthOpen,
    ExpectRefusedVoids,
    LedgerView,
    Original,
    RecordTransaction,
    TransactionRecord,
)
from iso_host.vocab import Kind, Reason, Status

DAY = timedelta(days=1)
PREAUTH_RRN, COMPLETION_RRN, VOID_RRN = "000000000007", "000000000008", "000000000009"
PREAUTH_AT = NOW - timedelta(minutes=5)
EXPIRY = PREAUTH_AT + 30 * DAY
HASH = CARD.pan_hash
E, P, R, C = ExpectRefusedVoids, ExpectPreauthOpen, RecordTransaction, ChangeStatus  # short names for the tables


def preauth_original(**overrides: Any) -> Original:
    """The pre-auth PREAUTH_RRN of AMOUNT on CARD, approved at PREAUTH_AT (overrides: record fields or flags)."""
    return original(**({"kind": Kind.PREAUTH, "rrn": PREAUTH_RRN, "mti": "0100", "processing_code": "030000"}
                       | overrides))  # fmt: skip


def completion_original(**overrides: Any) -> Original:
    """The completion COMPLETION_RRN of 1_100 that closed PREAUTH_RRN."""
    values = {"kind": Kind.COMPLETION, "rrn": COMPLETION_RRN, "original_rrn": PREAUTH_RRN, "amount_minor": 1_100}
    return original(**(values | overrides))


def preauth_void_original(**overrides: Any) -> Original:
    values = {"kind": Kind.PREAUTH_VOID, "rrn": VOID_RRN, "original_rrn": PREAUTH_RRN, "processing_code": "200000"}
    return original(**(values | overrides))


def completion_void_original(**overrides: Any) -> Original:
    values = {"kind": Kind.COMPLETION_VOID, "rrn": VOID_RRN, "original_rrn": COMPLETION_RRN, "amount_minor": 1_100}
    return original(**(values | overrides))


OPEN = view(preauth_original())
COMPLETED = preauth_original(closed_by=Kind.COMPLETION)


def decide(kind: Kind, view_: LedgerView, now: datetime = NOW, settings: RuleSettings | None = None,
           **request_overrides: Any) -> Decision:  # fmt: skip
    return flow(kind)(request(kind, **request_overrides), view_, context(now, rules=settings or rules()))


def kinds_of(decision: Decision) -> list[type]:
    return [type(command) for command in decision.commands]


def written(decision: Decision) -> TransactionRecord:
    [row] = [command.transaction for command in decision.commands if isinstance(command, RecordTransaction)]
    return row


def held(until: datetime = EXPIRY, amount: int = AMOUNT, rrn: str = PREAUTH_RRN) -> Hold:
    return Hold(rrn, HASH, amount, until)


def card(balance: int | None = 5_000, *holds: Hold, **overrides: Any) -> TestCard:
    return TestCard(balance_minor=balance, holds=holds, **overrides)


class TestPreauth:
    CASES = (
        pytest.param({}, Reason.APPROVED, (Hold(NEW_RRN, HASH, AMOUNT, NOW + 30 * DAY),), id="approved-holds"),
        pytest.param({"amount_minor": 0}, Reason.INVALID_AMOUNT, (), id="zero"),
        pytest.param({"pin_incorrect": True}, Reason.PIN_INCORRECT, (), id="wrong-pin"),
        pytest.param({"test_card": card(status="lost")}, Reason.LOST_CARD, (), id="lost-card"),
        pytest.param({"test_card": card(expiry="2412")}, Reason.EXPIRED_CARD, (), id="expired-card"),
        pytest.param({"test_card": card(limit_minor=999)}, Reason.EXCEEDS_LIMIT, (), id="over-the-limit"),
        pytest.param({"test_card": card(999)}, Reason.INSUFFICIENT_FUNDS, (), id="no-funds"),
        pytest.param({"test_card": card(1_500, held(rrn="1"))}, Reason.INSUFFICIENT_FUNDS, (),
                     id="another-hold-leaves-too-little"),
        pytest.param({"test_card": card(1_500, held(NOW, rrn="1"))}, Reason.APPROVED,
                     (Hold(NEW_RRN, HASH, AMOUNT, NOW + 30 * DAY),), id="an-expired-hold-holds-nothing"),
        pytest.param({"card": None}, Reason.APPROVED, (), id="no-card-nothing-to-hold"),
    )  # fmt: skip

    @pytest.mark.parametrize(("overrides", "reason", "holds"), CASES)
    def test_decides_records_and_holds(self, overrides: dict[str, Any], reason: Reason, holds: tuple[Hold]) -> None:
        decision = decide(Kind.PREAUTH, view(), **overrides)
        assert (decision.reason, kinds_of(decision), decision.holds) == (reason, [R], holds)
        assert written(decision).status is (Status.APPROVED if reason is Reason.APPROVED else Status.DECLINED)
        assert decision.balance_changes == (), "a pre-auth moves no money"
        assert ("38" in decision.fields) is (reason is Reason.APPROVED)

    def test_into_a_settled_batch_writes_nothing(self) -> None:
        decision = decide(Kind.PREAUTH, view(request_batch_settled=True))
        assert (decision.reason, decision.commands, decision.holds) == (Reason.BATCH_OUT_OF_SYNC, (), ())


class TestPreauthVoid:
    CASES = (
        pytest.param(OPEN, {}, Reason.APPROVED, [E, P, R], (Release(PREAUTH_RRN),), id="approved-releases"),
        pytest.param(view(), {}, Reason.ORIGINAL_NOT_FOUND, [R], (), id="unknown-recorded"),
        pytest.param(OPEN, {"original_auth_code": "999999"}, Reason.ORIGINAL_NOT_FOUND, [E, R], (),
                     id="another-approval-code-recorded"),
        pytest.param(OPEN, {"amount_minor": 999}, Reason.AMOUNT_MISMATCH, [E, R], (), id="wrong-amount-recorded"),
        pytest.param(view(COMPLETED), {}, Reason.ALREADY_CANCELLED, [E, R], (), id="completed-recorded"),
        pytest.param(view(preauth_original(created_at=NOW - 31 * DAY)), {}, Reason.VOID_WINDOW_EXPIRED, [E, R], (),
                     id="expired-recorded"),
    )  # fmt: skip

    @pytest.mark.parametrize(("view_", "overrides", "reason", "commands", "holds"), CASES)
    def test_decides(self, view_: LedgerView, overrides: dict[str, Any], reason: Reason, commands: list[type],
                     holds: tuple[Release]) -> None:  # fmt: skip
        decision = decide(Kind.PREAUTH_VOID, view_, **overrides)
        assert (decision.reason, kinds_of(decision), decision.holds) == (reason, commands, holds)

    def test_approval_closes_the_preauth_without_touching_it(self) -> None:
        """The void names the pre-auth and the store checks it is still open; the pre-auth's row is not changed."""
        decision = decide(Kind.PREAUTH_VOID, OPEN)
        assert decision.commands[:2] == (ExpectRefusedVoids(PREAUTH_RRN, 0), ExpectPreauthOpen(PREAUTH_RRN))
        row = written(decision)
        assert (row.kind, row.original_rrn, row.status) == (Kind.PREAUTH_VOID, PREAUTH_RRN, Status.APPROVED)
        assert decision.balance_changes == ()

    def test_in_a_settled_batch_writes_nothing(self) -> None:
        decision = decide(Kind.PREAUTH_VOID, view(preauth_original(), request_batch_settled=True))
        assert (decision.reason, decision.commands) == (Reason.BATCH_OUT_OF_SYNC, ())


class TestCompletion:
    CASES = (
        pytest.param(OPEN, {}, Reason.APPROVED, [P, R], id="approved"),
        pytest.param(OPEN, {"amount_minor": 1_150}, Reason.APPROVED, [P, R], id="tolerance-exactly"),
        pytest.param(OPEN, {"amount_minor": 1_151}, Reason.AMOUNT_MISMATCH, [R], id="over-tolerance-recorded"),
        pytest.param(view(), {}, Reason.ORIGINAL_NOT_FOUND, [R], id="unknown-recorded"),
        pytest.param(view(COMPLETED), {}, Reason.ALREADY_CANCELLED, [R], id="second-completion-recorded"),
        pytest.param(view(preauth_original(created_at=NOW - 30 * DAY)), {}, Reason.VOID_WINDOW_EXPIRED, [R],
                     id="expired-recorded"),
        pytest.param(OPEN, {"card": OTHER_CARD}, Reason.CARD_MISMATCH, [R], id="other-card-recorded"),
        # funds: what the completion takes beyond its pre-auth's own hold must be there
        pytest.param(OPEN, {"amount_minor": 1_100, "test_card": card(1_100, held())}, Reason.APPROVED, [P, R],
                     id="its-own-hold-pays"),
        pytest.param(OPEN, {"amount_minor": 1_100, "test_card": card(1_099, held())}, Reason.INSUFFICIENT_FUNDS, [R],
                     id="beyond-the-balance-recorded"),
        pytest.param(OPEN, {"amount_minor": 1_100, "test_card": card(1_500, held(), held(rrn="1", amount=500))},
                     Reason.INSUFFICIENT_FUNDS, [R], id="another-hold-leaves-too-little"),
        pytest.param(OPEN, {"test_card": card(None)}, Reason.APPROVED, [P, R], id="unlimited-card"),
        pytest.param(OPEN, {"test_card": card(status="stolen")}, Reason.APPROVED, [P, R],
                     id="status-not-asked-again"),
    )  # fmt: skip

    @pytest.mark.parametrize(("view_", "overrides", "reason", "commands"), CASES)
    def test_decides(self, view_: LedgerView, overrides: dict[str, Any], reason: Reason, commands: list[type]) -> None:
        decision = decide(Kind.COMPLETION, view_, **overrides)
        assert (decision.reason, kinds_of(decision)) == (reason, commands)
        if view_.original is not None:
            assert written(decision).original_rrn == PREAUTH_RRN, "even a refusal names the pre-auth it was for"
        if reason is not Reason.APPROVED:
            assert (decision.balance_changes, decision.holds) == ((), ())

    def test_approval_takes_the_money_and_releases_the_hold(self) -> None:
        decision = decide(Kind.COMPLETION, OPEN, amount_minor=1_100)
        assert decision.commands[0] == ExpectPreauthOpen(PREAUTH_RRN)
        row = written(decision)
        assert (row.kind, row.amount_minor, row.original_rrn, row.auth_code != "") == (
            Kind.COMPLETION, 1_100, PREAUTH_RRN, True)  # fmt: skip
        assert decision.balance_changes == ((HASH, -1_100),)
        assert decision.holds == (Release(PREAUTH_RRN),)

    def test_into_a_settled_batch(self) -> None:
        """Approvable: BATCH_OUT_OF_SYNC, nothing written; a refusal keeps its reason, unrecorded."""
        assert decide(Kind.COMPLETION, view(preauth_original(), request_batch_settled=True)).commands == ()
        refused = decide(Kind.COMPLETION, view(COMPLETED, request_batch_settled=True))
        assert (refused.reason, refused.commands) == (Reason.ALREADY_CANCELLED, ())


DETAIL_CASES = (
    pytest.param(Kind.COMPLETION, OPEN, {"amount_minor": 1_151},
                 "completion refused: AMOUNT_MISMATCH (pre-auth 000000000007 10.00, completion 11.51, limit 15 % above "
                 "= 11.50)", id="completion-over-tolerance"),
    pytest.param(Kind.COMPLETION, OPEN, {"amount_minor": 1_100, "test_card": card(1_099, held())},
                 "completion refused: INSUFFICIENT_FUNDS (completion 11.00, available 10.99 counting pre-auth "
                 "000000000007's hold)", id="completion-beyond-the-balance"),
    pytest.param(Kind.PREAUTH_VOID, view(COMPLETED), {},
                 "pre-auth void refused: ALREADY_CANCELLED (pre-auth 000000000007 is closed by a completion)",
                 id="preauth-void-of-a-completed-preauth"),
    pytest.param(Kind.PREAUTH_VOID, OPEN, {"amount_minor": 999},
                 "pre-auth void refused: AMOUNT_MISMATCH (pre-auth 000000000007 10.00, pre-auth void 9.99)",
                 id="preauth-void-amount"),
    pytest.param(Kind.COMPLETION_VOID, OPEN, {},
                 "completion void refused: NOT_VOIDABLE (original 000000000007 is a pre-auth, not an approved "
                 "completion)", id="completion-void-of-a-preauth"),
    pytest.param(Kind.COMPLETION, OPEN, {}, None, id="approved-without-detail"),
)  # fmt: skip


@pytest.mark.parametrize(("kind", "view_", "overrides", "detail"), DETAIL_CASES)
def test_detail(kind: Kind, view_: LedgerView, overrides: dict[str, Any], detail: str | None) -> None:
    """A refusal says which rule refused and the values it compared (Decision.detail)."""
    decision = decide(kind, view_, **overrides)
    assert decision.detail == detail


class TestCompletionVoid:
    VOIDABLE = view(completion_original(), lineage=(COMPLETED,))

    def test_approval_voids_gives_back_and_holds_again(self) -> None:
        decision = decide(Kind.COMPLETION_VOID, self.VOIDABLE, amount_minor=1_100)
        assert (decision.reason, kinds_of(decision)) == (Reason.APPROVED, [E, R, C])
        assert decision.commands[2] == ChangeStatus(COMPLETION_RRN, Status.APPROVED, Status.VOIDED, NOW)
        assert decision.balance_changes == ((HASH, 1_100),)
        assert decision.holds == (held(),), "the pre-auth is open again: its hold is back until it expires"

    def test_an_expired_preauth_is_not_held_again(self) -> None:
        expired = view(completion_original(), lineage=(preauth_original(created_at=NOW - 30 * DAY),))
        decision = decide(Kind.COMPLETION_VOID, expired, amount_minor=1_100)
        assert (decision.reason, decision.holds) == (Reason.APPROVED, ())

    CASES = (
        pytest.param(view(), {}, Reason.ORIGINAL_NOT_FOUND, [R], id="unknown-recorded"),
        pytest.param(VOIDABLE, {"amount_minor": 1_000}, Reason.AMOUNT_MISMATCH, [E, R], id="wrong-amount-recorded"),
        pytest.param(view(completion_original(status=Status.VOIDED)), {"amount_minor": 1_100},
                     Reason.ALREADY_CANCELLED, [E, R], id="second-void-recorded"),
        pytest.param(view(completion_original(batch_settled=True)), {"amount_minor": 1_100}, Reason.BATCH_CLOSED,
                     [E, R], id="settled-recorded"),
        pytest.param(OPEN, {}, Reason.NOT_VOIDABLE, [E, R], id="a-preauth-recorded"),
        pytest.param(VOIDABLE, {"amount_minor": 1_100, "operator_permitted": False}, Reason.OPERATOR_NOT_PERMITTED,
                     [E, R], id="operator-recorded"),
    )  # fmt: skip

    @pytest.mark.parametrize(("view_", "overrides", "reason", "commands"), CASES)
    def test_refusals(self, view_: LedgerView, overrides: dict[str, Any], reason: Reason, commands: list[type]) -> None:
        decision = decide(Kind.COMPLETION_VOID, view_, **overrides)
        assert (decision.reason, kinds_of(decision)) == (reason, commands)
        assert (decision.balance_changes, decision.holds) == ((), ())


class TestReversal:
    """Reversing each kind of the family: idempotent, and undoing exactly what the original did."""

    CASES = (
        pytest.param(OPEN, {}, Reason.APPROVED, [R, C], (), (Release(PREAUTH_RRN),), id="preauth-released"),
        pytest.param(view(preauth_original(closed_by=Kind.PREAUTH_VOID)), {}, Reason.APPROVED, [], (), (),
                     id="voided-preauth-nothing-to-undo"),
        pytest.param(view(COMPLETED), {}, Reason.NOT_VOIDABLE, [], (), (), id="completed-preauth"),
        pytest.param(view(preauth_original(status=Status.REVERSED)), {}, Reason.APPROVED, [], (), (),
                     id="preauth-repeat"),
        pytest.param(view(preauth_original(batch_settled=True)), {}, Reason.BATCH_CLOSED, [], (), (),
                     id="preauth-of-a-settled-batch"),
        pytest.param(view(preauth_void_original(), lineage=(preauth_original(closed_by=Kind.PREAUTH_VOID),)), {},
                     Reason.APPROVED, [R, C], (), (held(),), id="preauth-void-holds-again"),
        pytest.param(view(completion_original(), lineage=(COMPLETED,)), {"amount_minor": 1_100}, Reason.APPROVED,
                     [R, C], ((HASH, 1_100),), (held(),), id="completion-gives-back-and-holds-again"),
        pytest.param(view(completion_original()), {"amount_minor": 1_000}, Reason.AMOUNT_MISMATCH, [], (), (),
                     id="completion-other-amount"),
        pytest.param(view(completion_original(status=Status.VOIDED)), {"amount_minor": 1_100}, Reason.APPROVED, [],
                     (), (), id="voided-completion-nothing-to-undo"),
        pytest.param(view(completion_void_original(), lineage=(completion_original(status=Status.VOIDED),
                                                               preauth_original())),
                     {"amount_minor": 1_100}, Reason.APPROVED, [P, R, C, C], ((HASH, -1_100),),
                     (Release(PREAUTH_RRN),), id="completion-void-takes-again-and-closes-again"),
        pytest.param(view(completion_void_original(), lineage=(completion_original(status=Status.VOIDED),
                                                               COMPLETED)),
                     {"amount_minor": 1_100}, Reason.NOT_VOIDABLE, [], (), (), id="completion-void-recompleted"),
        pytest.param(view(completion_void_original(), lineage=(completion_original(status=Status.VOIDED),
                                                               preauth_original(closed_by=Kind.PREAUTH_VOID))),
                     {"amount_minor": 1_100}, Reason.NOT_VOIDABLE, [], (), (), id="completion-void-preauth-voided"),
    )  # fmt: skip

    @pytest.mark.parametrize(("view_", "overrides", "reason", "commands", "balance", "holds"), CASES)
    def test_reverses(self, view_: LedgerView, overrides: dict[str, Any], reason: Reason, commands: list[type],
                      balance: tuple[tuple[str, int], ...], holds: tuple[Hold | Release, ...]) -> None:  # fmt: skip
        decision = decide(Kind.REVERSAL, view_, **overrides)
        assert (decision.reason, kinds_of(decision)) == (reason, commands)
        assert (decision.balance_changes, decision.holds) == (balance, holds)

    def test_a_completion_void_restores_its_completion_after_checking_the_preauth(self) -> None:
        """The pre-auth must still be open when the completion comes back (checked before anything changes)."""
        decision = decide(Kind.REVERSAL, view(completion_void_original(), lineage=(
            completion_original(status=Status.VOIDED), preauth_original())), amount_minor=1_100)  # fmt: skip
        assert decision.commands[0] == ExpectPreauthOpen(PREAUTH_RRN)
        assert decision.commands[2:] == (ChangeStatus(VOID_RRN, Status.APPROVED, Status.REVERSED, NOW),
                                         ChangeStatus(COMPLETION_RRN, Status.VOIDED, Status.APPROVED, NOW))


class TestHolds:
    """Test cards keep holds in memory: what later requests may spend is the balance less the running holds."""

    def book(self) -> Any:
        return card_book({PAN: TestCard(balance_minor=5_000)})

    def test_a_hold_reduces_what_may_be_spent_until_it_is_released(self) -> None:
        book = self.book()
        book.apply_holds([held(amount=2_000)], NOW)
        snapshot = book.card(PAN)
        assert snapshot is not None
        assert (snapshot.balance_minor, snapshot.available_minor(NOW)) == (5_000, 3_000)
        assert snapshot.available_minor(NOW, besides=PREAUTH_RRN) == 5_000
        assert snapshot.available_minor(EXPIRY) == 5_000, "expired: holds nothing"
        book.apply_holds([Release(PREAUTH_RRN)], NOW)
        assert book.card(PAN) == TestCard(balance_minor=5_000)

    def test_expired_holds_are_forgotten_at_the_next_change(self) -> None:
        book = self.book()
        book.apply_holds([held(until=NOW + DAY, rrn="1"), held(rrn="2")], NOW)
        book.apply_holds([Release("nothing")], NOW + 2 * DAY)
        snapshot = book.card(PAN)
        assert snapshot is not None
        assert [h.preauth_rrn for h in snapshot.holds] == ["2"]

    def test_cards_without_a_balance_or_unknown_hold_nothing(self) -> None:
        book = card_book({PAN: TestCard()})
        book.apply_holds([held(), Hold("9", "not a card", 1, EXPIRY), Release("unknown")], NOW)
        assert book.card(PAN) == TestCard()

    def test_reloading_the_cards_drops_the_holds(self) -> None:
        book = self.book()
        book.apply_holds([held()], NOW)
        book.replace([(PAN, TestCard(balance_minor=5_000))])
        assert book.card(PAN) == TestCard(balance_minor=5_000)

    def test_a_balance_inquiry_answers_what_may_be_spent(self) -> None:
        decision = flow(Kind.BALANCE)(request(Kind.BALANCE, test_card=card(5_000, held(amount=1_234))), view(),
                                      context())  # fmt: skip
        assert decision.fields["54"].endswith("C000000003766")
