"""Echo / network test (0800 F70=301, CUP 0820 60.3=301): answer 00, touch nothing."""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request
from iso_host.ledger.model import LedgerView
from iso_host.vocab import Kind, Reason


def echo(request: Request, _view: LedgerView, context: Context) -> Decision:
    """The terminal checks the link is alive; the host answers and records nothing."""
    assert request.kind is Kind.ECHO
    assert context.rrn is None, "echo is not financial and takes no RRN"
    return Decision(Reason.APPROVED)
