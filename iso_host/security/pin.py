"""ISO 9564-1 PIN blocks, formats 0 and 3, clear and under a TPK.

Pure functions over the PIN, the PAN and the block (format 3 fill draws on ``secrets`` unless
the caller supplies it). The rule: no error message ever holds a PIN digit, a PAN digit or a
block byte; errors say which part of the block is malformed.
"""

from __future__ import annotations

import secrets

from iso_host.security.errors import PinBlockError
from iso_host.security.keys import DES_BLOCK_BYTES, tdes_ecb_decrypt, tdes_ecb_encrypt, xor_bytes

PIN_BLOCK_BYTES = 8
PIN_BLOCK_NIBBLES = 2 * PIN_BLOCK_BYTES
PIN_LENGTH_MIN = 4
PIN_LENGTH_MAX = 12
PAN_LENGTH_MIN = 8  # ISO/IEC 7812-1
PAN_LENGTH_MAX = 19
PAN_DIGITS_IN_BLOCK = 12  # the rightmost 12 PAN digits, check digit excluded
PIN_BLOCK_FORMATS = (0, 3)
# Which fill nibbles each format allows (ISO 9564-1): F for format 0, random A..F for format 3.
_FILL_NIBBLES = {0: "F", 3: "ABCDEF"}

assert PIN_BLOCK_BYTES == DES_BLOCK_BYTES
assert 2 + PIN_LENGTH_MAX <= PIN_BLOCK_NIBBLES
assert set(_FILL_NIBBLES) == set(PIN_BLOCK_FORMATS)


def _is_digits(text: str) -> bool:
    """Tell whether a string is only the ASCII digits 0-9 (``str.isdigit`` also takes ``²``)."""
    return text.isascii() and text.isdigit()


def _require_format(fmt: int) -> None:
    """Refuse a PIN block format this module does not implement."""
    if fmt not in PIN_BLOCK_FORMATS:
        msg = f"PIN block format {fmt} is not supported, expected 0 or 3"
        raise PinBlockError(msg)


def _pan_field(pan: str) -> bytes:
    """Return the PAN field: 0000 then the 12 rightmost PAN digits before the check digit."""
    if not _is_digits(pan) or not PAN_LENGTH_MIN <= len(pan) <= PAN_LENGTH_MAX:
        msg = f"PAN must be {PAN_LENGTH_MIN} to {PAN_LENGTH_MAX} digits"
        raise PinBlockError(msg)
    digits = pan[:-1][-PAN_DIGITS_IN_BLOCK:].rjust(PAN_DIGITS_IN_BLOCK, "0")
    field = bytes.fromhex("0000" + digits)
    assert len(field) == PIN_BLOCK_BYTES
    return field


def _fill(fmt: int, count: int, fill: bytes | None) -> str:
    """Return ``count`` fill nibbles as hex: the caller's, all F (format 0), or random A..F."""
    assert 0 <= count <= PIN_BLOCK_NIBBLES - 2 - PIN_LENGTH_MIN
    if fill is None:
        if fmt == 0:
            return "F" * count
        return "".join(f"{0xA + secrets.randbelow(6):X}" for _ in range(count))
    if len(fill) < count:
        msg = f"PIN block fill needs {count} nibbles, got {len(fill)}"
        raise PinBlockError(msg)
    nibbles = "".join(f"{value:X}" for value in fill[:count])
    if len(nibbles) != count or any(nibble not in _FILL_NIBBLES[fmt] for nibble in nibbles):
        msg = f"PIN block format {fmt} fill nibbles must be {'/'.join(_FILL_NIBBLES[fmt])}"
        raise PinBlockError(msg)
    return nibbles


