"""The pre-authorisation family's rules: tables of (attempt, view, now, settings) -> the first failing rule's reason.

Pure: no clock, no ledger. PREAUTH_VOID_RULES, COMPLETION_RULES and COMPLETION_VOID_RULES, each row named after its
case; the pre-auth's expiry is tested to the second on both sides, the completion tolerance to the unit, and the day a
terminal names (CUP 61.3) across year ends, leap days and time zones.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from core_tables import NOW, OTHER_CARD, attempt, original, rules, view

from iso_host.core.originals import named_day
from iso_host.core.rules import (
    COMPLETION_RULES,
    COMPLETION_VOID_RULES,
    PREAUTH_VOID_RULES,
    Attempt,
    RuleSettings,
    first_failing,
    preauth_expiry,
)
from iso_host.ledger.model import LedgerView
from iso_host.vocab import Kind, Reason, Status

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
SHANGHAI = ZoneInfo("Asia/Shanghai")
AUTH_CODE = "123456"  # core_tables' original's approval code
OTHER_HASH = OTHER_CARD.pan_hash


def preauth(**overrides: object) -> LedgerView:
    """An open pre-auth of 10.00, approved five minutes before NOW (overrides: its record or its flags)."""
    return view(original(**({"kind": Kind.PREAUTH, "processing_code": "030000", "mti": "0100"} | overrides)))


def preauth_at(created: datetime, **overrides: object) -> LedgerView:
    return preauth(created_at=created, **overrides)


def completion(**overrides: object) -> LedgerView:
    """An approved completion of 10.00, five minutes before NOW."""
    return view(original(**({"kind": Kind.COMPLETION, "original_rrn": "000000000001"} | overrides)))


OPEN = preauth()
EXPIRES = NOW - timedelta(minutes=5) + 30 * DAY  # preauth_days 30 after OPEN's approval

PREAUTH_VOID_CASES = [
    pytest.param(attempt(), OPEN, NOW, rules(), None, id="approved"),
    pytest.param(attempt(auth_code=AUTH_CODE), OPEN, NOW, rules(), None, id="naming-its-approval-code"),
    pytest.param(attempt(auth_code=AUTH_CODE + " "), OPEN, NOW, rules(), None, id="approval-code-space-padded"),
    # 1. found, and named consistently (F38 and 61.1/61.2 name the same pre-auth)
    pytest.param(attempt(), view(), NOW, rules(), Reason.ORIGINAL_NOT_FOUND, id="no-original"),
    pytest.param(attempt(auth_code="654321"), OPEN, NOW, rules(), Reason.ORIGINAL_NOT_FOUND,
                 id="another-approval-code"),
    # 2. a pre-auth that was approved
    pytest.param(attempt(), view(original()), NOW, rules(), Reason.NOT_VOIDABLE, id="a-sale"),
    pytest.param(attempt(), completion(), NOW, rules(), Reason.NOT_VOIDABLE, id="a-completion"),
    pytest.param(attempt(), preauth(status=Status.DECLINED), NOW, rules(), Reason.NOT_VOIDABLE,
                 id="declined-preauth"),
    # 3. still open
    pytest.param(attempt(), preauth(closed_by=Kind.PREAUTH_VOID), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="voided-already"),
    pytest.param(attempt(), preauth(closed_by=Kind.COMPLETION), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="completed-already"),
    pytest.param(attempt(), preauth(status=Status.REVERSED), NOW, rules(), Reason.ALREADY_CANCELLED, id="reversed"),
    pytest.param(attempt(), preauth(effective_reversal=True), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="an-effective-reversal-points-at-it"),
    # 4. not expired: preauth_days after its approval, to the second; its batch and the void window do not matter
    pytest.param(attempt(), OPEN, EXPIRES - SECOND, rules(), None, id="a-second-before-expiry"),
    pytest.param(attempt(), OPEN, EXPIRES, rules(), Reason.VOID_WINDOW_EXPIRED, id="at-expiry"),
    pytest.param(attempt(), preauth_at(NOW - DAY), NOW, rules(preauth_days=1), Reason.VOID_WINDOW_EXPIRED,
                 id="one-day-preauths"),
    pytest.param(attempt(), preauth_at(NOW - 3 * DAY), NOW, rules(), None, id="days-later"),
    pytest.param(attempt(), preauth(batch_settled=True), NOW, rules(), None, id="its-batch-settled"),
    # 5. refused attempts, before what the request says
    pytest.param(attempt(), preauth(refused_void_attempts=2), NOW, rules(), None, id="below-refused-limit"),
    pytest.param(attempt(), preauth(refused_void_attempts=3), NOW, rules(), Reason.VOID_LIMIT_EXCEEDED,
                 id="at-refused-limit"),
    # 6. amount, card, operator
    pytest.param(attempt(amount_minor=999), OPEN, NOW, rules(), Reason.AMOUNT_MISMATCH, id="amount-a-cent-less"),
    pytest.param(attempt(amount_minor=1_001), OPEN, NOW, rules(), Reason.AMOUNT_MISMATCH, id="amount-a-cent-more"),
    pytest.param(attempt(pan_hash=OTHER_HASH), OPEN, NOW, rules(), Reason.CARD_MISMATCH, id="other-card"),
    pytest.param(attempt(pan_hash=None), OPEN, NOW, rules(), None, id="request-without-card"),
    pytest.param(attempt(operator_permitted=False), OPEN, NOW, rules(), Reason.OPERATOR_NOT_PERMITTED,
                 id="operator-not-permitted"),
    # the order of the table
    pytest.param(attempt(auth_code="654321"), view(original()), NOW, rules(), Reason.ORIGINAL_NOT_FOUND,
                 id="order-approval-code-before-kind"),
    pytest.param(attempt(), preauth(status=Status.DECLINED, closed_by=Kind.COMPLETION), NOW, rules(),
                 Reason.NOT_VOIDABLE, id="order-kind-before-open"),
    pytest.param(attempt(), preauth_at(NOW - 31 * DAY, closed_by=Kind.COMPLETION), NOW, rules(),
                 Reason.ALREADY_CANCELLED, id="order-open-before-expiry"),
    pytest.param(attempt(amount_minor=1), preauth_at(NOW - 31 * DAY, refused_void_attempts=3), NOW, rules(),
                 Reason.VOID_WINDOW_EXPIRED, id="order-expiry-before-limit"),
    pytest.param(attempt(amount_minor=1, pan_hash=OTHER_HASH), preauth(refused_void_attempts=3), NOW, rules(),
                 Reason.VOID_LIMIT_EXCEEDED, id="order-limit-before-amount-and-card"),
    pytest.param(attempt(amount_minor=1, pan_hash=OTHER_HASH), OPEN, NOW, rules(), Reason.AMOUNT_MISMATCH,
                 id="order-amount-before-card"),
    pytest.param(attempt(pan_hash=OTHER_HASH, operator_permitted=False), OPEN, NOW, rules(), Reason.CARD_MISMATCH,
                 id="order-card-before-operator"),
]  # fmt: skip

COMPLETION_CASES = [
    pytest.param(attempt(), OPEN, NOW, rules(), None, id="the-preauth-amount"),
    pytest.param(attempt(amount_minor=1), OPEN, NOW, rules(), None, id="far-less"),
    # 1. found, and a pre-auth (the approval code could be another kind's)
    pytest.param(attempt(), view(), NOW, rules(), Reason.ORIGINAL_NOT_FOUND, id="no-original"),
    pytest.param(attempt(), view(original()), NOW, rules(), Reason.ORIGINAL_NOT_FOUND, id="a-sale-has-that-code"),
    pytest.param(attempt(), completion(), NOW, rules(), Reason.ORIGINAL_NOT_FOUND, id="a-completion-has-that-code"),
    pytest.param(attempt(), preauth(status=Status.DECLINED), NOW, rules(), Reason.ORIGINAL_NOT_FOUND,
                 id="declined-preauth"),
    # 2. open: once only, and not after a void or a reversal
    pytest.param(attempt(), preauth(closed_by=Kind.COMPLETION), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="completed-already"),
    pytest.param(attempt(), preauth(closed_by=Kind.PREAUTH_VOID), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="voided"),
    pytest.param(attempt(), preauth(status=Status.REVERSED), NOW, rules(), Reason.ALREADY_CANCELLED, id="reversed"),
    pytest.param(attempt(), preauth(effective_reversal=True), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="an-effective-reversal-points-at-it"),
    # 3. unexpired, to the second
    pytest.param(attempt(), OPEN, EXPIRES - SECOND, rules(), None, id="a-second-before-expiry"),
    pytest.param(attempt(), OPEN, EXPIRES, rules(), Reason.VOID_WINDOW_EXPIRED, id="at-expiry"),
    pytest.param(attempt(), preauth_at(NOW - 45 * DAY), NOW, rules(preauth_days=60), None, id="sixty-day-preauths"),
    pytest.param(attempt(), preauth(batch_settled=True), NOW, rules(), None, id="its-batch-settled"),
    # 4. the tolerance: 15 % by default, to the unit
    pytest.param(attempt(amount_minor=1_150), OPEN, NOW, rules(), None, id="tolerance-exactly"),
    pytest.param(attempt(amount_minor=1_151), OPEN, NOW, rules(), Reason.AMOUNT_MISMATCH, id="tolerance-and-a-cent"),
    pytest.param(attempt(amount_minor=1_000), OPEN, NOW, rules(completion_tolerance_percent=0), None,
                 id="no-tolerance-exactly"),
    pytest.param(attempt(amount_minor=1_001), OPEN, NOW, rules(completion_tolerance_percent=0),
                 Reason.AMOUNT_MISMATCH, id="no-tolerance-a-cent-over"),
    pytest.param(attempt(amount_minor=1_125), OPEN, NOW, rules(completion_tolerance_percent=12.5), None,
                 id="fractional-tolerance-exactly"),
    pytest.param(attempt(amount_minor=1_126), OPEN, NOW, rules(completion_tolerance_percent=12.5),
                 Reason.AMOUNT_MISMATCH, id="fractional-tolerance-a-cent-over"),
    pytest.param(attempt(amount_minor=333), preauth(amount_minor=290), NOW, rules(), None,
                 id="odd-amount-rounds-nothing-up"),  # 290 * 1.15 = 333.5: 333 fits
    pytest.param(attempt(amount_minor=334), preauth(amount_minor=290), NOW, rules(), Reason.AMOUNT_MISMATCH,
                 id="odd-amount-over"),
    pytest.param(attempt(amount_minor=0), OPEN, NOW, rules(), Reason.AMOUNT_MISMATCH, id="zero"),
    pytest.param(attempt(amount_minor=0), OPEN, NOW, rules(allow_zero_amount=True), None, id="zero-allowed"),
    # 5. card; the operator and the refused voids are not asked
    pytest.param(attempt(pan_hash=OTHER_HASH), OPEN, NOW, rules(), Reason.CARD_MISMATCH, id="other-card"),
    pytest.param(attempt(operator_permitted=False), OPEN, NOW, rules(), None, id="operator-is-not-checked"),
    pytest.param(attempt(), preauth(refused_void_attempts=3), NOW, rules(), None, id="refused-voids-do-not-count"),
    # the order of the table
    pytest.param(attempt(), preauth(status=Status.DECLINED, closed_by=Kind.COMPLETION), NOW, rules(),
                 Reason.ORIGINAL_NOT_FOUND, id="order-kind-before-open"),
    pytest.param(attempt(), preauth_at(NOW - 31 * DAY, closed_by=Kind.COMPLETION), NOW, rules(),
                 Reason.ALREADY_CANCELLED, id="order-open-before-expiry"),
    pytest.param(attempt(amount_minor=5_000), preauth_at(NOW - 31 * DAY), NOW, rules(), Reason.VOID_WINDOW_EXPIRED,
                 id="order-expiry-before-amount"),
    pytest.param(attempt(amount_minor=5_000, pan_hash=OTHER_HASH), OPEN, NOW, rules(), Reason.AMOUNT_MISMATCH,
                 id="order-amount-before-card"),
]  # fmt: skip

COMPLETION_VOID_CASES = [
    pytest.param(attempt(), completion(), NOW, rules(), None, id="approved"),
    pytest.param(attempt(), view(), NOW, rules(), Reason.ORIGINAL_NOT_FOUND, id="no-original"),
    pytest.param(attempt(), view(original()), NOW, rules(), Reason.NOT_VOIDABLE, id="a-sale"),
    pytest.param(attempt(), OPEN, NOW, rules(), Reason.NOT_VOIDABLE, id="a-preauth"),
    pytest.param(attempt(), completion(status=Status.DECLINED), NOW, rules(), Reason.NOT_VOIDABLE,
                 id="declined-completion"),
    pytest.param(attempt(), completion(status=Status.VOIDED), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="voided-already"),
    pytest.param(attempt(), completion(status=Status.REVERSED), NOW, rules(), Reason.ALREADY_CANCELLED,
                 id="reversed"),
    pytest.param(attempt(), completion(batch_settled=True), NOW, rules(), Reason.BATCH_CLOSED, id="batch-settled"),
    pytest.param(attempt(), completion(created_at=datetime.fromisoformat("2024-12-31T23:59:59+00:00")),
                 datetime.fromisoformat("2025-01-01T00:00:00+00:00"), rules(), Reason.VOID_WINDOW_EXPIRED,
                 id="one-second-across-midnight"),
    pytest.param(attempt(), completion(created_at=NOW - 2 * timedelta(hours=1)), NOW, rules(void_window=2.0), None,
                 id="hours-window-exactly"),
    pytest.param(attempt(), completion(refused_void_attempts=3), NOW, rules(), Reason.VOID_LIMIT_EXCEEDED,
                 id="at-refused-limit"),
    pytest.param(attempt(amount_minor=999), completion(), NOW, rules(), Reason.AMOUNT_MISMATCH,
                 id="amount-a-cent-less"),
    pytest.param(attempt(pan_hash=OTHER_HASH), completion(), NOW, rules(), Reason.CARD_MISMATCH, id="other-card"),
    pytest.param(attempt(operator_permitted=False), completion(), NOW, rules(), Reason.OPERATOR_NOT_PERMITTED,
                 id="operator-not-permitted"),
    pytest.param(attempt(amount_minor=1), completion(refused_void_attempts=3), NOW, rules(),
                 Reason.VOID_LIMIT_EXCEEDED, id="order-limit-before-amount"),
    pytest.param(attempt(), completion(status=Status.VOIDED, batch_settled=True), NOW, rules(),
                 Reason.ALREADY_CANCELLED, id="order-cancelled-before-settled"),
]  # fmt: skip

COLUMNS = ("attempt_", "view_", "now", "settings", "reason")


@pytest.mark.parametrize(COLUMNS, PREAUTH_VOID_CASES)
def test_preauth_void_rules(attempt_: Attempt, view_: LedgerView, now: datetime, settings: RuleSettings,
                            reason: Reason | None) -> None:  # fmt: skip
    """A pre-auth void gets the reason of the first rule of PREAUTH_VOID_RULES it fails, or passes them all."""
    assert first_failing(PREAUTH_VOID_RULES, attempt_, view_, now, settings) is reason


@pytest.mark.parametrize(COLUMNS, COMPLETION_CASES)
def test_completion_rules(attempt_: Attempt, view_: LedgerView, now: datetime, settings: RuleSettings,
                          reason: Reason | None) -> None:  # fmt: skip
    """A completion gets the reason of the first rule of COMPLETION_RULES it fails, or passes them all."""
    assert first_failing(COMPLETION_RULES, attempt_, view_, now, settings) is reason


@pytest.mark.parametrize(COLUMNS, COMPLETION_VOID_CASES)
def test_completion_void_rules(attempt_: Attempt, view_: LedgerView, now: datetime, settings: RuleSettings,
                               reason: Reason | None) -> None:  # fmt: skip
    """A completion void gets the reason of the first rule of COMPLETION_VOID_RULES it fails, or passes them all."""
    assert first_failing(COMPLETION_VOID_RULES, attempt_, view_, now, settings) is reason


def test_defaults_are_cups_usual() -> None:
    """30 days to complete, 15 % above the pre-auth (CUP's 115 %)."""
    settings = RuleSettings()
    assert (settings.preauth_days, settings.completion_tolerance_percent) == (30, 15)
    record = original(kind=Kind.PREAUTH).record
    assert preauth_expiry(record, settings) == record.created_at + 30 * DAY


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text + "+00:00")


