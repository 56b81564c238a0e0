"""Issue 14, items 10, 11, 12, 13 and 15, in tables: keys checked against their MAC algorithm before the host starts,
card-less voids under ``void_requires_card``, sessions restored only when their check values match, messages that
show no card data, PIN tries, and the CUP ECB MAC's XOR fold (forgeable) beside X9.19 and AES-CMAC (not)."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from core_tables import (
    DIALECTS,
    NOW,
    PAN,
    TPK,
    admission,
    attempt,
    card_book,
    frame_body,
    message,
    original,
    rules,
    terminal,
    view,
)
from log_audit import remember_secret

from iso_host.config import DEMO_TMK, TerminalConfig
from iso_host.config_checks import Problems
from iso_host.config_keys import mac_key_problems
from iso_host.core.admission import Rejected
from iso_host.core.rules import COMPLETION_VOID_RULES, PREAUTH_VOID_RULES, VOID_RULES, card_presented, first_failing
from iso_host.core.sessions import restore_session
from iso_host.core.terminals import WorkingKeys
from iso_host.core.test_cards import CardBook, TestCard
from iso_host.ledger.model import TerminalRecord
from iso_host.security import aes_cmac, cup_ecb_mac, key_check_value, wrap_key, x9_19_mac
from iso_host.terminal.client import pin_block_field
from iso_host.vocab import Kind, Reason
from iso_host.wire import Message, decode

TAK16 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TAK8, TAK24 = TAK16[:8], TAK16 + TAK16[:8]
OTHER_TMK = bytes.fromhex("1C1C1C1C1C1C1C1C2A2A2A2A2A2A2A2A")
remember_secret(TAK16, TAK24, OTHER_TMK)
TID, MID = "TERM0001", "MERCHANT0000001"


# --- item 10: keys checked against the MAC algorithm at start ---------------------------------------------------------

KEY_ROWS = [
    # dialect, the terminal's keys and algorithm, the key named in the one line (None: no problem)
    pytest.param("iso87binary", {"tak": TAK8.hex()}, "tak", id="8-byte-tak-with-x9.19"),
    pytest.param("iso87binary", {"tak": TAK16.hex()}, None, id="16-byte-tak-with-x9.19"),
    pytest.param("iso87binary", {"tak": TAK24.hex()}, "tak", id="24-byte-tak-with-x9.19"),
    pytest.param("iso87binary", {"tak": TAK8.hex(), "mac": "x9.9"}, None, id="8-byte-tak-with-x9.9"),
    pytest.param("iso87binary", {"tak": TAK8.hex(), "mac": "aes-cmac"}, "tak", id="8-byte-tak-with-aes-cmac"),
    pytest.param("iso87binary", {"tak": TAK24.hex(), "mac": "aes-cmac"}, None, id="24-byte-tak-with-aes-cmac"),
    pytest.param("iso87binary", {"tmk": DEMO_TMK}, None, id="iso87-sign-on-16-byte-tak-x9.19"),
    pytest.param("iso87binary", {"tmk": DEMO_TMK, "mac": "x9.9"}, "tmk", id="iso87-sign-on-16-byte-tak-x9.9"),
    pytest.param("cup", {"tmk": DEMO_TMK}, None, id="cup-sign-on-8-byte-tak-cup-ecb"),
    pytest.param("cup", {"tmk": DEMO_TMK, "mac": "x9.19"}, "tmk", id="cup-sign-on-8-byte-tak-x9.19"),
    pytest.param("cup", {"tak": TAK8.hex()}, None, id="cup-static-8-byte-tak"),
    pytest.param("iso87binary", {"bdk": TAK16.hex()}, None, id="dukpt-x9.19"),
    pytest.param("iso87binary", {"bdk": TAK16.hex(), "mac": "x9.9"}, "bdk", id="dukpt-x9.9"),
    pytest.param("iso87binary", {"bdk": TAK16.hex(), "tak": TAK8.hex()}, None, id="dukpt-macs-with-its-bdk-only"),
]  # fmt: skip


@pytest.mark.parametrize(("dialect_name", "keys", "named"), KEY_ROWS)
def test_key_lengths_against_the_mac_algorithm(dialect_name: str, keys: dict[str, str], named: str | None) -> None:
    """One line per terminal whose key its MAC algorithm does not take, naming the terminal, the key and the
    algorithm and never the key's value."""
    problems = Problems("host.toml")
    mac_key_problems(problems, [TerminalConfig(TID, MID, **keys)], DIALECTS[dialect_name])
    if named is None:
        assert problems.lines == []
        return
    [line] = problems.lines
    algorithm = keys.get("mac") or ("x9.19" if "bdk" in keys else DIALECTS[dialect_name].security.mac_algorithm)
    assert line.startswith(f"host.toml: terminals[0].{named}: terminal {TID}")
    assert f"MAC algorithm {algorithm}" in line
    assert all(value.upper() not in line.upper() for value in keys.values() if len(value) >= 16)


# --- item 11: a void without card data -------------------------------------------------------------------------------

