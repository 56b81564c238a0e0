"""Void (0200 cancel): cancel an unsettled sale under the void rules. Pure: the view and ``now`` come in."""

from __future__ import annotations

import dataclasses

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.flows.original import apply_rules, given_back, in_a_settled_batch
from iso_host.core.rules import VOID_RULES, business_day_start
from iso_host.ledger.model import (
    ChangeStatus,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    LedgerCommand,
    LedgerView,
    RecordTransaction,
)
from iso_host.vocab import Kind, Reason, Status


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


def void(request: Request, view: LedgerView, context: Context) -> Decision:
    """Cancel an unsettled sale under the void rules; a refused attempt is recorded (it counts to the limit)."""
    assert request.kind is Kind.VOID
    expected = _void_preconditions(request, view, context)
    record, refusal = apply_rules(VOID_RULES, request, view, context)
    if view.request_batch_settled:
        return in_a_settled_batch(refusal, request, context)
    if refusal is not None:
        return dataclasses.replace(refusal, commands=(*expected, *refusal.commands))
    original = view.original
    assert original is not None
    cancel = ChangeStatus(original.record.rrn, Status.APPROVED, Status.VOIDED, context.now)
    return Decision(Reason.APPROVED, reply_fields(context, record), (*expected, RecordTransaction(record), cancel),
                    balance_changes=given_back(original.record, original.effective_minor))  # fmt: skip
