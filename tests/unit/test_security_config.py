"""Security settings: a dialect's [security] table and the per-terminal keys and test cards of the config file."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest
from log_audit import remember_secret

import iso_host.config
import iso_host.security
from iso_host.config import CardConfig, TerminalConfig, TlsConfig, parse_config
from iso_host.core.test_cards import DEFAULT_EMV_SCHEME
from iso_host.errors import ConfigError
from iso_host.vocab import MAC_ALGORITHMS
from iso_host.wire import SecurityPolicy
from iso_host.wire.dialect import parse_dialect, specs_directory

DIALECT_SOURCE = "specs/acme.toml"
CONFIG_SOURCE = "iso-host.toml"
SPEC_DOCUMENTS = {
    name: tomllib.loads((specs_directory() / f"{name}.toml").read_text(encoding="utf-8"))
    for name in ("cup", "iso87binary")
}

TID, MID = "TERM0001", "MERCHANT0000001"
TAK = "0123456789ABCDEFFEDCBA9876543210"
TPK = "89ABCDEF0123456776543210FEDCBA98"
BDK = "FEDCBA98765432100123456789ABCDEF"
NOT_HEX_KEY = "0123456789ABCDEFFEDCBA987654321G"  # 32 characters, one of them not hex
PAN = "6212345678901234567"
PIN = "73591468"  # 8 digits: a 6-digit secret turns up by chance in the log audit (a timestamp's microseconds)
IMK = "0123456789ABCDEFFEDCBA9876543210"  # pyemv's test_cvn_hsm.py issuer master key
remember_secret(TAK, TPK, BDK, NOT_HEX_KEY, PAN, PIN, IMK)


def _dialect_error(name: str, changes: dict[str, Any]) -> str:
    """The ConfigError text for the named built-in dialect with ``changes`` applied to its [security] table."""
    document = copy.deepcopy(SPEC_DOCUMENTS[name])
    document["security"].update(changes)
    with pytest.raises(ConfigError) as info:
        parse_dialect(DIALECT_SOURCE, document)
    return str(info.value)


def _config_error(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(document, CONFIG_SOURCE)
    return str(info.value)


def _terminal(**keys: Any) -> dict[str, Any]:
    return {"terminals": [{"tid": TID, "mid": MID, **keys}]}


# (built-in dialect to start from, [security] keys to change, the key the error names, words of the problem)
BAD_SECURITY = [
    pytest.param("cup", {"mac_algorithm": "md5"}, "security.mac_algorithm",
                 "must be one of aes-cmac, cup-ecb, x9.19, x9.9, got 'md5'", id="mac-algorithm-md5"),
    pytest.param("iso87binary", {"mac_policy": "sometimes"}, "security.mac_policy",
                 "must be one of always, when-keyed, got 'sometimes'", id="mac-policy-sometimes"),
    pytest.param("cup", {"mac_kinds": "sale"}, "security.mac_kinds", "must be an array of kind names",
                 id="mac-kinds-string"),
    pytest.param("cup", {"mac_kinds": ["sale", 1]}, "security.mac_kinds", "must be an array of kind names",
                 id="mac-kinds-not-all-strings"),
    pytest.param("cup", {"require_signon": "yes"}, "security.require_signon", "must be true or false, got 'yes'",
                 id="require-signon-yes"),
    pytest.param("cup", {"signon_key_field": "99"}, "security.signon_key_field",
                 "names a field the dialect does not define: '99'", id="signon-key-field-undefined"),
    pytest.param("cup", {"signon_key_field": 62}, "security.signon_key_field",
                 "names a field the dialect does not define: 62", id="signon-key-field-integer"),
    pytest.param("cup", {"ksn_field": "5"}, "security.ksn_field", "names a field the dialect does not define: '5'",
                 id="ksn-field-undefined"),
    pytest.param("iso87binary", {"pin_block_format": 2}, "security.pin_block_format",
                 "must be 0 or 3 (ISO 9564), got 2", id="pin-block-format-2"),
    pytest.param("iso87binary", {"pin_block_format": "0"}, "security.pin_block_format",
                 "must be 0 or 3 (ISO 9564), got '0'", id="pin-block-format-string"),
    pytest.param("iso87binary", {"pin_block_format": False}, "security.pin_block_format",
                 "must be 0 or 3 (ISO 9564), got False", id="pin-block-format-boolean"),
    pytest.param("cup", {"key_block": "cup"}, "security.key_block", "unknown key (expected one of",
                 id="key-block-moved-to-family"),
    pytest.param("cup", {"mac_key": "0123456789ABCDEF"}, "security.mac_key", "unknown key (expected one of",
                 id="unknown-key"),
]  # fmt: skip

# (terminal keys, the key the error names, words of the problem)
BAD_TERMINALS = [
    pytest.param({"tak": NOT_HEX_KEY}, "terminals[0].tak", "must be 16, 32 or 48 hex digits", id="tak-not-hex"),
    pytest.param({"tpk": TPK[:20]}, "terminals[0].tpk", "must be 16, 32 or 48 hex digits", id="tpk-20-digits"),
    pytest.param({"bdk": BDK[:16]}, "terminals[0].bdk", "must be 32 hex digits (a double-length TDES key)",
                 id="bdk-16-digits"),
    pytest.param({"bdk": BDK + BDK[:16]}, "terminals[0].bdk", "must be 32 hex digits (a double-length TDES key)",
                 id="bdk-48-digits"),
    pytest.param({"mac": "md5"}, "terminals[0].mac", "must be one of aes-cmac, cup-ecb, x9.19, x9.9, got 'md5'",
                 id="mac-md5"),
    pytest.param({"require_signon": "yes"}, "terminals[0].require_signon", "must be true or false, got 'yes'",
                 id="require-signon-yes"),
]  # fmt: skip

# (cards array, the key the error names, words of the problem)
BAD_CARDS = [
    pytest.param([{"pan": PAN[:11], "pin": PIN}], "cards[0].pan", "must be 12 to 19 digits", id="pan-11-digits"),
    pytest.param([{"pan": PAN + "0", "pin": PIN}], "cards[0].pan", "must be 12 to 19 digits", id="pan-20-digits"),
    pytest.param([{"pan": PAN[:-1] + "X", "pin": PIN}], "cards[0].pan", "must be 12 to 19 digits",
                 id="pan-not-digits"),
    pytest.param([{"pan": PAN, "pin": "12ab"}], "cards[0].pin", "must be 4 to 12 digits", id="pin-not-digits"),
    pytest.param([{"pan": PAN, "pin": "123"}], "cards[0].pin", "must be 4 to 12 digits", id="pin-3-digits"),
    pytest.param([{"pan": PAN, "pin": 1234}], "cards[0].pin", "must be 4 to 12 digits", id="pin-integer"),
    pytest.param([{"pan": PAN, "pin": PIN, "cvv": "123"}], "cards[0].cvv",
                 "unknown key (expected one of balance, emv_scheme, expiry, imk, limit, pan, pin, status)",
                 id="unknown-key"),
    pytest.param([{"pan": PAN, "imk": IMK[:30]}], "cards[0].imk", "must be 32 hex digits (a double-length IMK-AC)",
                 id="imk-30-digits"),
    pytest.param([{"pan": PAN, "imk": IMK + IMK[:16]}], "cards[0].imk",
                 "must be 32 hex digits (a double-length IMK-AC)", id="imk-48-digits"),
    pytest.param([{"pan": PAN, "imk": NOT_HEX_KEY}], "cards[0].imk", "must be 32 hex digits (a double-length IMK-AC)",
                 id="imk-not-hex"),
    pytest.param([{"pan": PAN, "imk": 123}], "cards[0].imk", "must be 32 hex digits (a double-length IMK-AC)",
                 id="imk-integer"),
    pytest.param([{"pan": PAN, "imk": IMK, "emv_scheme": "visa-cvn99"}], "cards[0].emv_scheme",
                 "must be one of emv-csk, visa-cvn10, visa-cvn18, visa-cvn22, mastercard-cvn16, mastercard-cvn17, "
                 "mastercard-cvn20, mastercard-cvn21, interac-cvn133, got 'visa-cvn99'", id="emv-scheme-unknown"),
    pytest.param([{"pan": PAN, "imk": IMK, "emv_scheme": ["visa-cvn10"]}], "cards[0].emv_scheme",
                 "must be one of emv-csk", id="emv-scheme-array"),
    pytest.param([{"pan": PAN, "emv_scheme": "visa-cvn10"}], "cards[0].emv_scheme",
                 "needs imk: the scheme says how cryptograms under the IMK are computed", id="emv-scheme-without-imk"),
    pytest.param(["not a table"], "cards[0]", "must be a table", id="card-not-a-table"),
    pytest.param({"pan": PAN}, "cards", "must be an array of tables", id="cards-not-an-array"),
]  # fmt: skip


class TestMacAlgorithmNames:
    """The MAC algorithm names every layer checks against (vocab) are the ones security implements."""

    def test_names_agree(self) -> None:
        """The dialect checker, the config checker and the implementations know the same algorithms."""
        assert set(MAC_ALGORITHMS) == set(iso_host.security.MAC_ALGORITHMS)


class TestDialectSecurity:
    """parse_dialect reads the [security] table into a SecurityPolicy, or names the bad key."""

    def test_cup_policy(self) -> None:
        """cup MACs every sale with cup-ecb, needs sign-on and carries the CUP key block in F62."""
        dialect = parse_dialect(DIALECT_SOURCE, copy.deepcopy(SPEC_DOCUMENTS["cup"]))
        assert dialect.security == SecurityPolicy(
            mac_algorithm="cup-ecb", mac_policy="always",
            mac_kinds=("sale", "qr_sale", "offline_sale", "void", "refund", "reversal", "balance", "preauth",
                       "preauth_void", "completion", "completion_void", "adjust", "tip"),
            require_signon=True,
            signon_key_field="62", ksn_field=None, pin_block_format=0,
        )  # fmt: skip

    def test_iso87binary_policy(self) -> None:
        """iso87binary MACs sales with x9.19 once keyed, carries keys in F48 and the DUKPT KSN in F53."""
        dialect = parse_dialect(DIALECT_SOURCE, copy.deepcopy(SPEC_DOCUMENTS["iso87binary"]))
        assert dialect.security == SecurityPolicy(
            mac_algorithm="x9.19", mac_policy="when-keyed",
            mac_kinds=("sale", "void", "refund", "reversal", "balance", "authorisation", "authorisation_advice",
                       "financial_advice", "reversal_advice", "completion"),
            require_signon=False,
            signon_key_field="48", ksn_field="53", pin_block_format=0,
        )  # fmt: skip

    def test_no_security_table_means_no_mac(self) -> None:
        """A dialect without [security] gets the defaults: no MAC, no sign-on required."""
        document = copy.deepcopy(SPEC_DOCUMENTS["iso87binary"])
        del document["security"]
        assert parse_dialect(DIALECT_SOURCE, document).security == SecurityPolicy()

    @pytest.mark.parametrize("algorithm", MAC_ALGORITHMS)
    def test_every_algorithm_is_accepted(self, algorithm: str) -> None:
        """Each known algorithm name is a valid mac_algorithm."""
        document = copy.deepcopy(SPEC_DOCUMENTS["iso87binary"])
        document["security"]["mac_algorithm"] = algorithm
        assert parse_dialect(DIALECT_SOURCE, document).security.mac_algorithm == algorithm

    @pytest.mark.parametrize(("name", "changes", "key", "problem"), BAD_SECURITY)
    def test_bad_security_names_the_key(self, name: str, changes: dict[str, Any], key: str, problem: str) -> None:
        """One bad [security] key gives one line naming the file, the key and what was expected."""
        message = _dialect_error(name, changes)
        assert message.startswith(f"{DIALECT_SOURCE}: {key}: ")
        assert problem in message
        assert "\n" not in message

    def test_mac_needs_field_64(self) -> None:
        """A dialect that names a MAC algorithm must define field 64 to carry it."""
        document = copy.deepcopy(SPEC_DOCUMENTS["cup"])
        del document["fields"]["64"]
        expected = r"^specs/acme\.toml: security\.mac_algorithm: needs field 64 in \[fields\]$"
        with pytest.raises(ConfigError, match=expected):
            parse_dialect(DIALECT_SOURCE, document)

    def test_security_not_a_table(self) -> None:
        """[security] must be a table."""
        document = copy.deepcopy(SPEC_DOCUMENTS["cup"])
        document["security"] = "x9.19"
        with pytest.raises(ConfigError, match=r"^specs/acme\.toml: security: must be a table$"):
            parse_dialect(DIALECT_SOURCE, document)


class TestTerminalSecurityConfig:
    """parse_config reads each terminal's keys, MAC override and sign-on override, never echoing a key."""

    @pytest.mark.parametrize(("keys", "key", "problem"), BAD_TERMINALS)
    def test_bad_terminal_key_names_the_key(self, keys: dict[str, Any], key: str, problem: str) -> None:
        """One bad terminal setting gives one line naming the file, the key and what was expected."""
        message = _config_error(_terminal(**keys))
        assert message.startswith(f"{CONFIG_SOURCE}: {key}: ")
        assert problem in message
        assert "\n" not in message

    @pytest.mark.parametrize(("keys", "key", "problem"), BAD_TERMINALS)
    def test_bad_key_is_not_echoed(self, keys: dict[str, Any], key: str, problem: str) -> None:
        """A refused key never appears in the error, not even its first half."""
        message = _config_error(_terminal(**keys)).upper()
        for value in keys.values():
            if isinstance(value, str) and len(value) >= 16:
                assert value.upper() not in message
                assert value[:16].upper() not in message

    def test_keys_and_overrides(self) -> None:
        """Static keys (upper-cased), BDK, MAC algorithm and sign-on override land in TerminalConfig."""
        document = _terminal(tak=TAK.lower(), tpk=TPK, bdk=BDK, mac="aes-cmac", require_signon=False)
        [terminal] = parse_config(document, CONFIG_SOURCE).terminals
        assert terminal == TerminalConfig(TID, MID, tak=TAK, tpk=TPK, bdk=BDK, mac="aes-cmac", require_signon=False)

    def test_overrides_default_to_the_dialect(self) -> None:
        """A terminal without keys or overrides leaves them None, so the dialect decides."""
        [terminal] = parse_config(_terminal(), CONFIG_SOURCE).terminals
        assert (terminal.tak, terminal.tpk, terminal.bdk, terminal.mac, terminal.require_signon) == (None,) * 5

    def test_repr_hides_keys(self) -> None:
        """repr of a TerminalConfig shows neither the TMK nor the static keys nor the BDK."""
        text = repr(TerminalConfig(TID, MID, tmk=TAK, tak=TAK, tpk=TPK, bdk=BDK, mac="x9.19")).upper()
        assert TID in text
        for secret in (TAK, TPK, BDK):
            assert secret not in text
            assert secret[:16] not in text


