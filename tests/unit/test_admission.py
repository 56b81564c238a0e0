"""Admission: tables of request message -> the reason it is rejected with, or the Request it becomes.

Each message is encoded as a terminal sends it (MAC'd with real keys through ``iso_host.security``), decoded as
the host reads it, and taken through the checks in the pipeline's order: terminal, classification, sign-on and
MAC, then fields, card and PIN. Pure: no socket, no ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from core_tables import (
    BDK,
    DIALECTS,
    MID,
    PAN,
    PAN_HASH_KEY,
    TAK,
    TID,
    TPK,
    admission,
    card_book,
    frame_body,
    keyed_terminal,
    mac_keys,
    message,
    terminal,
)
from log_audit import remember_secret

from iso_host.cards import mask_pan
from iso_host.core.admission import Rejected
from iso_host.core.flows import Request
from iso_host.core.terminals import TerminalState, WorkingKeys
from iso_host.core.test_cards import TestCard
from iso_host.ledger.model import OriginalQuery
from iso_host.security import encrypt_pin_block
from iso_host.terminal.client import DEFAULT_KSN, MacKeys, dukpt_keys, pin_block_field
from iso_host.vocab import Kind, Reason
from iso_host.wire import Message, decode

OTHER_KEY = bytes.fromhex("5B5B5B5B5B5B5B5B6E6E6E6E6E6E6E6E")
RIGHT_PIN, WRONG_PIN = "1234", "9999"
remember_secret(OTHER_KEY)
NAMES = tuple(sorted(DIALECTS))  # cup, iso87ascii, iso87ascii-dukpt, iso87bcd, iso87binary
ISO87_NAMES = tuple(name for name in NAMES if name.startswith("iso87"))
DUKPT_NAMES = tuple(name for name in NAMES if DIALECTS[name].security.ksn_field)  # iso87ascii-dukpt, iso87binary
ORIGINAL_VALUES: dict[str, Any] = {
    "rrn": "000000000007",
    "original_batch": 1,
    "original_stan": 7,
    "original_date": "0101",
}


def edit(request_message: Message, fields: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Message:
    """A copy of the message with ``fields`` set and ``drop`` removed."""
    kept = {k: v for k, v in request_message.fields.items() if k not in drop}
    return Message(request_message.mti, kept | (fields or {}))


def admit(dialect_name: str, request_message: Message, *, known: TerminalState, mac: MacKeys | None = None,
          body: bytes | None = None, pins: dict[str, str] | None = None) -> Request:  # fmt: skip
    """The message framed (and MAC'd), decoded as the host reads it and admitted as the pipeline admits it."""
    frame = body if body is not None else frame_body(dialect_name, request_message, mac)
    dialect = DIALECTS[dialect_name]
    _envelope, decoded = decode(frame, dialect)
    cards = card_book({pan: TestCard(pin=pin) for pan, pin in (pins or {}).items()})
    checks = admission(dialect_name, {TID: known}, cards)
    found = checks.terminal(decoded)
    verified = checks.verify_mac(decoded, frame[dialect.envelope_bytes :], found)
    rule, kind = checks.classify(decoded)
    checks.authenticate(decoded, rule, found, verified)
    return checks.request(decoded, rule, kind, found, PAN_HASH_KEY)


def refusal(dialect_name: str, request_message: Message, **options: object) -> Reason | None:
    """The reason admission rejects the message with, or None when it is admitted."""
    try:
        admit(dialect_name, request_message, **options)  # type: ignore[arg-type]
    except Rejected as rejected:
        return rejected.reason
    return None


def sale(dialect_name: str) -> Message:
    return message(dialect_name, "sale")


def track2(dialect_name: str, separator_and_rest: str) -> Message:
    """A sale whose card comes from track 2 (F35) instead of F2."""
    return edit(sale(dialect_name), {"35": PAN + separator_and_rest}, drop=("2",))


# BCD track 2 (cup, iso87bcd) has no '=': its separator is the nibble D (CUP.md, field 35; jPOS IFB_LLNUM).
SEPARATOR = {name: "D" if DIALECTS[name].spec["35"]["data_enc"] == "b" else "=" for name in NAMES}


def unclassified(dialect_name: str) -> Message:
    """A message no [[kinds]] entry matches: an iso87 0100 with a cash-advance processing code (F3 01xxxx), or a
    CUP 0200 whose F3 (a refund's 200000) and 60.1 (a sale's 22) name no kind together."""
    if DIALECTS[dialect_name].security.require_signon:
        return edit(sale(dialect_name), {"3": "200000"})
    return Message("0100", {"3": "010000", "4": "000000001000", "11": "000001", "41": TID, "42": MID})


# (id, message, terminal, MAC keys, expected reason or None): each row once per dialect.
Row = tuple[
    str, Callable[[str], Message], Callable[[str], TerminalState], Callable[[str], MacKeys | None], Reason | None
]
EVERY_DIALECT: list[Row] = [
    ("mac-good", sale, keyed_terminal, mac_keys, None),
    ("unknown-terminal", lambda d: edit(sale(d), {"41": "TERM9999"}), keyed_terminal, mac_keys,
     Reason.UNKNOWN_TERMINAL),
    ("unknown-merchant", lambda d: edit(sale(d), {"42": "MERCHANT0000009"}), keyed_terminal, mac_keys,
     Reason.UNKNOWN_MERCHANT),
    ("disabled", sale, lambda d: keyed_terminal(d, enabled=False), mac_keys, Reason.TERMINAL_DISABLED),
    ("unknown-kind", unclassified, keyed_terminal, lambda _d: None, Reason.INVALID_TRANSACTION),
    ("mac-missing", sale, keyed_terminal, lambda _d: None, Reason.MAC_FAILED),
    ("mac-other-key", sale, keyed_terminal, lambda d: mac_keys(d, OTHER_KEY), Reason.MAC_FAILED),
    ("mac-needs-no-key-for-echo", lambda d: message(d, "echo"), keyed_terminal, lambda _d: None, None),
    ("stan-missing", lambda d: edit(sale(d), drop=("11",)), keyed_terminal, mac_keys, Reason.FORMAT_ERROR),
    ("amount-missing", lambda d: edit(sale(d), drop=("4",)), keyed_terminal, mac_keys, Reason.FORMAT_ERROR),
    ("amount-not-numeric", lambda d: edit(sale(d), {"4": "00000000100A"}), keyed_terminal, mac_keys,
     Reason.FORMAT_ERROR),
    ("currency-not-numeric", lambda d: edit(sale(d), {"49": "84X"}), keyed_terminal, mac_keys, Reason.FORMAT_ERROR),
    ("stan-not-numeric", lambda d: edit(sale(d), {"11": "00001A"}), keyed_terminal, mac_keys, Reason.FORMAT_ERROR),
    ("pan-too-short", lambda d: edit(sale(d), {"2": PAN[:11]}), keyed_terminal, mac_keys, Reason.FORMAT_ERROR),
    ("no-card", lambda d: edit(sale(d), drop=("2",)), keyed_terminal, mac_keys, Reason.FORMAT_ERROR),
    ("track2", lambda d: track2(d, SEPARATOR[d] + "2512101"), keyed_terminal, mac_keys, None),
    ("track2-without-separator", lambda d: track2(d, "2512101"), keyed_terminal, mac_keys, Reason.FORMAT_ERROR),
    ("void-without-card", lambda d: edit(message(d, "void", **ORIGINAL_VALUES), drop=("2",)), keyed_terminal,
     mac_keys, None),
]  # fmt: skip

ROWS = [
    pytest.param(name, build, known, mac, reason, id=f"{name}-{row_id}")
    for name in NAMES
    for row_id, build, known, mac, reason in EVERY_DIALECT
]


@pytest.mark.parametrize(("dialect_name", "build", "known", "mac", "reason"), ROWS)
def test_every_dialect(dialect_name: str, build: Callable[[str], Message], known: Callable[[str], TerminalState],
                       mac: Callable[[str], MacKeys | None], reason: Reason | None) -> None:  # fmt: skip
    """The same checks in every dialect: who sends, what it is, whether its MAC holds, whether it is whole."""
    result = refusal(dialect_name, build(dialect_name), known=known(dialect_name), mac=mac(dialect_name))
    assert result is reason


def plain(_dialect_name: str) -> TerminalState:
    return terminal()


def static_keys(**overrides: object) -> Callable[[str], TerminalState]:
    return lambda _d: terminal(static_keys=WorkingKeys(tpk=TPK, tak=TAK), **overrides)


# (dialect, message, terminal, MAC keys, reason): where the dialects' security policies differ.
POLICY_ROWS = [
    # iso87 MACs "when keyed": a terminal without a TAK sends no MAC, and may not send one.
    *(pytest.param(d, sale, plain, lambda _d: None, None, id=f"{d}-no-key-no-mac") for d in NAMES[1:]),
    *(pytest.param(d, sale, plain, mac_keys, Reason.MAC_FAILED, id=f"{d}-mac-without-a-key") for d in NAMES[1:]),
    *(pytest.param(d, sale, lambda _d: terminal(require_signon=True), lambda _d: None, Reason.NOT_SIGNED_ON,
                   id=f"{d}-terminal-must-sign-on") for d in NAMES[1:]),
    *(pytest.param(d, sale, static_keys(mac_algorithm="aes-cmac"), lambda _d: MacKeys("aes-cmac", TAK, TAK), None,
                   id=f"{d}-terminals-own-algorithm") for d in NAMES[1:]),
    *(pytest.param(d, sale, static_keys(mac_algorithm="aes-cmac"), mac_keys, Reason.MAC_FAILED,
                   id=f"{d}-dialects-algorithm-refused") for d in NAMES[1:]),
    # CUP MACs "always", and only after sign-on unless the terminal is configured otherwise.
    pytest.param("cup", sale, lambda _d: keyed_terminal("cup", signed_on=False), mac_keys, Reason.NOT_SIGNED_ON,
                 id="cup-signed-off"),
    pytest.param("cup", sale, static_keys(require_signon=False), mac_keys, None, id="cup-static-keys"),
    pytest.param("cup", sale, lambda _d: terminal(require_signon=False), lambda _d: None, Reason.MAC_FAILED,
                 id="cup-no-key-still-needs-a-mac"),
    pytest.param("cup", lambda d: message(d, "settlement", totals="0" * 62), lambda _d: keyed_terminal("cup"),
                 lambda _d: None, None, id="cup-settlement-is-not-maced"),
]  # fmt: skip


@pytest.mark.parametrize(("dialect_name", "build", "known", "mac", "reason"), POLICY_ROWS)
def test_security_policy(dialect_name: str, build: Callable[[str], Message], known: Callable[[str], TerminalState],
                         mac: Callable[[str], MacKeys | None], reason: Reason | None) -> None:  # fmt: skip
    """Each dialect's [security] table: which kinds need a MAC, from which terminals, under which key."""
    result = refusal(dialect_name, build(dialect_name), known=known(dialect_name), mac=mac(dialect_name))
    assert result is reason


@pytest.mark.parametrize("dialect_name", NAMES)
def test_a_mac_over_other_bytes_fails(dialect_name: str) -> None:
    """A MAC computed with the right key over the original amount does not cover a changed amount."""
    mac = mac_keys(dialect_name)
    size = int(DIALECTS[dialect_name].spec["64"]["max_len"])
    honest = frame_body(dialect_name, sale(dialect_name), mac)
    changed = frame_body(dialect_name, edit(sale(dialect_name), {"4": "000000009000"}), mac)
    spliced = changed[:-size] + honest[-size:]
    assert refusal(dialect_name, sale(dialect_name), known=keyed_terminal(dialect_name), body=spliced) is (
        Reason.MAC_FAILED
    )


class TestDukpt:
    """A DUKPT terminal (test-lab BDK): the MAC key comes from the KSN in F53, one per transaction."""

    KSN = DEFAULT_KSN

    @pytest.mark.parametrize("dialect_name", DUKPT_NAMES)
    def test_mac_under_the_ksns_key(self, dialect_name: str) -> None:
        _pin_key, mac = dukpt_keys(BDK, self.KSN)
        sent = edit(sale(dialect_name), {"53": self.KSN.hex().upper()})
        assert refusal(dialect_name, sent, known=terminal(bdk=BDK), mac=mac) is None

    @pytest.mark.parametrize("dialect_name", DUKPT_NAMES)
    def test_mac_under_another_ksns_key(self, dialect_name: str) -> None:
        _pin_key, mac = dukpt_keys(BDK, self.KSN[:-1] + b"\x07")
        sent = edit(sale(dialect_name), {"53": self.KSN.hex().upper()})
        assert refusal(dialect_name, sent, known=terminal(bdk=BDK), mac=mac) is Reason.MAC_FAILED

    @pytest.mark.parametrize("dialect_name", DUKPT_NAMES)
    def test_no_ksn_is_a_format_error(self, dialect_name: str) -> None:
        _pin_key, mac = dukpt_keys(BDK, self.KSN)
        assert refusal(dialect_name, sale(dialect_name), known=terminal(bdk=BDK), mac=mac) is Reason.FORMAT_ERROR


def with_pin(template: str, pin: str = RIGHT_PIN, key: bytes = TPK) -> Message:
    """An iso87binary request with F52 (ISO 9564 format 0) holding ``pin`` for ``PAN``, under ``key``."""
    return edit(message("iso87binary", template, **ORIGINAL_VALUES), {"52": pin_block_field(key, pin, PAN, 0)})


PIN_ROWS = [
    pytest.param(with_pin("sale"), static_keys(), None, False, id="right-pin"),
    pytest.param(with_pin("sale", WRONG_PIN), static_keys(), None, True, id="wrong-pin-sale-is-declined-later"),
    pytest.param(with_pin("void", WRONG_PIN), static_keys(), Reason.PIN_INCORRECT, None, id="wrong-pin-void"),
    pytest.param(with_pin("sale"), lambda _d: terminal(static_keys=WorkingKeys(tak=TAK)), Reason.NOT_SIGNED_ON, None,
                 id="pin-without-a-pin-key"),
    pytest.param(edit(sale("iso87binary"), {"52": encrypt_pin_block(TPK, b"\xff" * 8).hex().upper()}), static_keys(),
                 Reason.FORMAT_ERROR, None, id="not-a-pin-block"),
]  # fmt: skip


@pytest.mark.parametrize(("sent", "known", "reason", "pin_incorrect"), PIN_ROWS)
def test_pin(sent: Message, known: Callable[[str], TerminalState], reason: Reason | None,
             pin_incorrect: bool | None) -> None:  # fmt: skip
    """F52 is decrypted with the TPK and compared with the test card's PIN; a sale with a wrong one is admitted
    (and declined by its flow, recorded), any other kind is rejected."""
    mac = mac_keys("iso87binary")
    result = refusal("iso87binary", sent, known=known("iso87binary"), mac=mac, pins={PAN: RIGHT_PIN})
    assert result is reason
    if reason is None:
        admitted = admit("iso87binary", sent, known=known("iso87binary"), mac=mac, pins={PAN: RIGHT_PIN})
        assert admitted.pin_incorrect is pin_incorrect


class TestAdmittedRequest:
    """What an admitted message becomes: the card masked and hashed, the numbers read, the original named."""

    @pytest.mark.parametrize("dialect_name", NAMES)
    def test_a_sale(self, dialect_name: str) -> None:
        admitted = admit(dialect_name, sale(dialect_name), known=keyed_terminal(dialect_name),
                         mac=mac_keys(dialect_name))  # fmt: skip
        assert (admitted.kind, admitted.tid, admitted.mid, admitted.stan, admitted.amount_minor) == (
            Kind.SALE, TID, MID, "000001", 1_000,
        )  # fmt: skip
        assert admitted.card is not None
        assert admitted.card.masked_pan == mask_pan(PAN)
        assert PAN not in repr(admitted), "no clear PAN goes past admission"

    def test_track2_gives_the_same_card_as_field_2(self) -> None:
        known, mac = keyed_terminal("cup"), mac_keys("cup")
        from_track = admit("cup", track2("cup", "D2512101"), known=known, mac=mac)
        from_pan = admit("cup", sale("cup"), known=known, mac=mac)
        assert from_track.card == from_pan.card

    @pytest.mark.parametrize(
        ("dialect_name", "template", "fields", "queries"),
        [
            pytest.param("iso87binary", "void", {}, (OriginalQuery(TID, MID, rrn="000000000007"),),
                         id="iso87-void-rrn"),
            pytest.param("iso87binary", "void", {"90": "0200000007" + "0" * 32},
                         (OriginalQuery(TID, MID, rrn="000000000007"), OriginalQuery(TID, MID, stan="000007")),
                         id="iso87-void-rrn-then-f90"),
            pytest.param("iso87binary", "reversal", {}, (OriginalQuery(TID, MID, stan="000007"),),
                         id="iso87-reversal-own-stan"),
            pytest.param("cup", "void", {}, (OriginalQuery(TID, MID, stan="000007", batch_number=1),),
                         id="cup-void-f61"),
            pytest.param("cup", "reversal", {}, (OriginalQuery(TID, MID, stan="000007", batch_number=1),),
                         id="cup-reversal-60.2-and-own-stan"),
            pytest.param("cup", "refund", {}, (OriginalQuery(TID, MID, rrn="000000000007", date_mmdd="0101"),),
                         id="cup-refund-rrn-and-date"),
            pytest.param("iso87binary", "completion", {},
                         (OriginalQuery(TID, MID, stan="000007"), OriginalQuery(TID, MID, auth_code="123456")),
                         id="iso87-completion-f90-then-f38"),
        ],
    )  # fmt: skip
    def test_the_original_is_named_within_the_terminal(
        self, dialect_name: str, template: str, fields: dict[str, str], queries: tuple[OriginalQuery, ...]
    ) -> None:
        """The dialect's original_by lookups, in order, always within the requesting TID and MID."""
        values = ORIGINAL_VALUES | {"original_processing_code": "000000", "original_type": "22", "auth_code": "123456",
                                    "original_transmitted": "0101120000"}  # fmt: skip
        sent = edit(message(dialect_name, template, **values), fields)
        admitted = admit(dialect_name, sent, known=keyed_terminal(dialect_name), mac=mac_keys(dialect_name))
        assert admitted.original_queries == queries

    @pytest.mark.parametrize("dialect_name", ISO87_NAMES)
    @pytest.mark.parametrize(
        ("mti", "f90", "kind", "name"),
        [
            pytest.param("0220", "0100000007" + "0" * 32, Kind.COMPLETION, "completion", id="advice-naming-0100"),
            pytest.param("0221", "0120000007" + "0" * 32, Kind.COMPLETION, "completion", id="repeat-naming-0120"),
            pytest.param("0220", None, Kind.SALE, "financial_advice", id="advice-without-f90"),
            pytest.param("0220", "0200000007" + "0" * 32, Kind.SALE, "financial_advice", id="advice-naming-a-sale"),
        ],
    )  # fmt: skip
    def test_an_iso87_advice_naming_an_authorisation_is_its_completion(
        self, dialect_name: str, mti: str, f90: str | None, kind: Kind, name: str
    ) -> None:
        """ISO 8583:1987 F90 starts with the original's MTI: an authorisation's (0100, 0120, 0121) makes a 0220 or
        0221 its completion; without F90, or naming anything else, the advice is a sale approved offline."""
        values = ORIGINAL_VALUES | {"auth_code": "123456", "original_transmitted": "0101120000"}
        sent = message(dialect_name, "completion", **values)
        sent = edit(Message(mti, sent.fields), {"90": f90} if f90 else {}, drop=() if f90 else ("90",))
        admitted = admit(dialect_name, sent, known=keyed_terminal(dialect_name), mac=mac_keys(dialect_name))
        assert (admitted.kind, admitted.name) == (kind, name)

    def test_cup_names_its_batch_in_60_2(self) -> None:
        """CUP carries the batch in every financial request; the host's open batch is kept beside it."""
        sent = message("cup", "sale", batch=5)
        admitted = admit("cup", sent, known=keyed_terminal("cup"), mac=mac_keys("cup"))
        assert (admitted.batch_number, admitted.open_batch) == (5, 1)

    def test_cup_refund_names_the_originals_date(self) -> None:
        sent = message("cup", "refund", **ORIGINAL_VALUES)
        admitted = admit("cup", sent, known=keyed_terminal("cup"), mac=mac_keys("cup"))
        assert admitted.original_date_mmdd == "0101"

    @pytest.mark.parametrize("field_id", ["74", "76", "86", "88"])
    def test_iso87_settlement_totals_must_be_numeric(self, field_id: str) -> None:
        """F74/F76/F86/F88 carry the terminal's totals; a letter in one is a format error."""
        totals: dict[str, Any] = {"credit_count": 0, "debit_count": 1, "credit_amount": 0, "debit_amount": 1_000}
        sent = message("iso87binary", "settlement", processing_code="920000", **totals)
        bad = edit(sent, {field_id: "1" + sent.fields[field_id][1:-1] + "X"})
        assert refusal("iso87binary", bad, known=terminal()) is Reason.FORMAT_ERROR
        assert refusal("iso87binary", sent, known=terminal()) is None

    def test_operators_table_decides_who_may_void(self) -> None:
        """CUP F63 names the operator; a terminal's operator table may forbid voids to some."""
        values = ORIGINAL_VALUES | {"operator": "002"}
        sent = message("cup", "void", **values)
        forbidding = keyed_terminal("cup", operators={"001": True, "002": False})
        admitted = admit("cup", sent, known=forbidding, mac=mac_keys("cup"))
        assert (admitted.operator, admitted.operator_permitted) == ("002", False)
