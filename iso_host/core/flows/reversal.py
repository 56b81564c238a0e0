"""Reversal (0400): undo a sale or a void whose outcome the terminal never learned. Idempotent (DESIGN.md
"Reversal"). Pure: the view and ``now`` come in."""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, new_record, reply_fields
from iso_host.core.flows.original import given_back
from iso_host.ledger.model import ChangeStatus, LedgerView, RecordTransaction
from iso_host.vocab import Kind, Reason, Status


def _reversal_without_effect(request: Request, view: LedgerView, context: Context) -> Reason | None:  # noqa: PLR0911
    """The answer for a reversal that changes nothing, or None when it takes effect (DESIGN.md "Reversal")."""
    original = view.original
    if original is None:
        return Reason.ORIGINAL_NOT_FOUND if context.rules.unknown_reversal == "decline" else Reason.APPROVED
    record = original.record
    if original.effective_reversal or record.status in (Status.REVERSED, Status.VOIDED):
        return Reason.APPROVED  # a repeat gets the same answer as the first time, and no second effect
    if record.status is Status.DECLINED:
        return Reason.APPROVED  # nothing was taken, so there is nothing to give back
    if request.amount_minor != record.amount_minor:
        return Reason.AMOUNT_MISMATCH
    if original.batch_settled:
        return Reason.BATCH_CLOSED
    if record.kind not in (Kind.SALE, Kind.VOID) or record.status is not Status.APPROVED:
        return Reason.NOT_VOIDABLE
    return None


def reversal(request: Request, view: LedgerView, context: Context) -> Decision:
    """Undo a sale or a void whose outcome the terminal never learned. Idempotent: a repeat changes nothing."""
    assert request.kind is Kind.REVERSAL
    answer = _reversal_without_effect(request, view, context)
    if answer is None and view.request_batch_settled:
        answer = Reason.BATCH_CLOSED  # its row could only go into a batch that has settled
    if answer is not None:
        return Decision(answer, reply_fields(context))
    assert view.original is not None
    record = view.original.record
    row = new_record(request, context, Reason.APPROVED, original_rrn=record.rrn)
    commands: list[ChangeStatus | RecordTransaction] = [
        RecordTransaction(row),
        ChangeStatus(record.rrn, Status.APPROVED, Status.REVERSED, context.now),
    ]
    if record.kind is Kind.VOID:
        assert record.original_rrn is not None, "an approved void names its sale"
        commands.append(ChangeStatus(record.original_rrn, Status.VOIDED, Status.APPROVED, context.now))
    # Reversing a sale gives its amount back to the card; reversing a void takes it again.
    amount = record.amount_minor if record.kind is Kind.SALE else -record.amount_minor
    return Decision(Reason.APPROVED, reply_fields(context, row), tuple(commands),
                    balance_changes=given_back(record, amount))  # fmt: skip
