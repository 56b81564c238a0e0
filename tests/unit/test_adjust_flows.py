"""Adjust and tip (CUP 0220 60.1=32/34): their rule tables, (attempt, original, settings) -> reason, and their flows,
(request, view) -> (reason, commands, what the store is asked to check, the test card's change). Pure.

An adjust replaces an offline sale's amount (the newest adjust counts), a tip adds to a sale once within the cap;
neither changes the sale's row: they record a row of their own naming it, and the store checks that the sale is
still worth what the view said (ExpectAmendable). A void or reversal of a changed sale is judged at its new worth.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_tables import (
    AMOUNT,
    BATCH,
    CARD,
    NOW,
    OTHER_CARD,
    SALE_RRN,
    attempt,
    context,
    flow,
    original,
    request,
    rules,
    view,
)

from iso_host.core.amend_rules import ADJUST_RULES, TIP_RULES
from iso_host.core.flows import Decision
from iso_host.core.rules import Attempt, Rule, RuleSettings, first_failing
from iso_host.ledger.model import (
    ChangeStatus,
    ExpectAmendable,
    ExpectRefusedVoids,
    LedgerView,
    Original,
    RecordTransaction,
)
from iso_host.vocab import Kind, Reason, Status

OFFLINE = original(mti="0220")  # an offline settlement (0220 60.1=30), recorded as a sale
ONLINE = original()  # a sale authorised online (0200)
A, R = ExpectAmendable, RecordTransaction  # short names for the tables


def judged(table: tuple[Rule, ...], tried: Attempt, found: Original | None, settings: RuleSettings) -> Reason | None:
    return first_failing(table, tried, view(found), NOW, settings)


ADJUST_RULE_CASES = [
    pytest.param(attempt(amount_minor=1_200), OFFLINE, rules(), None, id="offline-sale-adjusted"),
    pytest.param(attempt(amount_minor=800), OFFLINE, rules(), None, id="down-as-well-as-up"),
    pytest.param(attempt(amount_minor=900), original(mti="0220", adjusted_minor=1_200), rules(), None,
                 id="a-later-adjust-replaces-an-earlier-one"),
    pytest.param(attempt(), None, rules(), Reason.ORIGINAL_NOT_FOUND, id="unknown-original"),
    pytest.param(attempt(rrn="000000000099"), OFFLINE, rules(), Reason.ORIGINAL_NOT_FOUND,
                 id="61-and-37-name-two-transactions"),
    pytest.param(attempt(rrn=SALE_RRN), OFFLINE, rules(), None, id="61-and-37-name-the-same-sale"),
    pytest.param(attempt(), ONLINE, rules(), Reason.NOT_VOIDABLE, id="online-sale-not-adjustable"),
    pytest.param(attempt(), original(mti="0220", kind=Kind.PREAUTH), rules(), Reason.NOT_VOIDABLE, id="not-a-sale"),
    pytest.param(attempt(), original(mti="0220", status=Status.DECLINED), rules(), Reason.NOT_VOIDABLE,
                 id="declined-sale"),
    pytest.param(attempt(), original(mti="0220", status=Status.VOIDED), rules(), Reason.ALREADY_CANCELLED,
                 id="voided-sale"),
    pytest.param(attempt(), original(mti="0220", status=Status.PARTIALLY_REFUNDED), rules(),
                 Reason.ALREADY_CANCELLED, id="refunded-sale"),
    pytest.param(attempt(), original(mti="0220", effective_reversal=True), rules(), Reason.ALREADY_CANCELLED,
                 id="reversed-sale"),
    pytest.param(attempt(), original(mti="0220", batch_settled=True), rules(), Reason.BATCH_CLOSED,
                 id="settled-batch"),
    pytest.param(attempt(batch_number=BATCH + 1), OFFLINE, rules(), Reason.BATCH_CLOSED, id="another-batch"),
    pytest.param(attempt(amount_minor=0), OFFLINE, rules(), Reason.INVALID_AMOUNT, id="zero"),
    pytest.param(attempt(amount_minor=0), OFFLINE, rules(allow_zero_amount=True), Reason.INVALID_AMOUNT,
                 id="zero-even-where-zero-sales-are-allowed"),
    pytest.param(attempt(pan_hash=OTHER_CARD.pan_hash), OFFLINE, rules(), Reason.CARD_MISMATCH, id="other-card"),
    pytest.param(attempt(pan_hash=None), OFFLINE, rules(), None, id="no-card-sent"),
]  # fmt: skip

TIP_RULE_CASES = [
    pytest.param(attempt(amount_minor=200), ONLINE, rules(), None, id="online-sale-tipped-at-the-cap"),
    pytest.param(attempt(amount_minor=200), OFFLINE, rules(), None, id="offline-sale-tipped"),
    pytest.param(attempt(amount_minor=201), ONLINE, rules(), Reason.EXCEEDS_LIMIT, id="one-unit-over-the-cap"),
    pytest.param(attempt(amount_minor=125), ONLINE, rules(tip_limit_percent=12.5), None, id="fractional-cap"),
    pytest.param(attempt(amount_minor=126), ONLINE, rules(tip_limit_percent=12.5), Reason.EXCEEDS_LIMIT,
                 id="fractional-cap-exceeded"),
    pytest.param(attempt(amount_minor=1), ONLINE, rules(tip_limit_percent=0), Reason.EXCEEDS_LIMIT,
                 id="tips-off"),
    pytest.param(attempt(amount_minor=400), original(mti="0220", adjusted_minor=2_000), rules(), None,
                 id="cap-of-the-adjusted-amount"),
    pytest.param(attempt(amount_minor=100), original(tip_minor=100), rules(), Reason.INVALID_TRANSACTION,
                 id="second-tip"),
    pytest.param(attempt(), None, rules(), Reason.ORIGINAL_NOT_FOUND, id="unknown-original"),
    pytest.param(attempt(amount_minor=100, rrn="000000000099"), ONLINE, rules(), Reason.ORIGINAL_NOT_FOUND,
                 id="61-and-37-name-two-transactions"),
    pytest.param(attempt(amount_minor=100), original(kind=Kind.COMPLETION), rules(), Reason.NOT_VOIDABLE,
                 id="not-a-sale"),
    pytest.param(attempt(amount_minor=100), original(status=Status.VOIDED), rules(), Reason.ALREADY_CANCELLED,
                 id="voided-sale"),
    pytest.param(attempt(amount_minor=100), original(batch_settled=True), rules(), Reason.BATCH_CLOSED,
                 id="settled-batch"),
    pytest.param(attempt(amount_minor=0), ONLINE, rules(), Reason.INVALID_AMOUNT, id="zero"),
    pytest.param(attempt(amount_minor=100, pan_hash=OTHER_CARD.pan_hash), ONLINE, rules(), Reason.CARD_MISMATCH,
                 id="other-card"),
]  # fmt: skip


@pytest.mark.parametrize(("tried", "found", "settings", "reason"), ADJUST_RULE_CASES)
def test_adjust_rules(tried: Attempt, found: Original | None, settings: RuleSettings, reason: Reason | None) -> None:
    """ADJUST_RULES: an offline sale of this batch, open, for a positive amount on its card."""
    assert judged(ADJUST_RULES, tried, found, settings) == reason


@pytest.mark.parametrize(("tried", "found", "settings", "reason"), TIP_RULE_CASES)
def test_tip_rules(tried: Attempt, found: Original | None, settings: RuleSettings, reason: Reason | None) -> None:
    """TIP_RULES: a sale of this batch, open and untipped, a positive tip within the cap, its card."""
    assert judged(TIP_RULES, tried, found, settings) == reason


def decide(kind: Kind, view_: LedgerView, **request_overrides: Any) -> Decision:
    return flow(kind)(request(kind, **request_overrides), view_, context(NOW, rules=rules(), dialect="cup"))


def kinds_of(decision: Decision) -> list[type]:
    return [type(command) for command in decision.commands]


FLOW_CASES = [
    # (kind, view, request overrides) -> (reason, commands, the worth the store must find, the card's change)
    pytest.param(Kind.ADJUST, view(OFFLINE), {"amount_minor": 1_500}, Reason.APPROVED, [A, R], AMOUNT, -500,
                 id="adjust-up-takes-the-difference"),
    pytest.param(Kind.ADJUST, view(OFFLINE), {"amount_minor": 700}, Reason.APPROVED, [A, R], AMOUNT, 300,
                 id="adjust-down-gives-it-back"),
    pytest.param(Kind.ADJUST, view(original(mti="0220", adjusted_minor=1_500, tip_minor=100)), {"amount_minor": 1_200},
                 Reason.APPROVED, [A, R], 1_600, 300, id="adjust-again-keeps-the-tip"),
    pytest.param(Kind.TIP, view(ONLINE), {"amount_minor": 150}, Reason.APPROVED, [A, R], AMOUNT, -150,
                 id="tip-takes-the-tip"),
    pytest.param(Kind.ADJUST, view(ONLINE), {}, Reason.NOT_VOIDABLE, [R], None, None, id="refusal-recorded"),
    pytest.param(Kind.TIP, view(original(tip_minor=100)), {"amount_minor": 100}, Reason.INVALID_TRANSACTION, [R],
                 None, None, id="second-tip-recorded"),
    pytest.param(Kind.TIP, view(), {"amount_minor": 100}, Reason.ORIGINAL_NOT_FOUND, [R], None, None,
                 id="unknown-recorded"),
    pytest.param(Kind.TIP, LedgerView(ONLINE, request_batch_settled=True), {"amount_minor": 100},
                 Reason.BATCH_OUT_OF_SYNC, [], None, None, id="own-batch-settled-writes-nothing"),
    pytest.param(Kind.TIP, LedgerView(original(tip_minor=1), request_batch_settled=True), {"amount_minor": 100},
                 Reason.INVALID_TRANSACTION, [], None, None, id="settled-refusal-unrecorded"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "view_", "overrides", "reason", "commands", "worth", "change"), FLOW_CASES)
def test_flow(kind: Kind, view_: LedgerView, overrides: dict[str, Any], reason: Reason, commands: list[type],
              worth: int | None, change: int | None) -> None:  # fmt: skip
    """The decision, what it writes and checks, and what the test card pays (negative) or gets back."""
    decision = decide(kind, view_, **overrides)
    assert (decision.reason, kinds_of(decision)) == (reason, commands)
    if worth is not None:
        assert decision.commands[0] == ExpectAmendable(SALE_RRN, worth)
        assert decision.balance_changes == ((CARD.pan_hash, change),)
        row = decision.commands[1]
        assert isinstance(row, RecordTransaction)
        assert (row.transaction.kind, row.transaction.original_rrn) == (kind, SALE_RRN)
        assert (row.transaction.amount_minor, row.transaction.status) == (overrides["amount_minor"], Status.APPROVED)
        assert decision.fields["37"] == row.transaction.rrn


DETAIL_CASES = [
    pytest.param(Kind.ADJUST, view(ONLINE), {},
                 "adjust refused: NOT_VOIDABLE (sale 000000000007 was authorised online (MTI 0200): only a tip may "
                 "change it)", id="adjust-of-an-online-sale"),
    pytest.param(Kind.TIP, view(ONLINE), {"amount_minor": 201},
                 "tip refused: EXCEEDS_LIMIT (sale 000000000007 10.00, tip 2.01, limit 20 % = 2.00)",
                 id="tip-over-the-limit"),
    pytest.param(Kind.TIP, view(original(tip_minor=100)), {"amount_minor": 100},
                 "tip refused: INVALID_TRANSACTION (sale 000000000007 already has a tip of 1.00: one tip per sale)",
                 id="second-tip"),
    pytest.param(Kind.TIP, LedgerView(ONLINE, request_batch_settled=True), {"amount_minor": 100},
                 "tip refused: BATCH_OUT_OF_SYNC (the request's batch 1 has settled)", id="own-batch-settled"),
    pytest.param(Kind.TIP, view(ONLINE), {"amount_minor": 150}, None, id="approved-without-detail"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "view_", "overrides", "detail"), DETAIL_CASES)
def test_detail(kind: Kind, view_: LedgerView, overrides: dict[str, Any], detail: str | None) -> None:
    """A refusal says which rule refused and the values it compared (Decision.detail)."""
    assert decide(kind, view_, **overrides).detail == detail


VOID_OF_CHANGED_SALE = [
    pytest.param(original(tip_minor=150), 1_150, Reason.APPROVED, id="tipped-voided-with-the-tip"),
    pytest.param(original(tip_minor=150), AMOUNT, Reason.AMOUNT_MISMATCH, id="tipped-voided-without-the-tip"),
    pytest.param(original(mti="0220", adjusted_minor=1_300), 1_300, Reason.APPROVED, id="adjusted-voided-as-adjusted"),
]  # fmt: skip


@pytest.mark.parametrize(("sale", "amount", "reason"), VOID_OF_CHANGED_SALE)
def test_void_of_a_changed_sale(sale: Original, amount: int, reason: Reason) -> None:
    """A void names what the sale is worth now (the terminal's batch shows it so), and gives all of it back."""
    decision = decide(Kind.VOID, view(sale), amount_minor=amount)
    assert decision.reason is reason
    if reason is Reason.APPROVED:
        assert kinds_of(decision) == [ExpectRefusedVoids, R, ChangeStatus]
        assert decision.balance_changes == ((CARD.pan_hash, amount),)


def test_reversal_of_a_tipped_sale_gives_back_the_tip() -> None:
    """A sale reversed after its tip counts nowhere any more, the tip with it: the card gets both back."""
    decision = decide(Kind.REVERSAL, view(original(tip_minor=150)), amount_minor=1_150)
    assert decision.reason is Reason.APPROVED
    assert decision.balance_changes == ((CARD.pan_hash, 1_150),)


@pytest.mark.parametrize("kind", [Kind.ADJUST, Kind.TIP])
def test_an_advice_is_not_reversed(kind: Kind) -> None:
    """Adjusts and tips are advices (0220), as refunds are: a 0400 naming one changes nothing and says so (12)."""
    advice = original(kind=kind, rrn="000000000009", original_rrn=SALE_RRN, mti="0220", amount_minor=150)
    decision = decide(Kind.REVERSAL, view(advice), amount_minor=150)
    assert (decision.reason, decision.commands) == (Reason.NOT_VOIDABLE, ())


def test_worth_is_the_adjusted_amount_plus_the_tip() -> None:
    sale = original(mti="0220", adjusted_minor=1_300, tip_minor=200)
    assert (sale.base_minor, sale.effective_minor) == (1_300, 1_500)
    assert (ONLINE.base_minor, ONLINE.effective_minor) == (AMOUNT, AMOUNT)


def test_tip_limit_default_is_twenty_percent() -> None:
    assert RuleSettings().tip_limit_percent == 20
