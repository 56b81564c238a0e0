"""MAC algorithms: published vectors, key lengths and constant-time verification."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_host.security import (
    MAC_ALGORITHMS,
    KeyLengthError,
    SecurityError,
    aes_cmac,
    compute_mac,
    cup_ecb_mac,
    verify_mac,
    x9_9_mac,
    x9_19_mac,
)
from iso_host.security.keys import tdes_ecb_encrypt, xor_bytes

ISO_9797_DATA = b"Now is the time for all "
K = bytes.fromhex("0123456789ABCDEF")
K_PRIME = bytes.fromhex("FEDCBA9876543210")
RFC_4493_KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")

# A key of the right length for each algorithm in MAC_ALGORITHMS.
KEYS = {
    "x9.19": K + K_PRIME,
    "x9.9": K,
    "cup-ecb": K,
    "aes-cmac": RFC_4493_KEY,
}


class TestX919Mac:
    """ISO 9797-1 MAC algorithm 3 with padding method 1."""

    def test_iso_9797_annex_b_vector(self) -> None:
        """The Annex B example with K||K' gives A1C72E74EA3FA9B6."""
        assert x9_19_mac(K + K_PRIME, ISO_9797_DATA) == bytes.fromhex("A1C72E74EA3FA9B6")

    def test_empty_data_is_one_zero_block(self) -> None:
        """Empty data is padded to one zero block, as padding method 1 says."""
        assert x9_19_mac(K + K_PRIME, b"") == x9_19_mac(K + K_PRIME, bytes(8))

    @pytest.mark.parametrize("length", [0, 8, 15, 24])
    def test_rejects_key_that_is_not_16_bytes(self, length: int) -> None:
        """Only a double-length key is accepted."""
        with pytest.raises(KeyLengthError, match=rf"X9\.19 MAC key must be 16 bytes, got {length}"):
            x9_19_mac(bytes(length), ISO_9797_DATA)


class TestX99Mac:
    """ISO 9797-1 MAC algorithm 1 (DES CBC-MAC) with padding method 1."""

    def test_iso_9797_annex_b_vector(self) -> None:
        """The Annex B example with K gives 70A30640CC76DD8B."""
        assert x9_9_mac(K, ISO_9797_DATA) == bytes.fromhex("70A30640CC76DD8B")

    def test_short_data_is_zero_padded(self) -> None:
        """Data that is not whole blocks is padded with zeros."""
        assert x9_9_mac(K, b"abc") == x9_9_mac(K, b"abc" + bytes(5))

    def test_rejects_double_length_key(self) -> None:
        """X9.9 is single DES, so a 16-byte key is refused."""
        with pytest.raises(KeyLengthError, match=r"X9\.9 MAC key must be 8 bytes, got 16"):
            x9_9_mac(K + K_PRIME, ISO_9797_DATA)


def _cup_reference(key: bytes, data: bytes) -> bytes:
    """Spell out the CUP steps on a known input to check the implementation against."""
    padded = data + bytes(-len(data) % 8)
    folded = bytes(8)
    for offset in range(0, len(padded), 8):
        folded = xor_bytes(folded, padded[offset : offset + 8])
    hexed = folded.hex().upper().encode()
    first = tdes_ecb_encrypt(key, hexed[:8])
    return tdes_ecb_encrypt(key, xor_bytes(first, hexed[8:])).hex().upper()[:8].encode()


class TestCupEcbMac:
    """The China UnionPay POS ECB MAC."""

    def test_result_is_eight_uppercase_hex_characters(self) -> None:
        """The MAC is 8 ASCII characters drawn from 0-9 and A-F."""
        mac = cup_ecb_mac(K, ISO_9797_DATA)
        assert len(mac) == 8
        assert set(mac.decode("ascii")) <= set("0123456789ABCDEF")

    @pytest.mark.parametrize("key", [K, K + K_PRIME], ids=["single", "double"])
    def test_matches_the_written_steps(self, key: bytes) -> None:
        """The MAC follows fold, hex, encrypt, XOR, encrypt, truncate, for both key lengths."""
        data = bytes(range(37))
        assert cup_ecb_mac(key, data) == _cup_reference(key, data)

    def test_block_order_does_not_matter(self) -> None:
        """Blocks are folded by XOR, so swapping two whole blocks gives the same MAC."""
        assert cup_ecb_mac(K, b"AAAAAAAABBBBBBBB") == cup_ecb_mac(K, b"BBBBBBBBAAAAAAAA")

    def test_rejects_triple_length_key(self) -> None:
        """Only 8- or 16-byte keys are accepted."""
        with pytest.raises(KeyLengthError, match="CUP MAC key must be 8 or 16 bytes, got 24"):
            cup_ecb_mac(bytes(24), b"data")


