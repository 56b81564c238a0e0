"""The rules of CUP's offline adjust and tip (0220 60.1 = 32 / 34), beside ``rules.py``'s other tables: the same
shape, named checks with their words, run in table order by ``rules.first_refusal``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

from iso_host.core.rules import (
    Attempt,
    Rule,
    RuleSettings,
    batch_open,
    named,
    original_found,
    percent,
    same_card,
    the_original,
    why_batch_settled,
    why_cancelled,
    why_not_a,
    why_not_found,
    why_other_card,
)  # fmt: skip
from iso_host.ledger.model import LedgerView
from iso_host.money import format_amount
from iso_host.vocab import Kind, Reason, Status

# --- Adjust and tip (CUP 0220 60.1=32/34): they change what a sale of the open batch is worth, by naming it (61.1
# batch + 61.2 STAN, and/or F37 its RRN); the sale's own row never changes. They go into the sale's own batch, so that
# a batch's totals move only while it is open (the settlement's ExpectBatchTotals and the settled-batch trigger keep
# that under races), and the store checks inside the commit that the sale is still as the view saw it
# (ExpectAmendable).


def names_its_rrn(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    """A request that names the original by batch and STAN and by RRN names one transaction with both."""
    return attempt.rrn is None or attempt.rrn == the_original(view).record.rrn


def _why_other_rrn(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    record = the_original(view).record
    return f"RRN {attempt.rrn} named, batch {record.batch_number} STAN {record.stan} names {named(view)}"


def is_sale(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return the_original(view).record.kind is Kind.SALE and the_original(view).record.status is not Status.DECLINED


def is_offline_sale(attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> bool:
    """A sale the terminal approved itself and advised afterwards: a financial advice (MTI x220; CUP offline settlement
    60.1=30, e-cash upload 36). An online sale was authorised for its amount: only a tip may change it."""
    return is_sale(attempt, view, now, settings) and the_original(view).record.mti[2:3] == "2"


def _why_online(attempt: Attempt, view: LedgerView, now: datetime, settings: RuleSettings) -> str:
    if not is_sale(attempt, view, now, settings):
        return why_not_a("an offline sale")(attempt, view, now, settings)
    mti = the_original(view).record.mti
    return f"{named(view)} was authorised online (MTI {mti}): only a tip may change it"


def sale_open(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    """Approved, and not voided, refunded or reversed since."""
    original = the_original(view)
    return original.record.status is Status.APPROVED and not original.effective_reversal


def in_the_request_batch(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    """The sale is in the batch the request names (the one its own row goes into)."""
    return attempt.batch_number is None or attempt.batch_number == the_original(view).record.batch_number


def _why_other_batch(attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    batch = the_original(view).record.batch_number
    return f"{named(view)} is in batch {batch}, the request in {attempt.batch_number}"


def positive_amount(attempt: Attempt, _view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return attempt.amount_minor > 0


def _why_not_positive(attempt: Attempt, _view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    return f"amount {format_amount(attempt.amount_minor)}, must be above 0.00"


def untipped(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> bool:
    return the_original(view).tip_minor is None


def _why_tipped(_attempt: Attempt, view: LedgerView, _now: datetime, _settings: RuleSettings) -> str:
    tip = format_amount(the_original(view).tip_minor or 0)
    return f"{named(view)} already has a tip of {tip}: one tip per sale"


def within_tip_limit(attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> bool:
    """At most ``tip_limit_percent`` of the sale (as adjusted). Exact: integers and decimals, never floats."""
    ceiling = Decimal(the_original(view).base_minor) * Decimal(str(settings.tip_limit_percent))
    return Decimal(attempt.amount_minor) * 100 <= ceiling


def _why_tip_limit(attempt: Attempt, view: LedgerView, _now: datetime, settings: RuleSettings) -> str:
    base = the_original(view).base_minor
    most = int(Decimal(base) * Decimal(str(settings.tip_limit_percent)) // 100)
    return (f"{named(view)} {format_amount(base)}, tip {format_amount(attempt.amount_minor)}, "
            f"limit {percent(settings.tip_limit_percent)} = {format_amount(most)}")  # fmt: skip


# Adjust (CUP 0220 60.1=32): F4 is the offline sale's corrected amount; the newest approved adjust counts.
ADJUST_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found, why_not_found),
    # 61.1/61.2 and F37 name two different transactions
    Rule(Reason.ORIGINAL_NOT_FOUND, names_its_rrn, _why_other_rrn),
    Rule(Reason.NOT_VOIDABLE, is_offline_sale, _why_online),  # an online sale, or not a sale
    Rule(Reason.ALREADY_CANCELLED, sale_open, why_cancelled),  # voided, refunded or reversed
    Rule(Reason.BATCH_CLOSED, batch_open, why_batch_settled),
    Rule(Reason.BATCH_CLOSED, in_the_request_batch, _why_other_batch),
    Rule(Reason.INVALID_AMOUNT, positive_amount, _why_not_positive),
    Rule(Reason.CARD_MISMATCH, same_card, why_other_card),
)

# Tip (CUP 0220 60.1=34): F4 is the tip alone, added to a sale (online or offline) once, within tip_limit_percent.
TIP_RULES: Final[tuple[Rule, ...]] = (
    Rule(Reason.ORIGINAL_NOT_FOUND, original_found, why_not_found),
    Rule(Reason.ORIGINAL_NOT_FOUND, names_its_rrn, _why_other_rrn),
    Rule(Reason.NOT_VOIDABLE, is_sale, why_not_a("an approved sale")),
    Rule(Reason.ALREADY_CANCELLED, sale_open, why_cancelled),
    Rule(Reason.INVALID_TRANSACTION, untipped, _why_tipped),  # once per sale
    Rule(Reason.BATCH_CLOSED, batch_open, why_batch_settled),
    Rule(Reason.BATCH_CLOSED, in_the_request_batch, _why_other_batch),
    Rule(Reason.INVALID_AMOUNT, positive_amount, _why_not_positive),
    Rule(Reason.EXCEEDS_LIMIT, within_tip_limit, _why_tip_limit),
    Rule(Reason.CARD_MISMATCH, same_card, why_other_card),
)
