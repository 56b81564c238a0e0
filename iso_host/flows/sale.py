"""Sale (0200, purchase): approve and record. Pure: no clock, no I/O."""

from __future__ import annotations

import hashlib

from iso_host.flows.base import Context, Decision, Request
from iso_host.ledger.model import Kind, Reason, RecordTransaction, Status, TransactionRecord


def authorization_code(rrn: str) -> str:
    """A six-digit approval code derived from the RRN, so replays of one ledger see the same codes."""
    digest = hashlib.sha256(rrn.encode("ascii")).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 1_000_000:06d}"


def sale(request: Request, context: Context) -> Decision:
    """Approve the sale and record it; the reply carries the RRN (F37) and approval code (F38)."""
    assert request.kind is Kind.SALE
    assert request.amount_minor is not None, "the pipeline requires F4 for a sale"
    assert context.rrn is not None, "the pipeline allocates an RRN for every financial request"
    auth_code = authorization_code(context.rrn)
    record = TransactionRecord(
        kind=Kind.SALE,
        tid=request.tid,
        mid=request.mid,
        batch_number=request.batch_number,
        stan=request.stan,
        rrn=context.rrn,
        auth_code=auth_code,
        amount_minor=request.amount_minor,
        currency=request.currency,
        card=request.card,
        status=Status.APPROVED,
        response_code=context.dialect.response_code(Reason.APPROVED),
        reason=Reason.APPROVED,
        mti=request.message.mti,
        processing_code=request.message.fields.get("3", ""),
        created_at=context.now,
    )
    fields = {
        "12": context.now.strftime("%H%M%S"),
        "13": context.now.strftime("%m%d"),
        "37": context.rrn,
        "38": auth_code,
    }
    return Decision(Reason.APPROVED, fields, (RecordTransaction(record),))
