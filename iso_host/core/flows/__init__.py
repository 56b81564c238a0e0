"""Flows: one pure function per transaction kind, and KINDS, the table the pipeline routes with.

A new kind is a flow module here, its row in KINDS, its name in ``vocab.Kind`` and its ``[[kinds]]`` and
``[templates]`` entries in the dialect specs. The pipeline reads everything else it needs from the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iso_host.core.flows.adjust import adjust, tip
from iso_host.core.flows.balance import balance
from iso_host.core.flows.base import NO_VIEW, Context, Decision, Flow, Request, SessionUpdate
from iso_host.core.flows.completion import completion
from iso_host.core.flows.completion_void import completion_void
from iso_host.core.flows.echo import echo
from iso_host.core.flows.generic import answer, download, download_end, download_status, parameters
from iso_host.core.flows.preauth import preauth
from iso_host.core.flows.preauth_void import preauth_void
from iso_host.core.flows.refund import refund
from iso_host.core.flows.reversal import reversal
from iso_host.core.flows.sale import sale
from iso_host.core.flows.settlement import settlement
from iso_host.core.flows.signon import signoff, signon
from iso_host.core.flows.upload import batch_upload, upload_end
from iso_host.core.flows.void import void
from iso_host.vocab import Kind


@dataclass(frozen=True, slots=True)
class BatchRead:
    """What of its batch a kind decides from (the host reads it before the flow runs)."""

    totals: bool = True  # the host's totals of the batch
    items: bool = False  # its transactions one by one (also read for a settlement that follows an upload)


@dataclass(frozen=True, slots=True)
class KindSpec:
    """What the pipeline does for one kind besides calling its flow."""

    flow: Flow
    financial: bool = False  # moves money: gets an RRN, needs F4 and a card, is recorded, belongs to a batch
    original: bool = False  # names an original transaction: the host looks it up (``Request.original_queries``)
    batch: BatchRead | None = None  # decides from its batch: the host reads it
    counts_voids: bool = False  # the per-day void limit applies: the host counts the terminal's voids today
    issues_keys: bool = False  # sign-on: the flow gets the TMK and fresh random keys
    # A row of this kind names an original that reversing or voiding the row reaches: the host loads that original
    # too, into the view's lineage (a completion's pre-auth, a completion void's completion and then its pre-auth).
    linked: bool = False

    @property
    def stateful(self) -> bool:
        """Decides from the terminal's ledger state (an original, a batch): one at a time per terminal."""
        return self.original or self.batch is not None


KINDS: Final[dict[Kind, KindSpec]] = {
    Kind.SALE: KindSpec(sale, financial=True),
    Kind.ECHO: KindSpec(echo),
    Kind.SIGNON: KindSpec(signon, issues_keys=True),
    Kind.SIGNOFF: KindSpec(signoff),
    Kind.VOID: KindSpec(void, financial=True, original=True, counts_voids=True),
    Kind.REVERSAL: KindSpec(reversal, financial=True, original=True),
    Kind.REFUND: KindSpec(refund, financial=True, original=True),
    Kind.SETTLEMENT: KindSpec(settlement, batch=BatchRead()),
    Kind.BATCH_UPLOAD: KindSpec(batch_upload, batch=BatchRead(totals=False)),
    Kind.UPLOAD_END: KindSpec(upload_end, batch=BatchRead(items=True)),
    Kind.BALANCE: KindSpec(balance),
    Kind.ANSWER: KindSpec(answer),
    Kind.DOWNLOAD_STATUS: KindSpec(download_status),
    Kind.DOWNLOAD: KindSpec(download),
    Kind.DOWNLOAD_END: KindSpec(download_end),
    Kind.PARAMETERS: KindSpec(parameters),
    Kind.PREAUTH: KindSpec(preauth, financial=True),
    Kind.PREAUTH_VOID: KindSpec(preauth_void, financial=True, original=True, linked=True),
    Kind.COMPLETION: KindSpec(completion, financial=True, original=True, linked=True),
    Kind.COMPLETION_VOID: KindSpec(completion_void, financial=True, original=True, linked=True),
    Kind.ADJUST: KindSpec(adjust, financial=True, original=True),
    Kind.TIP: KindSpec(tip, financial=True, original=True),
}
FLOWS: Final[dict[Kind, Flow]] = {kind: spec.flow for kind, spec in KINDS.items()}  # for tests that call a flow

__all__ = [
    "FLOWS",
    "KINDS",
    "NO_VIEW",
    "BatchRead",
    "Context",
    "Decision",
    "Flow",
    "KindSpec",
    "Request",
    "SessionUpdate",
]
