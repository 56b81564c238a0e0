"""Reversal (0400): undo a transaction whose outcome the terminal never learned: a sale or a void, and the
pre-authorisation family (pre-auth, its void, completion, completion void). Idempotent (DESIGN.md "Reversal").
Pure: the view and ``now`` come in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iso_host.core.flows.base import Context, Decision, Request, new_record, reply_fields
from iso_host.core.flows.holding import hold_of, released
from iso_host.core.flows.original import given_back
from iso_host.core.rules import kind_words, refused
from iso_host.core.test_cards import HoldChange
from iso_host.ledger.model import (
    ChangeStatus,
    ExpectPreauthOpen,
    LedgerCommand,
    LedgerView,
    RecordTransaction,
    TransactionRecord,
)
from iso_host.money import format_amount
from iso_host.vocab import Kind, Reason, Status

REVERSIBLE: Final = frozenset(
    {Kind.SALE, Kind.VOID, Kind.PREAUTH, Kind.PREAUTH_VOID, Kind.COMPLETION, Kind.COMPLETION_VOID}
)


NO_EFFECT: Final = (Reason.APPROVED, None)


def _reversal_without_effect(  # noqa: PLR0911
    request: Request, view: LedgerView, context: Context
) -> tuple[Reason, str | None] | None:
    """The answer for a reversal that changes nothing, with a refusal's words, or None when it takes effect
    (DESIGN.md "Reversal")."""
    original = view.original
    if original is None:
        if context.rules.unknown_reversal == "decline":
            return Reason.ORIGINAL_NOT_FOUND, "no original of this terminal and merchant, unknown_reversal decline"
        return NO_EFFECT
    record = original.record
    named = f"{kind_words(record.kind)} {record.rrn}"
    if original.effective_reversal or record.status in (Status.REVERSED, Status.VOIDED):
        return NO_EFFECT  # a repeat gets the same answer as the first time, and no second effect
    if original.closed_by is Kind.PREAUTH_VOID:
        return NO_EFFECT  # a voided pre-auth holds nothing: as for a voided sale, nothing to undo
    if record.status is Status.DECLINED:
        return NO_EFFECT  # nothing was taken, so there is nothing to give back
    if request.amount_minor != original.effective_minor:  # a sale adjusted or tipped since: what it is worth now
        asked = format_amount(request.amount_minor or 0)
        return Reason.AMOUNT_MISMATCH, f"{named} {format_amount(original.effective_minor)}, reversal {asked}"
    if original.batch_settled:
        return Reason.BATCH_CLOSED, f"{named} is in batch {record.batch_number}, settled"
    if record.kind not in REVERSIBLE:
        return Reason.NOT_VOIDABLE, f"{named}: a {kind_words(record.kind)} is not reversible"
    if record.status is not Status.APPROVED:
        return Reason.NOT_VOIDABLE, f"{named} is {record.status.value}, not APPROVED"
    if original.closed_by is not None:  # a completed pre-auth: its completion is what can be undone
        return Reason.NOT_VOIDABLE, f"{named} is closed by a {kind_words(original.closed_by)}: reverse that instead"
    if record.kind is Kind.COMPLETION_VOID and not _preauth_reopened(view):
        # the pre-auth was completed (or voided) again since: its completion cannot return
        return Reason.NOT_VOIDABLE, f"{named}'s pre-auth was closed again since"
    return None


def _preauth_reopened(view: LedgerView) -> bool:
    """A completion void's pre-auth (the view's lineage: its completion, then that completion's pre-auth) is open."""
    if len(view.lineage) < 2:
        return False
    preauth = view.lineage[1]
    return preauth.record.status is Status.APPROVED and not preauth.effective_reversal and preauth.closed_by is None


@dataclass(frozen=True, slots=True)
class _Undo:
    """What reversing one kind does beyond marking it REVERSED."""

    before: tuple[LedgerCommand, ...] = ()  # preconditions, checked before anything changes
    after: tuple[LedgerCommand, ...] = ()  # the cancelled original restored
    balance: tuple[tuple[str, int], ...] = ()
    holds: tuple[HoldChange, ...] = ()


def _undo(record: TransactionRecord, view: LedgerView, context: Context) -> _Undo:
    """Reversing a sale gives its amount back, a void takes it again and its sale is APPROVED again; a pre-auth's
    hold is released, its void's reversal puts the hold back; a completion's reversal gives its amount back and
    puts its pre-auth's hold back, a completion void's takes the amount again and closes the pre-auth again."""
    now, settings = context.now, context.rules
    linked = view.lineage[0].record if view.lineage else None
    match record.kind:
        case Kind.SALE:
            worth = view.original.effective_minor if view.original is not None else record.amount_minor
            return _Undo(balance=given_back(record, worth))
        case Kind.VOID:
            assert record.original_rrn is not None, "an approved void names its sale"
            restore = ChangeStatus(record.original_rrn, Status.VOIDED, Status.APPROVED, now)
            return _Undo(after=(restore,), balance=given_back(record, -record.amount_minor))
        case Kind.PREAUTH:
            return _Undo(holds=released(record.rrn))
        case Kind.PREAUTH_VOID:
            return _Undo(holds=hold_of(linked, settings, now) if linked else ())
        case Kind.COMPLETION:
            holds = hold_of(linked, settings, now) if linked else ()
            return _Undo(balance=given_back(record, record.amount_minor), holds=holds)
        case Kind.COMPLETION_VOID:
            assert linked is not None, "the view holds the completion"
            preauth_rrn = linked.original_rrn
            assert preauth_rrn is not None, "a completion names its pre-auth"
            restore = ChangeStatus(linked.rrn, Status.VOIDED, Status.APPROVED, now)
            return _Undo(before=(ExpectPreauthOpen(preauth_rrn),), after=(restore,),
                         balance=given_back(linked, -linked.amount_minor), holds=released(preauth_rrn))  # fmt: skip
        case _:
            raise AssertionError(f"{record.kind} is not reversible")


def reversal(request: Request, view: LedgerView, context: Context) -> Decision:
    """Undo a transaction whose outcome the terminal never learned. Idempotent: a repeat changes nothing."""
    assert request.kind is Kind.REVERSAL
    answer = _reversal_without_effect(request, view, context)
    if answer is None and view.request_batch_settled:  # its row could only go into a batch that has settled
        answer = Reason.BATCH_CLOSED, f"the request's batch {request.batch_number} has settled"
    if answer is not None:
        reason, why = answer
        return Decision(reason, reply_fields(context), detail=refused(request.kind, reason, why) if why else None)
    assert view.original is not None
    record = view.original.record
    row = new_record(request, context, Reason.APPROVED, original_rrn=record.rrn)
    undo = _undo(record, view, context)
    reverse = ChangeStatus(record.rrn, Status.APPROVED, Status.REVERSED, context.now)
    return Decision(Reason.APPROVED, reply_fields(context, row), (*undo.before, RecordTransaction(row), reverse,
                    *undo.after), balance_changes=undo.balance, holds=undo.holds)  # fmt: skip
