"""Refund: give back part or all of a sale, up to what remains refundable, within the refund age. Pure."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.flows.original import apply_rules, given_back, in_a_settled_batch
from iso_host.core.rules import REFUND_RULES, kind_words, refused
from iso_host.ledger.model import LedgerView, RecordRefund, RecordTransaction
from iso_host.vocab import Kind, Reason, Status


def _local_mmdd(moment: datetime, context: Context) -> str:
    zone = context.rules.timezone or context.now.tzinfo
    return moment.astimezone(zone).strftime("%m%d")


def refund(request: Request, view: LedgerView, context: Context) -> Decision:
    """Give back part or all of a sale, up to what remains refundable, within the refund age."""
    assert request.kind is Kind.REFUND
    original = view.original
    named_date = request.original_date_mmdd
    other_day: str | None = None
    if original is not None and named_date is not None:
        made = _local_mmdd(original.record.created_at, context)
        if made != named_date:  # the terminal named another day's transaction
            named = f"{kind_words(original.record.kind)} {original.record.rrn}"
            other_day = f"MMDD {named_date} named, {named} is of {made}"
            original = None
            view = LedgerView(None, view.voids_today, request_batch_settled=view.request_batch_settled)
    record, refusal = apply_rules(REFUND_RULES, request, view, context)
    if refusal is not None and other_day is not None:
        refusal = dataclasses.replace(refusal, detail=refused(request.kind, refusal.reason, other_day))
    if view.request_batch_settled:
        return in_a_settled_batch(refusal, request, context)
    if refusal is not None:
        return refusal
    assert original is not None
    assert request.amount_minor is not None
    before = original.record.refunded_minor
    after = before + request.amount_minor
    status = Status.REFUNDED if after == original.record.amount_minor else Status.PARTIALLY_REFUNDED
    refunded = RecordRefund(original.record.rrn, before, after, status, context.now)
    return Decision(Reason.APPROVED, reply_fields(context, record), (RecordTransaction(record), refunded),
                    balance_changes=given_back(original.record, request.amount_minor))  # fmt: skip
