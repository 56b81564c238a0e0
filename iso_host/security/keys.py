"""Keys: the shared block-cipher helpers, check values, wrapping and sign-on key blocks.

Everything here is a pure function over the bytes handed in; only ``generate_des_key`` reads
``os.urandom``. The rule: single-length DES is triple DES with K||K||K and double-length is
K1||K2||K1, so ``cryptography`` only ever sees 24-byte keys and never warns. Errors name the key
(TPK, TAK, KEK...) and its length, never its bytes, and ``CupWorkingKeys`` hides keys from ``repr``.
"""

from __future__ import annotations

import functools
import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from iso_host.security.errors import KeyLengthError, SecurityError

DES_BLOCK_BYTES = 8
AES_BLOCK_BYTES = 16
DES_KEY_LENGTHS = (8, 16, 24)  # single, double and triple length
AES_KEY_LENGTHS = (16, 24, 32)
TDES_KEY_BYTES = 24  # what the cipher is given after expansion

assert TDES_KEY_BYTES == 3 * DES_BLOCK_BYTES
assert all(length % DES_BLOCK_BYTES == 0 for length in DES_KEY_LENGTHS)

CIPHER_CACHE_SIZE = 4_096  # distinct (key, mode) pairs kept; a host has a few keys per terminal


def xor_bytes(left: bytes, right: bytes) -> bytes:
    """Return the bytewise XOR of two equal-length byte strings."""
    assert len(left) == len(right), "xor_bytes needs equal lengths"
    return (int.from_bytes(left, "big") ^ int.from_bytes(right, "big")).to_bytes(len(left), "big")


def _triple_des_key(key: bytes, key_name: str) -> bytes:
    """Expand an 8-, 16- or 24-byte DES key to the 24 bytes the cipher takes."""
    if len(key) not in DES_KEY_LENGTHS:
        msg = f"{key_name} must be 8, 16 or 24 bytes, got {len(key)}"
        raise KeyLengthError(msg)
    # K*3 truncated is KKK for 8 bytes, K1K2K1 for 16 and the key itself for 24.
    expanded = (key * 3)[:TDES_KEY_BYTES]
    assert len(expanded) == TDES_KEY_BYTES
    assert expanded[: len(key)] == key
    return expanded


def _require_whole_blocks(data: bytes, block_bytes: int) -> None:
    """Refuse data that is not a whole number of cipher blocks."""
    if len(data) % block_bytes != 0:
        msg = f"data must be a multiple of {block_bytes} bytes, got {len(data)}"
        raise SecurityError(msg)


@functools.lru_cache(maxsize=CIPHER_CACHE_SIZE)
def _des_cipher(key: bytes, iv: bytes | None, key_name: str) -> Cipher[modes.ECB | modes.CBC]:
    """Return a triple-DES cipher (ECB, or CBC with ``iv``) for the key, expanded to 24 bytes.

    Cached: building a Cipher costs about as much as a whole MAC's worth of DES, and a host MACs with
    the same few keys all day. Cipher objects are immutable; every use makes its own context.
    """
    mode: modes.ECB | modes.CBC = modes.CBC(iv) if iv is not None else modes.ECB()  # noqa: S305
    return Cipher(TripleDES(_triple_des_key(key, key_name)), mode)


def _run(context: CipherContext, data: bytes) -> bytes:
    """Feed whole blocks through a cipher context; block modes keep the length."""
    result = context.update(data) + context.finalize()
    assert len(result) == len(data)
    return result


def tdes_ecb_encrypt(key: bytes, data: bytes, *, key_name: str = "DES key") -> bytes:
    """Encrypt whole blocks (a multiple of 8 bytes) with (triple) DES in ECB mode.

    Args:
        key: 8 (single DES), 16 or 24 bytes.
        data: the blocks.
        key_name: how errors refer to the key, for example ``"TPK"``.

    Raises:
        KeyLengthError: If the key length is not 8, 16 or 24.
        SecurityError: If the data is not whole blocks.
    """
    _require_whole_blocks(data, DES_BLOCK_BYTES)
    # ECB is what the payment standards prescribe for key wrapping, check values and PIN blocks.
    return _run(_des_cipher(key, None, key_name).encryptor(), data)


def tdes_ecb_decrypt(key: bytes, data: bytes, *, key_name: str = "DES key") -> bytes:
    """Decrypt whole blocks with (triple) DES in ECB mode; arguments as ``tdes_ecb_encrypt``."""
    _require_whole_blocks(data, DES_BLOCK_BYTES)
    return _run(_des_cipher(key, None, key_name).decryptor(), data)


