"""Sale (0200, purchase): approve and record. Pure: no clock, no I/O."""

from __future__ import annotations

from iso_host.flows.base import Context, Decision, Request, new_record, reply_fields
from iso_host.ledger.model import Kind, LedgerView, Reason, RecordTransaction


def sale(request: Request, _view: LedgerView, context: Context) -> Decision:
    """Approve the sale (or decline a wrong PIN) and record it; the reply carries the RRN and approval code."""
    assert request.kind is Kind.SALE
    assert request.amount_minor is not None, "the pipeline requires F4 for a sale"
    reason = Reason.PIN_INCORRECT if request.pin_incorrect else Reason.APPROVED
    record = new_record(request, context, reason)
    return Decision(reason, reply_fields(context, record), (RecordTransaction(record),))
