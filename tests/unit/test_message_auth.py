"""Message MACs: which bytes a MAC covers, verifying the one received and sealing one, on every built-in dialect."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_audit import remember_secret

from iso_host.core.message_auth import MAC_PLACEHOLDER, has_mac, mac_field_of, seal, verify_message_mac
from iso_host.terminal.client import MacKeys, TerminalClient
from iso_host.wire import Dialect, Envelope, Message, builtin_dialect_names, decode, encode, load_dialect

NOW = datetime(2025, 1, 1, 12, 30, 5, tzinfo=UTC)
PAN = "4761739001010010"
TID, MID = "TERM0001", "MERCHANT0000001"
DIALECTS: dict[str, Dialect] = {name: load_dialect(name) for name in builtin_dialect_names()}
DIALECT_NAMES = sorted(DIALECTS)
ISO87_NAMES = [name for name in DIALECT_NAMES if name.startswith("iso87")]

DOUBLE_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
SINGLE_KEY = bytes.fromhex("0123456789ABCDEF")
OTHER_DOUBLE_KEY = bytes.fromhex("89ABCDEF01234567FEDCBA9876543210")
OTHER_SINGLE_KEY = bytes.fromhex("FEDCBA9876543210")
AES_KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")  # RFC 4493
# A key of the right length for each MAC algorithm a dialect or a terminal override may name.
KEYS = {"x9.19": DOUBLE_KEY, "x9.9": SINGLE_KEY, "cup-ecb": SINGLE_KEY, "aes-cmac": AES_KEY}
WRONG_KEYS = {"x9.19": OTHER_DOUBLE_KEY, "x9.9": OTHER_SINGLE_KEY, "cup-ecb": OTHER_SINGLE_KEY,
              "aes-cmac": AES_KEY[::-1]}  # fmt: skip
remember_secret(DOUBLE_KEY, SINGLE_KEY, OTHER_DOUBLE_KEY, OTHER_SINGLE_KEY, AES_KEY, AES_KEY[::-1])


def _signed(name: str, template: str = "sale", algorithm: str | None = None) -> tuple[bytes, Message, str, bytes]:
    """A request framed by the terminal client with a MAC: its body (after the envelope), decoded message, MAC key."""
    dialect = DIALECTS[name]
    algorithm = algorithm or dialect.security.mac_algorithm
    assert algorithm is not None
    key = KEYS[algorithm]
    client = TerminalClient(dialect, TID, MID)
    message = client.build(template, NOW, amount=1234, pan=PAN)
    frame = client.frame(message, MacKeys(algorithm, key, key))[dialect.length_header.size_bytes :]
    _, decoded = decode(frame, dialect)
    return frame[dialect.envelope_bytes :], decoded, algorithm, key


SIGNED_SALES = {name: _signed(name) for name in DIALECT_NAMES}


def _mac_bytes(name: str) -> int:
    _, decoded, _, _ = SIGNED_SALES[name]
    return int(DIALECTS[name].spec[mac_field_of(decoded)]["max_len"])


def _flip(body: bytes, index: int, bit: int) -> bytes:
    flipped = bytearray(body)
    flipped[index] ^= 1 << bit
    return bytes(flipped)


def _is_case_flip(byte: int, bit: int) -> bool:
    """Whether flipping ``bit`` only changes the case of a hex letter (A-F <-> a-f)."""
    return bit == 5 and chr(byte) in "ABCDEFabcdef"


class TestMacFieldOf:
    """mac_field_of picks F64, or F128 when the message has a secondary bitmap."""

    def test_primary_only_is_64(self) -> None:
        """A message with fields up to 64 only is MAC'd in F64."""
        assert mac_field_of(Message("0200", {"3": "000000", "41": TID})) == "64"

    def test_f64_itself_is_64(self) -> None:
        """F64 being present does not move the MAC to F128."""
        assert mac_field_of(Message("0200", {"3": "000000", "64": MAC_PLACEHOLDER})) == "64"

    @pytest.mark.parametrize("field_id", ["65", "70", "128"], ids=["f65", "f70", "f128"])
    def test_secondary_field_is_128(self, field_id: str) -> None:
        """Any field above 64 moves the MAC to F128."""
        assert mac_field_of(Message("0800", {"11": "000001", field_id: "301"})) == "128"

    @pytest.mark.parametrize("name", ISO87_NAMES)
    def test_iso87_echo_is_mac_d_in_128(self, name: str) -> None:
        """An iso87 echo (F70) framed with a MAC carries it in F128, and that MAC verifies."""
        body, decoded, algorithm, key = _signed(name, "echo")
        assert mac_field_of(decoded) == "128"
        assert "128" in decoded.fields
        assert "64" not in decoded.fields
        assert verify_message_mac(body, decoded, DIALECTS[name], algorithm, key)


