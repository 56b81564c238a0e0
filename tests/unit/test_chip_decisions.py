"""The chip path as tables: field 55 in admission (its errors name the tag and the byte offset; 5A and 57 never get
past it; the ICC key is derived there), and the card decision of the sale and pre-auth flows (the ARQC verified,
CRYPTOGRAM_FAILED, the ARPC in the reply's tag 91). Pure: no socket, no ledger.

The cryptograms are pyemv's published Visa CVN 10 and CVN 18 values (github.com/knovichikhin/pyemv,
tests/test_cvn_hsm.py, test_visa_cvn10 and test_visa_cvn18, checked there against an HSM): IMK-AC
0123456789ABCDEFFEDCBA9876543210, PAN 1234567890123456, PAN sequence 00, ATC 001C, the CDOL1 data below; CVN 10's ARQC
29CCA15AE665FA2E and its ARPC 28993816AFAE4AEB for ARC 3030 ("00"); CVN 18's ARQC 7A788EA6B8A3E733 and its ARPC
9AF514C1 for CSU 00000000.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import replace
from typing import Any, Final

import pytest
from core_tables import (
    CARD,
    DIALECTS,
    PAN_HASH_KEY,
    TID,
    admission,
    card_book,
    context,
    flow,
    frame_body,
    keyed_terminal,
    mac_keys,
    message,
    request,
)
from log_audit import remember_secret

from iso_host.core.admission import CHIP_TAGS, Rejected
from iso_host.core.flows import NO_VIEW, Request
from iso_host.core.flows.base import ChipData
from iso_host.core.test_cards import TestCard
from iso_host.ledger.model import RecordTransaction
from iso_host.security import (
    EMV_SCHEMES,
    IccKey,
    TlvItem,
    build_tlv,
    derive_icc_key,
    parse_tlv,
    tag_values,
    verify_arpc,
)
from iso_host.terminal.chip import ISSUER_APPLICATION_DATA, ChipCard, chip_request
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import Message, decode
from iso_host.wire.dialect import parse_dialect, specs_directory

IMK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CHIP_PAN: Final = "1234567890123456"
ICC_KEY: Final = derive_icc_key(IMK, pan=CHIP_PAN, pan_sequence="00", scheme=EMV_SCHEMES["visa-cvn10"])
remember_secret(IMK, CHIP_PAN, ICC_KEY.master_key)
ARQC: Final = "29CCA15AE665FA2E"
PUBLISHED_91: Final = "28993816AFAE4AEB" "3030"  # ARPC || ARC "00"
# CDOL1 data of the published vectors, 9F10 (Visa: length 06, DKI 01, CVN 0A, CVR 03A06010), ARQC, CID.
TERMINAL: Final = {"9F02": "000000004000", "9F03": "000000000000", "9F1A": "0124", "95": "8000048000", "5F2A": "0124",
                   "9A": "191105", "9C": "01", "9F37": "52BF4585", "82": "1800", "9F36": "001C"}  # fmt: skip
CVN10_TAGS: Final = {**TERMINAL, "9F10": "06010A03A06010", "9F26": ARQC, "9F27": "80"}
CHIP_DIALECTS: Final = ("cup", "iso87ascii", "iso87binary")  # field 55: LLLVAR b, ascii hex, b
CHIP_AMOUNT: Final = 4_000  # 9F02 000000004000: F4 must say the same


def tlv(tags: dict[str, str]) -> str:
    """Field 55 as hex: ``tags`` (tag -> hex value) in order."""
    return build_tlv(TlvItem(tag, bytes.fromhex(value)) for tag, value in tags.items()).hex().upper()


def chip_sale(dialect_name: str, f55: str, **fields: str) -> Message:
    """A sale of 40.00 (the published 9F02) of ``CHIP_PAN`` from the dialect's template with field 55 (hex) and
    ``fields``."""
    sale = message(dialect_name, "sale", pan=CHIP_PAN, amount=CHIP_AMOUNT)
    return Message(sale.mti, {**sale.fields, "55": f55, **fields})


def admit(dialect_name: str, sent: Message, cards: dict[str, TestCard] | None = None) -> Request:
    """The message framed and MAC'd as the terminal sends it, decoded and admitted as the pipeline does."""
    body = frame_body(dialect_name, sent, mac_keys(dialect_name))
    dialect = DIALECTS[dialect_name]
    _, decoded = decode(body, dialect)
    known = keyed_terminal(dialect_name)
    checks = admission(dialect_name, {TID: known}, card_book(cards))
    found = checks.terminal(decoded)
    verified = checks.verify_mac(decoded, body[dialect.envelope_bytes :], found)
    rule, kind = checks.classify(decoded)
    checks.authenticate(decoded, rule, found, verified)
    return checks.request(decoded, rule, kind, found, PAN_HASH_KEY)


