"""Test cards: the issuer-side facts a test needs (status, expiry, balance, limit, PIN, the issuer master key for
application cryptograms), and their balances.

Balances live in memory and start from the configuration at every host start; flows never touch them:
they return balance changes, which the host applies once the ledger has committed the decision. So do holds: an
approved pre-auth holds its amount (what later sales may spend is the balance less the holds still running) until
its completion, void or reversal releases it, or it expires. Holds live in memory too, and so does the highest
application transaction counter (ATC, tag 9F36) of each chip card's ARQCs that verified, by keyed PAN hash and PAN
sequence number: an ARQC whose ATC is not above it is a replayed cryptogram. A reload of the cards keeps the
counters (the chips went on counting); a host restart forgets them.

The book also counts each card's wrong PINs in a row, as an issuer does: a right PIN starts the count again while the
card is not blocked; once ``[rules] pin_tries`` wrong PINs have come, every PIN is refused (PIN_TRIES_EXCEEDED)
until the cards are reloaded. In memory too: a restart or a reload unblocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final

from iso_host.cards import mask_pan
from iso_host.security import EMV_SCHEMES

STATUSES: Final = ("active", "lost", "stolen", "expired")
# EMV 4.3 Book 2's own cryptogram version (common session key from the ATC, ARPC method 1): a test card's scheme
# when its configuration names none.
DEFAULT_EMV_SCHEME: Final = "emv-csk"
IMK_BYTES: Final = 16  # a double-length TDES IMK-AC


@dataclass(frozen=True, slots=True)
class TestCard:
    """One card as a flow sees it (a snapshot: the balance is the one at the time of the request)."""

    __test__ = False  # not a pytest test class, whatever its name

    status: str = "active"
    expiry: str | None = None  # YYMM; the card is expired from the month after
    balance_minor: int | None = None  # None: unlimited funds
    limit_minor: int | None = None  # per transaction; None: no limit
    pin: str | None = field(default=None, repr=False)
    holds: tuple[Hold, ...] = ()  # the pre-auths holding money on it (the book's, at the time of the request)
    imk: bytes | None = field(default=None, repr=False)  # the issuer's IMK-AC: F55 ARQCs are verified under it
    emv_scheme: str = DEFAULT_EMV_SCHEME  # a name of security.EMV_SCHEMES: how the ARQC and the ARPC are computed

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status
        assert self.expiry is None or (len(self.expiry) == 4 and self.expiry.isdigit())
        assert self.imk is None or len(self.imk) == IMK_BYTES, "the IMK-AC is double length"
        assert self.emv_scheme in EMV_SCHEMES, self.emv_scheme

    def available_minor(self, now: datetime, *, besides: str | None = None) -> int | None:
        """What the card may still spend at ``now``: its balance less the holds still running (None: unlimited).

        ``besides``: a pre-auth's RRN whose own hold is left out (its completion spends what it held).
        """
        if self.balance_minor is None:
            return None
        held = sum(h.amount_minor for h in self.holds if h.until > now and h.preauth_rrn != besides)
        return self.balance_minor - held


@dataclass(frozen=True, slots=True)
class Hold:
    """An approved pre-auth's amount, held on its card until ``until`` (or until released)."""

    preauth_rrn: str
    pan_hash: str
    amount_minor: int
    until: datetime

    def __post_init__(self) -> None:
        assert self.until.tzinfo is not None, "hold times are aware"


@dataclass(frozen=True, slots=True)
class Release:
    """The pre-auth's hold ends: it was completed, voided or reversed."""

    preauth_rrn: str


HoldChange = Hold | Release


