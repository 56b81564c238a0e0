"""The terminal client's security: its state file, DUKPT keys, PIN blocks, response MACs and sign-on keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from log_audit import remember_secret

from iso_host.core.message_auth import MAC_PLACEHOLDER, seal
from iso_host.security import (
    CupWorkingKeys,
    build_cup_key_block,
    build_iso87_key_block,
    decode_pin_block,
    decrypt_pin_block,
    wrap_key,
)
from iso_host.terminal.client import (
    DEFAULT_KSN,
    DEFAULT_MAC_ALGORITHM,
    ClientError,
    ClientState,
    MacKeys,
    TerminalClient,
    dukpt_keys,
    pin_block_field,
)
from iso_host.wire import Envelope, Message, encode, load_dialect

NOW = datetime(2025, 1, 1, 12, 30, 5, tzinfo=UTC)
TID, MID = "TERM0001", "MERCHANT0000001"
DIALECTS = {name: load_dialect(name) for name in ("cup", "iso87binary")}
TMK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
OTHER_TMK = bytes.fromhex("FFEEDDCCBBAA99887766554433221100")
TPK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TAK = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")
SINGLE_TAK = bytes.fromhex("1334577991BAE0F1")
ANNEX_A_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
ANNEX_A_KSN = bytes.fromhex("FFFF9876543210E00001")
ANNEX_A_PIN_KEY = bytes.fromhex("042666B49184CF5C68DE9628D0397B36")
ANNEX_A_PAN, ANNEX_A_PIN = "4012345678909", "1234"
ANNEX_A_PIN_BLOCK = "1B9C1845EB993A7A"
remember_secret(TMK, OTHER_TMK, TPK, TAK, SINGLE_TAK, ANNEX_A_BDK, ANNEX_A_PIN_KEY, ANNEX_A_PIN_BLOCK)

# Response keys for each dialect's algorithm: x9.19 takes 16 bytes, cup-ecb 8.
RESPONSE_KEYS = {"cup": SINGLE_TAK, "iso87binary": TAK}
WRONG_RESPONSE_KEYS = {"cup": SINGLE_TAK[::-1], "iso87binary": TPK}
APPROVED_FIELDS = {
    "cup": {"3": "000000", "4": "000000001234", "11": "000001", "25": "00", "39": "00", "41": TID, "42": MID,
            "49": "156", "60": "22000001000"},
    "iso87binary": {"3": "000000", "4": "000000001234", "11": "000001", "39": "00", "41": TID, "42": MID},
}  # fmt: skip


def _mac_keys(name: str, response_key: bytes) -> MacKeys:
    algorithm = DIALECTS[name].security.mac_algorithm
    assert algorithm is not None
    return MacKeys(algorithm, bytes(len(response_key)), response_key)


def _response_frame(name: str, fields: dict[str, str], mac: MacKeys | None) -> bytes:
    """A 0210 as the host would send it (without length header), sealed with ``mac.response_key`` if given."""
    dialect = DIALECTS[name]
    client = TerminalClient(dialect, TID, MID)
    message = Message("0210", dict(fields))
    if mac is None:
        return bytes(client.envelope.reply()) + encode(message, Envelope(), dialect)
    message.fields["64"] = MAC_PLACEHOLDER
    body = seal(encode(message, Envelope(), dialect), message, dialect, mac.algorithm, mac.response_key)
    return bytes(client.envelope.reply()) + body


class TestClientState:
    """ClientState keeps the STAN, the batch, the KSN counter and the working keys wrapped under the TMK."""

    def test_keys_before_sign_on(self) -> None:
        """A fresh state has no keys."""
        assert ClientState().keys(TMK) is None

    def test_stores_keys_wrapped(self) -> None:
        """store_keys keeps the keys as hex wrapped under the TMK, and keys(tmk) unwraps them."""
        state = ClientState()
        state.store_keys(TMK, CupWorkingKeys(TPK, TAK))
        assert state.tpk_under_tmk == wrap_key(TMK, TPK).hex().upper()
        assert state.tak_under_tmk == wrap_key(TMK, TAK).hex().upper()
        assert state.keys(TMK) == (TPK, TAK)

    def test_saved_file_holds_no_clear_key(self, tmp_path: Path) -> None:
        """The JSON file written by save() holds neither clear key, and load() then keys(tmk) recovers both."""
        path = tmp_path / "terminal" / "state.json"
        state = ClientState(stan=41, batch=3, ksn_counter=7)
        state.store_keys(TMK, CupWorkingKeys(TPK, TAK))
        state.save(path)
        text = path.read_text(encoding="utf-8")
        for clear in (TPK, TAK):
            assert clear.hex().upper() not in text.upper()
        assert json.loads(text)["tak_under_tmk"] == wrap_key(TMK, TAK).hex().upper()
        loaded = ClientState.load(path)
        assert (loaded.stan, loaded.batch, loaded.ksn_counter) == (41, 3, 7)
        assert loaded.keys(TMK) == (TPK, TAK)
        assert not path.with_suffix(".tmp").exists()

    def test_repr_hides_wrapped_keys(self) -> None:
        """repr of the state shows its counters but not even the wrapped keys."""
        state = ClientState()
        state.store_keys(TMK, CupWorkingKeys(TPK, TAK))
        assert state.tak_under_tmk is not None
        assert state.tak_under_tmk not in repr(state)

    def test_missing_file_is_a_fresh_state(self, tmp_path: Path) -> None:
        """Loading a path that does not exist gives a fresh state."""
        assert ClientState.load(tmp_path / "absent.json") == ClientState()

    @pytest.mark.parametrize(
        "text",
        [pytest.param("{not json", id="not-json"), pytest.param('{"pin": "1234"}', id="unknown-key"),
         pytest.param("[1, 2]", id="not-an-object")],
    )  # fmt: skip
    def test_unreadable_file(self, tmp_path: Path, text: str) -> None:
        """A state file that cannot be read back is a ClientError naming the file, not a traceback."""
        path = tmp_path / "state.json"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ClientError, match=r"terminal state file \(--state\) .*state\.json: "):
            ClientState.load(path)

    @pytest.mark.parametrize(
        ("before", "after"),
        [pytest.param(0, 1, id="first"), pytest.param(41, 42, id="next"), pytest.param(999_999, 1, id="wraps")],
    )
    def test_next_stan(self, before: int, after: int) -> None:
        """The STAN counts 1..999999 and then starts again at 1."""
        state = ClientState(stan=before)
        assert state.next_stan() == after
        assert state.stan == after

    @pytest.mark.parametrize(
        ("counter", "ksn"),
        [
            pytest.param(0, "FFFF9876543210E00001", id="first"),
            pytest.param(1, "FFFF9876543210E00002", id="second"),
            pytest.param(0xFF, "FFFF9876543210E00100", id="carry"),
            pytest.param(0x1FFFFE, "FFFF9876543210FFFFFF", id="last"),
        ],
    )
    def test_next_ksn(self, counter: int, ksn: str) -> None:
        """next_ksn advances the 21-bit counter of DEFAULT_KSN and leaves the device bits alone."""
        state = ClientState(ksn_counter=counter)
        assert state.next_ksn() == bytes.fromhex(ksn)
        assert state.ksn_counter == counter + 1

    def test_next_ksn_replaces_the_base_counter(self) -> None:
        """A base KSN's own counter bits are replaced, not added to."""
        base = bytes.fromhex("FFFF9876543210E00005")
        assert ClientState().next_ksn(base) == bytes.fromhex("FFFF9876543210E00001")

    def test_default_ksn_counter_is_zero(self) -> None:
        """DEFAULT_KSN is the ANSI X9.24-1 Annex A KSN with its counter at zero."""
        assert DEFAULT_KSN.hex().upper() == "FFFF9876543210E00000"


