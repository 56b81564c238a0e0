"""The host's cross-checks of field 55 as tables: 5A against the request's PAN, 9F02 against F4, and the ATC of ARQCs
that verified (a replayed cryptogram is declined). Pure: no socket, no ledger. The chip data is the published Visa
CVN 10 vector of ``test_chip_decisions`` (ATC 001C, 9F02 40.00)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import pytest
from core_tables import PAN_HASH_KEY, card_book, context, flow, message, request
from test_chip_decisions import (
    CHIP_AMOUNT,
    CHIP_DIALECTS,
    CHIP_PAN,
    CVN10_TAGS,
    IMK_CARD,
    PUBLISHED_91,
    WRONG_ARQC,
    admit,
    chip,
    chip_sale,
    issuer_data,
    tlv,
)

from iso_host.cards import pan_hash
from iso_host.core.admission import Rejected
from iso_host.core.flows import NO_VIEW, Request
from iso_host.core.test_cards import TestCard
from iso_host.vocab import Kind, Reason
from iso_host.wire import Message

PUBLISHED_ATC: Final = 0x1C
COUNTER_KEY: Final = f"{pan_hash(CHIP_PAN, PAN_HASH_KEY)}:00"  # the keyed PAN hash and the PAN sequence number


def refused(dialect_name: str, sent: Message, cards: dict[str, TestCard] | None = None) -> tuple[Reason, str]:
    with pytest.raises(Rejected) as caught:
        admit(dialect_name, sent, cards)
    return caught.value.reason, caught.value.detail


# (tags changed or added in field 55, F4, the reason, the detail): any card, with or without an IMK.
MISMATCHES = [
    pytest.param({"5A": "1234567890123457"}, CHIP_AMOUNT, Reason.CHIP_PAN_MISMATCH,
                 "field 55: tag 5A at byte 0 (application PAN) is not the PAN of field 2", id="5a-other-pan"),
    pytest.param({"5A": "123456789012345F"}, CHIP_AMOUNT, Reason.CHIP_PAN_MISMATCH,
                 "field 55: tag 5A at byte 0 (application PAN) is not the PAN of field 2", id="5a-shorter-pan"),
    pytest.param({}, 4_001, Reason.INVALID_AMOUNT,
                 "field 55: tag 9F02 at byte 0 (amount, authorised: 4000) is not field 4's 4001", id="9f02-other"),
    pytest.param({"9F02": "0000004000"}, CHIP_AMOUNT, Reason.FORMAT_ERROR,
                 "field 55: tag 9F02 at byte 0: must be 6 bytes, got 5", id="9f02-short"),
    pytest.param({"9F02": "00000000400A"}, CHIP_AMOUNT, Reason.FORMAT_ERROR,
                 "field 55: tag 9F02 at byte 0: must be n12, BCD digits", id="9f02-not-bcd"),
]  # fmt: skip


@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
@pytest.mark.parametrize(("change", "amount", "reason", "detail"), MISMATCHES)
@pytest.mark.parametrize("cards", [None, IMK_CARD], ids=["no-card", "imk-card"])
def test_chip_data_must_agree_with_the_message(dialect_name: str, change: dict[str, str], amount: int, reason: Reason,
                                               detail: str, cards: dict[str, TestCard] | None) -> None:  # fmt: skip
    """5A must be the PAN of F2 (F padding aside) and 9F02 the amount of F4; refused before any flow (nothing is
    recorded), the detail naming the tag, its offset and the field it disagrees with."""
    tags = change | CVN10_TAGS if "5A" in change else CVN10_TAGS | change
    sent = chip_sale(dialect_name, tlv(tags), **{"4": f"{amount:012d}"})
    assert refused(dialect_name, sent, cards) == (reason, detail)


@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
def test_matching_chip_data_is_admitted(dialect_name: str) -> None:
    """5A equal to F2 and 9F02 equal to F4 pass."""
    admitted = admit(dialect_name, chip_sale(dialect_name, tlv({"5A": CHIP_PAN} | CVN10_TAGS)), IMK_CARD)
    assert admitted.chip is not None
    assert admitted.amount_minor == CHIP_AMOUNT


def test_5a_is_checked_against_track_2() -> None:
    """Without F2 the PAN comes from track 2 (F35), and a 5A of another card names F35."""
    sale = chip_sale("cup", tlv({"5A": "1234567890123457"} | CVN10_TAGS))
    fields = {k: v for k, v in sale.fields.items() if k != "2"} | {"35": CHIP_PAN + "D2912201"}
    detail = "field 55: tag 5A at byte 0 (application PAN) is not the PAN of field 35"
    assert refused("cup", Message(sale.mti, fields)) == (Reason.CHIP_PAN_MISMATCH, detail)


def test_an_odd_length_pan_in_5a_is_padded_with_f() -> None:
    """5A is cn: a 15-digit PAN is sent as 8 bytes ending in F, and equals F2's 15 digits."""
    pan = "371449635398431"
    sale = message("iso87binary", "sale", pan=pan, amount=CHIP_AMOUNT)
    sent = Message(sale.mti, {**sale.fields, "55": tlv({"5A": pan + "F"} | CVN10_TAGS)})
    assert admit("iso87binary", sent).chip is not None


