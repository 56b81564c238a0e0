"""Amounts as people read and type them (``12.34``) and as the host keeps them (1234 minor units). Pure.

Exact both ways: integers and ``Decimal``, never a float. Two decimals, as for most currencies.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

from iso_host.errors import ConfigError

MINOR_PER_MAJOR: Final = 100
MAX_MINOR: Final = 10**12 - 1  # F4 holds 12 digits


def minor_units(value: Decimal) -> int | None:
    """Major units as minor units when exact and not negative (``12.34`` → 1234), else None."""
    if not value.is_finite():
        return None
    minor = value * MINOR_PER_MAJOR
    return int(minor) if minor >= 0 and minor == minor.to_integral_value() else None


def format_amount(minor: int) -> str:
    """Minor units as major units with two decimals: 1234 → ``12.34``, 5 → ``0.05``, -5 → ``-0.05``."""
    sign = "-" if minor < 0 else ""
    major, cents = divmod(abs(minor), MINOR_PER_MAJOR)
    return f"{sign}{major}.{cents:02d}"


def parse_amount(text: str) -> int:
    """``12.34`` → 1234 minor units; 0.00 to 9999999999.99, at most two decimals.

    Raises:
        ConfigError: not a number, a negative one, more than two decimals, or more than 12 digits.
    """
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise ConfigError(f"AMOUNT: expected a number such as 12.34, got {text!r}")
    minor = minor_units(value)
    if minor is None or minor > MAX_MINOR:
        raise ConfigError(f"AMOUNT: expected 0.00 to 9999999999.99 with at most two decimals, got {text!r}")
    return minor
