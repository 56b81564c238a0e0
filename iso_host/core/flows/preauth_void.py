"""Pre-auth void (CUP 0100, F3 20xxxx, F25 06, 60.1 11): cancel an open pre-auth of this terminal, releasing its
hold. Pure.

The pre-auth is named by its batch and STAN (61.1, 61.2) or by its approval code (F38) and date (61.3). Its own
row does not change (its batch may have settled since): the approved void, naming it, closes it.
"""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.flows.holding import released
from iso_host.core.flows.original import judged_cancel
from iso_host.core.rules import PREAUTH_VOID_RULES
from iso_host.ledger.model import ExpectPreauthOpen, LedgerView, RecordTransaction
from iso_host.vocab import Kind, Reason


def preauth_void(request: Request, view: LedgerView, context: Context) -> Decision:
    """Close an open pre-auth under PREAUTH_VOID_RULES; a refused attempt is recorded (it counts to the limit)."""
    assert request.kind is Kind.PREAUTH_VOID
    record, counted, refused = judged_cancel(PREAUTH_VOID_RULES, request, view, context)
    if refused is not None:
        return refused
    original = view.original
    assert original is not None
    rrn = original.record.rrn
    return Decision(Reason.APPROVED, reply_fields(context, record),
                    (*counted, ExpectPreauthOpen(rrn), RecordTransaction(record)), holds=released(rrn))  # fmt: skip
