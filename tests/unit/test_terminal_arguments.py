"""The terminal's argument checks (issue 17): each value against its field's rule, one line naming the option, never
echoing a card number or key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from iso_host.errors import ConfigError
from iso_host.terminal.arguments import (
    check_amount,
    check_bdk,
    check_date,
    check_expiry,
    check_mac,
    check_mid,
    check_pan,
    check_pin,
    check_psn,
    check_rrn,
    check_stan,
    check_tak,
    check_tid,
    check_timeout,
)

PAN = "4761739001010010"


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        pytest.param(check_tid, "TERM0001", "TERM0001", id="tid"),
        pytest.param(check_mid, "MERCHANT0000001", "MERCHANT0000001", id="mid"),
        pytest.param(check_pan, PAN, PAN, id="pan-16"),
        pytest.param(check_pan, "6" * 19, "6" * 19, id="pan-19"),
        pytest.param(check_expiry, "2912", "2912", id="expiry"),
        pytest.param(check_date, "0310", "0310", id="date"),
        pytest.param(check_pin, "1234", "1234", id="pin"),
        pytest.param(check_mac, "cup-ecb", "cup-ecb", id="mac"),
        pytest.param(check_amount, "12.34", 1234, id="amount"),
        pytest.param(check_amount, "7", 700, id="amount-whole"),
        pytest.param(check_amount, "0.01", 1, id="amount-a-cent"),
        pytest.param(check_amount, "9999999999.99", 999_999_999_999, id="amount-most"),
        pytest.param(check_stan, "2", "000002", id="stan-zero-filled"),
        pytest.param(check_stan, "000123", "000123", id="stan"),
        pytest.param(check_rrn, "000000000007", "000000000007", id="rrn"),
        pytest.param(check_psn, "01", "01", id="psn"),
        pytest.param(check_timeout, 0.5, 0.5, id="timeout"),
        pytest.param(check_bdk, "0123456789ABCDEFFEDCBA9876543210", bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
                     id="bdk"),
    ],
)
def test_good_values_pass(check: Callable[[Any], Any], value: Any, expected: Any) -> None:
    assert check(value) == expected


@pytest.mark.parametrize(
    ("check", "value", "words"),
    [
        pytest.param(check_tid, "TERMINAL01", ("--tid", "exactly 8", "(10)"), id="tid-long"),
        pytest.param(check_tid, "T1", ("--tid", "exactly 8"), id="tid-short"),
        pytest.param(check_tid, "TERM\t001", ("--tid",), id="tid-control"),
        pytest.param(check_mid, "M1", ("--mid", "exactly 15", "(2)"), id="mid"),
        pytest.param(check_pan, "4" * 23, ("--pan", "12 to 19 digits", "got 23 digits"), id="pan-23"),
        pytest.param(check_pan, "47617390010100X0", ("--pan", "not all digits"), id="pan-letter"),
        pytest.param(check_expiry, "13/29", ("--expiry", "YYMM", "'13/29'"), id="expiry-slash"),
        pytest.param(check_expiry, "2913", ("--expiry", "month 01-12"), id="expiry-month-13"),
        pytest.param(check_date, "1301", ("--date", "MMDD"), id="date"),
        pytest.param(check_pin, "12", ("--pin", "4 to 12 digits", "got 2 characters"), id="pin-short"),
        pytest.param(check_mac, "md5", ("--mac", "aes-cmac, cup-ecb, x9.19, x9.9", "'md5'"), id="mac"),
        pytest.param(check_amount, "0.00", ("AMOUNT", "amount must be > 0"), id="zero"),
        pytest.param(check_amount, "0", ("amount must be > 0",), id="zero-whole"),
        pytest.param(check_amount, "1e3", ("AMOUNT", "at most two decimals", "'1e3'"), id="exponent"),
        pytest.param(check_amount, "-5", ("at most two decimals",), id="negative"),
        pytest.param(check_amount, "12.345", ("at most two decimals",), id="three-decimals"),
        pytest.param(check_amount, "1,50", ("at most two decimals",), id="comma"),
        pytest.param(check_amount, "NaN", ("at most two decimals",), id="nan"),
        pytest.param(check_amount, " 5", ("at most two decimals",), id="space"),
        pytest.param(check_amount, "12345678901", ("at most two decimals",), id="eleven-digits"),
        pytest.param(check_stan, "abc", ("--stan", "1 to 6 digits"), id="stan-letters"),
        pytest.param(check_stan, "0", ("--stan", "not 0"), id="stan-zero"),
        pytest.param(check_stan, "1234567", ("--stan",), id="stan-long"),
        pytest.param(check_rrn, "123", ("--rrn", "12 characters"), id="rrn"),
        pytest.param(check_psn, "1", ("--psn", "two digits"), id="psn"),
        pytest.param(check_timeout, 0.0, ("--timeout", "more than 0"), id="timeout-zero"),
        pytest.param(check_timeout, -1.0, ("--timeout",), id="timeout-negative"),
        pytest.param(check_timeout, float("nan"), ("--timeout",), id="timeout-nan"),
        pytest.param(check_bdk, "00", ("--bdk", "32 hex digits", "got 2 hex digits"), id="bdk-short"),
        pytest.param(check_bdk, "ZZ" * 16, ("--bdk", "not hexadecimal"), id="bdk-not-hex"),
    ],
)
def test_bad_values_name_the_option_and_the_rule(check: Callable[[Any], Any], value: Any, words: tuple[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        check(value)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("algorithm", "digits", "good"),
    [
        pytest.param("x9.19", 32, True, id="x9.19-double"),
        pytest.param("x9.19", 4, False, id="x9.19-0011"),
        pytest.param("cup-ecb", 16, True, id="cup-ecb-single"),
        pytest.param("aes-cmac", 32, True, id="aes-128"),
        pytest.param("x9.19", 31, False, id="odd-digits"),
    ],
)
def test_a_tak_fits_its_mac_algorithm(algorithm: str, digits: int, good: bool) -> None:
    """--tak is checked against the MAC algorithm that will use it; its digits are never echoed."""
    text = "0123456789ABCDEF" * 3
    key = text[:digits]
    if good:
        assert check_tak(key, algorithm) == bytes.fromhex(key)
        return
    with pytest.raises(ConfigError, match="--tak: a MAC key for") as raised:
        check_tak(key, algorithm)
    assert key not in str(raised.value)


def test_a_card_number_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        check_pan(PAN + "1234567")
    assert PAN not in str(raised.value)
