"""ISO 9564 PIN blocks: formats 0 and 3, clear and under a TPK."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_host.security import (
    KeyLengthError,
    PinBlockError,
    decode_pin_block,
    decrypt_pin_block,
    encode_pin_block,
    encrypt_pin_block,
)

PAN = "4012345678909"
CLEAR_FORMAT_0 = bytes.fromhex("041274EDCBA9876F")  # PIN 1234 with PAN 4012345678909
TPK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

pins = st.text(alphabet="0123456789", min_size=4, max_size=12)
pans = st.text(alphabet="0123456789", min_size=8, max_size=19)


def _with_pin_field(pin_field: str, pan: str = PAN) -> bytes:
    """Return the clear block whose PIN field (before the PAN XOR) is the given hex."""
    pan_field = bytes.fromhex("0000" + pan[-13:-1])
    return bytes(a ^ b for a, b in zip(bytes.fromhex(pin_field), pan_field, strict=True))


class TestEncodePinBlock:
    """Building clear PIN blocks."""

    def test_iso_9564_format_0_vector(self) -> None:
        """PIN 1234 with PAN 4012345678909 gives 041274EDCBA9876F."""
        assert encode_pin_block("1234", PAN, 0) == CLEAR_FORMAT_0

    def test_format_3_with_given_fill(self) -> None:
        """Format 3 puts the caller's A..F fill after the PIN."""
        fill = bytes([0xA, 0xB, 0xC, 0xD, 0xE, 0xF, 0xA, 0xB, 0xC, 0xD])
        assert encode_pin_block("1234", PAN, 3, fill) == _with_pin_field("341234ABCDEFABCD")

    def test_format_3_random_fill_is_a_to_f(self) -> None:
        """Random format 3 fill only uses the nibbles A to F."""
        block = encode_pin_block("1234", PAN, 3)
        pin_field = bytes(a ^ b for a, b in zip(block, _with_pin_field("0" * 16), strict=True)).hex().upper()
        assert pin_field[:6] == "341234"
        assert set(pin_field[6:]) <= set("ABCDEF")

    def test_short_pan_is_left_padded(self) -> None:
        """A PAN with fewer than 13 digits is padded on the left with zeros."""
        pan_field = bytes.fromhex("0000000012345678")  # PAN 123456789 without its check digit
        expected = bytes(a ^ b for a, b in zip(bytes.fromhex("041234FFFFFFFFFF"), pan_field, strict=True))
        assert encode_pin_block("1234", "123456789", 0) == expected

    @pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "12²4", ""])
    def test_rejects_bad_pin(self, pin: str) -> None:
        """A PIN must be 4 to 12 ASCII digits, and the error does not repeat it."""
        with pytest.raises(PinBlockError, match="PIN must be 4 to 12 digits") as caught:
            encode_pin_block(pin, PAN, 0)
        assert pin not in str(caught.value) or not pin

    @pytest.mark.parametrize("pan", ["1234567", "12345678901234567890", "40123456789O9"])
    def test_rejects_bad_pan(self, pan: str) -> None:
        """A PAN must be 8 to 19 digits, and the error does not repeat it."""
        with pytest.raises(PinBlockError, match="PAN must be 8 to 19 digits") as caught:
            encode_pin_block("1234", pan, 0)
        assert pan not in str(caught.value)

    @pytest.mark.parametrize("fmt", [1, 2, 4])
    def test_rejects_other_formats(self, fmt: int) -> None:
        """Only formats 0 and 3 are implemented."""
        with pytest.raises(PinBlockError, match=f"format {fmt} is not supported"):
            encode_pin_block("1234", PAN, fmt)

    def test_rejects_bad_fill(self) -> None:
        """Format 3 fill nibbles outside A..F are refused."""
        with pytest.raises(PinBlockError, match="fill nibbles must be A/B/C/D/E/F"):
            encode_pin_block("1234", PAN, 3, bytes(10))

    def test_rejects_short_fill(self) -> None:
        """Too few fill nibbles for the PIN length are refused."""
        with pytest.raises(PinBlockError, match="fill needs 10 nibbles, got 2"):
            encode_pin_block("1234", PAN, 3, b"\x0a\x0b")


class TestDecodePinBlock:
    """Recovering the PIN from a clear block."""

    def test_iso_9564_format_0_vector(self) -> None:
        """041274EDCBA9876F with PAN 4012345678909 holds PIN 1234."""
        assert decode_pin_block(CLEAR_FORMAT_0, PAN, 0) == "1234"

    @pytest.mark.parametrize("fmt", [0, 3])
    @given(pin=pins, pan=pans)
    def test_round_trip(self, fmt: int, pin: str, pan: str) -> None:
        """Decoding an encoded block gives the PIN back."""
        assert decode_pin_block(encode_pin_block(pin, pan, fmt), pan, fmt) == pin

    @pytest.mark.parametrize(
        ("pin_field", "fmt", "message"),
        [
            pytest.param("341234FFFFFFFFFF", 0, "format nibble is 3, expected 0", id="format-nibble"),
            pytest.param("031234FFFFFFFFFF", 0, "length nibble 3 is outside 4..12", id="length-short"),
            pytest.param("0D1234FFFFFFFFFF", 0, "length nibble 13 is outside 4..12", id="length-long"),
            pytest.param("04123AFFFFFFFFFF", 0, "non-digit PIN nibble", id="pin-nibble"),
            pytest.param("041234FFFFFFFFFE", 0, "format 0 fill nibbles must be F", id="fill-0"),
            pytest.param("3412349ABCDEFABC", 3, "format 3 fill nibbles must be A/B", id="fill-3"),
        ],
    )
    def test_rejects_malformed_block(self, pin_field: str, fmt: int, message: str) -> None:
        """Each way a block can be malformed is named, without the PIN."""
        with pytest.raises(PinBlockError, match=message) as caught:
            decode_pin_block(_with_pin_field(pin_field), PAN, fmt)
        assert "1234" not in str(caught.value)

    def test_wrong_pan_is_detected(self) -> None:
        """Decoding with a PAN that differs under the fill leaves a malformed block."""
        with pytest.raises(PinBlockError, match="fill nibbles must be F"):
            decode_pin_block(CLEAR_FORMAT_0, "4012345678999", 0)

    def test_rejects_wrong_block_length(self) -> None:
        """A clear block must be 8 bytes."""
        with pytest.raises(PinBlockError, match="PIN block must be 8 bytes, got 7"):
            decode_pin_block(CLEAR_FORMAT_0[:7], PAN, 0)


class TestPinBlockEncryption:
    """PIN blocks under a TPK."""

    @pytest.mark.parametrize("tpk", [TPK[:8], TPK, TPK + TPK[:8]], ids=["single", "double", "triple"])
    def test_round_trip(self, tpk: bytes) -> None:
        """Decrypting an encrypted block gives the clear block back."""
        encrypted = encrypt_pin_block(tpk, CLEAR_FORMAT_0)
        assert encrypted != CLEAR_FORMAT_0
        assert decrypt_pin_block(tpk, encrypted) == CLEAR_FORMAT_0

    def test_rejects_wrong_block_length(self) -> None:
        """Field 52 must be 8 bytes."""
        with pytest.raises(PinBlockError, match="got 16"):
            decrypt_pin_block(TPK, bytes(16))

    def test_rejects_bad_tpk(self) -> None:
        """A TPK of the wrong length is named as the TPK."""
        with pytest.raises(KeyLengthError, match="TPK must be 8, 16 or 24 bytes, got 15"):
            encrypt_pin_block(TPK[:15], CLEAR_FORMAT_0)
