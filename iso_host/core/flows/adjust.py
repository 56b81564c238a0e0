"""Adjust (CUP 0220, F3 000000, 60.1 32) and tip (0220, 60.1 34): change what a sale of the open batch is worth. Pure.

Both name their sale by 61.1 batch + 61.2 STAN and/or F37 (its RRN), go into the sale's own batch, and change
nothing of the sale's row: the batch's totals and the upload's expected items read the sale at its effective amount
(ledger/sql.py ``effective_minor``), so the debit count stays (it is the same purchase) and the debit amount moves.

- An adjust corrects an offline sale (a financial advice, 60.1 30): F4 is the corrected amount, and the newest
  approved adjust counts (a later one replaces an earlier one). ADJUST_RULES.
- A tip adds F4 to a sale, online or offline, once, at most ``tip_limit_percent`` of the sale as adjusted.
  TIP_RULES.

A test card pays the difference (an adjust may give some back). Both are advices, as a refund is: a 0400 naming one
is refused (NOT_VOIDABLE); the terminal sends the advice again instead, and a repeat is DUPLICATE.
"""

from __future__ import annotations

from iso_host.core.amend_rules import ADJUST_RULES, TIP_RULES
from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.flows.original import apply_rules, given_back, in_a_settled_batch
from iso_host.core.rules import Rule
from iso_host.ledger.model import ExpectAmendable, LedgerView, Original, RecordTransaction
from iso_host.vocab import Kind, Reason


def _worth_after(kind: Kind, original: Original, amount_minor: int) -> int:
    """What the sale is worth once the adjust (its new amount) or the tip (added) is approved."""
    if kind is Kind.ADJUST:
        return original.effective_minor - original.base_minor + amount_minor
    return original.effective_minor + amount_minor


def _amend(rules: tuple[Rule, ...], request: Request, view: LedgerView, context: Context) -> Decision:
    """Judge an adjust or a tip under its rule table; a refusal is recorded (declined, it counts nowhere)."""
    assert request.amount_minor is not None, "the pipeline requires F4 for these kinds"
    record, refusal = apply_rules(rules, request, view, context)
    if view.request_batch_settled:
        return in_a_settled_batch(refusal, request, context)
    if refusal is not None:
        return refusal
    original = view.original
    assert original is not None
    worth = _worth_after(request.kind, original, request.amount_minor)
    assert worth >= 0
    commands = (ExpectAmendable(original.record.rrn, original.effective_minor), RecordTransaction(record))
    taken = given_back(original.record, original.effective_minor - worth)
    return Decision(Reason.APPROVED, reply_fields(context, record), commands, balance_changes=taken)


def adjust(request: Request, view: LedgerView, context: Context) -> Decision:
    """Correct an offline sale's amount under ADJUST_RULES."""
    assert request.kind is Kind.ADJUST
    return _amend(ADJUST_RULES, request, view, context)


def tip(request: Request, view: LedgerView, context: Context) -> Decision:
    """Add a tip to a sale under TIP_RULES."""
    assert request.kind is Kind.TIP
    return _amend(TIP_RULES, request, view, context)