def test_9f02_is_checked_for_a_preauth_and_not_for_a_void() -> None:
    """A pre-auth asks the card for money as a sale does; a void's 9F02 (the original's data) is not compared."""
    preauth = message("cup", "preauth", pan=CHIP_PAN, amount=CHIP_AMOUNT + 1)
    sent = Message(preauth.mti, {**preauth.fields, "55": tlv(CVN10_TAGS)})
    assert refused("cup", sent)[0] is Reason.INVALID_AMOUNT
    void = message("cup", "void", pan=CHIP_PAN, rrn="000000000007", original_batch=1, original_stan=7,
                   original_date="0101")
    admitted = admit("cup", Message(void.mti, {**void.fields, "55": tlv(CVN10_TAGS)}))
    assert admitted.kind is Kind.VOID


# ----------------------------------------------------------------------------------------------- the ATC


def test_admission_hands_the_flow_the_cards_highest_atc() -> None:
    """The counter key is the keyed PAN hash and the PAN sequence number; the highest ATC is the card book's."""
    sent = chip_sale("cup", tlv(CVN10_TAGS))
    first = admit("cup", sent, IMK_CARD)
    assert first.chip is not None
    assert (first.chip.counter_key, first.chip.highest_atc) == (COUNTER_KEY, None)
    assert CHIP_PAN not in (first.chip.counter_key or "")
    book = card_book(IMK_CARD)
    book.note_counters(((COUNTER_KEY, 7),))
    assert book.highest_atc(COUNTER_KEY) == 7
    assert book.highest_atc(f"{COUNTER_KEY[:-2]}01") is None, "another PAN sequence number is another card"


def test_no_counter_without_a_key_to_verify_under() -> None:
    """A card without an IMK, or data without an ARQC, has no counter to keep."""
    admitted = admit("cup", chip_sale("cup", tlv(CVN10_TAGS)), {CHIP_PAN: TestCard()})
    assert admitted.chip is not None
    assert (admitted.chip.counter_key, admitted.chip.highest_atc) == (None, None)


def test_the_card_book_keeps_the_highest_counter_across_a_reload() -> None:
    """A counter never goes down; reloading the cards keeps it (the chip went on counting)."""
    book = card_book(IMK_CARD)
    book.note_counters(((COUNTER_KEY, 9), (COUNTER_KEY, 3)))
    book.replace(IMK_CARD.items())
    assert book.highest_atc(COUNTER_KEY) == 9


def counted(highest: int | None, **change: str) -> Request:
    """A sale whose chip data has the counter key and ``highest`` as admission reads it from the card book."""
    return request(chip=replace(chip(**change), counter_key=COUNTER_KEY, highest_atc=highest))


# (highest ATC seen before, field 55 changes, reason, tag 91 in the reply, counters remembered)
ATC_DECISIONS = [
    pytest.param(None, {}, Reason.APPROVED, PUBLISHED_91, ((COUNTER_KEY, PUBLISHED_ATC),), id="first"),
    pytest.param(PUBLISHED_ATC - 1, {}, Reason.APPROVED, PUBLISHED_91, ((COUNTER_KEY, PUBLISHED_ATC),), id="above"),
    pytest.param(PUBLISHED_ATC, {}, Reason.CRYPTOGRAM_REPLAYED, None, (), id="same"),
    pytest.param(PUBLISHED_ATC + 1, {}, Reason.CRYPTOGRAM_REPLAYED, None, (), id="below"),
    pytest.param(PUBLISHED_ATC, {"9F26": WRONG_ARQC}, Reason.CRYPTOGRAM_FAILED, None, (), id="wrong-arqc"),
    pytest.param(None, {"9F27": "40"}, Reason.APPROVED, None, (), id="tc-not-counted"),
]  # fmt: skip


@pytest.mark.parametrize("kind", [Kind.SALE, Kind.PREAUTH])
@pytest.mark.parametrize(("highest", "change", "reason", "expected_91", "counters"), ATC_DECISIONS)
def test_a_replayed_arqc_is_declined(kind: Kind, highest: int | None, change: dict[str, str], reason: Reason,
                                     expected_91: str | None, counters: tuple[Any, ...]) -> None:  # fmt: skip
    """An ARQC that verifies with an ATC not above the card's highest is CRYPTOGRAM_REPLAYED (05), recorded, answered
    without tag 91; an ARQC that verifies and is new is remembered, after the commit, through ``chip_counters``."""
    decision = flow(kind)(replace(counted(highest, **change), kind=kind), NO_VIEW, context(dialect="cup"))
    assert decision.reason is reason
    assert issuer_data(decision.fields) == expected_91
    assert decision.chip_counters == counters
    assert decision.code(context(dialect="cup").dialect) == ("00" if reason is Reason.APPROVED else "05")


def test_a_declined_arqc_that_verified_is_counted() -> None:
    """A lost card's ARQC verifies and is declined 41: its ATC is spent all the same."""
    decision = flow(Kind.SALE)(replace(counted(None), test_card=TestCard(status="lost")), NO_VIEW, context())
    assert decision.reason is Reason.LOST_CARD
    assert decision.chip_counters == ((COUNTER_KEY, PUBLISHED_ATC),)
