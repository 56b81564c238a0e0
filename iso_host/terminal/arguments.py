"""What a terminal is configured with and asked to do, checked before anything is sent, as a real terminal's
configuration screen checks it: each value against the rule of the field it goes into. Pure.

Every check raises ``ConfigError`` with one line naming the option and the rule (``iso-host`` prints it and exits 2);
a card number, PIN or key is never echoed, only its length.
"""

from __future__ import annotations

import re
from typing import Final

from iso_host.cards import PAN_MAX_DIGITS, PAN_MIN_DIGITS
from iso_host.config import MID_LENGTH, TID_LENGTH
from iso_host.errors import ConfigError
from iso_host.money import MAX_MINOR, parse_amount
from iso_host.security import MAC_KEY_LENGTHS
from iso_host.security.dukpt import BDK_BYTES
from iso_host.vocab import MAC_ALGORITHMS

_AMOUNT: Final = re.compile(r"\d{1,10}(\.\d{1,2})?")
_HEX: Final = re.compile(r"[0-9A-Fa-f]*")
_EXPIRY: Final = re.compile(r"\d\d(0[1-9]|1[0-2])")
_MMDD: Final = re.compile(r"(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
PIN_DIGITS: Final = (4, 12)  # ISO 9564 PIN blocks carry 4 to 12 digits
MAX_STAN_DIGITS: Final = 6
RRN_LENGTH: Final = 12


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def check_tid(tid: str) -> str:
    """F41, a terminal ID: exactly 8 printable characters (a terminal's configuration is not padded for it)."""
    if len(tid) != TID_LENGTH or not _printable_ascii(tid):
        raise ConfigError(f"--tid: a terminal ID (field 41) is exactly {TID_LENGTH} characters, such as TERM0001;"
                          f" got {tid!r} ({len(tid)})")  # fmt: skip
    return tid


def check_mid(mid: str) -> str:
    """F42, a merchant ID: exactly 15 printable characters. Not padded: the host compares it as it is configured, so
    a padded short ID would be declined as an unknown merchant anyway."""
    if len(mid) != MID_LENGTH or not _printable_ascii(mid):
        raise ConfigError(f"--mid: a merchant ID (field 42) is exactly {MID_LENGTH} characters, such as"
                          f" MERCHANT0000001; got {mid!r} ({len(mid)})")  # fmt: skip
    return mid


def check_pan(pan: str, option: str = "--pan") -> str:
    """A card number: 12 to 19 digits. Never echoed."""
    if not (pan.isascii() and pan.isdigit() and PAN_MIN_DIGITS <= len(pan) <= PAN_MAX_DIGITS):
        kind = "digits" if pan.isascii() and pan.isdigit() else "characters, not all digits"
        raise ConfigError(f"{option}: a card number is {PAN_MIN_DIGITS} to {PAN_MAX_DIGITS} digits;"
                          f" got {len(pan)} {kind}")  # fmt: skip
    return pan


def check_expiry(expiry: str) -> str:
    """F14: the card's expiry date as YYMM."""
    if not _EXPIRY.fullmatch(expiry):
        raise ConfigError(f"--expiry: expected YYMM (year, then month 01-12), such as 2912; got {expiry!r}")
    return expiry


def check_date(date: str) -> str:
    """A day as MMDD (a pre-auth's date, CUP 61.3)."""
    if not _MMDD.fullmatch(date):
        raise ConfigError(f"--date: expected MMDD (month 01-12, day 01-31), such as 0310; got {date!r}")
    return date


def check_pin(pin: str) -> str:
    low, high = PIN_DIGITS
    if not (pin.isascii() and pin.isdigit() and low <= len(pin) <= high):
        raise ConfigError(f"--pin: a PIN is {low} to {high} digits; got {len(pin)} characters")
    return pin


def check_mac(algorithm: str) -> str:
    if algorithm not in MAC_ALGORITHMS:
        raise ConfigError(f"--mac: one of {', '.join(MAC_ALGORITHMS)}; got {algorithm!r}")
    return algorithm


def _hex_bytes(option: str, text: str, what: str, lengths: tuple[int, ...]) -> bytes:
    """A key given in hex, of one of ``lengths`` bytes; the error gives its length, never its digits."""
    digits = " or ".join(str(2 * length) for length in lengths)
    if not _HEX.fullmatch(text) or len(text) // 2 not in lengths or len(text) % 2:
        shown = "not hexadecimal" if not _HEX.fullmatch(text) else f"{len(text)} hex digits"
        raise ConfigError(f"{option}: {what} is {digits} hex digits; got {shown}")
    return bytes.fromhex(text)


def check_tak(text: str, algorithm: str) -> bytes:
    """A static MAC key, of a length the MAC algorithm in force takes."""
    lengths = tuple(sorted(MAC_KEY_LENGTHS[algorithm]))
    return _hex_bytes("--tak", text, f"a MAC key for {algorithm}", lengths)


def check_bdk(text: str) -> bytes:
    """A DUKPT base derivation key: double-length TDES (ANSI X9.24-1)."""
    return _hex_bytes("--bdk", text, "a DUKPT base derivation key (double-length TDES)", (BDK_BYTES,))


def check_amount(text: str, option: str = "AMOUNT") -> int:
    """An amount as a terminal's keypad takes it: digits, at most two decimals, more than zero; in minor units.

    ``1e3``, ``-5``, ``12.345`` and ``0.00`` are refused (the host would decline a zero sale 13 and record it)."""
    if not _AMOUNT.fullmatch(text):
        raise ConfigError(f"{option}: an amount is digits with at most two decimals, such as 12.34; got {text!r}")
    try:
        minor = parse_amount(text)
    except ConfigError:
        minor = MAX_MINOR + 1
    if minor > MAX_MINOR:
        raise ConfigError(f"{option}: at most 9999999999.99; got {text!r}")
    if minor == 0:
        raise ConfigError(f"{option}: amount must be > 0; got {text!r}")
    return minor


def check_stan(text: str) -> str:
    """An original's STAN (F11): 1 to 6 digits, zero-filled as the field carries it (``2`` is ``000002``)."""
    if not (text.isascii() and text.isdigit() and 1 <= len(text) <= MAX_STAN_DIGITS) or int(text) == 0:
        raise ConfigError(f"--stan: a STAN (field 11) is 1 to {MAX_STAN_DIGITS} digits, not 0, such as 000002;"
                          f" got {text!r}")  # fmt: skip
    return text.zfill(MAX_STAN_DIGITS)


def check_rrn(text: str) -> str:
    if len(text) != RRN_LENGTH or not _printable_ascii(text):
        raise ConfigError(f"--rrn: an RRN (field 37) is {RRN_LENGTH} characters, such as 000000000007; got {text!r}")
    return text


def check_psn(text: str) -> str:
    if not (len(text) == 2 and text.isascii() and text.isdigit()):
        raise ConfigError(f"--psn: a PAN sequence number is two digits, such as 01; got {text!r}")
    return text


def check_timeout(seconds: float) -> float:
    if not seconds > 0:
        raise ConfigError(f"--timeout: seconds to wait for the host, more than 0; got {seconds:g}")
    return seconds