def refusal(dialect_name: str, sent: Message, cards: dict[str, TestCard] | None = None) -> str:
    with pytest.raises(Rejected) as caught:
        admit(dialect_name, sent, cards)
    assert caught.value.reason is Reason.FORMAT_ERROR
    return caught.value.detail


IMK_CARD: Final = {CHIP_PAN: TestCard(imk=IMK, emv_scheme="visa-cvn10")}

# (field 55 as hex, the detail admission refuses it with): any card, whether or not it has an IMK.
BAD_TLV = [
    pytest.param("9F2608" "29CCA15A", "field 55: tag 9F26 at byte 2: length 8 runs past the end of the data",
                 id="value-short"),
    pytest.param("9F", "field 55: tag 9F at byte 0: tag truncated", id="tag-truncated"),
    pytest.param("9F2681", "field 55: tag 9F26 at byte 2: length truncated", id="length-truncated"),
    pytest.param("9F2684" "00000008", "field 55: tag 9F26 at byte 2: length byte 84 is not an EMV length form",
                 id="length-form"),
    pytest.param("9F3602001C" "9F3602001D", "field 55: tag 9F36 at byte 5: tag appears twice (first at byte 0)",
                 id="tag-twice"),
    pytest.param("9F3602001C" "00", "field 55: tag 00 at byte 5: byte 00 is padding, not a tag", id="padding"),
    pytest.param("7005" "9F3608001C", "field 55: tag 9F36 at byte 4: length 8 runs past the end of template 70",
                 id="in-template"),
]  # fmt: skip


@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
@pytest.mark.parametrize(("f55", "detail"), BAD_TLV)
@pytest.mark.parametrize("cards", [None, IMK_CARD], ids=["no-card", "imk-card"])
def test_bad_tlv_is_a_format_error_naming_tag_and_offset(dialect_name: str, f55: str, detail: str,
                                                         cards: dict[str, TestCard] | None) -> None:  # fmt: skip
    """Whatever the card, field 55 that is not EMV TLV is FORMAT_ERROR, its detail naming F55, the tag, the offset."""
    assert refusal(dialect_name, chip_sale(dialect_name, f55), cards).startswith(detail)


@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
def test_any_kind_with_bad_tlv_is_refused(dialect_name: str) -> None:
    """Field 55 is read whatever the kind: a void carrying bad TLV is refused as well."""
    void = message(dialect_name, "void", rrn="000000000007", original_batch=1, original_stan=7, original_date="0101")
    sent = Message(void.mti, {**void.fields, "55": "9F2608AA"})
    assert refusal(dialect_name, sent).startswith("field 55: tag 9F26 at byte 2: length 8 runs past")


@pytest.mark.parametrize(
    ("f55", "detail"),
    [
        pytest.param("9F3602001G", "field 55: character 9 is not a hex digit", id="not-hex"),
        pytest.param("9F3602 001C", "field 55: character 6 is not a hex digit", id="space"),
        pytest.param("9F3602001", "field 55: 9 hex digits are not whole bytes", id="odd"),
    ],
)
def test_character_field_55_must_be_hex(f55: str, detail: str) -> None:
    """iso87ascii carries field 55 as hex text: anything else is a format error naming the character."""
    assert refusal("iso87ascii", chip_sale("iso87ascii", f55)) == detail


# (change to the published tags, the detail): data that would make the ARQC unverifiable, for a card with an IMK.
BAD_DATA = [
    pytest.param({"9F36": None}, "field 55: tag 9F36: missing", id="no-atc"),
    pytest.param({"9F10": "06010A03A0"}, "field 55: tag 9F10 at byte 59: must be at least 7 bytes for visa-cvn10",
                 id="short-iad"),
    pytest.param({"9F26": "29CCA15A"}, "field 55: tag 9F26 at byte 69: must be 8 bytes, got 4", id="short-arqc"),
    pytest.param({"9F27": "8000"}, "field 55: tag 9F27 at byte 80: must be 1 byte, got 2", id="long-cid"),
]  # fmt: skip


