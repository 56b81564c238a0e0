"""Balance inquiry (CUP 0200 F3 310000 60.1=01; iso87 0100/0200 F3 31xxxx): the card's available balance in F54.

Pure. Nothing moves and nothing is recorded: the issuer (here, the test card table) answers from its own books.
A card without a configured balance is approved without F54, as a host that does not know the figure answers.
"""

from __future__ import annotations

from typing import Final

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.core.flows.sale import card_decline
from iso_host.ledger.model import LedgerView
from iso_host.vocab import Kind, Reason

AVAILABLE_BALANCE: Final = "02"  # ISO 8583:1987 F54 amount type (01 ledger balance, 02 available balance)
DEFAULT_ACCOUNT: Final = "00"


def additional_amount(account_type: str, currency: str, amount_minor: int) -> str:
    """One F54 amount: account type n2, amount type n2, currency n3, sign C/D, amount n12 (20 characters)."""
    sign = "C" if amount_minor >= 0 else "D"
    return f"{account_type}{AVAILABLE_BALANCE}{currency}{sign}{abs(amount_minor):012d}"


def balance(request: Request, _view: LedgerView, context: Context) -> Decision:
    """Approve with the test card's balance, or decline as the card's status or expiry says."""
    assert request.kind is Kind.BALANCE
    reason = card_decline(request.test_card, 0, context.now) or Reason.APPROVED
    fields = reply_fields(context)
    card = request.test_card
    available = card.available_minor(context.now) if card is not None else None  # less what pre-auths hold
    if reason is Reason.APPROVED and available is not None:
        account = request.processing_code[2:4] if len(request.processing_code) == 6 else DEFAULT_ACCOUNT
        fields["54"] = additional_amount(account, request.currency, available)
    return Decision(reason, fields)