class TestCardConfig:
    """parse_config reads [[cards]], never echoing a PAN or a PIN."""

    def test_cards(self) -> None:
        """Each [[cards]] table becomes a CardConfig."""
        config = parse_config({"cards": [{"pan": PAN, "pin": PIN}, {"pan": "4761739001010010", "pin": "1234"}]},
                              CONFIG_SOURCE)  # fmt: skip
        assert config.cards == (CardConfig(PAN, PIN), CardConfig("4761739001010010", "1234"))

    def test_no_cards_by_default(self) -> None:
        """Without [[cards]] the host knows no test card."""
        assert parse_config({}, CONFIG_SOURCE).cards == ()

    def test_chip_keys(self) -> None:
        """imk is read as 16 bytes (either case of hex), emv_scheme defaults to EMV's own common-session-key scheme,
        and both reach the TestCard the host decides with."""
        cards = parse_config({"cards": [{"pan": PAN, "imk": IMK.lower(), "emv_scheme": "visa-cvn10"},
                                        {"pan": "4761739001010010", "imk": IMK}]}, CONFIG_SOURCE).cards  # fmt: skip
        assert [(card.imk, card.emv_scheme) for card in cards] == [
            (bytes.fromhex(IMK), "visa-cvn10"), (bytes.fromhex(IMK), DEFAULT_EMV_SCHEME)
        ]
        assert DEFAULT_EMV_SCHEME == "emv-csk"
        test_card = cards[0].test_card()
        assert (test_card.imk, test_card.emv_scheme) == (bytes.fromhex(IMK), "visa-cvn10")
        assert parse_config({"cards": [{"pan": PAN}]}, CONFIG_SOURCE).cards[0].test_card().imk is None

    @pytest.mark.parametrize(("cards", "key", "problem"), BAD_CARDS)
    def test_bad_card_names_the_key(self, cards: Any, key: str, problem: str) -> None:
        """One bad card gives one line naming the file, the key and what was expected, without the PAN or PIN."""
        message = _config_error({"cards": cards})
        assert message.startswith(f"{CONFIG_SOURCE}: {key}: ")
        assert problem in message
        assert "\n" not in message
        entries = cards if isinstance(cards, list) else [cards]
        secrets = (entry.get(name) for entry in entries if isinstance(entry, dict) for name in ("pan", "pin", "imk"))
        for value in secrets:
            assert not (isinstance(value, str) and len(value) >= 4 and value in message)

    def test_bad_pan_and_pin_in_one_pass(self) -> None:
        """A card with both a bad PAN and a bad PIN gets both reported, as every other problem is, in one pass."""
        lines = _config_error({"cards": [{"pan": "12", "pin": "12ab"}]}).splitlines()
        assert [line.split(": ")[1] for line in lines] == ["cards[0].pan", "cards[0].pin"]

    def test_repr_hides_pan_and_pin(self) -> None:
        """repr of a CardConfig shows neither the PAN nor the PIN, nor the IMK (nor does its TestCard's)."""
        config = CardConfig(PAN, PIN, imk=bytes.fromhex(IMK))
        for text in (repr(config), repr(config.test_card())):
            assert PAN not in text
            assert PAN[-4:] not in text
            assert PIN not in text
            assert IMK not in text.upper()
            assert repr(bytes.fromhex(IMK)) not in text