class TestHasMac:
    """has_mac tells whether the message's MAC field is present."""

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            pytest.param({"3": "000000"}, False, id="no-mac"),
            pytest.param({"3": "000000", "64": MAC_PLACEHOLDER}, True, id="f64"),
            pytest.param({"70": "301", "128": MAC_PLACEHOLDER}, True, id="f128"),
            pytest.param({"70": "301", "64": MAC_PLACEHOLDER}, False, id="f64-with-secondary-fields"),
        ],
    )
    def test_has_mac(self, fields: dict[str, str], expected: bool) -> None:
        """The MAC counts only in the field mac_field_of names."""
        assert has_mac(Message("0800", fields)) is expected


class TestVerifyMessageMac:
    """verify_message_mac checks the MAC at the end of a body against the bytes before it."""

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_client_request_verifies(self, name: str) -> None:
        """A sale framed by the terminal client with the dialect's algorithm verifies with the same key."""
        body, decoded, algorithm, key = SIGNED_SALES[name]
        assert algorithm == DIALECTS[name].security.mac_algorithm
        assert has_mac(decoded)
        assert decoded.fields[mac_field_of(decoded)] != MAC_PLACEHOLDER
        assert verify_message_mac(body, decoded, DIALECTS[name], algorithm, key)

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    @settings(max_examples=200, deadline=None)
    @given(data=st.data())
    def test_any_flipped_covered_bit_fails(self, name: str, data: st.DataObject) -> None:
        """Flipping any one bit of any byte the MAC covers (MTI through the last field before it) fails."""
        body, decoded, algorithm, key = SIGNED_SALES[name]
        covered = len(body) - _mac_bytes(name)
        index = data.draw(st.integers(0, covered - 1), label="index")
        bit = data.draw(st.integers(0, 7), label="bit")
        assert not verify_message_mac(_flip(body, index, bit), decoded, DIALECTS[name], algorithm, key)

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_flipped_edge_bytes_fail(self, name: str) -> None:
        """Every bit of the first covered byte (MTI) and of the last one (just before the MAC) is covered."""
        body, decoded, algorithm, key = SIGNED_SALES[name]
        last = len(body) - _mac_bytes(name) - 1
        for index in (0, last):
            for bit in range(8):
                flipped = _flip(body, index, bit)
                assert not verify_message_mac(flipped, decoded, DIALECTS[name], algorithm, key), (index, bit)

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_flipped_mac_value_fails(self, name: str) -> None:
        """Every one-bit flip in the MAC field fails, except a hex letter's case in a character field."""
        body, decoded, algorithm, key = SIGNED_SALES[name]
        dialect = DIALECTS[name]
        text_field = dialect.spec[mac_field_of(decoded)]["data_enc"] != "b"
        for index in range(len(body) - _mac_bytes(name), len(body)):
            for bit in range(8):
                if text_field and _is_case_flip(body[index], bit):
                    continue
                assert not verify_message_mac(_flip(body, index, bit), decoded, dialect, algorithm, key), (index, bit)

    def test_lowercase_hex_mac_fails(self) -> None:
        """An iso87ascii MAC rewritten in lowercase hex is not the MAC that was sealed, so it fails."""
        body, decoded, algorithm, key = SIGNED_SALES["iso87ascii"]
        mac_text = body[-16:]
        assert mac_text != mac_text.lower(), "the sample MAC has a hex letter"
        assert not verify_message_mac(body[:-16] + mac_text.lower(), decoded, DIALECTS["iso87ascii"], algorithm, key)

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_wrong_key_fails(self, name: str) -> None:
        """The same bytes checked under a different key of the same length fail."""
        body, decoded, algorithm, _ = SIGNED_SALES[name]
        assert not verify_message_mac(body, decoded, DIALECTS[name], algorithm, WRONG_KEYS[algorithm])

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_message_without_mac_fails(self, name: str) -> None:
        """A message whose MAC field is absent never verifies."""
        dialect = DIALECTS[name]
        message = TerminalClient(dialect, TID, MID).build("sale", NOW, amount=1234, pan=PAN)
        body = encode(message, Envelope(), dialect)
        algorithm = dialect.security.mac_algorithm
        assert algorithm is not None
        assert not verify_message_mac(body, message, dialect, algorithm, KEYS[algorithm])

    def test_non_hex_text_mac_fails(self) -> None:
        """A character MAC field that is not hex text is refused, not an exception."""
        body, decoded, algorithm, key = SIGNED_SALES["iso87ascii"]
        garbled = body[:-16] + b"ZZZZZZZZZZZZZZZZ"
        assert not verify_message_mac(garbled, decoded, DIALECTS["iso87ascii"], algorithm, key)

    def test_aes_cmac_terminal_override(self) -> None:
        """A terminal overriding iso87binary's x9.19 with aes-cmac and a 16-byte AES key round-trips."""
        body, decoded, algorithm, key = _signed("iso87binary", algorithm="aes-cmac")
        dialect = DIALECTS["iso87binary"]
        assert (algorithm, len(key)) == ("aes-cmac", 16)
        assert verify_message_mac(body, decoded, dialect, "aes-cmac", key)
        assert not verify_message_mac(body, decoded, dialect, "aes-cmac", WRONG_KEYS["aes-cmac"])
        assert not verify_message_mac(_flip(body, 0, 0), decoded, dialect, "aes-cmac", key)