NAMED_DAY_CASES = [
    pytest.param("0101", NOW, rules(), ("2025-01-01T00:00:00", "2025-01-02T00:00:00"), id="today"),
    pytest.param("1231", NOW, rules(), ("2024-12-31T00:00:00", "2025-01-01T00:00:00"), id="yesterday-last-year"),
    pytest.param("0102", NOW, rules(), ("2025-01-02T00:00:00", "2025-01-03T00:00:00"), id="tomorrow-a-clock-ahead"),
    pytest.param("0103", NOW, rules(), ("2024-01-03T00:00:00", "2024-01-04T00:00:00"), id="later-is-last-year"),
    pytest.param("0229", NOW, rules(), ("2024-02-29T00:00:00", "2024-03-01T00:00:00"), id="leap-day"),
    pytest.param("0229", _utc("2029-03-01T12:00:00"), rules(), ("2028-02-29T00:00:00", "2028-03-01T00:00:00"),
                 id="leap-day-a-year-back"),
]  # fmt: skip


@pytest.mark.parametrize(("mmdd", "now", "settings", "bounds"), NAMED_DAY_CASES)
def test_named_day(mmdd: str, now: datetime, settings: RuleSettings, bounds: tuple[str, str]) -> None:
    """CUP 61.3 names a day by month and day: the latest one no later than tomorrow, midnight to midnight."""
    assert named_day(mmdd, now, settings) == (_utc(bounds[0]), _utc(bounds[1]))


def test_named_day_is_local() -> None:
    """In the rules' zone: 0101 in Shanghai starts at 16:00 UTC the day before."""
    start, end = named_day("0101", NOW, rules(timezone=SHANGHAI)) or (None, None)
    assert (start, end) == (_utc("2024-12-31T16:00:00"), _utc("2025-01-01T16:00:00"))


@pytest.mark.parametrize("mmdd", ["1301", "0230", "0000", "12", "12345", "ab01"])
def test_a_day_no_calendar_has_names_nothing(mmdd: str) -> None:
    assert named_day(mmdd, NOW, rules()) is None
