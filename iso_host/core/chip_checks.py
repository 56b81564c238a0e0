"""An acquirer host's cross-checks of a request's field 55 against the rest of the message, made in admission while
the PAN is in clear. Each answers None (consistent, or the tag is absent) or the reason and a one-line detail naming
the tag, where it starts in field 55, and the field it disagrees with. Pure: no clock, no I/O.

- 5A (application PAN, cn: the digits, padded with F to whole bytes) must be the PAN the request carries (F2, or
  track 2): CHIP_PAN_MISMATCH (59, suspected fraud: a chip's data with another card's stripe or keyed PAN).
- 9F02 (amount, authorised, n12 BCD: what the card computed its cryptogram over) must equal F4 for a kind that asks
  the card for money (a sale, a pre-auth): INVALID_AMOUNT (13); a 9F02 that is not 6 bytes of BCD digits is
  FORMAT_ERROR.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from iso_host.vocab import Reason

CHIP_FIELD: Final = "55"
AMOUNT_BYTES: Final = 6  # n12 BCD
ChipTags = Mapping[str, tuple[int, bytes]]  # tag -> (offset in field 55, value), as admission parses them
Problem = tuple[Reason, str]


def pan_mismatch(pan: str, card_field: str, chip: ChipTags) -> Problem | None:
    """CHIP_PAN_MISMATCH when 5A is not ``pan`` (read from ``card_field``)."""
    if "5A" not in chip:
        return None
    offset, value = chip["5A"]
    if value.hex().upper().rstrip("F") == pan:
        return None
    detail = f"field {CHIP_FIELD}: tag 5A at byte {offset} (application PAN) is not the PAN of field {card_field}"
    return Reason.CHIP_PAN_MISMATCH, detail


def amount_mismatch(amount_minor: int, chip: ChipTags) -> Problem | None:
    """INVALID_AMOUNT when 9F02 is not field 4's amount; FORMAT_ERROR when it is not n12 BCD."""
    if "9F02" not in chip:
        return None
    offset, value = chip["9F02"]
    where = f"field {CHIP_FIELD}: tag 9F02 at byte {offset}"
    if len(value) != AMOUNT_BYTES:
        return Reason.FORMAT_ERROR, f"{where}: must be {AMOUNT_BYTES} bytes, got {len(value)}"
    digits = value.hex()
    if not digits.isdigit():
        return Reason.FORMAT_ERROR, f"{where}: must be n12, BCD digits"
    if int(digits, 10) == amount_minor:
        return None
    return Reason.INVALID_AMOUNT, f"{where} (amount, authorised: {int(digits, 10)}) is not field 4's {amount_minor}"