class TestTlsConfig:
    """parse_config reads tls_cert, tls_key and tls_client_ca from [server]."""

    def test_server_and_mutual_tls(self) -> None:
        """tls_cert and tls_key enable TLS; tls_client_ca makes it mutual."""
        server = {"tls_cert": "host.pem", "tls_key": "host.key"}
        assert parse_config({"server": server}, CONFIG_SOURCE).tls == TlsConfig("host.pem", "host.key")
        mutual = parse_config({"server": {**server, "tls_client_ca": "ca.pem"}}, CONFIG_SOURCE)
        assert mutual.tls == TlsConfig("host.pem", "host.key", "ca.pem")

    def test_no_tls_by_default(self) -> None:
        """Without TLS keys the host listens in plain TCP."""
        assert parse_config({}, CONFIG_SOURCE).tls is None

    @pytest.mark.parametrize(
        ("server", "keys"),
        [
            pytest.param({"tls_cert": "host.pem"}, ["server.tls_key"], id="cert-without-key"),
            pytest.param({"tls_key": "host.key"}, ["server.tls_cert"], id="key-without-cert"),
            pytest.param({"tls_cert": "host.pem", "tls_key": ""}, ["server.tls_key"], id="key-empty"),
            pytest.param({"tls_client_ca": "ca.pem"}, ["server.tls_cert", "server.tls_key"], id="ca-alone"),
            pytest.param({"tls_cert": "host.pem", "tls_key": "host.key", "tls_client_ca": 5},
                         ["server.tls_client_ca"], id="ca-not-a-path"),
        ],
    )  # fmt: skip
    def test_incomplete_tls_names_the_keys(self, server: dict[str, Any], keys: list[str]) -> None:
        """A TLS setting missing its partner is an error naming the missing key, one line each."""
        lines = _config_error({"server": server}).splitlines()
        assert [line.split(": ")[1] for line in lines] == keys
        assert all(line.startswith(f"{CONFIG_SOURCE}: ") for line in lines)

    def test_everything_together(self) -> None:
        """Terminal keys, overrides, cards and TLS in one file all parse into their dataclasses."""
        document = tomllib.loads(f"""
[server]
tls_cert = "host.pem"
tls_key = "host.key"

[[terminals]]
tid = "{TID}"
mid = "{MID}"
tak = "{TAK}"
tpk = "{TPK}"
bdk = "{BDK}"
mac = "x9.19"
require_signon = true

[[cards]]
pan = "{PAN}"
pin = "{PIN}"
""")
        config = parse_config(document, CONFIG_SOURCE)
        assert config.terminals == (
            TerminalConfig(TID, MID, tak=TAK, tpk=TPK, bdk=BDK, mac="x9.19", require_signon=True),
        )
        assert config.cards == (CardConfig(PAN, PIN),)
        assert config.tls == TlsConfig("host.pem", "host.key")
        text = repr(config).upper()
        assert all(secret not in text for secret in (TAK, TPK, BDK, PAN, PIN))