def tdes_cbc_encrypt(
    key: bytes, data: bytes, iv: bytes = bytes(DES_BLOCK_BYTES), *, key_name: str = "DES key"
) -> bytes:
    """Encrypt whole blocks with (triple) DES in CBC mode (zero IV by default, as CBC-MACs use)."""
    assert len(iv) == DES_BLOCK_BYTES, "a DES IV is 8 bytes"
    _require_whole_blocks(data, DES_BLOCK_BYTES)
    return _run(_des_cipher(key, iv, key_name).encryptor(), data)


def key_check_value(key: bytes, length: int = 3) -> bytes:
    """Return the DES key check value, the first ``length`` bytes of E(key, 8 zero bytes).

    The key may be 8, 16 or 24 bytes, else ``KeyLengthError``.
    """
    assert 1 <= length <= DES_BLOCK_BYTES, "a DES check value is 1..8 bytes"
    return tdes_ecb_encrypt(key, bytes(DES_BLOCK_BYTES), key_name="key")[:length]


def aes_key_check_value(key: bytes, length: int = 3) -> bytes:
    """Return the legacy AES key check value, the first ``length`` bytes of E(key, 16 zero bytes).

    The key may be 16, 24 or 32 bytes, else ``KeyLengthError``.
    """
    assert 1 <= length <= AES_BLOCK_BYTES, "an AES check value is 1..16 bytes"
    if len(key) not in AES_KEY_LENGTHS:
        msg = f"AES key must be 16, 24 or 32 bytes, got {len(key)}"
        raise KeyLengthError(msg)
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
    return _run(encryptor, bytes(AES_BLOCK_BYTES))[:length]


def _require_key_material(data: bytes, what: str) -> None:
    """Refuse key material that is empty or not whole DES blocks."""
    if not data or len(data) % DES_BLOCK_BYTES != 0:
        msg = f"{what} must be a non-empty multiple of 8 bytes, got {len(data)}"
        raise KeyLengthError(msg)


def wrap_key(kek: bytes, key: bytes) -> bytes:
    """Encrypt a key under a key-encrypting key (TDES-ECB), as sign-on sends working keys.

    Raises:
        KeyLengthError: If the KEK is not 8, 16 or 24 bytes, or the key is not whole blocks.
    """
    _require_key_material(key, "key to wrap")
    return tdes_ecb_encrypt(kek, key, key_name="KEK")


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """Decrypt a key wrapped by ``wrap_key``; raises ``KeyLengthError`` as ``wrap_key`` does."""
    _require_key_material(wrapped, "wrapped key")
    return tdes_ecb_decrypt(kek, wrapped, key_name="KEK")


def adjust_odd_parity(key: bytes) -> bytes:
    """Return the key with each byte's low bit set for DES odd parity."""
    # The low bit is 1 exactly when the seven high bits hold an even number of ones.
    adjusted = bytes((value & 0xFE) | ((value & 0xFE).bit_count() + 1) % 2 for value in key)
    assert len(adjusted) == len(key)
    assert has_odd_parity(adjusted)
    return adjusted


def has_odd_parity(key: bytes) -> bool:
    """Tell whether every byte of the key has an odd number of one bits."""
    return all(value.bit_count() % 2 == 1 for value in key)


def generate_des_key(length: int) -> bytes:
    """Return a fresh random DES key of 8, 16 or 24 bytes with odd parity.

    Raises:
        KeyLengthError: If the length is not 8, 16 or 24.
    """
    if length not in DES_KEY_LENGTHS:
        msg = f"DES key length must be 8, 16 or 24 bytes, got {length}"
        raise KeyLengthError(msg)
    key = adjust_odd_parity(os.urandom(length))
    assert len(key) == length
    return key


