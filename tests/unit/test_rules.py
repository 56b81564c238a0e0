"""Eligibility rules: tables of (attempt, view, now, settings) -> the first failing rule's reason, or None.

Pure: no clock, no ledger. Each row is named after its case; boundaries are tested to the second on both sides
(void window, cut-off, refund age) and to the unit on both sides (refused attempts, voids per day, amounts).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from core_tables import CARD, NOW, OTHER_CARD, PAN, attempt, original, rules, view
from hypothesis import given
from hypothesis import strategies as st

from iso_host.core.amend_rules import ADJUST_RULES, TIP_RULES
from iso_host.core.rules import (
    COMPLETION_RULES,
    COMPLETION_VOID_RULES,
    PREAUTH_VOID_RULES,
    REFUND_RULES,
    VOID_RULES,
    Attempt,
    Rule,
    RuleSettings,
    business_day,
    business_day_start,
    first_failing,
    first_refusal,
)
from iso_host.ledger.model import LedgerView
from iso_host.vocab import Kind, Reason, Status

SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
SHANGHAI = ZoneInfo("Asia/Shanghai")  # UTC+8, no daylight saving
BERLIN = ZoneInfo("Europe/Berlin")  # 2025-10-26 is 25 hours long (CEST -> CET)


def at(text: str) -> datetime:
    """An aware moment from ISO 8601 text (the offset is part of the text)."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


def sale_at(created: datetime, **overrides: object) -> LedgerView:
    """The view of an approved sale made at ``created``."""
    return view(original(created_at=created, **overrides))


SALE = view(original())  # approved, five minutes before NOW, batch open, no refused attempts
OTHER_HASH = OTHER_CARD.pan_hash

