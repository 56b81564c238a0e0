"""Eligibility rules for voids, reversals, refunds, the pre-authorisation family, adjusts and tips. Nothing here reads
the clock or the database.

Each rule is a named check over (attempt, view, now, settings); rules run in table order and the first
that fails gives the reason. The tables mirror DESIGN.md ("Void eligibility"), so that a rule can be
found, tested and configured by name. Each check has its words beside it (``_why_...``, the same arguments): what
it compared, for ``Decision.detail`` when it fails. The words name kinds, times, amounts, counts, batches and
approval codes; never card data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

from iso_host.ledger.model import LedgerView, Original, TransactionRecord
from iso_host.money import format_amount
from iso_host.vocab import Kind, Reason, Status

SAME_BUSINESS_DAY: Final = "same_business_day"
VOIDABLE_KINDS: Final = frozenset({Kind.SALE})
UNCANCELLED: Final = frozenset({Status.APPROVED})
DEFAULT_PIN_TRIES: Final = 3  # what issuers commonly allow before a card's PIN is blocked


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
    preauth_days: float = 30  # a pre-auth not completed or voided by then expires (its hold is released)
    completion_tolerance_percent: float = 15  # a completion may exceed its pre-auth by this much (CUP: 115 %)
    tip_limit_percent: float = 20  # a tip may be at most this much of its sale (restaurant terminals' usual cap)
    void_requires_card: bool = False  # true: a void (sale, pre-auth, completion) without F2 / track 2 is CARD_MISMATCH
    pin_tries: int | None = DEFAULT_PIN_TRIES  # wrong PINs in a row, then PIN_TRIES_EXCEEDED (None: no limit)

    def __post_init__(self) -> None:
        assert self.void_window == SAME_BUSINESS_DAY or isinstance(self.void_window, float | int)
        assert self.unknown_reversal in ("approve", "decline")
        assert self.max_refused_void_attempts >= 0
        assert self.preauth_days >= 0
        assert self.completion_tolerance_percent >= 0
        assert self.tip_limit_percent >= 0
        assert self.pin_tries is None or self.pin_tries >= 1


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a void, reversal or refund request says about its original."""

    amount_minor: int
    pan_hash: str | None  # None when the request carries no card
    operator_permitted: bool
    auth_code: str | None = None  # the original's approval code, where the request names it (CUP F38)
    rrn: str | None = None  # the original's RRN, where the request names it (CUP F37 of an adjust or a tip)
    batch_number: int | None = None  # the batch the request's own row goes into
    kind: Kind | None = None  # the request's kind, for the words of a refusal (None: "request")


Check = Callable[[Attempt, LedgerView, datetime, RuleSettings], bool]
Words = Callable[[Attempt, LedgerView, datetime, RuleSettings], str]


@dataclass(frozen=True, slots=True)
class Rule:
    reason: Reason
    check: Check
    why: Words  # what the check compared, in words, when it fails


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first failing rule's reason and its words."""

    reason: Reason
    why: str

    def detail(self, kind: Kind) -> str:
        return refused(kind, self.reason, self.why)


def refused(kind: Kind, reason: Reason, why: str) -> str:
    """``Decision.detail``'s shape for a refusal: ``void refused: AMOUNT_MISMATCH (sale 10.00, void 9.99)``."""
    return f"{kind_words(kind)} refused: {reason.value} ({why})"


def kind_words(kind: Kind) -> str:
    """A kind as an operator reads it: ``pre-auth void`` for ``preauth_void``."""
    return kind.value.replace("_", " ").replace("preauth", "pre-auth")


def percent(value: float) -> str:
    return f"{Decimal(str(value)).normalize():f} %"


def _asking(attempt: Attempt) -> str:
    return kind_words(attempt.kind) if attempt.kind is not None else "request"


