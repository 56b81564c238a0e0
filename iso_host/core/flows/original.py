"""What void, reversal and refund share: judging a request about an original sale. Pure."""

from __future__ import annotations

import dataclasses

from iso_host.core.flows.base import Context, Decision, Request, batch_out_of_sync, new_record, reply_fields
from iso_host.core.rules import Rule, first_refusal, refused
from iso_host.ledger.model import ExpectRefusedVoids, LedgerCommand, LedgerView, RecordTransaction, TransactionRecord
from iso_host.vocab import Reason


def given_back(record: TransactionRecord, amount_minor: int) -> tuple[tuple[str, int], ...]:
    """The balance change for a test card: ``amount_minor`` back onto the card the record was paid with."""
    return ((record.card.pan_hash, amount_minor),) if record.card is not None else ()


def apply_rules(
    rules: tuple[Rule, ...], request: Request, view: LedgerView, context: Context
) -> tuple[TransactionRecord, Decision | None]:
    """The request's ledger row under the first failing rule's reason, and the refusal (recorded, with the rule's
    words as its detail) if one failed."""
    attempt = dataclasses.replace(request.attempt(), kind=request.kind)
    refusal = first_refusal(rules, attempt, view, context.now, context.rules)
    original_rrn = view.original.record.rrn if view.original else None
    record = new_record(request, context, refusal.reason if refusal else Reason.APPROVED, original_rrn=original_rrn)
    if refusal is None:
        return record, None
    return record, Decision(refusal.reason, reply_fields(context, record), (RecordTransaction(record),),
                            detail=refusal.detail(request.kind))  # fmt: skip


def in_a_settled_batch(refusal: Decision | None, request: Request, context: Context) -> Decision:
    """A void or refund whose own batch (the one the request names) has settled: nothing is written into it.

    A refusal keeps its reason and detail, unrecorded (a settled batch takes no row, and the original can no longer
    be cancelled there); what would be approved is BATCH_OUT_OF_SYNC, the terminal's batch not being the host's.
    """
    if refusal is None:
        why = f"the request's batch {request.batch_number} has settled"
        if request.open_batch != request.batch_number:
            why += f", the host's open batch is {request.open_batch}"
        detail = refused(request.kind, Reason.BATCH_OUT_OF_SYNC, why)
        return dataclasses.replace(batch_out_of_sync(context), detail=detail)
    return Decision(refusal.reason, reply_fields(context), detail=refusal.detail)


def judged_cancel(
    rules: tuple[Rule, ...], request: Request, view: LedgerView, context: Context
) -> tuple[TransactionRecord, tuple[LedgerCommand, ...], Decision | None]:
    """What a void of some original (a pre-auth, a completion) shares: its row, the refused attempts it was decided
    from (the store checks them, so racing voids cannot count the same), and its answer when it is refused
    (recorded: it counts to the limit) or its batch has settled; None when the rules pass."""
    original = view.original
    counted: tuple[LedgerCommand, ...] = (
        (ExpectRefusedVoids(original.record.rrn, original.refused_void_attempts),) if original else ()
    )
    record, refusal = apply_rules(rules, request, view, context)
    if view.request_batch_settled:
        return record, counted, in_a_settled_batch(refusal, request, context)
    if refusal is not None:
        return record, counted, dataclasses.replace(refusal, commands=(*counted, *refusal.commands))
    return record, counted, None
