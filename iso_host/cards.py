"""Card data helpers. Clear PANs stop here: everything else sees them masked or hashed."""

from __future__ import annotations

import functools
import hashlib
import hmac

PAN_MIN_DIGITS = 12
PAN_MAX_DIGITS = 19
# UnionPay's own cards (BIN 62): settlement totals count them as domestic and every other card as foreign
# (the ledger's BATCH_TOTALS says the same in SQL).
DOMESTIC_PAN_PREFIX = "62"


def is_foreign_pan(pan: str) -> bool:
    """Whether totals count this card as foreign; no card at all (a QR payment) is UnionPay's: domestic."""
    return bool(pan) and not pan.startswith(DOMESTIC_PAN_PREFIX)


def mask_pan_digits(pan: str) -> str:
    """``mask_pan`` with zeros instead of stars, for a field that must stay numeric (a redacted trace frame)."""
    return mask_pan(pan).replace("*", "0")


def mask_pan(pan: str) -> str:
    """Keep the first 6 and last 4 digits, as PCI DSS allows for display.

    >>> mask_pan("4761739001010010")
    '476173******0010'
    """
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


@functools.lru_cache(maxsize=4)
def _keyed_hmac(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 under ``key`` with its pads already hashed: copying it halves the cost of a PAN hash (a host has
    one PAN hash key; a test run a few)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def pan_hash(pan: str, key: bytes) -> str:
    """A keyed hash of the PAN, so the ledger can match cards without storing them."""
    assert key, "the PAN hash key must not be empty"
    keyed = _keyed_hmac(key).copy()
    keyed.update(pan.encode("ascii"))
    return keyed.hexdigest()


PAN_KEY_CHECK_LABEL = b"iso-host PAN hash key check value"


def pan_key_check(key: bytes) -> str:
    """What the ledger keeps of its PAN hash key: an HMAC of a fixed label under it, never the key.

    Hosts sharing a ledger compare it to find out whether they hash with the same key; it helps nobody find a PAN.
    """
    assert key, "the PAN hash key must not be empty"
    return hmac.new(key, PAN_KEY_CHECK_LABEL, hashlib.sha256).hexdigest()[:32]


def pan_from_track2(track2: str) -> str | None:
    """The PAN in front of the track 2 separator (``=`` in ASCII, ``D`` in BCD), or None."""
    for separator in ("=", "D", "d"):
        head, found, _ = track2.partition(separator)
        if found:
            return head if head.isdigit() else None
    return None


def is_valid_pan(pan: str) -> bool:
    """Digits only and of a plausible length (the Luhn check is the issuer's business)."""
    return pan.isdigit() and PAN_MIN_DIGITS <= len(pan) <= PAN_MAX_DIGITS


# Fields never shown to people, even to the card's owner: track data, PIN block, chip data, key blocks, MACs.
NOT_SHOWN_FIELDS = frozenset({"35", "36", "45", "52", "55", "62", "64"})


def displayed(field_id: str, value: str) -> str:
    """A field's value as the CLI, replay and sessions print it: PAN masked, secrets not shown."""
    head = field_id.partition(".")[0]
    if head in NOT_SHOWN_FIELDS:
        return "[not shown]"
    return mask_pan(value) if head == "2" else value
