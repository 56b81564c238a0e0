"""Completion void (CUP 0200, F3 20xxxx, F25 06, 60.1 21): cancel an unsettled completion under the sale void's
rules (window, once, amount, card, operator, refused attempts), named by its batch and STAN (61.1, 61.2). Pure.

The voided completion stays in the debits and the void is a credit (gross totals, as for a sale). Undoing the
completion reopens its pre-auth: nothing closes it any more, so until it expires it may be completed again or
voided, and its hold is put back on the card (CUP: a completion void restores the pre-authorised hold).
"""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.flows.holding import hold_of
from iso_host.core.flows.original import given_back, judged_cancel
from iso_host.core.rules import COMPLETION_VOID_RULES
from iso_host.ledger.model import ChangeStatus, LedgerView, RecordTransaction
from iso_host.vocab import Kind, Reason, Status


def completion_void(request: Request, view: LedgerView, context: Context) -> Decision:
    """Void a completion under COMPLETION_VOID_RULES; a refused attempt is recorded (it counts to the limit)."""
    assert request.kind is Kind.COMPLETION_VOID
    record, counted, refused = judged_cancel(COMPLETION_VOID_RULES, request, view, context)
    if refused is not None:
        return refused
    original = view.original
    assert original is not None
    completed = original.record
    cancel = ChangeStatus(completed.rrn, Status.APPROVED, Status.VOIDED, context.now)
    holds = hold_of(view.lineage[0].record, context.rules, context.now) if view.lineage else ()
    return Decision(Reason.APPROVED, reply_fields(context, record), (*counted, RecordTransaction(record), cancel),
                    balance_changes=given_back(completed, completed.amount_minor), holds=holds)  # fmt: skip