VOID_CASES = [
    pytest.param(attempt(), SALE, NOW, rules(), None, id="approved"),
    # 1. the original must be found (within the terminal and merchant: the store's query sees to that)
    pytest.param(attempt(), view(), NOW, rules(), Reason.ORIGINAL_NOT_FOUND, id="no-original"),
    # 2. a voidable kind, approved
    pytest.param(attempt(), view(original(kind=Kind.REFUND)), NOW, rules(), Reason.NOT_VOIDABLE, id="refund"),
    pytest.param(attempt(), view(original(kind=Kind.VOID)), NOW, rules(), Reason.NOT_VOIDABLE, id="void-of-a-void"),
    pytest.param(attempt(), view(original(status=Status.DECLINED)), NOW, rules(), Reason.NOT_VOIDABLE,
                 id="declined-sale"),
    # 3. not cancelled yet
    *(
        pytest.param(attempt(), view(original(status=status)), NOW, rules(), Reason.ALREADY_CANCELLED,
                     id=f"already-{status.value.lower()}")
        for status in (Status.VOIDED, Status.REVERSED, Status.REFUNDED, Status.PARTIALLY_REFUNDED)
    ),
    pytest.param(attempt(), view(original(effective_reversal=True)), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="an-effective-reversal-points-at-it"),
    # 4. its batch still open
    pytest.param(attempt(), view(original(batch_settled=True)), NOW, rules(), Reason.BATCH_CLOSED,
                 id="batch-settled"),
    # 5. the void window: the same business day (cut-off 00:00 UTC by default) and at most max_void_age_h old
    pytest.param(attempt(), sale_at(at("2025-01-01T00:00:00+00:00")), at("2025-01-01T23:59:59+00:00"), rules(),
                 None, id="first-to-last-second-of-the-day"),
    pytest.param(attempt(), sale_at(at("2024-12-31T23:59:59+00:00")), at("2025-01-01T00:00:00+00:00"), rules(),
                 Reason.VOID_WINDOW_EXPIRED, id="one-second-across-midnight"),
    pytest.param(attempt(), sale_at(at("2025-01-01T21:59:59+00:00")), at("2025-01-01T22:00:00+00:00"),
                 rules(business_day_cutoff=time(22, 0)), Reason.VOID_WINDOW_EXPIRED, id="one-second-across-cutoff"),
    pytest.param(attempt(), sale_at(at("2025-01-01T22:00:00+00:00")), at("2025-01-02T21:59:59+00:00"),
                 rules(business_day_cutoff=time(22, 0)), None, id="cutoff-to-one-second-before-the-next"),
    pytest.param(attempt(), sale_at(at("2025-01-01T23:00:00+00:00")), at("2025-01-02T01:00:00+00:00"),
                 rules(business_day_cutoff=time(22, 0)), None, id="midnight-inside-a-business-day"),
    pytest.param(attempt(), sale_at(at("2025-01-01T22:29:59+00:00")), at("2025-01-01T22:30:00+00:00"),
                 rules(business_day_cutoff=time(22, 30)), Reason.VOID_WINDOW_EXPIRED, id="half-hour-cutoff"),
    pytest.param(attempt(), sale_at(at("2025-01-01T23:59:59+08:00")), at("2025-01-02T00:00:00+08:00"),
                 rules(timezone=SHANGHAI), Reason.VOID_WINDOW_EXPIRED, id="local-midnight-in-shanghai"),
    pytest.param(attempt(), sale_at(at("2025-01-01T00:00:00+08:00")), at("2025-01-01T23:59:59+08:00"),
                 rules(timezone=SHANGHAI), None, id="whole-local-day-in-shanghai"),
    pytest.param(attempt(), sale_at(at("2025-01-01T07:59:59+00:00")), at("2025-01-01T08:00:00+00:00"),
                 rules(timezone=SHANGHAI, business_day_cutoff=time(16, 0)), Reason.VOID_WINDOW_EXPIRED,
                 id="local-cutoff-in-shanghai"),
    pytest.param(attempt(), sale_at(NOW - 2 * HOUR), NOW, rules(max_void_age_h=2.0), None, id="max-age-exactly"),
    pytest.param(attempt(), sale_at(NOW - 2 * HOUR - SECOND), NOW, rules(max_void_age_h=2.0),
                 Reason.VOID_WINDOW_EXPIRED, id="max-age-and-a-second"),
    pytest.param(attempt(), sale_at(at("2025-10-26T00:00:30+02:00")), at("2025-10-26T23:30:00+01:00"),
                 rules(timezone=BERLIN), Reason.VOID_WINDOW_EXPIRED, id="25-hour-day-over-24-hours"),
    pytest.param(attempt(), sale_at(at("2025-10-26T00:00:30+02:00")), at("2025-10-26T23:30:00+01:00"),
                 rules(timezone=BERLIN, max_void_age_h=25.0), None, id="25-hour-day-within-25-hours"),
    pytest.param(attempt(), sale_at(NOW - 48 * HOUR), NOW, rules(void_window=48.0), None, id="hours-window-exactly"),
    pytest.param(attempt(), sale_at(NOW - 48 * HOUR - SECOND), NOW, rules(void_window=48.0),
                 Reason.VOID_WINDOW_EXPIRED, id="hours-window-and-a-second"),
    pytest.param(attempt(), sale_at(NOW + HOUR), NOW, rules(), Reason.VOID_WINDOW_EXPIRED,
                 id="original-from-the-future"),  # the clock was set back: test_rules_clock.py
    # 8a. refused attempts per original, before what the request says (amount, card, operator)
    pytest.param(attempt(), view(original(refused_void_attempts=2)), NOW, rules(), None, id="below-refused-limit"),
    pytest.param(attempt(), view(original(refused_void_attempts=3)), NOW, rules(), Reason.VOID_LIMIT_EXCEEDED,
                 id="at-refused-limit"),
    pytest.param(attempt(), SALE, NOW, rules(max_refused_void_attempts=0), Reason.VOID_LIMIT_EXCEEDED,
                 id="no-attempt-allowed"),
    # 6. amount and card
    pytest.param(attempt(amount_minor=999), SALE, NOW, rules(), Reason.AMOUNT_MISMATCH, id="amount-a-cent-less"),
    pytest.param(attempt(amount_minor=1_001), SALE, NOW, rules(), Reason.AMOUNT_MISMATCH, id="amount-a-cent-more"),
    pytest.param(attempt(pan_hash=OTHER_HASH), SALE, NOW, rules(), Reason.CARD_MISMATCH, id="other-card"),
    pytest.param(attempt(pan_hash=None), SALE, NOW, rules(), None, id="request-without-card"),
    pytest.param(attempt(pan_hash=OTHER_HASH), view(original(card=None)), NOW, rules(), None,
                 id="original-without-card"),
    # 7. operator
    pytest.param(attempt(operator_permitted=False), SALE, NOW, rules(), Reason.OPERATOR_NOT_PERMITTED,
                 id="operator-not-permitted"),
    # 8b. voids per terminal and business day, last
    pytest.param(attempt(), view(original(), voids_today=4), NOW, rules(max_voids_per_day=5), None,
                 id="below-daily-limit"),
    pytest.param(attempt(), view(original(), voids_today=5), NOW, rules(max_voids_per_day=5),
                 Reason.VOID_LIMIT_EXCEEDED, id="at-daily-limit"),
    pytest.param(attempt(), view(original(), voids_today=10_000), NOW, rules(), None, id="unlimited-by-default"),
    # the order of the table: the first failing rule gives the reason
    pytest.param(attempt(amount_minor=1), view(), NOW, rules(max_refused_void_attempts=0), Reason.ORIGINAL_NOT_FOUND,
                 id="order-not-found-first"),
    pytest.param(attempt(), view(original(status=Status.VOIDED, batch_settled=True)), NOW, rules(),
                 Reason.ALREADY_CANCELLED, id="order-cancelled-before-settled"),
    pytest.param(attempt(), sale_at(NOW - 25 * HOUR, batch_settled=True), NOW, rules(), Reason.BATCH_CLOSED,
                 id="order-settled-before-expired"),
    pytest.param(attempt(amount_minor=1), sale_at(NOW - 25 * HOUR, refused_void_attempts=3), NOW, rules(),
                 Reason.VOID_WINDOW_EXPIRED, id="order-expired-before-limit"),
    pytest.param(attempt(amount_minor=1), view(original(refused_void_attempts=3)), NOW, rules(),
                 Reason.VOID_LIMIT_EXCEEDED, id="order-limit-before-amount"),
    pytest.param(attempt(pan_hash=OTHER_HASH, operator_permitted=False), view(original(refused_void_attempts=3)),
                 NOW, rules(), Reason.VOID_LIMIT_EXCEEDED, id="order-limit-before-card-and-operator"),
    pytest.param(attempt(amount_minor=1, pan_hash=OTHER_HASH), SALE, NOW, rules(), Reason.AMOUNT_MISMATCH,
                 id="order-amount-before-card"),
    pytest.param(attempt(pan_hash=OTHER_HASH, operator_permitted=False), SALE, NOW, rules(), Reason.CARD_MISMATCH,
                 id="order-card-before-operator"),
    pytest.param(attempt(operator_permitted=False), view(original(), voids_today=5), NOW,
                 rules(max_voids_per_day=5), Reason.OPERATOR_NOT_PERMITTED, id="order-operator-before-daily-limit"),
    pytest.param(attempt(amount_minor=1), view(original(), voids_today=5), NOW, rules(max_voids_per_day=5),
                 Reason.AMOUNT_MISMATCH, id="order-daily-limit-last"),
]  # fmt: skip

