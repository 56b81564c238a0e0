"""Test cards: the issuer-side facts a test needs (status, expiry, balance, limit, PIN), and their balances.

Balances live in memory and start from the configuration at every host start; flows never touch them:
they return balance changes, which the host applies once the ledger has committed the decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

STATUSES: Final = ("active", "lost", "stolen", "expired")


@dataclass(frozen=True, slots=True)
class TestCard:
    """One card as a flow sees it (a snapshot: the balance is the one at the time of the request)."""

    __test__ = False  # not a pytest test class, whatever its name

    status: str = "active"
    expiry: str | None = None  # YYMM; the card is expired from the month after
    balance_minor: int | None = None  # None: unlimited funds
    limit_minor: int | None = None  # per transaction; None: no limit
    pin: str | None = None

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status
        assert self.expiry is None or (len(self.expiry) == 4 and self.expiry.isdigit())


class CardBook:
    """The configured test cards by PAN (for admission) and by keyed PAN hash (for voids and reversals)."""

    def __init__(self, cards: Iterable[tuple[str, TestCard]], pan_hash: Callable[[str], str]) -> None:
        self._pan_hash = pan_hash
        self._by_pan: dict[str, TestCard] = {}
        self._pan_of_hash: dict[str, str] = {}
        self.replace(cards)

    def __len__(self) -> int:
        return len(self._by_pan)

    def replace(self, cards: Iterable[tuple[str, TestCard]]) -> None:
        """Swap the whole book for ``cards`` (a reload of the config file's ``[[cards]]``), in place.

        The host and its admission hold this one object, so both see the new cards from the next request.
        Balances start again from the new configuration. The new contents are built first, so a failure while
        building (a bad hash function) leaves the old book whole.
        """
        by_pan: dict[str, TestCard] = {}
        pan_of_hash: dict[str, str] = {}
        for pan, card in cards:
            by_pan[pan] = card
            pan_of_hash[self._pan_hash(pan)] = pan
        assert len(pan_of_hash) == len(by_pan), "two PANs with one keyed hash"
        self._by_pan, self._pan_of_hash = by_pan, pan_of_hash

    def card(self, pan: str) -> TestCard | None:
        return self._by_pan.get(pan)

    def apply(self, changes: Iterable[tuple[str, int]]) -> None:
        """Move balances by (PAN hash, delta in minor units); cards without a balance or not in the book stay."""
        for hashed, delta in changes:
            pan = self._pan_of_hash.get(hashed)
            card = self._by_pan.get(pan) if pan is not None else None
            if pan is not None and card is not None and card.balance_minor is not None:
                self._by_pan[pan] = replace(card, balance_minor=card.balance_minor + delta)