@dataclass(frozen=True, slots=True)
class CupWorkingKeys:
    """Working keys recovered from a sign-on key block; ``repr`` never shows them."""

    tpk: bytes = field(repr=False)
    tak: bytes = field(repr=False)
    tdk: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One key in a key block: the wrapped key, zero padding, then its check value."""

    name: str
    key_bytes: int
    pad_bytes: int
    check_bytes: int

    @property
    def size_bytes(self) -> int:
        return self.key_bytes + self.pad_bytes + self.check_bytes


# CUP.md "Sign-on key block (F62 in 0810)", keyed by the 60.3 network management code.
_CUP_LAYOUTS: dict[str, tuple[_Slot, ...]] = {
    "001": (_Slot("TPK", 8, 0, 4), _Slot("TAK", 8, 0, 4)),
    "003": (_Slot("TPK", 16, 0, 4), _Slot("TAK", 8, 8, 4)),
    "004": (_Slot("TPK", 16, 0, 4), _Slot("TAK", 8, 8, 4), _Slot("TDK", 16, 0, 4)),
}
_ISO87_LAYOUT = (_Slot("TPK", 16, 0, 3), _Slot("TAK", 16, 0, 3))
CUP_KEY_BLOCK_LAYOUTS = tuple(sorted(_CUP_LAYOUTS))

assert [sum(s.size_bytes for s in _CUP_LAYOUTS[code]) for code in CUP_KEY_BLOCK_LAYOUTS] == [24, 40, 60]
assert sum(slot.size_bytes for slot in _ISO87_LAYOUT) == 38


def _cup_slots(layout: str) -> tuple[_Slot, ...]:
    """Look up a CUP layout by its 60.3 code."""
    slots = _CUP_LAYOUTS.get(layout)
    if slots is None:
        expected = ", ".join(CUP_KEY_BLOCK_LAYOUTS)
        msg = f"sign-on key block: unknown layout {layout!r}, expected one of {expected}"
        raise SecurityError(msg)
    return slots


def _build_slots(kek: bytes, slots: tuple[_Slot, ...], keys: tuple[bytes, ...]) -> bytes:
    """Wrap each key under the KEK and append its padding and check value."""
    assert len(slots) == len(keys)
    parts: list[bytes] = []
    for slot, key in zip(slots, keys, strict=True):
        if len(key) != slot.key_bytes:
            msg = f"sign-on key block: {slot.name} must be {slot.key_bytes} bytes, got {len(key)}"
            raise KeyLengthError(msg)
        parts.append(wrap_key(kek, key) + bytes(slot.pad_bytes) + key_check_value(key, slot.check_bytes))
    block = b"".join(parts)
    assert len(block) == sum(slot.size_bytes for slot in slots)
    return block


def _parse_slot(kek: bytes, slot: _Slot, chunk: bytes) -> bytes:
    """Unwrap one key and check its padding and check value."""
    assert len(chunk) == slot.size_bytes
    pad_end = slot.key_bytes + slot.pad_bytes
    if any(chunk[slot.key_bytes : pad_end]):
        msg = f"sign-on key block: {slot.name} padding is not zero"
        raise SecurityError(msg)
    key = unwrap_key(kek, chunk[: slot.key_bytes])
    if not hmac.compare_digest(key_check_value(key, slot.check_bytes), chunk[pad_end:]):
        msg = f"sign-on key block: {slot.name} check value mismatch"
        raise SecurityError(msg)
    return key


def _parse_slots(kek: bytes, slots: tuple[_Slot, ...], block: bytes, layout: str) -> tuple[bytes, ...]:
    """Split a key block into its slots and unwrap every key."""
    expected_bytes = sum(slot.size_bytes for slot in slots)
    if len(block) != expected_bytes:
        msg = f"sign-on key block: layout {layout} is {expected_bytes} bytes, got {len(block)}"
        raise SecurityError(msg)
    keys: list[bytes] = []
    offset = 0
    for slot in slots:
        keys.append(_parse_slot(kek, slot, block[offset : offset + slot.size_bytes]))
        offset += slot.size_bytes
    assert offset == len(block)
    return tuple(keys)


def build_cup_key_block(tmk: bytes, layout: str, tpk: bytes, tak: bytes, tdk: bytes | None = None) -> bytes:
    """Build the CUP sign-on key block (0810 F62) for a 60.3 layout of 001, 003 or 004.

    Raises:
        SecurityError: If the layout is unknown, or a TDK is missing (004) or unexpected.
        KeyLengthError: If a key has the wrong length for the layout.
    """
    slots = _cup_slots(layout)
    keys = (tpk, tak) if tdk is None else (tpk, tak, tdk)
    if len(keys) != len(slots):
        msg = f"sign-on key block: layout {layout} {'needs' if tdk is None else 'carries no'} TDK"
        raise SecurityError(msg)
    return _build_slots(tmk, slots, keys)


def parse_cup_key_block(tmk: bytes, layout: str, block: bytes) -> CupWorkingKeys:
    """Unwrap a CUP sign-on key block and verify every check value.

    Raises:
        SecurityError: If the layout is unknown, the length is wrong, padding is not zero or a
            check value does not match (the message names the key).
    """
    keys = _parse_slots(tmk, _cup_slots(layout), block, layout)
    return CupWorkingKeys(tpk=keys[0], tak=keys[1], tdk=keys[2] if len(keys) == 3 else None)


def build_iso87_key_block(tmk: bytes, tpk: bytes, tak: bytes) -> bytes:
    """Build the generic key block: wrapped TPK 16 + KCV 3 + wrapped TAK 16 + KCV 3.

    Raises:
        KeyLengthError: If the TPK or TAK is not 16 bytes.
    """
    return _build_slots(tmk, _ISO87_LAYOUT, (tpk, tak))


def parse_iso87_key_block(tmk: bytes, block: bytes) -> CupWorkingKeys:
    """Unwrap the generic 38-byte key block; raises ``SecurityError`` as the CUP parser does."""
    tpk, tak = _parse_slots(tmk, _ISO87_LAYOUT, block, "iso87")
    return CupWorkingKeys(tpk=tpk, tak=tak)