REFUND_CASES = [
    pytest.param(attempt(), SALE, NOW, rules(), None, id="full-refund"),
    pytest.param(attempt(amount_minor=1), SALE, NOW, rules(), None, id="smallest-partial-refund"),
    pytest.param(attempt(), view(), NOW, rules(), Reason.ORIGINAL_NOT_FOUND, id="no-original"),
    pytest.param(attempt(), view(original(kind=Kind.REFUND)), NOW, rules(), Reason.NOT_VOIDABLE,
                 id="refund-of-a-refund"),
    pytest.param(attempt(), view(original(status=Status.DECLINED)), NOW, rules(), Reason.NOT_VOIDABLE,
                 id="declined-sale"),
    *(
        pytest.param(attempt(), view(original(status=status)), NOW, rules(), Reason.ALREADY_CANCELLED,
                     id=f"already-{status.value.lower()}")
        for status in (Status.VOIDED, Status.REVERSED, Status.REFUNDED)
    ),
    pytest.param(attempt(), view(original(effective_reversal=True)), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="an-effective-reversal-points-at-it"),
    pytest.param(attempt(amount_minor=600), view(original(status=Status.PARTIALLY_REFUNDED, refunded_minor=400)),
                 NOW, rules(), None, id="rest-of-a-partial-refund"),
    pytest.param(attempt(amount_minor=601), view(original(status=Status.PARTIALLY_REFUNDED, refunded_minor=400)),
                 NOW, rules(), Reason.AMOUNT_MISMATCH, id="a-cent-over-the-rest"),
    pytest.param(attempt(amount_minor=1_001), SALE, NOW, rules(), Reason.AMOUNT_MISMATCH, id="more-than-the-sale"),
    pytest.param(attempt(amount_minor=0), SALE, NOW, rules(), Reason.AMOUNT_MISMATCH, id="zero"),
    pytest.param(attempt(), sale_at(NOW - timedelta(days=30)), NOW, rules(), None, id="age-exactly-30-days"),
    pytest.param(attempt(), sale_at(NOW - timedelta(days=30) - SECOND), NOW, rules(), Reason.VOID_WINDOW_EXPIRED,
                 id="age-30-days-and-a-second"),
    pytest.param(attempt(), SALE, NOW, rules(refund_max_age_days=0), Reason.VOID_WINDOW_EXPIRED,
                 id="no-refund-age-allowed"),
    pytest.param(attempt(), sale_at(NOW - 2 * HOUR), NOW, rules(max_void_age_h=1.0), None,
                 id="the-void-window-does-not-apply"),
    pytest.param(attempt(), view(original(batch_settled=True)), NOW, rules(), None, id="sale-of-a-settled-batch"),
    pytest.param(attempt(), view(original(refused_void_attempts=3)), NOW, rules(), None,
                 id="refused-voids-do-not-count"),
    pytest.param(attempt(operator_permitted=False), SALE, NOW, rules(), None, id="operator-is-not-checked"),
    pytest.param(attempt(pan_hash=OTHER_HASH), SALE, NOW, rules(), Reason.CARD_MISMATCH, id="other-card"),
    pytest.param(attempt(pan_hash=None), SALE, NOW, rules(), None, id="request-without-card"),
    pytest.param(attempt(amount_minor=2_000, pan_hash=OTHER_HASH), sale_at(NOW - timedelta(days=31)), NOW, rules(),
                 Reason.VOID_WINDOW_EXPIRED, id="order-age-before-amount-and-card"),
    pytest.param(attempt(amount_minor=2_000, pan_hash=OTHER_HASH), SALE, NOW, rules(), Reason.AMOUNT_MISMATCH,
                 id="order-amount-before-card"),
]  # fmt: skip

