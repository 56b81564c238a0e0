"""Odd-length BCD fields padded with 0 or with F: both are read, and a message is encoded back with its pads."""

from __future__ import annotations

import pytest

from iso_host.errors import WireError
from iso_host.wire import Envelope, Message, decode, encode, load_dialect

CUP = load_dialect("cup")
ENVELOPE = "6000030000" "603100000000"


# fmt: off
def echo(field_60: str) -> bytes:
    """A CUP 0820 echo (CUP.md "Message identification") with F60 as given (BCD length in digits, then nibbles)."""
    return bytes.fromhex(
        ENVELOPE + "0820" "0020000000C00010" "000001" "5445524D30303031" "4D45524348414E5430303030303031"
        + field_60
    )


def sale_pan(field_2: str) -> bytes:
    """A CUP 0200 with F2 as given (1-byte BCD length in digits), F3, F4, F11, F41, F42."""
    return bytes.fromhex(
        ENVELOPE + "0200" "7020000000C00000" + field_2 + "000000" "000000000100" "000002"
        "5445524D30303031" "4D45524348414E5430303030303031"
    )
# fmt: on


@pytest.mark.parametrize(
    ("frame", "field_id", "value", "pads"),
    [
        pytest.param(echo("0011" "000000013010"), "60", "00000001301", {}, id="f60-pad-0"),
        pytest.param(echo("0011" "00000001301F"), "60", "00000001301", {"60": "F"}, id="f60-pad-F"),
        pytest.param(echo("0019" "22000024000510000000"), "60", "2200002400051000000", {}, id="f60-19-digits"),
        pytest.param(sale_pan("19" "62220212345678901230"), "2", "6222021234567890123", {}, id="f2-19-pad-0"),
        pytest.param(sale_pan("19" "6222021234567890123F"), "2", "6222021234567890123", {"2": "F"}, id="f2-19-pad-F"),
    ],
)
def test_either_pad_is_read_and_written_back(frame: bytes, field_id: str, value: str, pads: dict[str, str]) -> None:
    envelope, message = decode(frame, CUP)
    assert message.fields[field_id] == value
    assert message.pads == pads
    assert encode(message, envelope, CUP) == frame, "encoded back byte for byte, pad included"


def test_another_pad_nibble_is_a_format_error_naming_the_field() -> None:
    with pytest.raises(WireError) as info:
        decode(echo("0011" "00000001301A"), CUP)
    assert info.value.field == "60"


def test_a_reply_keeps_only_the_pads_of_fields_it_carries() -> None:
    message = Message("0830", {"60": "00000001301"}, {"60": "F", "2": "F"})
    assert encode(message, Envelope(), CUP).endswith(bytes.fromhex("0011" "00000001301F"))