class TestDukptKeys:
    """dukpt_keys derives a DUKPT terminal's PIN key and MAC keys for one KSN."""

    def test_annex_a_pin_key(self) -> None:
        """The Annex A BDK and KSN ...E00001 give PIN key 042666B49184CF5C68DE9628D0397B36."""
        pin_key, _ = dukpt_keys(ANNEX_A_BDK, ANNEX_A_KSN)
        assert pin_key == ANNEX_A_PIN_KEY

    def test_mac_keys(self) -> None:
        """The MAC keys use x9.19, and the response key differs from the request key and the PIN key."""
        pin_key, mac = dukpt_keys(ANNEX_A_BDK, ANNEX_A_KSN)
        assert mac.algorithm == DEFAULT_MAC_ALGORITHM == "x9.19"
        assert (len(mac.request_key), len(mac.response_key)) == (16, 16)
        assert mac.response_key != mac.request_key
        assert pin_key not in (mac.request_key, mac.response_key)

    def test_next_ksn_gives_new_keys(self) -> None:
        """Each KSN gives a different PIN key and MAC key."""
        first, second = ANNEX_A_KSN, bytes.fromhex("FFFF9876543210E00002")
        assert dukpt_keys(ANNEX_A_BDK, first)[0] != dukpt_keys(ANNEX_A_BDK, second)[0]
        assert dukpt_keys(ANNEX_A_BDK, first)[1] != dukpt_keys(ANNEX_A_BDK, second)[1]

    def test_repr_hides_keys(self) -> None:
        """repr of MacKeys shows the algorithm only."""
        _, mac = dukpt_keys(ANNEX_A_BDK, ANNEX_A_KSN)
        assert repr(mac) == "MacKeys(algorithm='x9.19')"