COLUMNS = ("attempt_", "view_", "now", "settings", "reason")


@pytest.mark.parametrize(COLUMNS, VOID_CASES)
def test_void_rules(attempt_: Attempt, view_: LedgerView, now: datetime, settings: RuleSettings,
                    reason: Reason | None) -> None:  # fmt: skip
    """A void gets the reason of the first rule of VOID_RULES it fails, or passes them all."""
    assert first_failing(VOID_RULES, attempt_, view_, now, settings) is reason


@pytest.mark.parametrize(COLUMNS, REFUND_CASES)
def test_refund_rules(attempt_: Attempt, view_: LedgerView, now: datetime, settings: RuleSettings,
                      reason: Reason | None) -> None:  # fmt: skip
    """A refund gets the reason of the first rule of REFUND_RULES it fails, or passes them all."""
    assert first_failing(REFUND_RULES, attempt_, view_, now, settings) is reason


def test_every_rule_has_a_failing_row() -> None:
    """Each reason the tables can give appears in at least one row above, so no rule goes untested."""
    void_reasons = {p.values[-1] for p in VOID_CASES}
    refund_reasons = {p.values[-1] for p in REFUND_CASES}
    assert {rule.reason for rule in VOID_RULES} <= void_reasons
    assert {rule.reason for rule in REFUND_RULES} <= refund_reasons


# Decision.detail: the first failing rule's words, "<kind> refused: <REASON> (<what it compared>)". One row per rule
# of VOID_RULES and REFUND_RULES, and at least one per other table.
V, F, PV, C, CV, A, T = VOID_RULES, REFUND_RULES, PREAUTH_VOID_RULES, COMPLETION_RULES, COMPLETION_VOID_RULES, \
    ADJUST_RULES, TIP_RULES  # fmt: skip
PREAUTH = {"kind": Kind.PREAUTH, "processing_code": "030000", "mti": "0100"}
OFFLINE = {"mti": "0220"}