@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
@pytest.mark.parametrize(("change", "detail"), BAD_DATA)
def test_unverifiable_arqc_is_a_format_error(dialect_name: str, change: dict[str, str | None], detail: str) -> None:
    """With an IMK to verify under, a tag the scheme needs that is missing or mis-sized is FORMAT_ERROR (30, not
    recorded), naming the tag and where it starts; without an IMK the same data is not looked at."""
    tags = {tag: value for tag, value in (CVN10_TAGS | change).items() if value is not None}
    sent = chip_sale(dialect_name, tlv(tags))
    assert refusal(dialect_name, sent, IMK_CARD).startswith(detail)
    assert admit(dialect_name, sent).chip is not None


@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
def test_request_keeps_only_the_cryptogram_tags(dialect_name: str) -> None:
    """5A (PAN), 57 (track 2 equivalent) and every other tag stay in admission; the Request holds no card data."""
    track2 = CHIP_PAN + "D2912201"
    sent = chip_sale(dialect_name, tlv({"5A": CHIP_PAN, "57": track2, "5F34": "00", "84": "A000000333010101",
                                        **CVN10_TAGS}))  # fmt: skip
    admitted = admit(dialect_name, sent, IMK_CARD)
    assert admitted.chip is not None
    assert set(admitted.chip.values()) == set(CVN10_TAGS) <= CHIP_TAGS
    assert not {"5A", "57"} & CHIP_TAGS
    assert admitted.chip.icc_key == ICC_KEY
    for text in (repr(admitted), repr(admitted.chip)):
        assert CHIP_PAN not in text
        assert ICC_KEY.master_key.hex() not in text.lower()
        assert ARQC not in text.upper()


# (what the request sends besides field 55, the card's PAN sequence number the key is derived with)
SEQUENCES = [
    pytest.param({}, {}, "00", id="none"),
    pytest.param({"23": "001"}, {}, "01", id="f23"),
    pytest.param({}, {"5F34": "01"}, "01", id="tag-5f34"),
    pytest.param({"23": "002"}, {"5F34": "01"}, "02", id="f23-first"),
]


@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
@pytest.mark.parametrize(("fields", "extra_tags", "sequence"), SEQUENCES)
def test_icc_key_from_the_card_sequence_number(dialect_name: str, fields: dict[str, str],
                                               extra_tags: dict[str, str], sequence: str) -> None:  # fmt: skip
    """F23's last two digits are the PAN sequence number; without F23, tag 5F34; without either, 00."""
    admitted = admit(dialect_name, chip_sale(dialect_name, tlv(CVN10_TAGS | extra_tags), **fields), IMK_CARD)
    expected = derive_icc_key(IMK, pan=CHIP_PAN, pan_sequence=sequence, scheme=EMV_SCHEMES["visa-cvn10"])
    assert admitted.chip is not None
    assert admitted.chip.icc_key == expected


@pytest.mark.parametrize("dialect_name", ["iso87ascii", "iso87binary"])
def test_card_sequence_number_must_be_numeric(dialect_name: str) -> None:
    """F23 is n3."""
    sent = chip_sale(dialect_name, tlv(CVN10_TAGS), **{"23": "0A1"})
    assert refusal(dialect_name, sent, IMK_CARD) == "field 23 (card sequence number) is not numeric"


# (cards, field 55's tags): a Request whose chip has no key, so nothing is verified.
NOTHING_TO_VERIFY = [
    pytest.param(None, CVN10_TAGS, id="no-test-card"),
    pytest.param({CHIP_PAN: TestCard()}, CVN10_TAGS, id="card-without-imk"),
    pytest.param(IMK_CARD, CVN10_TAGS | {"9F27": "40"}, id="tc"),
    pytest.param(IMK_CARD, CVN10_TAGS | {"9F27": "00"}, id="aac"),
    pytest.param(IMK_CARD, {k: v for k, v in CVN10_TAGS.items() if k != "9F26"}, id="no-cryptogram"),
]


