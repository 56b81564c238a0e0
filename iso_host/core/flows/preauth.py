"""Pre-authorisation (CUP 0100, F3 03xxxx, F25 06, 60.1 10): approve an amount, or decline as the test card says,
record it, and hold the amount on the card until it is completed, voided, reversed or expires. Pure.

A pre-auth moves no money and counts in no settlement totals; its completion does (a debit).
"""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, batch_out_of_sync, new_record
from iso_host.core.flows.holding import hold_of
from iso_host.core.flows.sale import card_decision, card_reply, chip_counters
from iso_host.ledger.model import LedgerView, RecordTransaction
from iso_host.vocab import Kind, Reason


def preauth(request: Request, view: LedgerView, context: Context) -> Decision:
    """Approve (or decline: zero amount, a chip cryptogram that does not verify, wrong PIN, the test card's status,
    expiry, limit, funds) and record; an approval holds its amount on a test card with a balance, which later sales
    cannot spend. An ARQC that verified is answered with the ARPC in F55, as for a sale."""
    assert request.kind is Kind.PREAUTH
    assert request.amount_minor is not None, "the pipeline requires F4 for a pre-auth"
    if view.request_batch_settled:
        return batch_out_of_sync(context)
    reason, verified = card_decision(request, context)
    record = new_record(request, context, reason)
    holds = hold_of(record, context.rules, context.now) if reason is Reason.APPROVED else ()
    return Decision(reason, card_reply(request, context, record, verified), (RecordTransaction(record),), holds=holds,
                    chip_counters=chip_counters(request, verified))  # fmt: skip