DETAIL_CASES = [
    pytest.param(V, Kind.VOID, attempt(), view(), NOW, rules(),
                 "void refused: ORIGINAL_NOT_FOUND (no original of this terminal and merchant)", id="void-not-found"),
    pytest.param(V, Kind.VOID, attempt(rrn="000000000099"), view(), NOW, rules(),
                 "void refused: ORIGINAL_NOT_FOUND (no original of this terminal and merchant with RRN 000000000099)",
                 id="void-not-found-by-rrn"),
    pytest.param(V, Kind.VOID, attempt(), view(original(kind=Kind.REFUND)), NOW, rules(),
                 "void refused: NOT_VOIDABLE (original 000000000007 is a refund, not an approved sale)",
                 id="void-of-a-refund"),
    pytest.param(V, Kind.VOID, attempt(), view(original(status=Status.DECLINED)), NOW, rules(),
                 "void refused: NOT_VOIDABLE (original 000000000007 is a declined sale, not an approved sale)",
                 id="void-of-a-declined-sale"),
    pytest.param(V, Kind.VOID, attempt(), view(original(status=Status.VOIDED)), NOW, rules(),
                 "void refused: ALREADY_CANCELLED (sale 000000000007 is VOIDED)", id="void-of-a-voided-sale"),
    pytest.param(V, Kind.VOID, attempt(), view(original(effective_reversal=True)), NOW, rules(),
                 "void refused: ALREADY_CANCELLED (sale 000000000007 is reversed)", id="void-of-a-reversed-sale"),
    pytest.param(V, Kind.VOID, attempt(), view(original(batch_settled=True)), NOW, rules(),
                 "void refused: BATCH_CLOSED (sale 000000000007 is in batch 1, settled)", id="void-batch-settled"),
    pytest.param(V, Kind.VOID, attempt(), sale_at(at("2024-12-31T23:59:59+00:00")), at("2025-01-01T00:00:00+00:00"),
                 rules(), "void refused: VOID_WINDOW_EXPIRED (sale 000000000007 at 2024-12-31 23:59:59, business day "
                 "2024-12-31; now 2025-01-01 00:00:00, business day 2025-01-01)", id="void-across-midnight"),
    pytest.param(V, Kind.VOID, attempt(), sale_at(at("2025-01-01T00:00:30+08:00")), at("2025-01-01T23:00:00+08:00"),
                 rules(timezone=SHANGHAI, max_void_age_h=20.0), "void refused: VOID_WINDOW_EXPIRED (sale 000000000007 "
                 "at 2025-01-01 00:00:30, 22 h 59 min 30 s ago, at most 20 h)", id="void-max-age-in-local-time"),
    pytest.param(V, Kind.VOID, attempt(), sale_at(NOW - 30 * 60 * SECOND - SECOND), NOW, rules(void_window=0.5),
                 "void refused: VOID_WINDOW_EXPIRED (sale 000000000007 at 2025-01-01 11:29:59, 30 min 1 s ago, window "
                 "30 min)", id="void-hours-window"),
    pytest.param(V, Kind.VOID, attempt(), sale_at(NOW + HOUR), NOW, rules(),
                 "void refused: VOID_WINDOW_EXPIRED (sale 000000000007 at 2025-01-01 13:00:00, after now 2025-01-01 "
                 "12:00:00: the clock went back)", id="void-sale-from-the-future"),
    pytest.param(V, Kind.VOID, attempt(), view(original(refused_void_attempts=3)), NOW, rules(),
                 "void refused: VOID_LIMIT_EXCEEDED (sale 000000000007 has 3 refused attempts, limit 3)",
                 id="void-refused-attempts"),
    pytest.param(V, Kind.VOID, attempt(amount_minor=1_200), SALE, NOW, rules(),
                 "void refused: AMOUNT_MISMATCH (sale 000000000007 10.00, void 12.00)", id="void-amount"),
    pytest.param(V, Kind.VOID, attempt(amount_minor=1_000), view(original(tip_minor=200)), NOW, rules(),
                 "void refused: AMOUNT_MISMATCH (sale 000000000007 12.00 as adjusted and tipped, recorded at 10.00, "
                 "void 10.00)", id="void-amount-of-a-tipped-sale"),
    pytest.param(V, Kind.VOID, attempt(pan_hash=None), SALE, NOW, rules(void_requires_card=True),
                 "void refused: CARD_MISMATCH (no card in the request, sale 000000000007 was paid by card, "
                 "void_requires_card on)", id="void-without-card"),
    pytest.param(V, Kind.VOID, attempt(pan_hash=OTHER_HASH), SALE, NOW, rules(),
                 "void refused: CARD_MISMATCH (the request's card is not the card of sale 000000000007)",
                 id="void-other-card"),
    pytest.param(V, Kind.VOID, attempt(operator_permitted=False), SALE, NOW, rules(),
                 "void refused: OPERATOR_NOT_PERMITTED (the terminal's configuration does not let this operator void)",
                 id="void-operator"),
    pytest.param(V, Kind.VOID, attempt(), view(original(), voids_today=5), NOW, rules(max_voids_per_day=5),
                 "void refused: VOID_LIMIT_EXCEEDED (5 voids this business day, limit 5)", id="void-daily-limit"),
    pytest.param(F, Kind.REFUND, attempt(), view(), NOW, rules(),
                 "refund refused: ORIGINAL_NOT_FOUND (no original of this terminal and merchant)",
                 id="refund-not-found"),
    pytest.param(F, Kind.REFUND, attempt(), view(original(kind=Kind.VOID)), NOW, rules(),
                 "refund refused: NOT_VOIDABLE (original 000000000007 is a void, not an approved sale)",
                 id="refund-of-a-void"),
    pytest.param(F, Kind.REFUND, attempt(), view(original(status=Status.REFUNDED)), NOW, rules(),
                 "refund refused: ALREADY_CANCELLED (sale 000000000007 is REFUNDED)", id="refund-refunded"),
    pytest.param(F, Kind.REFUND, attempt(), sale_at(NOW - 31 * 24 * HOUR), NOW, rules(),
                 "refund refused: VOID_WINDOW_EXPIRED (sale 000000000007 at 2024-12-01 12:00:00, 31 d ago, at most "
                 "30 d)", id="refund-age"),
    pytest.param(F, Kind.REFUND, attempt(amount_minor=601),
                 view(original(status=Status.PARTIALLY_REFUNDED, refunded_minor=400)), NOW, rules(),
                 "refund refused: AMOUNT_MISMATCH (sale 000000000007 10.00, refunded 4.00, refundable 6.00, refund "
                 "6.01)", id="refund-exceeds-the-rest"),
    pytest.param(F, Kind.REFUND, attempt(pan_hash=OTHER_HASH), SALE, NOW, rules(),
                 "refund refused: CARD_MISMATCH (the request's card is not the card of sale 000000000007)",
                 id="refund-other-card"),
    pytest.param(PV, Kind.PREAUTH_VOID, attempt(auth_code="654321"), view(original(**PREAUTH)), NOW, rules(),
                 "pre-auth void refused: ORIGINAL_NOT_FOUND (approval code 654321 named, pre-auth 000000000007 has "
                 "123456)", id="preauth-void-other-approval-code"),
    pytest.param(PV, Kind.PREAUTH_VOID, attempt(), view(original(**PREAUTH, closed_by=Kind.COMPLETION)), NOW,
                 rules(), "pre-auth void refused: ALREADY_CANCELLED (pre-auth 000000000007 is closed by a completion)",
                 id="preauth-void-completed"),
    pytest.param(PV, Kind.PREAUTH_VOID, attempt(), view(original(**PREAUTH, created_at=NOW - 31 * 24 * HOUR)), NOW,
                 rules(), "pre-auth void refused: VOID_WINDOW_EXPIRED (pre-auth 000000000007 at 2024-12-01 12:00:00, "
                 "expired 2024-12-31 12:00:00 after 30 d)", id="preauth-void-expired"),
    pytest.param(C, Kind.COMPLETION, attempt(), SALE, NOW, rules(),
                 "completion refused: ORIGINAL_NOT_FOUND (original 000000000007 is a sale, not a pre-auth)",
                 id="completion-of-a-sale"),
    pytest.param(C, Kind.COMPLETION, attempt(amount_minor=1_151), view(original(**PREAUTH)), NOW, rules(),
                 "completion refused: AMOUNT_MISMATCH (pre-auth 000000000007 10.00, completion 11.51, limit 15 % "
                 "above = 11.50)", id="completion-over-the-tolerance"),
    pytest.param(C, Kind.COMPLETION, attempt(amount_minor=0), view(original(**PREAUTH)), NOW, rules(),
                 "completion refused: AMOUNT_MISMATCH (pre-auth 000000000007 10.00, completion 0.00, zero amounts not "
                 "allowed)", id="completion-of-zero"),
    pytest.param(CV, Kind.COMPLETION_VOID, attempt(), SALE, NOW, rules(),
                 "completion void refused: NOT_VOIDABLE (original 000000000007 is a sale, not an approved completion)",
                 id="completion-void-of-a-sale"),
    pytest.param(A, Kind.ADJUST, attempt(), SALE, NOW, rules(),
                 "adjust refused: NOT_VOIDABLE (sale 000000000007 was authorised online (MTI 0200): only a tip may "
                 "change it)", id="adjust-online-sale"),
    pytest.param(A, Kind.ADJUST, attempt(rrn="000000000099"), view(original(**OFFLINE)), NOW, rules(),
                 "adjust refused: ORIGINAL_NOT_FOUND (RRN 000000000099 named, batch 1 STAN 000007 names sale "
                 "000000000007)", id="adjust-two-names"),
    pytest.param(A, Kind.ADJUST, attempt(batch_number=2), view(original(**OFFLINE)), NOW, rules(),
                 "adjust refused: BATCH_CLOSED (sale 000000000007 is in batch 1, the request in 2)",
                 id="adjust-other-batch"),
    pytest.param(A, Kind.ADJUST, attempt(amount_minor=0), view(original(**OFFLINE)), NOW, rules(),
                 "adjust refused: INVALID_AMOUNT (amount 0.00, must be above 0.00)", id="adjust-to-zero"),
    pytest.param(T, Kind.TIP, attempt(amount_minor=100), view(original(tip_minor=100)), NOW, rules(),
                 "tip refused: INVALID_TRANSACTION (sale 000000000007 already has a tip of 1.00: one tip per sale)",
                 id="tip-twice"),
    pytest.param(T, Kind.TIP, attempt(amount_minor=201), SALE, NOW, rules(),
                 "tip refused: EXCEEDS_LIMIT (sale 000000000007 10.00, tip 2.01, limit 20 % = 2.00)",
                 id="tip-over-the-limit"),
]  # fmt: skip