class TestPinBlockField:
    """pin_block_field builds F52: an ISO 9564 PIN block encrypted under the PIN key, as hex."""

    def test_annex_a_pin_block(self) -> None:
        """PIN 1234 and PAN 4012345678909 under the Annex A PIN key give 1B9C1845EB993A7A."""
        assert pin_block_field(ANNEX_A_PIN_KEY, ANNEX_A_PIN, ANNEX_A_PAN, 0) == ANNEX_A_PIN_BLOCK

    @pytest.mark.parametrize("pin_format", [0, 3], ids=["format-0", "format-3"])
    def test_round_trip(self, pin_format: int) -> None:
        """The field decrypts and decodes back to the PIN, in both formats."""
        field = pin_block_field(TPK, "987654", ANNEX_A_PAN, pin_format)
        assert len(field) == 16
        assert field == field.upper()
        clear = decrypt_pin_block(TPK, bytes.fromhex(field))
        assert decode_pin_block(clear, ANNEX_A_PAN, pin_format) == "987654"


class TestDecodeResponse:
    """decode_response with MacKeys trusts an approved response only if its MAC verifies."""

    @pytest.mark.parametrize("name", sorted(DIALECTS))
    def test_good_mac(self, name: str) -> None:
        """A response sealed with the response key decodes."""
        mac = _mac_keys(name, RESPONSE_KEYS[name])
        client = TerminalClient(DIALECTS[name], TID, MID)
        message = client.decode_response(_response_frame(name, APPROVED_FIELDS[name], mac), mac)
        assert (message.mti, message.fields["39"]) == ("0210", "00")
        assert "64" in message.fields

    @pytest.mark.parametrize("name", sorted(DIALECTS))
    def test_approved_without_mac(self, name: str) -> None:
        """An approved response without a MAC is a ClientError when the client expects one."""
        client = TerminalClient(DIALECTS[name], TID, MID)
        frame = _response_frame(name, APPROVED_FIELDS[name], None)
        with pytest.raises(ClientError, match="the approved response carries no MAC"):
            client.decode_response(frame, _mac_keys(name, RESPONSE_KEYS[name]))
        assert client.decode_response(frame).fields["39"] == "00"

    @pytest.mark.parametrize("name", sorted(DIALECTS))
    def test_declined_without_mac(self, name: str) -> None:
        """A declined response may come without a MAC (a host cannot always MAC a refusal)."""
        client = TerminalClient(DIALECTS[name], TID, MID)
        frame = _response_frame(name, {**APPROVED_FIELDS[name], "39": "A0"}, None)
        assert client.decode_response(frame, _mac_keys(name, RESPONSE_KEYS[name])).fields["39"] == "A0"

    @pytest.mark.parametrize("name", sorted(DIALECTS))
    def test_wrong_mac(self, name: str) -> None:
        """A response sealed with another key is a ClientError naming the MAC field."""
        client = TerminalClient(DIALECTS[name], TID, MID)
        frame = _response_frame(name, APPROVED_FIELDS[name], _mac_keys(name, WRONG_RESPONSE_KEYS[name]))
        with pytest.raises(ClientError, match=r"the response MAC \(field 64\) does not verify"):
            client.decode_response(frame, _mac_keys(name, RESPONSE_KEYS[name]))

    def test_dukpt_response_needs_the_response_key(self) -> None:
        """A DUKPT response sealed with the request MAC key instead of the response key does not verify."""
        _, mac = dukpt_keys(ANNEX_A_BDK, ANNEX_A_KSN)
        client = TerminalClient(DIALECTS["iso87binary"], TID, MID)
        good = _response_frame("iso87binary", APPROVED_FIELDS["iso87binary"], mac)
        assert client.decode_response(good, mac).fields["39"] == "00"
        swapped = MacKeys(mac.algorithm, mac.response_key, mac.request_key)
        bad = _response_frame("iso87binary", APPROVED_FIELDS["iso87binary"], swapped)
        with pytest.raises(ClientError, match="does not verify"):
            client.decode_response(bad, mac)

    def test_unreadable_response(self) -> None:
        """Bytes that do not decode are a ClientError, not a WireError."""
        client = TerminalClient(DIALECTS["iso87binary"], TID, MID)
        with pytest.raises(ClientError, match="unreadable response"):
            client.decode_response(b"02", _mac_keys("iso87binary", TAK))