@pytest.mark.parametrize(("cards", "tags"), NOTHING_TO_VERIFY)
def test_no_key_when_nothing_is_verified(cards: dict[str, TestCard] | None, tags: dict[str, str]) -> None:
    """The ICC key reaches the flow only for an ARQC of a card with an IMK."""
    admitted = admit("cup", chip_sale("cup", tlv(tags)), cards)
    assert admitted.chip is not None
    assert admitted.chip.icc_key is None


def test_no_chip_without_field_55() -> None:
    assert admit("cup", message("cup", "sale", pan=CHIP_PAN), IMK_CARD).chip is None


# --------------------------------------------------------------------------------------------- the card decision


def chip(tags: dict[str, str] = CVN10_TAGS, key: IccKey | None = ICC_KEY, **change: str) -> ChipData:
    """What admission hands the flow: the tags (with ``change``) and the card's key."""
    values = {tag: bytes.fromhex(value) for tag, value in (tags | change).items()}
    return ChipData(tuple(values.items()), key)


LOST: Final = TestCard(status="lost")
WRONG_ARQC: Final = ARQC[:-1] + "F"
# (request overrides, reason, tag 91 in the reply or None)
DECISIONS = [
    pytest.param({}, Reason.APPROVED, None, id="magstripe"),
    pytest.param({"chip": chip(key=None)}, Reason.APPROVED, None, id="card-without-imk"),
    pytest.param({"chip": chip()}, Reason.APPROVED, PUBLISHED_91, id="arqc-good"),
    pytest.param({"chip": chip(**{"9F27": "80"})}, Reason.APPROVED, PUBLISHED_91, id="cid-arqc"),
    pytest.param({"chip": chip(tags={k: v for k, v in CVN10_TAGS.items() if k != "9F27"})}, Reason.APPROVED,
                 PUBLISHED_91, id="no-cid"),
    pytest.param({"chip": chip(**{"9F26": WRONG_ARQC})}, Reason.CRYPTOGRAM_FAILED, None, id="arqc-wrong"),
    pytest.param({"chip": chip(**{"9F02": "000000004001"})}, Reason.CRYPTOGRAM_FAILED, None, id="amount-changed"),
    pytest.param({"chip": chip(**{"9F26": WRONG_ARQC, "9F27": "40"})}, Reason.APPROVED, None, id="cid-tc"),
    pytest.param({"chip": chip(**{"9F26": WRONG_ARQC, "9F27": "00"})}, Reason.APPROVED, None, id="cid-aac"),
    pytest.param({"chip": chip(), "test_card": LOST}, Reason.LOST_CARD, "ARPC-41", id="arqc-good-card-lost"),
    pytest.param({"chip": chip(**{"9F26": WRONG_ARQC}), "test_card": LOST}, Reason.CRYPTOGRAM_FAILED, None,
                 id="arqc-wrong-card-lost"),
    pytest.param({"chip": chip(**{"9F26": WRONG_ARQC}), "pin_incorrect": True}, Reason.CRYPTOGRAM_FAILED, None,
                 id="arqc-wrong-pin-wrong"),
    pytest.param({"chip": chip(), "pin_incorrect": True}, Reason.PIN_INCORRECT, "ARPC-55", id="arqc-good-pin-wrong"),
]  # fmt: skip


def issuer_data(decision_fields: dict[str, str]) -> str | None:
    """Tag 91 of the reply's field 55, which must hold it alone."""
    if "55" not in decision_fields:
        return None
    items = parse_tlv(bytes.fromhex(decision_fields["55"]))
    assert [item.tag for item in items] == ["91"]
    return items[0].value.hex().upper()


@pytest.mark.parametrize("kind", [Kind.SALE, Kind.PREAUTH])
@pytest.mark.parametrize(("overrides", "reason", "expected_91"), DECISIONS)
@pytest.mark.parametrize("dialect_name", CHIP_DIALECTS)
def test_card_decision(kind: Kind, overrides: dict[str, Any], reason: Reason, expected_91: str | None,
                       dialect_name: str) -> None:  # fmt: skip
    """(request, card) -> reason, recorded with its code, and tag 91 for an ARQC that verified (approved or
    declined): the published ARPC for ARC "00", else an ARPC over the decline's code that the card verifies."""
    ctx = context(dialect=dialect_name)
    decision = flow(kind)(request(kind, **overrides), NO_VIEW, ctx)
    assert decision.reason is reason
    (command,) = decision.commands
    assert isinstance(command, RecordTransaction)
    assert command.transaction.reason is reason
    assert command.transaction.status is (Status.APPROVED if reason is Reason.APPROVED else Status.DECLINED)
    code = ctx.dialect.response_code(reason)
    assert command.transaction.response_code == code
    found = issuer_data(decision.fields)
    if expected_91 is None:
        assert found is None
        return
    assert found is not None
    assert found.endswith(code.encode("ascii").hex().upper())
    if expected_91 == PUBLISHED_91:
        assert found == PUBLISHED_91
    assert verify_arpc(ICC_KEY, overrides["chip"].values(), bytes.fromhex(found))