@pytest.mark.parametrize(("table", "kind", "attempt_", "view_", "now", "settings", "detail"), DETAIL_CASES)
def test_refusal_words(table: tuple[Rule, ...], kind: Kind, attempt_: Attempt, view_: LedgerView, now: datetime,
                       settings: RuleSettings, detail: str) -> None:  # fmt: skip
    """The first failing rule says what it compared: the kind, the reason and the values, never card data."""
    tried = dataclasses.replace(attempt_, kind=kind)
    refusal = first_refusal(table, tried, view_, now, settings)
    assert refusal is not None
    assert refusal.reason is first_failing(table, tried, view_, now, settings)
    assert refusal.detail(kind) == detail
    assert not [secret for secret in (PAN, CARD.masked_pan, CARD.pan_hash, OTHER_HASH) if secret in detail]


def test_every_table_has_a_words_row() -> None:
    """Each table has rows above, and every reason VOID_RULES and REFUND_RULES give is explained by one."""
    tables = {id(p.values[0]) for p in DETAIL_CASES}
    assert tables == {id(table) for table in (V, F, PV, C, CV, A, T)}
    for table in (V, F):
        explained = {p.values[-1].split(" (")[0].split(": ")[1] for p in DETAIL_CASES if p.values[0] is table}
        assert {rule.reason.value for rule in table} <= explained