def _signon_exchange(name: str, tmk: bytes) -> tuple[TerminalClient, Message, Message]:
    """A client, its sign-on request from the dialect's template, and a host's approval carrying the key block."""
    dialect = DIALECTS[name]
    client = TerminalClient(dialect, TID, MID)
    request = client.build("signon", NOW)
    if dialect.family == "cup":
        block = build_cup_key_block(tmk, "003", TPK, SINGLE_TAK)
    else:
        block = build_iso87_key_block(tmk, TPK, TAK)
    key_field = dialect.security.signon_key_field
    assert key_field is not None
    return client, request, Message("0810", {"39": "00", key_field: block.hex().upper()})


class TestAcceptSignon:
    """accept_signon unwraps the sign-on keys, keeps them wrapped in the state and MACs with the TAK."""

    @pytest.mark.parametrize(("name", "tak"), [pytest.param("cup", SINGLE_TAK, id="cup-003"),
                                               pytest.param("iso87binary", TAK, id="iso87binary")])  # fmt: skip
    def test_keys_taken(self, name: str, tak: bytes) -> None:
        """The keys come back, the state holds them wrapped, and later requests MAC with the TAK."""
        client, request, response = _signon_exchange(name, TMK)
        keys = client.accept_signon(response, request, TMK)
        assert (keys.tpk, keys.tak) == (TPK, tak)
        assert client.state.keys(TMK) == (TPK, tak)
        assert client.state.tak_under_tmk == wrap_key(TMK, tak).hex().upper()
        algorithm = DIALECTS[name].security.mac_algorithm
        assert algorithm is not None
        assert client.mac == MacKeys(algorithm, tak, tak)

    @pytest.mark.parametrize("name", sorted(DIALECTS))
    def test_wrong_tmk(self, name: str) -> None:
        """A key block wrapped under another TMK is refused by its check values, and nothing is stored."""
        client, request, response = _signon_exchange(name, OTHER_TMK)
        with pytest.raises(ClientError, match=r"sign-on key block rejected: .*check value mismatch"):
            client.accept_signon(response, request, TMK)
        assert client.state.keys(TMK) is None
        assert client.mac is None

    @pytest.mark.parametrize("name", sorted(DIALECTS))
    def test_no_key_block(self, name: str) -> None:
        """A sign-on response without the key block field is a ClientError naming the field."""
        client, request, _ = _signon_exchange(name, TMK)
        key_field = DIALECTS[name].security.signon_key_field
        with pytest.raises(ClientError, match=f"no key block in field {key_field}"):
            client.accept_signon(Message("0810", {"39": "00"}), request, TMK)