class CardBook:
    """The configured test cards by PAN (for admission) and by keyed PAN hash (for voids and reversals)."""

    def __init__(self, cards: Iterable[tuple[str, TestCard]], pan_hash: Callable[[str], str]) -> None:
        self._pan_hash = pan_hash
        self._by_pan: dict[str, TestCard] = {}
        self._pan_of_hash: dict[str, str] = {}
        self._holds: dict[str, dict[str, Hold]] = {}  # PAN -> pre-auth RRN -> hold
        self._pan_of_hold: dict[str, str] = {}  # pre-auth RRN -> PAN
        self._counters: dict[str, int] = {}  # ChipData.counter_key -> the highest ATC of an ARQC that verified
        self._wrong_pins: dict[str, int] = {}  # PAN -> wrong PINs in a row
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
        self._holds, self._pan_of_hold = {}, {}  # balances start again, and so do holds
        self._wrong_pins = {}  # and PIN tries: a reload unblocks

    def put(self, pan: str, card: TestCard) -> bool:
        """Add ``card``, or replace the card of that PAN (its balance, holds and PIN tries start again); True when it
        replaced one."""
        replaced = pan in self._by_pan
        self._by_pan[pan] = card
        self._pan_of_hash[self._pan_hash(pan)] = pan
        self._holds.pop(pan, None)
        self._wrong_pins.pop(pan, None)
        self._pan_of_hold = {rrn: held for rrn, held in self._pan_of_hold.items() if held != pan}
        return replaced

    def remove_at(self, index: int) -> str | None:
        """Remove the card at ``index`` of ``listing()``; its masked PAN, or None when there is no such card."""
        pans = list(self._by_pan)
        if not 0 <= index < len(pans):
            return None
        pan = pans[index]
        del self._by_pan[pan]
        self._pan_of_hash.pop(self._pan_hash(pan), None)
        self._holds.pop(pan, None)
        self._wrong_pins.pop(pan, None)
        self._pan_of_hold = {rrn: held for rrn, held in self._pan_of_hold.items() if held != pan}
        return mask_pan(pan)

    def listing(self) -> list[tuple[str, TestCard]]:
        """Every card as a view shows it, in configuration order: its masked PAN (never the clear one) and the card
        as a flow would see it now (balance and holds)."""
        listed = []
        for pan in self._by_pan:
            card = self.card(pan)
            assert card is not None
            listed.append((mask_pan(pan), card))
        return listed

    def card(self, pan: str) -> TestCard | None:
        """The card as a flow sees it: its balance and the holds on it now."""
        card = self._by_pan.get(pan)
        holds = self._holds.get(pan)
        return replace(card, holds=tuple(holds.values())) if card is not None and holds else card

    def apply_holds(self, changes: Iterable[HoldChange], now: datetime) -> None:
        """Add and release holds (on cards with a balance; others hold nothing), then forget those expired at ``now``.

        Nothing to do (most requests) costs nothing: expired holds left until then are ignored where they are read.
        """
        changes = tuple(changes)
        if not changes:
            return
        for change in changes:
            if isinstance(change, Release):
                pan = self._pan_of_hold.pop(change.preauth_rrn, None)
                if pan is not None:
                    self._holds[pan].pop(change.preauth_rrn, None)
                continue
            pan = self._pan_of_hash.get(change.pan_hash)
            card = self._by_pan.get(pan) if pan is not None else None
            if pan is not None and card is not None and card.balance_minor is not None:
                self._holds.setdefault(pan, {})[change.preauth_rrn] = change
                self._pan_of_hold[change.preauth_rrn] = pan
        for pan, holds in list(self._holds.items()):
            for rrn in [rrn for rrn, hold in holds.items() if hold.until <= now]:
                del holds[rrn]
                del self._pan_of_hold[rrn]
            if not holds:
                del self._holds[pan]

    def apply(self, changes: Iterable[tuple[str, int]]) -> None:
        """Move balances by (PAN hash, delta in minor units); cards without a balance or not in the book stay."""
        for hashed, delta in changes:
            pan = self._pan_of_hash.get(hashed)
            card = self._by_pan.get(pan) if pan is not None else None
            if pan is not None and card is not None and card.balance_minor is not None:
                self._by_pan[pan] = replace(card, balance_minor=card.balance_minor + delta)

    def pin_blocked(self, pan: str, tries: int | None) -> bool:
        """Whether the card has had ``tries`` wrong PINs in a row (None: no limit)."""
        return tries is not None and self._wrong_pins.get(pan, 0) >= tries

    def note_pin(self, pan: str, *, right: bool) -> None:
        """Count a wrong PIN, or start again after a right one (asked only while the card is not blocked)."""
        if right:
            self._wrong_pins.pop(pan, None)
        else:
            self._wrong_pins[pan] = self._wrong_pins.get(pan, 0) + 1

    def highest_atc(self, counter_key: str) -> int | None:
        """The highest ATC of the chip card's ARQCs that verified (None: none yet)."""
        return self._counters.get(counter_key)

    def note_counters(self, counters: Iterable[tuple[str, int]]) -> None:
        """Remember (counter key, ATC) of ARQCs that verified and committed; a counter never goes down here."""
        for counter_key, atc in counters:
            assert atc >= 0
            self._counters[counter_key] = max(atc, self._counters.get(counter_key, atc))
