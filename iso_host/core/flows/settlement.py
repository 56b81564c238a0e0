"""Settlement (0500): compare the terminal's totals with the host's. Pure: the batch view and `now` come in.

Balanced totals close the batch and open the next. Totals that disagree leave the batch open for an upload;
at the upload's end the host records every difference (missing on host, missing on terminal, amount
differs) and closes the batch anyway, as an acquirer does.
"""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.rules import refused
from iso_host.ledger.model import (
    AdvanceBatch,
    BatchDifference,
    BatchItem,
    BatchTotals,
    BatchView,
    Difference,
    ExpectBatchTotals,
    LedgerCommand,
    LedgerView,
    RecordDifferences,
    SettleBatch,
    Totals,
)
from iso_host.ledger.totals_json import optional_totals_from_json, totals_to_json
from iso_host.money import format_amount
from iso_host.styles import family_of
from iso_host.vocab import Kind, Reason

BALANCED, OUT_OF_BALANCE = "balanced", "out_of_balance"


def find_differences(host: tuple[BatchItem, ...], uploaded: tuple[BatchItem, ...]) -> tuple[BatchDifference, ...]:
    """Every STAN where the host's batch and the terminal's upload disagree, in STAN order."""
    host_by_stan = {item.stan: item for item in host}
    terminal_by_stan = {item.stan: item for item in uploaded}
    differences = []
    for stan in sorted(host_by_stan.keys() | terminal_by_stan.keys()):
        ours, theirs = host_by_stan.get(stan), terminal_by_stan.get(stan)
        if ours is None:
            assert theirs is not None
            differences.append(BatchDifference(stan, Difference.MISSING_ON_HOST, None, theirs.amount_minor,
                                               masked_pan=theirs.masked_pan))  # fmt: skip
        elif theirs is None:
            differences.append(BatchDifference(stan, Difference.MISSING_ON_TERMINAL, ours.amount_minor, None,
                                               rrn=ours.rrn, masked_pan=ours.masked_pan))  # fmt: skip
        elif ours.amount_minor != theirs.amount_minor:
            differences.append(BatchDifference(stan, Difference.AMOUNT_DIFFERS, ours.amount_minor,
                                               theirs.amount_minor, ours.rrn, ours.masked_pan))  # fmt: skip
    return tuple(differences)


def _counted(totals: Totals) -> str:
    debits, credits = totals.debit_count, totals.credit_count
    return (f"{debits} debit{'' if debits == 1 else 's'} {format_amount(totals.debit_minor)}, "
            f"{credits} credit{'' if credits == 1 else 's'} {format_amount(totals.credit_minor)}")  # fmt: skip


def totals_differ(host: BatchTotals, terminal: BatchTotals) -> str:
    """``Decision.detail`` of an out-of-balance settlement: both sides' totals, per section (domestic, foreign) when
    the sums agree and only the split differs (CUP compares each)."""
    if host.overall != terminal.overall:
        return f"settlement: totals differ (host {_counted(host.overall)}; terminal {_counted(terminal.overall)})"
    sections = (("domestic", host.domestic, terminal.domestic), ("foreign", host.foreign, terminal.foreign))
    apart = [f"{name}: host {_counted(ours)}, terminal {_counted(theirs)}" for name, ours, theirs in sections
             if ours != theirs]  # fmt: skip
    return f"settlement: totals differ ({'; '.join(apart)})"


def _out_of_sync(request: Request, view: LedgerView) -> str:
    batch = view.batch
    assert batch is not None
    if batch.status == "settled":
        why = f"batch {request.batch_number} has settled, the host's open batch is {request.open_batch}"
    else:
        why = f"the terminal's batch {request.batch_number}, the host's open batch {request.open_batch}"
    return refused(request.kind, Reason.BATCH_OUT_OF_SYNC, why)


