"""Flows: one pure function per transaction kind, and the table the pipeline routes with."""

from typing import Final

from iso_host.core.flows.base import NO_VIEW, Context, Decision, Flow, Request, SessionUpdate
from iso_host.core.flows.cancel import refund, reversal, void
from iso_host.core.flows.echo import echo
from iso_host.core.flows.sale import sale
from iso_host.core.flows.settlement import batch_upload, settlement, upload_end
from iso_host.core.flows.signon import signoff, signon
from iso_host.vocab import Kind

FLOWS: Final[dict[Kind, Flow]] = {
    Kind.SALE: sale, Kind.ECHO: echo, Kind.SIGNON: signon, Kind.SIGNOFF: signoff,
    Kind.VOID: void, Kind.REVERSAL: reversal, Kind.REFUND: refund,
    Kind.SETTLEMENT: settlement, Kind.BATCH_UPLOAD: batch_upload, Kind.UPLOAD_END: upload_end,
}  # fmt: skip
# Kinds that decide from a batch: the host loads its BatchView first.
BATCH_KINDS: Final = frozenset({Kind.SETTLEMENT, Kind.BATCH_UPLOAD, Kind.UPLOAD_END})
# Kinds that move money: they get an RRN, need F4, and are recorded in the ledger.
FINANCIAL_KINDS: Final = frozenset({Kind.SALE, Kind.VOID, Kind.REVERSAL, Kind.REFUND})
# Kinds that name an original transaction: the host loads it (the LedgerView) before the flow decides.
ORIGINAL_KINDS: Final = frozenset({Kind.VOID, Kind.REVERSAL, Kind.REFUND})

__all__ = [
    "BATCH_KINDS",
    "FINANCIAL_KINDS",
    "FLOWS",
    "NO_VIEW",
    "ORIGINAL_KINDS",
    "Context",
    "Decision",
    "Flow",
    "Request",
    "SessionUpdate",
]