def test_cryptogram_failed_defaults_to_05_and_a_dialect_may_override_it() -> None:
    """Every built-in dialect answers CRYPTOGRAM_FAILED with 05 without listing it; [reasons] may say otherwise."""
    for name in CHIP_DIALECTS:
        assert DIALECTS[name].response_code("CRYPTOGRAM_FAILED") == "05"
    document = tomllib.loads((specs_directory() / "cup.toml").read_text(encoding="utf-8"))
    changed = copy.deepcopy(document)
    changed["reasons"]["CRYPTOGRAM_FAILED"] = "N7"
    assert parse_dialect("specs/acme.toml", changed).response_code("CRYPTOGRAM_FAILED") == "N7"


def test_method_2_answers_with_a_card_status_update() -> None:
    """Visa CVN 18 (ARPC method 2): tag 91 is the 4-byte ARPC and the CSU; a decline's CSU is zeros, whose ARPC
    pyemv publishes (9AF514C1)."""
    key = derive_icc_key(IMK, pan=CHIP_PAN, pan_sequence="00", scheme=EMV_SCHEMES["visa-cvn18"])
    cvn18 = chip(tags=TERMINAL | {"9F10": "06011203A0B800", "9F26": "7A788EA6B8A3E733"}, key=key)
    declined = flow(Kind.SALE)(request(chip=cvn18, test_card=LOST), NO_VIEW, context())
    assert (declined.reason, issuer_data(declined.fields)) == (Reason.LOST_CARD, "9AF514C1" "00000000")
    approved = flow(Kind.SALE)(request(chip=cvn18), NO_VIEW, context())
    found = issuer_data(approved.fields)
    assert approved.reason is Reason.APPROVED
    assert found is not None
    assert found.endswith("00800000")
    assert verify_arpc(key, cvn18.values(), bytes.fromhex(found))


@pytest.mark.parametrize("scheme", list(EMV_SCHEMES))
def test_terminal_chip_data_verifies_at_the_host(scheme: str) -> None:
    """What `iso-host terminal sale --chip` sends is verified by the host's flow for every scheme, and the ARPC it
    gets back verifies on the terminal's side; 9F10 has its scheme's layout."""
    card = ChipCard.derive(IMK, pan=CHIP_PAN, pan_sequence="01", scheme=scheme)
    sent = chip_request(card, amount_minor=1_000, currency="156", now=context().now, atc=7,
                        unpredictable=bytes.fromhex("01020304"))  # fmt: skip
    assert sent.fields["23"] == "001"
    assert sent.fields["22"] == "051"
    tags = tag_values(parse_tlv(bytes.fromhex(sent.fields["55"])))
    assert tags["9F10"].hex().upper() == ISSUER_APPLICATION_DATA[scheme]
    assert (tags["9F36"], tags["9F27"], tags["9F02"]) == (b"\x00\x07", b"\x80", bytes.fromhex("000000001000"))
    assert not {"5A", "57"} & set(tags)
    chip_data = ChipData(tuple((t, v) for t, v in tags.items() if t in CHIP_TAGS), card.icc_key)
    decision = flow(Kind.SALE)(request(chip=chip_data), NO_VIEW, context())
    found = issuer_data(decision.fields)
    assert decision.reason is Reason.APPROVED
    assert found is not None
    assert verify_arpc(card.icc_key, sent.tags, bytes.fromhex(found))


def test_flow_without_a_chip_is_unchanged() -> None:
    """A sale without field 55 is answered as before: no field 55 in the reply."""
    decision = flow(Kind.SALE)(replace(request(), card=CARD), NO_VIEW, context())
    assert "55" not in decision.fields
