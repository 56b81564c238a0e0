"""Sale (0200, purchase): approve, or decline as the test card says, and record it. Pure: no clock, no I/O."""

from __future__ import annotations

from datetime import datetime

from iso_host.core.flows.base import Context, Decision, Request, batch_out_of_sync, new_record, reply_fields
from iso_host.core.test_cards import TestCard
from iso_host.ledger.model import LedgerView, RecordTransaction
from iso_host.vocab import Kind, Reason

CARD_STATUS_REASONS = {"lost": Reason.LOST_CARD, "stolen": Reason.STOLEN_CARD, "expired": Reason.EXPIRED_CARD}


def card_decline(card: TestCard | None, amount_minor: int, now: datetime) -> Reason | None:
    """What the issuer of a test card says, in the order an issuer checks: status, expiry, limit, funds."""
    if card is None:
        return None
    if card.status in CARD_STATUS_REASONS:
        return CARD_STATUS_REASONS[card.status]
    if card.expiry is not None and card.expiry < now.strftime("%y%m"):
        return Reason.EXPIRED_CARD
    if card.limit_minor is not None and amount_minor > card.limit_minor:
        return Reason.EXCEEDS_LIMIT
    available = card.available_minor(now)  # the balance less what pre-auths hold
    if available is not None and amount_minor > available:
        return Reason.INSUFFICIENT_FUNDS
    return None


def sale(request: Request, view: LedgerView, context: Context) -> Decision:
    """Approve the sale (or decline it: zero amount, wrong PIN, the test card's status, expiry, limit, funds) and
    record it; a sale into a batch that has settled is refused unrecorded.

    The reply carries the RRN and approval code; an approval takes the amount off a test card's balance.
    """
    assert request.kind is Kind.SALE
    assert request.amount_minor is not None, "the pipeline requires F4 for a sale"
    if view.request_batch_settled:
        return batch_out_of_sync(context)
    reason = Reason.INVALID_AMOUNT if request.amount_minor == 0 and not context.rules.allow_zero_amount else None
    reason = reason or (Reason.PIN_INCORRECT if request.pin_incorrect else None)
    reason = reason or card_decline(request.test_card, request.amount_minor, context.now) or Reason.APPROVED
    record = new_record(request, context, reason)
    spent = ((request.card.pan_hash, -request.amount_minor),) if reason is Reason.APPROVED and request.card else ()
    return Decision(reason, reply_fields(context, record), (RecordTransaction(record),), balance_changes=spent)


def forced_decline(request: Request, context: Context, response_code: str) -> Decision:
    """A scenario forces this response code: a financial request is recorded as declined, like any decline."""
    if context.rrn is None:
        return Decision(Reason.FORCED_DECLINE, reply_fields(context), response_code=response_code)
    record = new_record(request, context, Reason.FORCED_DECLINE, response_code=response_code)
    return Decision(Reason.FORCED_DECLINE, reply_fields(context, record), (RecordTransaction(record),),
                    response_code=response_code)  # fmt: skip