def open_batch_of(request: Request, view: LedgerView) -> BatchView | None:
    """The batch being settled, or None when the terminal names one the host does not expect."""
    batch = view.batch
    assert batch is not None, "the host loads the batch view for settlement kinds"
    if request.batch_number != request.open_batch or batch.status == "settled":
        return None
    return batch


def _unchanged(request: Request, batch: BatchView) -> ExpectBatchTotals:
    """The settlement compared these totals: a sale or void that commits meanwhile makes it decide again."""
    return ExpectBatchTotals(request.tid, request.mid, batch.batch_number, batch.host_totals, batch.snapshot)


def _close(
    request: Request, batch: BatchView, context: Context, result: str, terminal_json: str
) -> list[LedgerCommand]:
    settle = SettleBatch(request.tid, request.mid, batch.batch_number, result, True,
                         totals_to_json(batch.host_totals), terminal_json, context.now)  # fmt: skip
    return [_unchanged(request, batch), settle, AdvanceBatch(request.tid, request.mid, batch.batch_number + 1)]


def _repeated_settlement(request: Request, view: LedgerView, context: Context) -> Decision | None:
    """A settlement of a batch that has settled, with the totals that settled it: the terminal missed the reply.

    It gets the answer it got the first time (from the totals recorded then) and changes nothing, so a
    terminal whose reply was lost learns that its batch closed.
    """
    batch = view.batch
    assert batch is not None
    assert request.terminal_totals is not None
    if batch.status != "settled" or batch.settled_terminal_totals_json != totals_to_json(request.terminal_totals):
        return None
    try:
        host_totals = optional_totals_from_json(batch.settled_host_totals_json)
    except ValueError:
        return None  # unreadable: answered as any settlement of a batch the host does not hold open
    if host_totals is None:
        return None
    _balanced, fields = family_of(context.dialect).compare(host_totals, request.terminal_totals)
    return Decision(Reason.APPROVED, fields | reply_fields(context))


def settlement(request: Request, view: LedgerView, context: Context) -> Decision:
    """Compare the terminal's totals with the host's: close the batch, or ask for an upload (iso87: after
    the upload, 96xxxx closes the batch with the differences recorded)."""
    assert request.kind is Kind.SETTLEMENT
    assert request.terminal_totals is not None, "admission reads the totals"
    if (repeated := _repeated_settlement(request, view, context)) is not None:
        return repeated
    batch = open_batch_of(request, view)
    if batch is None:
        return Decision(Reason.BATCH_OUT_OF_SYNC, reply_fields(context), detail=_out_of_sync(request, view))
    balanced, fields = family_of(context.dialect).compare(batch.host_totals, request.terminal_totals)
    fields |= reply_fields(context)
    terminal_json = totals_to_json(request.terminal_totals)
    if request.after_upload:
        return end_of_upload(request, batch, context, fields, terminal_json)
    if balanced:
        return Decision(Reason.APPROVED, fields, tuple(_close(request, batch, context, BALANCED, terminal_json)),
                        next_batch=batch.batch_number + 1)  # fmt: skip
    settle = SettleBatch(request.tid, request.mid, batch.batch_number, OUT_OF_BALANCE, False,
                         totals_to_json(batch.host_totals), terminal_json, context.now)  # fmt: skip
    return Decision(Reason.OUT_OF_BALANCE, fields, (_unchanged(request, batch), settle),
                    detail=totals_differ(batch.host_totals, request.terminal_totals))  # fmt: skip


def end_of_upload(
    request: Request, batch: BatchView, context: Context, fields: dict[str, str], terminal_json: str
) -> Decision:
    differences = find_differences(batch.host_items, batch.uploaded)
    commands = _close(request, batch, context, OUT_OF_BALANCE if differences else BALANCED, terminal_json)
    if differences:
        commands.append(RecordDifferences(request.tid, request.mid, batch.batch_number, differences, context.now))
    return Decision(Reason.APPROVED, fields, tuple(commands), next_batch=batch.batch_number + 1)