def span(length: timedelta) -> str:
    """A duration in words, its zero parts left out: ``1 d 2 h``, ``30 min``, ``2 h 0 min 1 s`` -> ``2 h 1 s``."""
    seconds = int(length.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")) if n]
    return " ".join(parts) or "0 s"


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


def when(moment: datetime, settings: RuleSettings) -> str:
    """A moment as the rules' zone reads it, to the second."""
    return f"{_local(moment, settings):%Y-%m-%d %H:%M:%S}"


def the_original(view: LedgerView) -> Original:
    assert view.original is not None, "rules after original_found run only when it was found"
    return view.original


def named(view: LedgerView) -> str:
    """The original as the words name it: its kind, and its RRN."""
    record = the_original(view).record
    return f"{kind_words(record.kind)} {record.rrn}"


def _state(original: Original) -> str:
    """What has become of an original: its status, or the reversal or row that closed it."""
    if original.effective_reversal:
        return "reversed"
    if original.closed_by is not None:
        return f"closed by a {kind_words(original.closed_by)}"
    return original.record.status.value


def original_found(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return view.original is not None


def why_not_found(attempt: Attempt, _view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    named = [f"RRN {attempt.rrn}"] if attempt.rrn else []
    named += [f"approval code {attempt.auth_code.strip()}"] if attempt.auth_code else []
    return f"no original of this terminal and merchant{' with ' + ', '.join(named) if named else ''}"


def why_not_a(wanted: str) -> Words:
    """The words of a check for the original's kind: what it is instead (or that it was declined)."""

    def why(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
        record = the_original(view).record
        declined = "declined " if record.status is Status.DECLINED else ""
        return f"original {record.rrn} is a {declined}{kind_words(record.kind)}, not {wanted}"

    return why


def voidable(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    record = the_original(view).record
    return record.kind in VOIDABLE_KINDS and record.status is not Status.DECLINED


def not_cancelled(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    original = the_original(view)
    return original.record.status in UNCANCELLED and not original.effective_reversal


def why_cancelled(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    return f"{named(view)} is {_state(the_original(view))}"


def batch_open(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return not the_original(view).batch_settled


def why_batch_settled(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    return f"{named(view)} is in batch {the_original(view).record.batch_number}, settled"


def _age(view: LedgerView, now: datetime) -> timedelta | None:
    """How long ago the original was recorded; None when that is after ``now``. The host's clock can be set back
    (live control's ``set-clock``, or hosts with clocks apart sharing one ledger): an original from the future is
    inside no window, or a sale days too old would become voidable again by moving the clock back."""
    age = now - the_original(view).record.created_at
    return age if age >= timedelta(0) else None


def within_void_window(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> bool:
    created = the_original(view).record.created_at
    age = _age(view, now)
    if age is None:
        return False
    if settings.void_window == SAME_BUSINESS_DAY:
        same_day = business_day(created, settings) == business_day(now, settings)
        return same_day and age <= timedelta(hours=settings.max_void_age_h)
    return age <= timedelta(hours=float(settings.void_window))


def _why_from_the_future(view: LedgerView, now: datetime, settings: RuleSettings) -> str:
    created = the_original(view).record.created_at
    return f"{named(view)} at {when(created, settings)}, after now {when(now, settings)}: the clock went back"


def _why_window(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> str:
    created = the_original(view).record.created_at
    age = _age(view, now)
    if age is None:
        return _why_from_the_future(view, now, settings)
    at = f"{named(view)} at {when(created, settings)}"
    if settings.void_window != SAME_BUSINESS_DAY:
        return f"{at}, {span(age)} ago, window {span(timedelta(hours=float(settings.void_window)))}"
    then, today = business_day(created, settings), business_day(now, settings)
    if then != today:
        return f"{at}, business day {then}; now {when(now, settings)}, business day {today}"
    return f"{at}, {span(age)} ago, at most {span(timedelta(hours=settings.max_void_age_h))}"


def same_amount(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    """The amount the original is worth: an adjusted or tipped sale is voided at its adjusted amount plus its tip."""
    return attempt.amount_minor == the_original(view).effective_minor


def _why_amount(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    original = the_original(view)
    worth = format_amount(original.effective_minor)
    if original.effective_minor != original.record.amount_minor:
        worth += f" as adjusted and tipped, recorded at {format_amount(original.record.amount_minor)}"
    return f"{named(view)} {worth}, {_asking(attempt)} {format_amount(attempt.amount_minor)}"


def same_card(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    card = the_original(view).record.card
    return attempt.pan_hash is None or card is None or attempt.pan_hash == card.pan_hash


def why_other_card(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    return f"the request's card is not the card of {named(view)}"


def card_presented(attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> bool:
    """With ``void_requires_card``, a void of a card transaction carries the card (F2 or track 2): without it,
    ``same_card`` has nothing to compare, and a void naming its original by RRN alone would need nothing of the card.
    An original without a card (a QR payment) has none to present."""
    if not settings.void_requires_card or attempt.pan_hash is not None:
        return True
    return the_original(view).record.card is None


def _why_no_card(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    return f"no card in the request, {named(view)} was paid by card, void_requires_card on"


def operator_permitted(attempt: Attempt, _view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return attempt.operator_permitted


def _why_operator(_attempt: Attempt, _view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    return "the terminal's configuration does not let this operator void"


def within_refused_attempts(_attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> bool:
    return the_original(view).refused_void_attempts < settings.max_refused_void_attempts


def _why_refused_attempts(_attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> str:
    refused_so_far = the_original(view).refused_void_attempts
    return f"{named(view)} has {refused_so_far} refused attempts, limit {settings.max_refused_void_attempts}"


def within_voids_per_day(_attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> bool:
    return settings.max_voids_per_day is None or view.voids_today < settings.max_voids_per_day


def _why_voids_per_day(_attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> str:
    return f"{view.voids_today} voids this business day, limit {settings.max_voids_per_day}"


# The refused-attempt limit comes before the checks of what the request says (amount, card, operator): once an
# original has refused its attempts, every further one is VOID_LIMIT_EXCEEDED, so guessing the amount (or the
# card) can neither succeed nor learn anything. The per-day limit counts approvals, and comes last.
VOID_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found, why_not_found),
    Rule(Reason.NOT_VOIDABLE, voidable, why_not_a("an approved sale")),
    Rule(Reason.ALREADY_CANCELLED, not_cancelled, why_cancelled),
    Rule(Reason.BATCH_CLOSED, batch_open, why_batch_settled),
    Rule(Reason.VOID_WINDOW_EXPIRED, within_void_window, _why_window),
    Rule(Reason.VOID_LIMIT_EXCEEDED, within_refused_attempts, _why_refused_attempts),
    Rule(Reason.AMOUNT_MISMATCH, same_amount, _why_amount),
    Rule(Reason.CARD_MISMATCH, card_presented, _why_no_card),
    Rule(Reason.CARD_MISMATCH, same_card, why_other_card),
    Rule(Reason.OPERATOR_NOT_PERMITTED, operator_permitted, _why_operator),
    Rule(Reason.VOID_LIMIT_EXCEEDED, within_voids_per_day, _why_voids_per_day),
)


def not_voided_or_fully_refunded(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    original = the_original(view)
    return original.record.status in (Status.APPROVED, Status.PARTIALLY_REFUNDED) and not original.effective_reversal


def within_refund_age(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> bool:
    age = _age(view, now)
    return age is not None and age <= timedelta(days=settings.refund_max_age_days)


def _why_refund_age(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> str:
    age = _age(view, now)
    if age is None:
        return _why_from_the_future(view, now, settings)
    created = when(the_original(view).record.created_at, settings)
    return f"{named(view)} at {created}, {span(age)} ago, at most {settings.refund_max_age_days} d"


def within_refundable_amount(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    record = the_original(view).record
    return 0 < attempt.amount_minor <= record.amount_minor - record.refunded_minor


def _why_refundable(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    record = the_original(view).record
    rest = record.amount_minor - record.refunded_minor
    return (f"{named(view)} {format_amount(record.amount_minor)}, refunded {format_amount(record.refunded_minor)}, "
            f"refundable {format_amount(rest)}, refund {format_amount(attempt.amount_minor)}")  # fmt: skip


REFUND_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found, why_not_found),
    # only an approved sale can be refunded, as only one can be voided
    Rule(Reason.NOT_VOIDABLE, voidable, why_not_a("an approved sale")),
    Rule(Reason.ALREADY_CANCELLED, not_voided_or_fully_refunded, why_cancelled),
    Rule(Reason.VOID_WINDOW_EXPIRED, within_refund_age, _why_refund_age),
    Rule(Reason.AMOUNT_MISMATCH, within_refundable_amount, _why_refundable),
    Rule(Reason.CARD_MISMATCH, same_card, why_other_card),
)


# --- The pre-authorisation family (CUP 60.1 10/11/20/21). A pre-auth is open while APPROVED, unreversed and not
# closed by an approved pre-auth void or completion; it expires ``preauth_days`` after it was approved.


def preauth_expiry(record: TransactionRecord, settings: RuleSettings) -> datetime:
    """When a pre-auth stops being open: ``preauth_days`` after its approval."""
    return record.created_at + timedelta(days=settings.preauth_days)


def is_preauth(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    record = the_original(view).record
    return record.kind is Kind.PREAUTH and record.status is not Status.DECLINED


def preauth_open(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    original = the_original(view)
    return original.record.status is Status.APPROVED and not original.effective_reversal and original.closed_by is None


def preauth_unexpired(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> bool:
    """Approved no later than ``now`` (a pre-auth from the future is expired: the clock went back) and not expired."""
    return _age(view, now) is not None and now < preauth_expiry(the_original(view).record, settings)


def _why_expired(_attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> str:
    if _age(view, now) is None:
        return _why_from_the_future(view, now, settings)
    record = the_original(view).record
    expired, lifetime = when(preauth_expiry(record, settings), settings), span(timedelta(days=settings.preauth_days))
    return f"{named(view)} at {when(record.created_at, settings)}, expired {expired} after {lifetime}"


def names_its_auth_code(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    """A request that names the original's approval code (F38, padded with spaces by some terminals) names it."""
    return attempt.auth_code is None or attempt.auth_code.strip() == the_original(view).record.auth_code


def _why_other_auth_code(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    code = (attempt.auth_code or "").strip()
    return f"approval code {code} named, {named(view)} has {the_original(view).record.auth_code or 'none'}"


def within_completion_tolerance(attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> bool:
    """At most ``completion_tolerance_percent`` above the pre-auth's amount, and not zero (unless zero amounts are
    allowed). Exact: integers and decimals, never floats."""
    held = the_original(view).record.amount_minor
    ceiling = Decimal(held) * (100 + Decimal(str(settings.completion_tolerance_percent)))
    positive = attempt.amount_minor > 0 or settings.allow_zero_amount
    return positive and Decimal(attempt.amount_minor) * 100 <= ceiling


def _why_tolerance(attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> str:
    held = the_original(view).record.amount_minor
    if attempt.amount_minor == 0:
        return f"{named(view)} {format_amount(held)}, completion 0.00, zero amounts not allowed"
    tolerance = Decimal(str(settings.completion_tolerance_percent))
    most = int(Decimal(held) * (100 + tolerance) // 100)
    return (f"{named(view)} {format_amount(held)}, completion {format_amount(attempt.amount_minor)}, "
            f"limit {percent(settings.completion_tolerance_percent)} above = {format_amount(most)}")  # fmt: skip


def is_completion(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    record = the_original(view).record
    return record.kind is Kind.COMPLETION and record.status is not Status.DECLINED


# Pre-auth void (CUP 0100 60.1=11): by the pre-auth's batch and STAN (61.1, 61.2) or its approval code and date
# (F38, 61.3); any time while it is open, whatever batch it was approved in (a pre-auth is never in the totals).
PREAUTH_VOID_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found, why_not_found),
    # F38 and 61.1/61.2 name two different transactions
    Rule(Reason.ORIGINAL_NOT_FOUND, names_its_auth_code, _why_other_auth_code),
    Rule(Reason.NOT_VOIDABLE, is_preauth, why_not_a("a pre-auth")),
    Rule(Reason.ALREADY_CANCELLED, preauth_open, why_cancelled),  # voided, completed or reversed already
    Rule(Reason.VOID_WINDOW_EXPIRED, preauth_unexpired, _why_expired),
    Rule(Reason.VOID_LIMIT_EXCEEDED, within_refused_attempts, _why_refused_attempts),
    Rule(Reason.AMOUNT_MISMATCH, same_amount, _why_amount),
    Rule(Reason.CARD_MISMATCH, card_presented, _why_no_card),
    Rule(Reason.CARD_MISMATCH, same_card, why_other_card),
    Rule(Reason.OPERATOR_NOT_PERMITTED, operator_permitted, _why_operator),
)

# Completion (CUP 0200 60.1=20, offline 0220 60.1=24): names an open, unexpired pre-auth by its approval code and
# date; takes at most the tolerance above it, once (the store checks ExpectPreauthOpen inside the commit).
COMPLETION_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found, why_not_found),
    # the approval code is another kind's: no pre-auth has it
    Rule(Reason.ORIGINAL_NOT_FOUND, is_preauth, why_not_a("a pre-auth")),
    Rule(Reason.ALREADY_CANCELLED, preauth_open, why_cancelled),  # completed, voided or reversed already
    Rule(Reason.VOID_WINDOW_EXPIRED, preauth_unexpired, _why_expired),
    Rule(Reason.AMOUNT_MISMATCH, within_completion_tolerance, _why_tolerance),
    Rule(Reason.CARD_MISMATCH, same_card, why_other_card),
)

# Completion void (CUP 0200 60.1=21): a sale void's rules, for a completion (the per-day void limit counts sale
# voids only).
COMPLETION_VOID_RULES: Final[tuple[Rule, ...]] = tuple(
    Rule(Reason.NOT_VOIDABLE, is_completion, why_not_a("an approved completion")) if rule.check is voidable else rule
    for rule in VOID_RULES
    if rule.check is not within_voids_per_day
)


def first_refusal(rules: tuple[Rule, ...], attempt: Attempt, view: LedgerView, now: datetime,
                  settings: RuleSettings) -> Refusal | None:  # fmt: skip
    """The first rule that fails, in table order, with its words; None when all pass."""
    for rule in rules:
        if not rule.check(attempt, view, now, settings):
            return Refusal(rule.reason, rule.why(attempt, view, now, settings))
    return None


def first_failing(rules: tuple[Rule, ...], attempt: Attempt, view: LedgerView, now: datetime,
                  settings: RuleSettings) -> Reason | None:  # fmt: skip
    """The reason of the first rule that fails, in table order, or None when all pass."""
    refusal = first_refusal(rules, attempt, view, now, settings)
    return refusal.reason if refusal is not None else None
