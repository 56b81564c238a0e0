"""ANSI X9.24-1:2009 TDES DUKPT against the Annex A example."""

from __future__ import annotations

import pytest

from iso_host.security import (
    KeyLengthError,
    SecurityError,
    derive_ipek,
    derive_transaction_key,
    encrypt_pin_block,
    mac_request_key,
    pin_key,
)
from iso_host.security.dukpt import MAC_REQUEST_VARIANT, PIN_VARIANT, ksn_counter
from iso_host.security.keys import xor_bytes

BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
INITIAL_KSN = bytes.fromhex("FFFF9876543210E00000")
IPEK = bytes.fromhex("6AC292FAA1315B4D858AB3A3D7D5933A")
CLEAR_PIN_BLOCK = bytes.fromhex("041274EDCBA9876F")  # PIN 1234, PAN 4012345678909

# (counter, PIN block encrypted under that transaction's PIN key): X9.24-1 Annex A.
ANNEX_A_PIN_BLOCKS = [
    pytest.param(1, "1B9C1845EB993A7A", id="counter-1"),
    pytest.param(2, "10A01C8D02C69107", id="counter-2"),
    pytest.param(3, "18DC07B94797B466", id="counter-3"),
]


def _ksn(counter: int) -> bytes:
    """Return the Annex A KSN with the given encryption counter."""
    return (int.from_bytes(INITIAL_KSN, "big") | counter).to_bytes(10, "big")


class TestDeriveIpek:
    """The initial PIN encryption key."""

    def test_annex_a_ipek(self) -> None:
        """The Annex A BDK and KSN give IPEK 6AC292FAA1315B4D858AB3A3D7D5933A."""
        assert derive_ipek(BDK, INITIAL_KSN) == IPEK

    def test_counter_is_ignored(self) -> None:
        """Any KSN from the same device gives the same IPEK."""
        assert derive_ipek(BDK, _ksn(0x1FFFFF)) == IPEK

    def test_rejects_short_bdk(self) -> None:
        """The BDK must be double length."""
        with pytest.raises(KeyLengthError, match="BDK must be 16 bytes, got 8"):
            derive_ipek(BDK[:8], INITIAL_KSN)

    def test_rejects_short_ksn(self) -> None:
        """The KSN must be 10 bytes."""
        with pytest.raises(SecurityError, match="KSN must be 10 bytes, got 8"):
            derive_ipek(BDK, INITIAL_KSN[2:])


class TestTransactionKeys:
    """Keys for a given encryption counter."""

    def test_counter_zero_is_the_ipek(self) -> None:
        """With no counter bits set no derivation step runs."""
        assert derive_transaction_key(BDK, INITIAL_KSN) == IPEK

    def test_annex_a_pin_key_at_counter_1(self) -> None:
        """At KSN FFFF9876543210E00001 the PIN key is 042666B49184CF5C68DE9628D0397B36."""
        assert pin_key(BDK, _ksn(1)) == bytes.fromhex("042666B49184CF5C68DE9628D0397B36")

    @pytest.mark.parametrize(("counter", "encrypted"), ANNEX_A_PIN_BLOCKS)
    def test_annex_a_encrypted_pin_block(self, counter: int, encrypted: str) -> None:
        """The Annex A PIN block encrypts under each transaction's PIN key as published."""
        assert encrypt_pin_block(pin_key(BDK, _ksn(counter)), CLEAR_PIN_BLOCK) == bytes.fromhex(encrypted)

    def test_keys_differ_per_counter(self) -> None:
        """Every counter value gives a different transaction key."""
        keys = {derive_transaction_key(BDK, _ksn(counter)) for counter in range(1, 33)}
        assert len(keys) == 32

    def test_variants_are_xor_masks(self) -> None:
        """The PIN and MAC request keys differ from the transaction key only by their variants."""
        key = derive_transaction_key(BDK, _ksn(5))
        assert xor_bytes(pin_key(BDK, _ksn(5)), key) == PIN_VARIANT
        assert xor_bytes(mac_request_key(BDK, _ksn(5)), key) == MAC_REQUEST_VARIANT

    def test_counter_reads_low_21_bits(self) -> None:
        """The counter is the low 21 bits of the KSN."""
        assert ksn_counter(_ksn(0x12345)) == 0x12345
        assert ksn_counter(INITIAL_KSN) == 0
