"""Flows: one pure function per transaction kind, and the table the pipeline routes with."""

from typing import Final

from iso_host.flows.base import Context, Decision, Flow, Request, SessionUpdate
from iso_host.flows.echo import echo
from iso_host.flows.sale import sale
from iso_host.flows.signon import signoff, signon
from iso_host.ledger.model import Kind

FLOWS: Final[dict[Kind, Flow]] = {Kind.SALE: sale, Kind.ECHO: echo, Kind.SIGNON: signon, Kind.SIGNOFF: signoff}
# Kinds that move money: they get an RRN, need F4 and a card, and are recorded in the ledger.
FINANCIAL_KINDS: Final = frozenset({Kind.SALE})

__all__ = ["FINANCIAL_KINDS", "FLOWS", "Context", "Decision", "Flow", "Request", "SessionUpdate"]
