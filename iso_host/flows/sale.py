"""Sale (0200, purchase): approve and record. Pure: no clock, no I/O."""

from __future__ import annotations

from iso_host.flows.base import Context, Decision, Request, new_record, reply_fields
from iso_host.ledger.model import Kind, LedgerView, Reason, RecordTransaction


def sale(request: Request, _view: LedgerView, context: Context) -> Decision:
    """Approve the sale and record it; the reply carries the RRN (F37) and approval code (F38)."""
    assert request.kind is Kind.SALE
    assert request.amount_minor is not None, "the pipeline requires F4 for a sale"
    record = new_record(request, context, Reason.APPROVED)
    return Decision(Reason.APPROVED, reply_fields(context, record), (RecordTransaction(record),))