class TestSeal:
    """seal replaces the placeholder MAC of an encoded body with the real one."""

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_seal_then_verify(self, name: str) -> None:
        """A body sealed with a key verifies with that key and keeps its length."""
        dialect = DIALECTS[name]
        algorithm = dialect.security.mac_algorithm
        assert algorithm is not None
        message = TerminalClient(dialect, TID, MID).build("sale", NOW, amount=1234, pan=PAN)
        message.fields["64"] = MAC_PLACEHOLDER
        body = encode(message, Envelope(), dialect)
        sealed = seal(body, message, dialect, algorithm, KEYS[algorithm])
        assert len(sealed) == len(body)
        assert sealed[: -_mac_bytes(name)] == body[: -_mac_bytes(name)]
        assert verify_message_mac(sealed, message, dialect, algorithm, KEYS[algorithm])
        assert sealed == SIGNED_SALES[name][0]

    @pytest.mark.parametrize(
        "mac_value",
        [pytest.param(None, id="no-mac-field"), pytest.param("1" * 16, id="not-the-placeholder")],
    )
    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_refuses_message_without_placeholder(self, name: str, mac_value: str | None) -> None:
        """Sealing a message encoded without MAC_PLACEHOLDER in its MAC field is our bug: an AssertionError."""
        dialect = DIALECTS[name]
        algorithm = dialect.security.mac_algorithm
        assert algorithm is not None
        message = TerminalClient(dialect, TID, MID).build("sale", NOW, amount=1234, pan=PAN)
        if mac_value is not None:
            message.fields["64"] = mac_value
        body = encode(message, Envelope(), dialect)
        with pytest.raises(AssertionError, match="MAC_PLACEHOLDER"):
            seal(body, message, dialect, algorithm, KEYS[algorithm])
