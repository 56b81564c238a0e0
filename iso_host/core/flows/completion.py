"""Completion (CUP 0200, F3 00xxxx, F25 06, 60.1 20; offline 0220, 60.1 24): take the money of an open, unexpired
pre-auth of this terminal, named by its approval code (F38) and date (61.3). Pure.

At most ``completion_tolerance_percent`` above the pre-auth, once: the approved completion closes the pre-auth
(whose own row does not change), and the store checks inside the commit that nothing closed it meanwhile. A
completion is a debit in the settlement totals. The pre-auth's hold is released and the completion's amount is
taken from the card; what it takes beyond the hold must be available (INSUFFICIENT_FUNDS). The card's status
and expiry are not asked again: the pre-auth was the authorisation.
"""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, new_record, reply_fields
from iso_host.core.flows.holding import released
from iso_host.core.flows.original import apply_rules, given_back, in_a_settled_batch
from iso_host.core.rules import COMPLETION_RULES, refused
from iso_host.ledger.model import ExpectPreauthOpen, LedgerView, RecordTransaction
from iso_host.money import format_amount
from iso_host.vocab import Kind, Reason


def _uncovered(request: Request, preauth_rrn: str, context: Context) -> str | None:
    """When the test card cannot pay what the completion takes beyond its pre-auth's hold: the amounts, in words."""
    card = request.test_card
    available = card.available_minor(context.now, besides=preauth_rrn) if card is not None else None
    if available is None or request.amount_minor is None or request.amount_minor <= available:
        return None
    taken, has = format_amount(request.amount_minor), format_amount(available)
    return f"completion {taken}, available {has} counting pre-auth {preauth_rrn}'s hold"


def completion(request: Request, view: LedgerView, context: Context) -> Decision:
    """Complete an open pre-auth under COMPLETION_RULES (and the test card's funds); a refusal is recorded."""
    assert request.kind is Kind.COMPLETION
    assert request.amount_minor is not None, "the pipeline requires F4 for a completion"
    record, refusal = apply_rules(COMPLETION_RULES, request, view, context)
    preauth = view.original.record if view.original is not None else None
    if refusal is None and preauth is not None and (short := _uncovered(request, preauth.rrn, context)) is not None:
        record = new_record(request, context, Reason.INSUFFICIENT_FUNDS, original_rrn=preauth.rrn)
        refusal = Decision(Reason.INSUFFICIENT_FUNDS, reply_fields(context, record), (RecordTransaction(record),),
                           detail=refused(request.kind, Reason.INSUFFICIENT_FUNDS, short))  # fmt: skip
    if view.request_batch_settled:
        return in_a_settled_batch(refusal, request, context)
    if refusal is not None:
        return refusal
    assert preauth is not None
    commands = (ExpectPreauthOpen(preauth.rrn), RecordTransaction(record))
    taken = given_back(preauth, -request.amount_minor)
    return Decision(Reason.APPROVED, reply_fields(context, record), commands, balance_changes=taken,
                    holds=released(preauth.rrn))  # fmt: skip