CARD_ROWS = [
    # void_requires_card, the request carries a card, the original has one, passes
    pytest.param(False, False, True, True, id="off-no-card"),
    pytest.param(True, False, True, False, id="on-no-card"),
    pytest.param(True, True, True, True, id="on-with-card"),
    pytest.param(True, False, False, True, id="on-original-without-card"),
]  # fmt: skip


@pytest.mark.parametrize(("required", "carried", "original_card", "passes"), CARD_ROWS)
def test_card_presented(required: bool, carried: bool, original_card: bool, passes: bool) -> None:
    settings = rules(void_requires_card=required)
    sold = original(**({} if original_card else {"card": None}))
    voiding = attempt(**({} if carried else {"pan_hash": None}))
    assert card_presented(voiding, view(sold), NOW, settings) is passes


@pytest.mark.parametrize("table", [VOID_RULES, PREAUTH_VOID_RULES, COMPLETION_VOID_RULES],
                         ids=["void", "preauth_void", "completion_void"])  # fmt: skip
def test_card_less_voids_are_card_mismatch(table: Any) -> None:
    """Every void table holds the rule, in the card-match place: after the refused-attempt limit (a card-less try
    counts, and learns nothing), answering CARD_MISMATCH (14)."""
    kind = {id(VOID_RULES): Kind.SALE, id(PREAUTH_VOID_RULES): Kind.PREAUTH, id(COMPLETION_VOID_RULES): Kind.COMPLETION}
    sold = original(kind=kind[id(table)])
    now = NOW
    checks = [rule.check for rule in table]
    assert checks.index(card_presented) > [rule.reason for rule in table].index(Reason.VOID_LIMIT_EXCEEDED)
    for required, expected in ((False, None), (True, Reason.CARD_MISMATCH)):
        reason = first_failing(table, attempt(pan_hash=None), view(sold), now, rules(void_requires_card=required))
        assert reason is expected


# --- item 12: a stored session checked against its key check values --------------------------------------------------


def stored(tmk: bytes, *, kcv: bool = True, **overrides: Any) -> TerminalRecord:
    """A signed-on terminal's row as sign-on writes it under ``tmk``: TPK and TAK wrapped, with check values."""
    tpk, tak = TPK, TAK16
    values: dict[str, Any] = {"batch_number": 1, "signed_on": True, "tpk_under_tmk": wrap_key(tmk, tpk),
                              "tak_under_tmk": wrap_key(tmk, tak)}  # fmt: skip
    if kcv:
        values |= {"tpk_kcv": key_check_value(tpk), "tak_kcv": key_check_value(tak)}
    return TerminalRecord(**(values | overrides))


DEMO = bytes.fromhex(DEMO_TMK)
SESSION_ROWS = [
    # the configured TMK, the stored row, the reason's words (None: restored)
    pytest.param(DEMO, stored(DEMO), None, id="same-tmk"),
    pytest.param(OTHER_TMK, stored(DEMO), "check value does not match", id="changed-tmk"),
    pytest.param(DEMO, stored(DEMO, kcv=False), "no check value", id="stored-before-v8"),
    pytest.param(DEMO, stored(DEMO, tak_kcv=b"\x00\x00\x00"), "TAK's check value", id="damaged-kcv"),
    pytest.param(None, stored(DEMO), "no TMK", id="tmk-removed"),
    pytest.param(DEMO, TerminalRecord(batch_number=1), None, id="never-signed-on"),
]  # fmt: skip


@pytest.mark.parametrize(("tmk", "row", "words"), SESSION_ROWS)
def test_restore_session(tmk: bytes | None, row: TerminalRecord, words: str | None) -> None:
    keys, dropped = restore_session(tmk, row)
    if words is None:
        assert dropped is None
        assert keys.tak == (TAK16 if row.signed_on else None)
        return
    assert dropped is not None
    assert words in dropped
    assert keys == WorkingKeys()


# --- item 13: no card data in repr; constant-time PINs; PIN tries ----------------------------------------------------


def test_message_repr_shows_no_card_data() -> None:
    track2 = f"{PAN}=25121010000012300000"
    pin_block = pin_block_field(TPK, "1234", PAN, 0)
    remember_secret(track2, pin_block)
    sent = Message("0200", {"2": PAN, "4": "000000001000", "35": track2, "52": pin_block, "41": TID})
    shown = repr(sent)
    for secret in (PAN, track2, pin_block):
        assert secret not in shown
    for shown_part in ("476173******0010", "'35': '[not shown]'", "'52': '[not shown]'", TID):
        assert shown_part in shown
    assert str(sent) == shown
    assert sent.fields["2"] == PAN, "only the display is masked"


def pinned(pin: str, template: str = "sale") -> Message:
    """An iso87binary request for ``PAN`` with F52 holding ``pin`` under ``TPK``."""
    values = {"rrn": "000000000007", "original_stan": 7}
    built = message("iso87binary", template, **values)
    return Message(built.mti, built.fields | {"52": pin_block_field(TPK, pin, PAN, 0)})


