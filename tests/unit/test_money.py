"""Amounts as text, both ways: exact, never a float."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_host.errors import ConfigError
from iso_host.money import MAX_MINOR, format_amount, minor_units, parse_amount


@pytest.mark.parametrize(("text", "minor"), [("12.34", 1234), ("0", 0), ("0.05", 5), ("100", 10_000),
                                              ("9999999999.99", MAX_MINOR), ("1.10", 110)])  # fmt: skip
def test_parse(text: str, minor: int) -> None:
    assert parse_amount(text) == minor


@pytest.mark.parametrize("text", ["12.345", "-1", "abc", "", "NaN", "sNaN", "Infinity", "-Infinity", "1e20",
                                  "10000000000.00"])  # fmt: skip
def test_parse_refuses_with_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match="AMOUNT: expected"):
        parse_amount(text)


@pytest.mark.parametrize(("minor", "text"), [(1234, "12.34"), (5, "0.05"), (0, "0.00"), (-5, "-0.05"),
                                              (MAX_MINOR, "9999999999.99")])  # fmt: skip
def test_format(minor: int, text: str) -> None:
    assert format_amount(minor) == text


@given(st.integers(0, MAX_MINOR))
def test_round_trip(minor: int) -> None:
    assert parse_amount(format_amount(minor)) == minor


@pytest.mark.parametrize(("value", "minor"), [(Decimal("1.5"), 150), (Decimal("1.005"), None), (Decimal(-1), None),
                                              (Decimal("NaN"), None), (Decimal("Infinity"), None)])  # fmt: skip
def test_minor_units(value: Decimal, minor: int | None) -> None:
    assert minor_units(value) == minor
