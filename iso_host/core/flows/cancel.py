"""Void, reversal and refund: decisions about an original sale. Pure: the view and `now` come in."""

from __future__ import annotations

from datetime import datetime

from iso_host.core.flows.base import Context, Decision, Request, batch_out_of_sync, new_record, reply_fields
from iso_host.core.rules import REFUND_RULES, VOID_RULES, Rule, business_day_start, first_failing
from iso_host.ledger.model import (
    ChangeStatus,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    LedgerCommand,
    LedgerView,
    RecordRefund,
    RecordTransaction,
    TransactionRecord,
)
from iso_host.vocab import Kind, Reason, Status


def _given_back(record: TransactionRecord, amount_minor: int) -> tuple[tuple[str, int], ...]:
    """The balance change for a test card: ``amount_minor`` back onto the card the record was paid with."""
    return ((record.card.pan_hash, amount_minor),) if record.card is not None else ()


def _apply_rules(
    rules: tuple[Rule, ...], request: Request, view: LedgerView, context: Context
) -> tuple[TransactionRecord, Decision | None]:
    """The request's ledger row under the first failing rule's reason, and the refusal (recorded) if one failed."""
    reason = first_failing(rules, request.attempt(), view, context.now, context.rules)
    original_rrn = view.original.record.rrn if view.original else None
    record = new_record(request, context, reason or Reason.APPROVED, original_rrn=original_rrn)
    if reason is None:
        return record, None
    return record, Decision(reason, reply_fields(context, record), (RecordTransaction(record),))


def _void_preconditions(request: Request, view: LedgerView, context: Context) -> tuple[LedgerCommand, ...]:
    """What a void decided from: the original's refused attempts and the terminal's voids today, as the view
    counted them. The store checks them where the data lives, so two racing voids cannot both count the same."""
    expected: list[LedgerCommand] = []
    if view.original is not None:
        expected.append(ExpectRefusedVoids(view.original.record.rrn, view.original.refused_void_attempts))
    if context.rules.max_voids_per_day is not None:
        since = business_day_start(context.now, context.rules)
        expected.append(ExpectVoidsSince(request.tid, request.mid, since, view.voids_today))
    return tuple(expected)


def _in_a_settled_batch(refusal: Decision | None, context: Context) -> Decision:
    """A void or refund whose own batch (the one the request names) has settled: nothing is written into it.

    A refusal keeps its reason, unrecorded (a settled batch takes no row, and the original can no longer be
    cancelled there); what would be approved is BATCH_OUT_OF_SYNC, the terminal's batch not being the host's.
    """
    if refusal is None:
        return batch_out_of_sync(context)
    return Decision(refusal.reason, reply_fields(context))


def void(request: Request, view: LedgerView, context: Context) -> Decision:
    """Cancel an unsettled sale under the void rules; a refused attempt is recorded (it counts to the limit)."""
    assert request.kind is Kind.VOID
    expected = _void_preconditions(request, view, context)
    record, refusal = _apply_rules(VOID_RULES, request, view, context)
    if view.request_batch_settled:
        return _in_a_settled_batch(refusal, context)
    if refusal is not None:
        return Decision(refusal.reason, refusal.fields, (*expected, *refusal.commands))
    original = view.original
    assert original is not None
    cancel = ChangeStatus(original.record.rrn, Status.APPROVED, Status.VOIDED, context.now)
    return Decision(Reason.APPROVED, reply_fields(context, record), (*expected, RecordTransaction(record), cancel),
                    balance_changes=_given_back(original.record, original.record.amount_minor))  # fmt: skip


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
                    balance_changes=_given_back(record, amount))  # fmt: skip


def _local_mmdd(moment: datetime, context: Context) -> str:
    zone = context.rules.timezone or context.now.tzinfo
    return moment.astimezone(zone).strftime("%m%d")


def refund(request: Request, view: LedgerView, context: Context) -> Decision:
    """Give back part or all of a sale, up to what remains refundable, within the refund age."""
    assert request.kind is Kind.REFUND
    original = view.original
    named_date = request.original_date_mmdd
    if (
        original is not None
        and named_date is not None
        and _local_mmdd(original.record.created_at, context) != named_date
    ):
        original = None  # the terminal named another day's transaction
        view = LedgerView(None, view.voids_today, request_batch_settled=view.request_batch_settled)
    record, refusal = _apply_rules(REFUND_RULES, request, view, context)
    if view.request_batch_settled:
        return _in_a_settled_batch(refusal, context)
    if refusal is not None:
        return refusal
    assert original is not None
    assert request.amount_minor is not None
    before = original.record.refunded_minor
    after = before + request.amount_minor
    status = Status.REFUNDED if after == original.record.amount_minor else Status.PARTIALLY_REFUNDED
    refunded = RecordRefund(original.record.rrn, before, after, status, context.now)
    return Decision(Reason.APPROVED, reply_fields(context, record), (RecordTransaction(record), refunded),
                    balance_changes=_given_back(original.record, request.amount_minor))  # fmt: skip