def encode_pin_block(pin: str, pan: str, fmt: int, fill: bytes | None = None) -> bytes:
    """Build a clear ISO 9564 PIN block.

    Args:
        pin: 4 to 12 digits.
        pan: the card number, 8 to 19 digits, check digit included.
        fmt: 0 or 3.
        fill: fill nibbles, one per byte (0x0F for format 0, 0x0A..0x0F for format 3); the
            leading ``14 - len(pin)`` are used. ``None`` fills with F (format 0) or random A..F.

    Raises:
        PinBlockError: If the format, PIN, PAN or fill is unusable.
    """
    _require_format(fmt)
    if not _is_digits(pin) or not PIN_LENGTH_MIN <= len(pin) <= PIN_LENGTH_MAX:
        msg = f"PIN must be {PIN_LENGTH_MIN} to {PIN_LENGTH_MAX} digits"
        raise PinBlockError(msg)
    pin_field = f"{fmt:X}{len(pin):X}{pin}{_fill(fmt, PIN_BLOCK_NIBBLES - 2 - len(pin), fill)}"
    assert len(pin_field) == PIN_BLOCK_NIBBLES
    return xor_bytes(bytes.fromhex(pin_field), _pan_field(pan))


def decode_pin_block(clear_block: bytes, pan: str, fmt: int) -> str:
    """Recover the PIN from a clear ISO 9564 PIN block.

    Args:
        clear_block: the 8-byte block after decryption.
        pan: the card number the block was built with.
        fmt: the format the dialect expects, 0 or 3.

    Raises:
        PinBlockError: If the block has the wrong length or format nibble, a PIN length outside
            4..12, a non-digit PIN nibble or bad fill (for example, a wrong TPK or PAN).
    """
    _require_format(fmt)
    if len(clear_block) != PIN_BLOCK_BYTES:
        msg = f"PIN block must be {PIN_BLOCK_BYTES} bytes, got {len(clear_block)}"
        raise PinBlockError(msg)
    pin_field = xor_bytes(clear_block, _pan_field(pan)).hex().upper()
    if pin_field[0] != f"{fmt:X}":
        msg = f"PIN block format nibble is {pin_field[0]}, expected {fmt}"
        raise PinBlockError(msg)
    length = int(pin_field[1], 16)
    if not PIN_LENGTH_MIN <= length <= PIN_LENGTH_MAX:
        msg = f"PIN block length nibble {length} is outside {PIN_LENGTH_MIN}..{PIN_LENGTH_MAX}"
        raise PinBlockError(msg)
    pin = pin_field[2 : 2 + length]
    if not _is_digits(pin):
        msg = "PIN block holds a non-digit PIN nibble"
        raise PinBlockError(msg)
    if any(nibble not in _FILL_NIBBLES[fmt] for nibble in pin_field[2 + length :]):
        msg = f"PIN block format {fmt} fill nibbles must be {'/'.join(_FILL_NIBBLES[fmt])}"
        raise PinBlockError(msg)
    return pin


def encrypt_pin_block(tpk: bytes, clear: bytes) -> bytes:
    """Encrypt a clear PIN block under the TPK (TDES-ECB; 8-, 16- or 24-byte key).

    Raises:
        PinBlockError: If the block is not 8 bytes.
        KeyLengthError: If the TPK length is not 8, 16 or 24.
    """
    if len(clear) != PIN_BLOCK_BYTES:
        msg = f"PIN block must be {PIN_BLOCK_BYTES} bytes, got {len(clear)}"
        raise PinBlockError(msg)
    return tdes_ecb_encrypt(tpk, clear, key_name="TPK")


def decrypt_pin_block(tpk: bytes, enc: bytes) -> bytes:
    """Decrypt a PIN block received in field 52 under the TPK.

    Raises:
        PinBlockError: If the block is not 8 bytes.
        KeyLengthError: If the TPK length is not 8, 16 or 24.
    """
    if len(enc) != PIN_BLOCK_BYTES:
        msg = f"PIN block must be {PIN_BLOCK_BYTES} bytes, got {len(enc)}"
        raise PinBlockError(msg)
    return tdes_ecb_decrypt(tpk, enc, key_name="TPK")