def test_passing_rules_have_no_refusal() -> None:
    assert first_refusal(VOID_RULES, attempt(kind=Kind.VOID), SALE, NOW, rules()) is None


BUSINESS_DAYS = [
    pytest.param(at("2025-01-01T00:00:00+00:00"), rules(), date(2025, 1, 1), id="midnight-begins-the-day"),
    pytest.param(at("2025-01-01T23:59:59+00:00"), rules(), date(2025, 1, 1), id="last-second-of-the-day"),
    pytest.param(at("2025-01-01T21:59:59+00:00"), rules(business_day_cutoff=time(22, 0)), date(2025, 1, 1),
                 id="before-cutoff"),
    pytest.param(at("2025-01-01T22:00:00+00:00"), rules(business_day_cutoff=time(22, 0)), date(2025, 1, 2),
                 id="at-cutoff"),
    pytest.param(at("2025-01-01T22:29:59+00:00"), rules(business_day_cutoff=time(22, 30)), date(2025, 1, 1),
                 id="before-half-hour-cutoff"),
    pytest.param(at("2025-01-01T22:30:00+00:00"), rules(business_day_cutoff=time(22, 30)), date(2025, 1, 2),
                 id="at-half-hour-cutoff"),
    pytest.param(at("2025-01-01T15:59:59+00:00"), rules(timezone=SHANGHAI), date(2025, 1, 1),
                 id="shanghai-before-local-midnight"),
    pytest.param(at("2025-01-01T16:00:00+00:00"), rules(timezone=SHANGHAI), date(2025, 1, 2),
                 id="shanghai-local-midnight"),
    pytest.param(at("2025-10-26T23:59:59+01:00"), rules(timezone=BERLIN), date(2025, 10, 26),
                 id="berlin-end-of-a-25-hour-day"),
]  # fmt: skip


