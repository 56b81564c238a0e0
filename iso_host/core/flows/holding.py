"""What the pre-authorisation flows share: the hold a pre-auth puts on its card. Pure."""

from __future__ import annotations

from datetime import datetime

from iso_host.core.rules import RuleSettings, preauth_expiry
from iso_host.core.test_cards import Hold, HoldChange, Release
from iso_host.ledger.model import TransactionRecord


def hold_of(preauth: TransactionRecord, settings: RuleSettings, now: datetime) -> tuple[HoldChange, ...]:
    """The hold of an approved pre-auth (again, when its void or completion is undone), until it expires; nothing
    once it has expired, or for a pre-auth without a card."""
    until = preauth_expiry(preauth, settings)
    if preauth.card is None or until <= now:
        return ()
    return (Hold(preauth.rrn, preauth.card.pan_hash, preauth.amount_minor, until),)


def released(preauth_rrn: str) -> tuple[HoldChange, ...]:
    """The pre-auth's hold ends (its completion takes the money, or it was voided or reversed)."""
    return (Release(preauth_rrn),)
