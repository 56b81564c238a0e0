"""Eligibility rules for voids, reversals and refunds. Nothing here reads the clock or the database.

Each rule is a named check over (attempt, view, now, settings); rules run in table order and the first
that fails gives the reason. The tables mirror DESIGN.md ("Void eligibility"), so that a rule can be
found, tested and configured by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from iso_host.ledger.model import LedgerView, Original
from iso_host.vocab import Kind, Reason, Status

SAME_BUSINESS_DAY: Final = "same_business_day"
VOIDABLE_KINDS: Final = frozenset({Kind.SALE})
UNCANCELLED: Final = frozenset({Status.APPROVED})


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """The `[rules]` table: every limit a real acquirer lets its operators set."""

    void_window: str | float = SAME_BUSINESS_DAY  # or a number of hours
    business_day_cutoff: time = time(0, 0)  # transactions from this local time on belong to the next day
    timezone: ZoneInfo | None = None  # None: the host's local zone
    max_void_age_h: float = 24.0  # even within one business day
    max_refused_void_attempts: int = 3  # per original; further attempts get VOID_LIMIT_EXCEEDED
    max_voids_per_day: int | None = None  # per terminal and business day; None = unlimited
    unknown_reversal: str = "approve"  # or "decline" (ORIGINAL_NOT_FOUND)
    refund_max_age_days: int = 30
    allow_zero_amount: bool = False  # a 0.00 sale is INVALID_AMOUNT unless a test bench wants it approved

    def __post_init__(self) -> None:
        assert self.void_window == SAME_BUSINESS_DAY or isinstance(self.void_window, float | int)
        assert self.unknown_reversal in ("approve", "decline")
        assert self.max_refused_void_attempts >= 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a void, reversal or refund request says about its original."""

    amount_minor: int
    pan_hash: str | None  # None when the request carries no card
    operator_permitted: bool


Check = Callable[[Attempt, LedgerView, datetime, RuleSettings], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    reason: Reason
    check: Check


def _local(moment: datetime, settings: RuleSettings) -> datetime:
    return moment.astimezone(settings.timezone) if settings.timezone else moment.astimezone()


def business_day(moment: datetime, settings: RuleSettings) -> date:
    """The business day a moment belongs to: its local date, or the next one from the cut-off on."""
    local = _local(moment, settings)
    c = settings.business_day_cutoff
    cutoff = timedelta(hours=c.hour, minutes=c.minute, seconds=c.second, microseconds=c.microsecond)
    return (local + (timedelta(days=1) - cutoff)).date() if cutoff else local.date()


def business_day_start(now: datetime, settings: RuleSettings) -> datetime:
    """When the business day that ``now`` belongs to began (for per-day limits)."""
    day = business_day(now, settings)
    zone = _local(now, settings).tzinfo
    cutoff = settings.business_day_cutoff
    if cutoff == time(0, 0):
        return datetime.combine(day, time(0, 0), zone)
    return datetime.combine(day - timedelta(days=1), cutoff, zone)


def _original(view: LedgerView) -> Original:
    assert view.original is not None, "rules after original_found run only when it was found"
    return view.original


def original_found(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return view.original is not None


def voidable(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    record = _original(view).record
    return record.kind in VOIDABLE_KINDS and record.status is not Status.DECLINED


def not_cancelled(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    original = _original(view)
    return original.record.status in UNCANCELLED and not original.effective_reversal


def batch_open(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return not _original(view).batch_settled


def within_void_window(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> bool:
    created = _original(view).record.created_at
    age = now - created
    if age < timedelta(0):
        return True  # the original is from the future only when clocks disagree; do not punish the terminal
    if settings.void_window == SAME_BUSINESS_DAY:
        same_day = business_day(created, settings) == business_day(now, settings)
        return same_day and age <= timedelta(hours=settings.max_void_age_h)
    return age <= timedelta(hours=float(settings.void_window))


def same_amount(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return attempt.amount_minor == _original(view).record.amount_minor


def same_card(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    card = _original(view).record.card
    return attempt.pan_hash is None or card is None or attempt.pan_hash == card.pan_hash


def operator_permitted(attempt: Attempt, _view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return attempt.operator_permitted


def within_refused_attempts(_attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> bool:
    return _original(view).refused_void_attempts < settings.max_refused_void_attempts


def within_voids_per_day(_attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> bool:
    return settings.max_voids_per_day is None or view.voids_today < settings.max_voids_per_day


# The refused-attempt limit comes before the checks of what the request says (amount, card, operator): once an
# original has refused its attempts, every further one is VOID_LIMIT_EXCEEDED, so guessing the amount (or the
# card) can neither succeed nor learn anything. The per-day limit counts approvals, and comes last.
VOID_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found),
    Rule(Reason.NOT_VOIDABLE, voidable),
    Rule(Reason.ALREADY_CANCELLED, not_cancelled),
    Rule(Reason.BATCH_CLOSED, batch_open),
    Rule(Reason.VOID_WINDOW_EXPIRED, within_void_window),
    Rule(Reason.VOID_LIMIT_EXCEEDED, within_refused_attempts),
    Rule(Reason.AMOUNT_MISMATCH, same_amount),
    Rule(Reason.CARD_MISMATCH, same_card),
    Rule(Reason.OPERATOR_NOT_PERMITTED, operator_permitted),
    Rule(Reason.VOID_LIMIT_EXCEEDED, within_voids_per_day),
)


def not_voided_or_fully_refunded(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    original = _original(view)
    return original.record.status in (Status.APPROVED, Status.PARTIALLY_REFUNDED) and not original.effective_reversal


def within_refund_age(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> bool:
    return now - _original(view).record.created_at <= timedelta(days=settings.refund_max_age_days)


def within_refundable_amount(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    record = _original(view).record
    return 0 < attempt.amount_minor <= record.amount_minor - record.refunded_minor


REFUND_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found),
    Rule(Reason.NOT_VOIDABLE, voidable),  # only an approved sale can be refunded, as only one can be voided
    Rule(Reason.ALREADY_CANCELLED, not_voided_or_fully_refunded),
    Rule(Reason.VOID_WINDOW_EXPIRED, within_refund_age),
    Rule(Reason.AMOUNT_MISMATCH, within_refundable_amount),
    Rule(Reason.CARD_MISMATCH, same_card),
)


def first_failing(rules: tuple[Rule, ...], attempt: Attempt, view: LedgerView, now: datetime,
                  settings: RuleSettings) -> Reason | None:  # fmt: skip
    """The reason of the first rule that fails, in table order, or None when all pass."""
    for rule in rules:
        if not rule.check(attempt, view, now, settings):
            return rule.reason
    return None
