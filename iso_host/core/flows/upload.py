"""Batch upload (0320) and the end of an upload: the terminal sends its batch after totals disagreed. Pure."""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.flows.settlement import end_of_upload, open_batch_of
from iso_host.ledger.model import LedgerView, RecordUpload
from iso_host.ledger.totals_json import NO_TOTALS_JSON
from iso_host.vocab import Kind, Reason


def _closed_batch(request: Request, view: LedgerView) -> bool:
    """The request names a batch that has closed before the terminal's open one (settlement moved it on)."""
    return view.batch is not None and view.batch.status == "settled" and request.batch_number < request.open_batch


def batch_upload(request: Request, view: LedgerView, context: Context) -> Decision:
    """Keep the uploaded records (a record sent again replaces its first copy).

    A transaction uploaded in its own fields into the batch that settlement has just closed is acknowledged and
    changes nothing: after a balanced settlement a CUP terminal still uploads its chip transactions (60.3 203/205,
    their final cryptograms) and ends with 207. Only an upload after totals disagreed joins the comparison.
    """
    assert request.kind is Kind.BATCH_UPLOAD
    assert request.upload is not None, "admission reads the records"
    if request.rule is not None and request.rule.upload == "transaction" and _closed_batch(request, view):
        return Decision(Reason.APPROVED, reply_fields(context))
    batch = open_batch_of(request, view)
    if batch is None:
        return Decision(Reason.BATCH_OUT_OF_SYNC, reply_fields(context))
    if not request.upload:
        return Decision(Reason.APPROVED, reply_fields(context))
    upload = RecordUpload(request.tid, request.mid, batch.batch_number, request.upload, context.now)
    return Decision(Reason.APPROVED, reply_fields(context), (upload,))


def upload_end(request: Request, view: LedgerView, context: Context) -> Decision:
    """CUP 0320 60.3 = 202/207: record the differences and close the batch (207 after a balanced settlement, which
    closed it already: acknowledged)."""
    assert request.kind is Kind.UPLOAD_END
    if _closed_batch(request, view):  # a repeat (the batch closed at the first one), or after a balanced settlement
        return Decision(Reason.APPROVED, reply_fields(context))
    batch = open_batch_of(request, view)
    if batch is None:
        return Decision(Reason.BATCH_OUT_OF_SYNC, reply_fields(context))
    return end_of_upload(request, batch, context, reply_fields(context), NO_TOTALS_JSON)