def admitted(cards: CardBook, sent: Message, tries: int | None) -> Any:
    """``sent`` framed, decoded and taken through admission with ``cards`` and ``tries``: the Request."""
    dialect = DIALECTS["iso87binary"]
    checks = admission("iso87binary", {TID: terminal(static_keys=WorkingKeys(tpk=TPK))}, cards)
    checks.pin_tries = tries
    _envelope, decoded = decode(frame_body("iso87binary", sent), dialect)
    rule, kind = checks.classify(decoded)
    return checks.request(decoded, rule, kind, checks.terminal(decoded), b"pan-hash-key")


PIN_SEQUENCES = [
    # PINs in order, and what admission makes of each (None: right; a Reason: wrong or blocked)
    pytest.param(["9999", "9999", "9999", "1234"], 3,
                 [Reason.PIN_INCORRECT, Reason.PIN_INCORRECT, Reason.PIN_INCORRECT, Reason.PIN_TRIES_EXCEEDED],
                 id="three-wrong-then-blocked"),
    pytest.param(["9999", "9999", "1234", "9999", "9999", "1234"], 3,
                 [Reason.PIN_INCORRECT, Reason.PIN_INCORRECT, None, Reason.PIN_INCORRECT, Reason.PIN_INCORRECT, None],
                 id="a-right-pin-before-the-limit-starts-again"),
    pytest.param(["9999", "1234", "1234"], 1, [Reason.PIN_INCORRECT, Reason.PIN_TRIES_EXCEEDED,
                                               Reason.PIN_TRIES_EXCEEDED], id="blocked-stays-blocked"),
    pytest.param(["9999"] * 5, None, [Reason.PIN_INCORRECT] * 5, id="no-limit"),
]  # fmt: skip


@pytest.mark.parametrize(("pins", "tries", "answers"), PIN_SEQUENCES)
def test_pin_tries(pins: list[str], tries: int | None, answers: list[Reason | None]) -> None:
    """A sale's wrong or blocked PIN is admitted and declined by its flow (recorded); the book counts across
    requests, and a reload of the cards unblocks."""
    cards = card_book({PAN: TestCard(pin="1234")})
    seen: list[Reason | None] = []
    for pin in pins:
        request = admitted(cards, pinned(pin), tries)
        seen.append(Reason.PIN_TRIES_EXCEEDED if request.pin_blocked else
                    Reason.PIN_INCORRECT if request.pin_incorrect else None)  # fmt: skip
    assert seen == answers
    cards.replace([(PAN, TestCard(pin="1234"))])
    assert not cards.pin_blocked(PAN, tries)


def test_a_blocked_pin_refuses_other_kinds_unrecorded() -> None:
    cards = card_book({PAN: TestCard(pin="1234")})
    cards.note_pin(PAN, right=False)
    with pytest.raises(Rejected) as refused:
        admitted(cards, pinned("1234", "void"), 1)
    assert refused.value.reason is Reason.PIN_TRIES_EXCEEDED
    assert DIALECTS["iso87binary"].response_code("PIN_TRIES_EXCEEDED") == "75"


def test_the_pin_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(left: bytes, right: bytes) -> bool:
        calls.append((left, right))
        return compare(left, right)

    monkeypatch.setattr("iso_host.core.admission.hmac.compare_digest", spy)
    assert not admitted(card_book({PAN: TestCard(pin="1234")}), pinned("1234"), 3).pin_incorrect
    assert len(calls) == 1


# --- item 15: the CUP ECB MAC's XOR fold ----------------------------------------------------------------------------

DATA = bytes(range(64))
FORGERIES = [
    # offset of the first flipped byte, the bit mask (the second flip is the same mask 8 bytes on: the next block)
    pytest.param(3, 0x01, id="one-bit"),
    pytest.param(16, 0xFF, id="a-whole-byte"),
    pytest.param(40, 0x80, id="last-blocks"),
]  # fmt: skip


def flipped(data: bytes, offset: int, mask: int) -> bytes:
    """``data`` with ``mask`` XORed into byte ``offset`` and into byte ``offset + 8``, the same place of the next
    block: the XOR fold of the blocks, all the CUP ECB MAC encrypts, is unchanged."""
    changed = bytearray(data)
    changed[offset] ^= mask
    changed[offset + 8] ^= mask
    return bytes(changed)


@pytest.mark.parametrize(("offset", "mask"), FORGERIES)
def test_the_cup_ecb_mac_is_forgeable_by_matching_flips(offset: int, mask: int) -> None:
    """The algorithm as CUP specifies it: other data, the same MAC. X9.19 and AES-CMAC chain the blocks through the
    cipher, so the same flips change their MACs."""
    forged = flipped(DATA, offset, mask)
    assert forged != DATA
    assert cup_ecb_mac(TAK16, forged) == cup_ecb_mac(TAK16, DATA)
    assert cup_ecb_mac(TAK8, forged) == cup_ecb_mac(TAK8, DATA)
    assert x9_19_mac(TAK16, forged) != x9_19_mac(TAK16, DATA)
    assert aes_cmac(TAK16, forged) != aes_cmac(TAK16, DATA)
