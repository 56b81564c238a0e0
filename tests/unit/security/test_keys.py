"""Keys: check values, wrapping, generation and the sign-on key blocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_host.security import (
    CupWorkingKeys,
    KeyLengthError,
    SecurityError,
    aes_key_check_value,
    build_cup_key_block,
    build_iso87_key_block,
    generate_des_key,
    key_check_value,
    parse_cup_key_block,
    parse_iso87_key_block,
    unwrap_key,
    wrap_key,
)
from iso_host.security.keys import has_odd_parity, tdes_ecb_decrypt, tdes_ecb_encrypt

DOUBLE_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CUP_TMK = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")
CUP_F62_003 = bytes.fromhex(
    "6701EAD6A9AD51E51AA406E2C27FCFA9"  # TPK under the TMK
    "8D0A74B8"  # TPK check value
    "B651F9E9BACE9AE1"  # TAK under the TMK
    "0000000000000000"
    "AB7153CA"  # TAK check value
)
CUP_TPK = bytes.fromhex("807A23AD32B36D457AE91FDF927570EA")
CUP_TAK = bytes.fromhex("5BB5C72CD00B7338")

des_keys = st.sampled_from([8, 16, 24]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
double_keys = st.binary(min_size=16, max_size=16)
single_keys = st.binary(min_size=8, max_size=8)

# (layout, TPK length, TAK length, with TDK, block length): CUP.md "Sign-on key block".
CUP_LAYOUTS = [
    pytest.param("001", 8, 8, False, 24, id="001"),
    pytest.param("003", 16, 8, False, 40, id="003"),
    pytest.param("004", 16, 8, True, 60, id="004"),
]


class TestTripleDesHelpers:
    """The shared ECB helpers."""

    def test_single_length_is_des(self) -> None:
        """An 8-byte key behaves as K||K||K, the classic DES test vector."""
        plain = bytes.fromhex("4E6F772069732074")  # "Now is t"
        assert tdes_ecb_encrypt(DOUBLE_KEY[:8], plain) == bytes.fromhex("3FA40E8A984D4815")

    def test_double_length_is_k1_k2_k1(self) -> None:
        """A 16-byte key encrypts as the 24-byte key K1||K2||K1."""
        assert tdes_ecb_encrypt(DOUBLE_KEY, bytes(8)) == tdes_ecb_encrypt(
            DOUBLE_KEY + DOUBLE_KEY[:8], bytes(8)
        )

    def test_rejects_partial_block(self) -> None:
        """ECB data must be whole 8-byte blocks."""
        with pytest.raises(SecurityError, match="multiple of 8 bytes, got 7"):
            tdes_ecb_encrypt(DOUBLE_KEY, bytes(7))

    def test_key_error_names_the_key(self) -> None:
        """A bad key length names the role the caller gave, not the bytes."""
        with pytest.raises(KeyLengthError, match="TPK must be 8, 16 or 24 bytes, got 12"):
            tdes_ecb_decrypt(bytes(12), bytes(8), key_name="TPK")


class TestKeyCheckValue:
    """Key check values."""

    def test_published_double_length_value(self) -> None:
        """The check value of 0123456789ABCDEFFEDCBA9876543210 starts 08D7B4."""
        assert key_check_value(DOUBLE_KEY) == bytes.fromhex("08D7B4")

    def test_length_selects_leading_bytes(self) -> None:
        """A longer check value extends the shorter one."""
        assert key_check_value(DOUBLE_KEY, 4)[:3] == key_check_value(DOUBLE_KEY)

    def test_aes_value_is_sixteen_zero_bytes_encrypted(self) -> None:
        """The AES check value is the FIPS-197 style encryption of a zero block, truncated."""
        key = bytes(16)
        assert aes_key_check_value(key, 16) == bytes.fromhex("66E94BD4EF8A2C3B884CFA59CA342B2E")

    def test_aes_rejects_des_key_length(self) -> None:
        """An 8-byte key is refused for the AES check value."""
        with pytest.raises(KeyLengthError, match="AES key must be 16, 24 or 32 bytes, got 8"):
            aes_key_check_value(bytes(8))


class TestWrapKey:
    """Wrapping working keys under a key-encrypting key."""

    @given(kek=des_keys, key=des_keys)
    def test_round_trip(self, kek: bytes, key: bytes) -> None:
        """Unwrapping a wrapped key gives the key back."""
        assert unwrap_key(kek, wrap_key(kek, key)) == key

    @pytest.mark.parametrize("length", [0, 7, 12])
    def test_rejects_key_that_is_not_whole_blocks(self, length: int) -> None:
        """Only non-empty multiples of 8 bytes can be wrapped."""
        with pytest.raises(
            KeyLengthError, match=f"key to wrap must be a non-empty multiple of 8 bytes, got {length}"
        ):
            wrap_key(DOUBLE_KEY, bytes(length))

    def test_rejects_bad_kek(self) -> None:
        """A KEK of the wrong length is named as the KEK."""
        with pytest.raises(KeyLengthError, match="KEK must be 8, 16 or 24 bytes, got 10"):
            unwrap_key(bytes(10), bytes(16))


class TestGenerateDesKey:
    """Fresh random DES keys."""

    @pytest.mark.parametrize("length", [8, 16, 24])
    def test_length_and_odd_parity(self, length: int) -> None:
        """A generated key has the asked length and odd parity in every byte."""
        key = generate_des_key(length)
        assert len(key) == length
        assert has_odd_parity(key)

    def test_keys_differ(self) -> None:
        """Two generated keys are not the same."""
        assert generate_des_key(16) != generate_des_key(16)

    def test_rejects_other_lengths(self) -> None:
        """Only 8, 16 and 24 are DES key lengths."""
        with pytest.raises(KeyLengthError, match="got 32"):
            generate_des_key(32)


class TestCupKeyBlock:
    """The CUP sign-on key block in 0810 field 62."""

    def test_published_003_block_unwraps(self) -> None:
        """The sample 003 block gives the known TPK and TAK."""
        keys = parse_cup_key_block(CUP_TMK, "003", CUP_F62_003)
        assert keys == CupWorkingKeys(tpk=CUP_TPK, tak=CUP_TAK, tdk=None)

    def test_published_003_block_rebuilds(self) -> None:
        """Building from the known keys gives the sample block byte for byte."""
        assert build_cup_key_block(CUP_TMK, "003", CUP_TPK, CUP_TAK) == CUP_F62_003

    def test_published_check_values(self) -> None:
        """The sample check values are the first 4 bytes of E(key, zeros)."""
        assert key_check_value(CUP_TPK, 4) == bytes.fromhex("8D0A74B8")
        assert key_check_value(CUP_TAK, 4) == bytes.fromhex("AB7153CA")

    @pytest.mark.parametrize(("layout", "tpk_bytes", "tak_bytes", "has_tdk", "block_bytes"), CUP_LAYOUTS)
    @given(tmk=double_keys, material=st.binary(min_size=40, max_size=40))
    def test_round_trip(
        self,
        layout: str,
        tpk_bytes: int,
        tak_bytes: int,
        has_tdk: bool,
        block_bytes: int,
        tmk: bytes,
        material: bytes,
    ) -> None:
        """Parsing a built block gives back the same working keys."""
        tpk, tak = material[:tpk_bytes], material[16 : 16 + tak_bytes]
        tdk = material[24:40] if has_tdk else None
        block = build_cup_key_block(tmk, layout, tpk, tak, tdk)
        assert len(block) == block_bytes
        assert parse_cup_key_block(tmk, layout, block) == CupWorkingKeys(tpk=tpk, tak=tak, tdk=tdk)

    @pytest.mark.parametrize(("offset", "name"), [(16, "TPK"), (36, "TAK")])
    def test_tampered_check_value_is_refused(self, offset: int, name: str) -> None:
        """A changed check value is reported against the key it belongs to."""
        tampered = bytearray(CUP_F62_003)
        tampered[offset] ^= 0x01
        with pytest.raises(SecurityError, match=f"sign-on key block: {name} check value mismatch"):
            parse_cup_key_block(CUP_TMK, "003", bytes(tampered))

    def test_tampered_tdk_check_value_is_refused(self) -> None:
        """The 004 TDK check value is verified too."""
        block = bytearray(build_cup_key_block(CUP_TMK, "004", CUP_TPK, CUP_TAK, CUP_TPK[::-1]))
        block[-1] ^= 0x80
        with pytest.raises(SecurityError, match="TDK check value mismatch"):
            parse_cup_key_block(CUP_TMK, "004", bytes(block))

    def test_nonzero_padding_is_refused(self) -> None:
        """The 8 bytes after the single-length TAK must be zero."""
        tampered = bytearray(CUP_F62_003)
        tampered[30] = 0xFF
        with pytest.raises(SecurityError, match="TAK padding is not zero"):
            parse_cup_key_block(CUP_TMK, "003", bytes(tampered))

    def test_wrong_tmk_fails_the_check(self) -> None:
        """A block under another TMK fails the TPK check value and shows no key."""
        with pytest.raises(SecurityError, match="TPK check value mismatch") as caught:
            parse_cup_key_block(DOUBLE_KEY, "003", CUP_F62_003)
        assert CUP_TPK.hex() not in str(caught.value).lower()

    def test_wrong_length_is_refused(self) -> None:
        """A block whose length does not match its layout is refused."""
        with pytest.raises(SecurityError, match="layout 004 is 60 bytes, got 40"):
            parse_cup_key_block(CUP_TMK, "004", CUP_F62_003)

    def test_unknown_layout_is_refused(self) -> None:
        """A 60.3 code that is not a sign-on layout is named."""
        with pytest.raises(SecurityError, match="unknown layout '002'"):
            build_cup_key_block(CUP_TMK, "002", CUP_TPK, CUP_TAK)

    def test_004_needs_a_tdk(self) -> None:
        """Layout 004 cannot be built without the TDK."""
        with pytest.raises(SecurityError, match="layout 004 needs TDK"):
            build_cup_key_block(CUP_TMK, "004", CUP_TPK, CUP_TAK)

    def test_003_carries_no_tdk(self) -> None:
        """Layout 003 has no room for a TDK."""
        with pytest.raises(SecurityError, match="layout 003 carries no TDK"):
            build_cup_key_block(CUP_TMK, "003", CUP_TPK, CUP_TAK, CUP_TPK)

    def test_wrong_key_length_names_the_key(self) -> None:
        """A double-length TAK does not fit layout 003, and the error says TAK."""
        with pytest.raises(KeyLengthError, match="TAK must be 8 bytes, got 16"):
            build_cup_key_block(CUP_TMK, "003", CUP_TPK, CUP_TPK)

    def test_repr_hides_keys(self) -> None:
        """Working keys never show up in a repr, so a stray log line cannot leak them."""
        assert CUP_TPK.hex() not in repr(CupWorkingKeys(tpk=CUP_TPK, tak=CUP_TAK)).lower()
        assert "\\x" not in repr(CupWorkingKeys(tpk=CUP_TPK, tak=CUP_TAK))


class TestIso87KeyBlock:
    """The generic 38-byte key block."""

    @given(tmk=double_keys, tpk=double_keys, tak=double_keys)
    def test_round_trip(self, tmk: bytes, tpk: bytes, tak: bytes) -> None:
        """Parsing a built block gives back the same TPK and TAK."""
        block = build_iso87_key_block(tmk, tpk, tak)
        assert len(block) == 38
        assert parse_iso87_key_block(tmk, block) == CupWorkingKeys(tpk=tpk, tak=tak)

    def test_layout(self) -> None:
        """The block is wrapped TPK, its 3-byte check value, wrapped TAK, its check value."""
        block = build_iso87_key_block(CUP_TMK, DOUBLE_KEY, CUP_TPK)
        assert block[:16] == wrap_key(CUP_TMK, DOUBLE_KEY)
        assert block[16:19] == bytes.fromhex("08D7B4")
        assert block[19:35] == wrap_key(CUP_TMK, CUP_TPK)
        assert block[35:] == key_check_value(CUP_TPK)

    @pytest.mark.parametrize(("offset", "name"), [(17, "TPK"), (37, "TAK")])
    def test_tampered_check_value_is_refused(self, offset: int, name: str) -> None:
        """A changed check value is reported against its key."""
        block = bytearray(build_iso87_key_block(CUP_TMK, DOUBLE_KEY, CUP_TPK))
        block[offset] ^= 0x10
        with pytest.raises(SecurityError, match=f"{name} check value mismatch"):
            parse_iso87_key_block(CUP_TMK, bytes(block))

    def test_single_length_tak_is_refused(self) -> None:
        """Both keys in this block are double length."""
        with pytest.raises(KeyLengthError, match="TAK must be 16 bytes, got 8"):
            build_iso87_key_block(CUP_TMK, DOUBLE_KEY, CUP_TAK)