@pytest.mark.parametrize(("moment", "settings", "day"), BUSINESS_DAYS)
def test_business_day(moment: datetime, settings: RuleSettings, day: date) -> None:
    """A moment belongs to its local date, or to the next one from the cut-off on."""
    assert business_day(moment, settings) == day


BUSINESS_DAY_STARTS = [
    pytest.param(at("2025-01-01T12:00:00+00:00"), rules(), at("2025-01-01T00:00:00+00:00"), id="midnight"),
    pytest.param(at("2025-01-01T21:00:00+00:00"), rules(business_day_cutoff=time(22, 0)),
                 at("2024-12-31T22:00:00+00:00"), id="before-cutoff-began-yesterday"),
    pytest.param(at("2025-01-01T22:00:00+00:00"), rules(business_day_cutoff=time(22, 0)),
                 at("2025-01-01T22:00:00+00:00"), id="at-cutoff-begins-now"),
    pytest.param(at("2025-01-01T12:00:00+00:00"), rules(timezone=SHANGHAI), at("2025-01-01T00:00:00+08:00"),
                 id="shanghai-midnight"),
    pytest.param(at("2025-10-26T12:00:00+01:00"), rules(timezone=BERLIN), at("2025-10-26T00:00:00+02:00"),
                 id="berlin-midnight-in-summer-time"),
]  # fmt: skip


@pytest.mark.parametrize(("now", "settings", "start"), BUSINESS_DAY_STARTS)
def test_business_day_start(now: datetime, settings: RuleSettings, start: datetime) -> None:
    """The per-day void limit counts from the moment the business day of ``now`` began."""
    assert business_day_start(now, settings) == start


ZONES = st.sampled_from([ZoneInfo("UTC"), SHANGHAI, ZoneInfo("America/Sao_Paulo")])  # no daylight saving in 2025
MINUTE_CUTOFFS = st.builds(time, st.integers(0, 23), st.integers(0, 59))
MOMENTS = st.datetimes(datetime(2024, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC))


@given(now=MOMENTS, zone=ZONES, cutoff=MINUTE_CUTOFFS)
def test_business_day_start_begins_the_day_of_now(now: datetime, zone: ZoneInfo, cutoff: time) -> None:
    """The start is at or before ``now``, in the same business day, and a microsecond earlier is the day before."""
    settings = rules(timezone=zone, business_day_cutoff=cutoff)
    start = business_day_start(now, settings)
    assert start.astimezone(UTC) <= now
    assert business_day(start, settings) == business_day(now, settings)
    assert business_day(start - timedelta(microseconds=1), settings) == business_day(now, settings) - timedelta(days=1)


def test_a_cutoff_with_seconds_is_honoured_by_both_helpers() -> None:
    """A cut-off given to the second puts 22:00:10 in the day before it, and the day began before now."""
    settings = rules(business_day_cutoff=time(22, 0, 30))
    now = at("2025-01-01T22:00:10+00:00")
    assert business_day(now, settings) == date(2025, 1, 1)
    assert business_day_start(now, settings) <= now