class TestAesCmac:
    """AES-CMAC against RFC 4493."""

    def test_rfc_4493_empty_message(self) -> None:
        """Example 1: the empty message."""
        assert aes_cmac(RFC_4493_KEY, b"", 16) == bytes.fromhex("BB1D6929E95937287FA37D129B756746")

    def test_rfc_4493_one_block(self) -> None:
        """Example 2: a 16-byte message."""
        message = bytes.fromhex("6BC1BEE22E409F96E93D7E117393172A")
        assert aes_cmac(RFC_4493_KEY, message, 16) == bytes.fromhex("070A16B46B4D4144F79BDD9DD04A287C")

    def test_default_truncates_to_eight_bytes(self) -> None:
        """The default length is the 8 bytes an ISO 8583 MAC field holds."""
        assert aes_cmac(RFC_4493_KEY, b"") == bytes.fromhex("BB1D6929E9593728")

    def test_rejects_des_length_key(self) -> None:
        """An 8-byte key is not an AES key."""
        with pytest.raises(KeyLengthError, match="AES-CMAC key must be 16, 24 or 32 bytes, got 8"):
            aes_cmac(K, b"")


class TestComputeAndVerify:
    """Dispatch by algorithm name and constant-time verification."""

    def test_table_names_every_algorithm(self) -> None:
        """The table holds exactly the four algorithms dialects may name."""
        assert set(MAC_ALGORITHMS) == set(KEYS)

    @pytest.mark.parametrize("algorithm", sorted(KEYS))
    def test_verify_accepts_own_mac(self, algorithm: str) -> None:
        """A MAC computed by compute_mac verifies."""
        mac = compute_mac(algorithm, KEYS[algorithm], ISO_9797_DATA)
        assert verify_mac(algorithm, KEYS[algorithm], ISO_9797_DATA, mac)

    @pytest.mark.parametrize("algorithm", sorted(KEYS))
    def test_verify_refuses_wrong_length(self, algorithm: str) -> None:
        """A received MAC that is truncated or extended is refused, not compared."""
        mac = compute_mac(algorithm, KEYS[algorithm], ISO_9797_DATA)
        assert not verify_mac(algorithm, KEYS[algorithm], ISO_9797_DATA, mac[:4])
        assert not verify_mac(algorithm, KEYS[algorithm], ISO_9797_DATA, mac + b"\x00")

    def test_unknown_algorithm_is_named(self) -> None:
        """An unknown algorithm name is reported, with the names that would work."""
        with pytest.raises(SecurityError, match=r"unknown MAC algorithm 'md5', expected one of aes-cmac"):
            compute_mac("md5", K, b"")

    @pytest.mark.parametrize("algorithm", sorted(KEYS))
    @given(data=st.binary(min_size=1, max_size=64), position=st.integers(min_value=0))
    def test_single_bit_flip_fails_verification(self, algorithm: str, data: bytes, position: int) -> None:
        """Flipping any one bit of the data makes the original MAC fail."""
        mac = compute_mac(algorithm, KEYS[algorithm], data)
        bit = position % (8 * len(data))
        tampered = bytearray(data)
        tampered[bit // 8] ^= 1 << (bit % 8)
        assert not verify_mac(algorithm, KEYS[algorithm], bytes(tampered), mac)

    def test_errors_never_show_the_key(self) -> None:
        """A key-length error names the length, not the key bytes."""
        key = bytes.fromhex("0123456789ABCDEF01")
        with pytest.raises(KeyLengthError) as caught:
            compute_mac("x9.9", key, b"")
        assert key.hex() not in str(caught.value).lower()
