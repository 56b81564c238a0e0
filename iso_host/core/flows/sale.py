"""Sale (0200, purchase): approve, or decline as the test card (and a chip card's cryptogram) says, and record it.
Pure: no clock, no I/O."""

from __future__ import annotations

from datetime import datetime

from iso_host.core.flows.base import Context, Decision, Request, batch_out_of_sync, new_record, reply_fields
from iso_host.core.flows.chip import arqc_verified, atc_replayed, counter_seen, issuer_authentication
from iso_host.core.test_cards import TestCard
from iso_host.ledger.model import LedgerView, RecordTransaction, TransactionRecord
from iso_host.vocab import Kind, Reason

CARD_STATUS_REASONS = {"lost": Reason.LOST_CARD, "stolen": Reason.STOLEN_CARD, "expired": Reason.EXPIRED_CARD}


def card_decline(card: TestCard | None, amount_minor: int, now: datetime) -> Reason | None:
    """What the issuer of a test card says, in the order an issuer checks: status, expiry, limit, funds."""
    if card is None:
        return None
    if card.status in CARD_STATUS_REASONS:
        return CARD_STATUS_REASONS[card.status]
    if card.expiry is not None and card.expiry < f"{now.year % 100:02d}{now.month:02d}":
        return Reason.EXPIRED_CARD
    if card.limit_minor is not None and amount_minor > card.limit_minor:
        return Reason.EXCEEDS_LIMIT
    available = card.available_minor(now)  # the balance less what pre-auths hold
    if available is not None and amount_minor > available:
        return Reason.INSUFFICIENT_FUNDS
    return None


def card_decision(request: Request, context: Context) -> tuple[Reason, bool | None]:
    """The answer to a card asking for money (a sale, a pre-auth), in the order an issuer checks: a zero amount, the
    chip's ARQC (CRYPTOGRAM_FAILED when it does not verify under the card's key, CRYPTOGRAM_REPLAYED when it does but
    its ATC is not above the card's highest), the PIN, then the test card; and whether the ARQC verified and is no
    replay (None: there was none to verify)."""
    assert request.amount_minor is not None, "the pipeline requires F4 for a sale or a pre-auth"
    verified = arqc_verified(request.chip)
    replayed = verified is True and request.chip is not None and atc_replayed(request.chip)
    reason = Reason.INVALID_AMOUNT if request.amount_minor == 0 and not context.rules.allow_zero_amount else None
    reason = reason or (Reason.CRYPTOGRAM_FAILED if verified is False else None)
    reason = reason or (Reason.CRYPTOGRAM_REPLAYED if replayed else None)
    reason = reason or (Reason.PIN_TRIES_EXCEEDED if request.pin_blocked else None)
    reason = reason or (Reason.PIN_INCORRECT if request.pin_incorrect else None)
    reason = reason or card_decline(request.test_card, request.amount_minor, context.now) or Reason.APPROVED
    return reason, False if replayed else verified


def chip_counters(request: Request, verified: bool | None) -> tuple[tuple[str, int], ...]:
    """The card's ATC to remember after the commit: that of an ARQC that verified and is no replay."""
    return counter_seen(request.chip) if verified else ()


def card_reply(request: Request, context: Context, record: TransactionRecord, verified: bool | None) -> dict[str, str]:
    """The reply's fields: host time, RRN, approval code, and for an ARQC that verified (approved or declined) field
    55 with the issuer authentication data the card checks at its second GENERATE AC."""
    fields = reply_fields(context, record)
    if verified and request.chip is not None:
        fields |= issuer_authentication(request.chip, record.response_code)
    return fields


def sale(request: Request, view: LedgerView, context: Context) -> Decision:
    """Approve the sale (or decline it: zero amount, a chip cryptogram that does not verify, wrong PIN, the test
    card's status, expiry, limit, funds) and record it; a sale into a batch that has settled is refused unrecorded.

    The reply carries the RRN and approval code, and the ARPC (F55 tag 91) when the request's ARQC verified; an
    approval takes the amount off a test card's balance.
    """
    assert request.kind is Kind.SALE
    assert request.amount_minor is not None, "the pipeline requires F4 for a sale"
    if view.request_batch_settled:
        return batch_out_of_sync(context)
    reason, verified = card_decision(request, context)
    record = new_record(request, context, reason)
    spent = ((request.card.pan_hash, -request.amount_minor),) if reason is Reason.APPROVED and request.card else ()
    fields = card_reply(request, context, record, verified)
    return Decision(reason, fields, (RecordTransaction(record),), balance_changes=spent,
                    chip_counters=chip_counters(request, verified))  # fmt: skip


def forced_decline(request: Request, context: Context, response_code: str) -> Decision:
    """A scenario forces this response code: a financial request is recorded as declined, like any decline."""
    if context.rrn is None:
        return Decision(Reason.FORCED_DECLINE, reply_fields(context), response_code=response_code)
    record = new_record(request, context, Reason.FORCED_DECLINE, response_code=response_code)
    return Decision(Reason.FORCED_DECLINE, reply_fields(context, record), (RecordTransaction(record),),
                    response_code=response_code)  # fmt: skip
