"""ANSI X9.24-1:2009 triple-DES DUKPT, host side: from BDK and KSN to the transaction keys.

Pure functions over the BDK and the 10-byte key serial number. The rule: the host re-derives
every key from the BDK (no state is kept between calls), and errors name the BDK or KSN length,
never their bytes.
"""

from __future__ import annotations

from iso_host.security.errors import KeyLengthError, SecurityError
from iso_host.security.keys import tdes_ecb_encrypt, xor_bytes

BDK_BYTES = 16
KSN_BYTES = 10
KSN_REGISTER_BYTES = 8  # the rightmost 64 bits of the KSN
COUNTER_BITS = 21  # the encryption counter in the low bits of the KSN
COUNTER_MASK = (1 << COUNTER_BITS) - 1
# X9.24-1 masks and variants; each is XORed over a 16-byte key.
KEY_REGISTER_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
MAC_REQUEST_VARIANT = bytes.fromhex("000000000000FF00000000000000FF00")
MAC_RESPONSE_VARIANT = bytes.fromhex("00000000FF00000000000000FF000000")  # ANSI X9.24-1 response MAC

assert len(KEY_REGISTER_MASK) == len(PIN_VARIANT) == len(MAC_REQUEST_VARIANT) == BDK_BYTES
assert COUNTER_BITS < 8 * KSN_REGISTER_BYTES < 8 * KSN_BYTES


def _require_inputs(bdk: bytes, ksn: bytes) -> None:
    """Refuse a BDK or KSN of the wrong length."""
    if len(bdk) != BDK_BYTES:
        msg = f"BDK must be {BDK_BYTES} bytes, got {len(bdk)}"
        raise KeyLengthError(msg)
    if len(ksn) != KSN_BYTES:
        msg = f"KSN must be {KSN_BYTES} bytes, got {len(ksn)}"
        raise SecurityError(msg)


def _clear_counter(ksn: bytes) -> bytes:
    """Return the KSN with its 21-bit encryption counter set to zero."""
    cleared = (int.from_bytes(ksn, "big") & ~COUNTER_MASK).to_bytes(len(ksn), "big")
    assert len(cleared) == len(ksn)
    return cleared


def ksn_counter(ksn: bytes) -> int:
    """Return the 21-bit encryption counter of a KSN."""
    assert len(ksn) == KSN_BYTES, "a KSN is 10 bytes"
    return int.from_bytes(ksn, "big") & COUNTER_MASK


def derive_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """Derive the initial PIN encryption key loaded into the device with this KSN.

    Raises:
        KeyLengthError: If the BDK is not 16 bytes.
        SecurityError: If the KSN is not 10 bytes.
    """
    _require_inputs(bdk, ksn)
    initial_ksn = _clear_counter(ksn)[:KSN_REGISTER_BYTES]
    left = tdes_ecb_encrypt(bdk, initial_ksn, key_name="BDK")
    right = tdes_ecb_encrypt(xor_bytes(bdk, KEY_REGISTER_MASK), initial_ksn, key_name="BDK")
    return left + right


def _encrypt_half(key: bytes, register: bytes) -> bytes:
    """One half of the non-reversible key generation: XOR right, DES under left, XOR right."""
    assert len(key) == 2 * KSN_REGISTER_BYTES
    assert len(register) == KSN_REGISTER_BYTES
    left, right = key[:KSN_REGISTER_BYTES], key[KSN_REGISTER_BYTES:]
    return xor_bytes(tdes_ecb_encrypt(left, xor_bytes(register, right)), right)


def _non_reversible_key(key: bytes, register: bytes) -> bytes:
    """X9.24-1 non-reversible key generation process: the next future key."""
    right_half = _encrypt_half(key, register)
    left_half = _encrypt_half(xor_bytes(key, KEY_REGISTER_MASK), register)
    return left_half + right_half


def derive_transaction_key(bdk: bytes, ksn: bytes) -> bytes:
    """Derive the device's current key for this KSN, walking the counter's one bits high to low.

    A counter of zero gives the IPEK. Counters the device would skip (more than ten one bits)
    still derive a key; refusing them is the caller's choice.

    Raises:
        KeyLengthError: If the BDK is not 16 bytes.
        SecurityError: If the KSN is not 10 bytes.
    """
    key = derive_ipek(bdk, ksn)
    counter = ksn_counter(ksn)
    register = int.from_bytes(_clear_counter(ksn)[-KSN_REGISTER_BYTES:], "big")
    for shift in reversed(range(COUNTER_BITS)):
        bit = 1 << shift
        if counter & bit:
            register |= bit
            key = _non_reversible_key(key, register.to_bytes(KSN_REGISTER_BYTES, "big"))
    assert register & COUNTER_MASK == counter
    return key


def pin_key(bdk: bytes, ksn: bytes) -> bytes:
    """Derive the PIN encryption key for this KSN (transaction key XOR the PIN variant).

    Raises:
        KeyLengthError: If the BDK is not 16 bytes.
        SecurityError: If the KSN is not 10 bytes.
    """
    return xor_bytes(derive_transaction_key(bdk, ksn), PIN_VARIANT)


def mac_request_key(bdk: bytes, ksn: bytes) -> bytes:
    """Derive the request MAC key for this KSN (transaction key XOR the MAC request variant).

    Raises:
        KeyLengthError: If the BDK is not 16 bytes.
        SecurityError: If the KSN is not 10 bytes.
    """
    return xor_bytes(derive_transaction_key(bdk, ksn), MAC_REQUEST_VARIANT)


def mac_response_key(bdk: bytes, ksn: bytes) -> bytes:
    """Derive the response MAC key for this KSN (transaction key XOR the MAC response variant).

    Raises:
        KeyLengthError: If the BDK is not 16 bytes.
        SecurityError: If the KSN is not 10 bytes.
    """
    return xor_bytes(derive_transaction_key(bdk, ksn), MAC_RESPONSE_VARIANT)
