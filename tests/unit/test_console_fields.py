"""console/fields.py: messages written by hand in each dialect family, decoded, then shown field by field; what must
never reach a browser (clear PANs, track data, PIN blocks, keys) does not, whatever the field values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_host.cards import mask_pan
from iso_host.console.fields import FieldRow, describe, response_meaning
from iso_host.security import key_check_value, parse_cup_key_block, parse_iso87_key_block
from iso_host.wire import Dialect, Message, decode, load_dialect

DIALECTS: Final = {name: load_dialect(name) for name in ("cup", "iso87ascii", "iso87ascii-dukpt", "iso87bcd",
                                                           "iso87binary")}  # fmt: skip
CUP: Final = DIALECTS["cup"]

CUP_PAN: Final = "6214830000123456789"  # 19 digits: odd, so BCD-padded
CUP_TRACK2: Final = "6214830000123456789D2912101123456789"
ISO_PAN: Final = "4761739001010010"
ISO_TRACK2: Final = "4761739001010010D29122011234567"
# The test keys behind the key blocks below: their check values are the well-known E(key, 0) prefixes.
TMK: Final = bytes.fromhex("11111111111111112222222222222222")
TPK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # KCV 08D7B4FB...
CUP_TAK: Final = bytes.fromhex("0123456789ABCDEF")  # KCV D5D44FF7...
ISO_TAK: Final = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")

# fmt: off
# A CUP chip sale with PIN, from ../shared/CUP.md "Frame", "Field encodings" and "Message identification" (sale:
# 0200, F3 000000, F25 00, 60.1 22); F55 carries the EMV 4.3 Book 2 Table 26 cryptogram data, the PAN (5A) and
# track 2 (57) as chip cards send them.
CUP_SALE: Final = bytes.fromhex(
    "6000030000" "613100000000"  # TPDU 60 0003 0000; header: IC application 61, version 31
    "0200"  # MTI, BCD
    "702004C020C09A11"  # bitmap: 2, 3, 4, 11, 22, 25, 26, 35, 41, 42, 49, 52, 53, 55, 60, 64
    "19" "62148300001234567890"  # F2 LLVAR n..19: 19 digits, padded with 0
    "000000"  # F3 sale
    "000000012345"  # F4 123.45
    "000123"  # F11 STAN
    "0510"  # F22 051 (chip, PIN), left-aligned
    "00"  # F25 normal
    "06"  # F26 PIN capture code: 6 digits
    "36" "6214830000123456789D2912101123456789"  # F35 track 2, D as separator
    "5445524D30303031"  # F41 TERM0001
    "4D45524348414E5430303030303031"  # F42 MERCHANT0000001
    "313536"  # F49 156
    "1A2B3C4D5E6F7081"  # F52 PIN block
    "2600000000000000"  # F53 security control: format 2, double-length key
    "0111"  # F55 LLLVAR: 111 bytes of BER-TLV
    "9F26081122334455667788" "9F270180" "9F100707010103A0A802" "9F37041A2B3C4D" "9F36020012"
    "95050000000000" "9A03250101" "9C0100" "9F0206000000012345" "5F2A020156" "82027C00" "9F1A020156"
    "5A0A6214830000123456789F"  # 5A: the PAN, padded with F
    "5F340101"
    "57126214830000123456789D2912101123456789"  # 57: track 2 equivalent data
    "0013" "22000024000500"  # F60: 60.1 sale 22, 60.2 batch 000024, 60.3 000, 60.4 5, 60.5 0; padded with 0
    "4142434431323334"  # F64 MAC
)
# The host's 0810 to a CUP sign-on asking for double-length keys (CUP.md "Sign-on key block": 60.3 = 003, 40 bytes:
# TPK 16 + KCV 4 + TAK 8 + 8 zero bytes + KCV 4), the keys above wrapped under TMK.
CUP_TPK_WRAPPED: Final = "CB4AB541CD5AD4FC256A882726936A5A"
CUP_TAK_WRAPPED: Final = "CB4AB541CD5AD4FC"
CUP_KEY_BLOCK: Final = CUP_TPK_WRAPPED + "08D7B4FB" + CUP_TAK_WRAPPED + "0000000000000000" + "D5D44FF7"
CUP_SIGNON_RESPONSE: Final = bytes.fromhex(
    "6000000003" "603100000000" "0810"
    "0038000002C00014"  # bitmap: 11, 12, 13, 39, 41, 42, 60, 62
    "000001" "103000" "0101"  # F11, F12 10:30:00, F13 01-01
    "3030"  # F39 00
    "5445524D30303031" "4D45524348414E5430303030303031"  # F41, F42
    "0011" "000000010030"  # F60: 60.1 00, 60.2 000001, 60.3 003
    "0040" + CUP_KEY_BLOCK  # F62 LLLVAR, 40 bytes
)
# The host's 0510 when the domestic totals differ (CUP.md "Settlement": its own totals, result 2 where they differ).
CUP_SETTLEMENT_RESPONSE: Final = bytes.fromhex(
    "6000000003" "603100000000" "0510"
    "0038000002C10010"  # bitmap: 11, 12, 13, 39, 41, 42, 48, 60
    "000007" "170000" "0101" "3030"  # F11, F12, F13, F39 00
    "5445524D30303031" "4D45524348414E5430303030303031"  # F41, F42
    "0062"  # F48: 62 digits
    "000000012345" "001" "000000000000" "000" "2"  # domestic: debits 123.45 x1, no credits, differ
    "000000000000" "000" "000000000000" "000" "1"  # foreign: nothing, agree
    "0011" "000000242010"  # F60: 60.2 batch 000024, 60.3 201
)
# A CUP magstripe batch upload (CUP.md "Batch upload record"): one record, its PAN in clear in F48.
CUP_BATCH_UPLOAD: Final = bytes.fromhex(
    "6000030000" "603100000000" "0320"
    "0020000000C10010"  # bitmap: 11, 41, 42, 48, 60
    "000008" "5445524D30303031" "4D45524348414E5430303030303031"
    "0042" "01" "00" "000123" "06214830000123456789" "000000012345"  # F48: 1 record: domestic, STAN, PAN n20, amount
    "0011" "000000242010"  # F60: 60.3 201
)
# An ISO 8583:1987 chip sale as jPOS's ISO87BPackager packs it (specs/iso87bcd.toml): BCD numerics and LL lengths,
# ASCII alphanumerics, binary F52/F64, F55 raw BER-TLV.
ISO87BCD_SALE: Final = bytes.fromhex(
    "0200" "7024048020C09201"  # MTI; bitmap: 2, 3, 4, 11, 14, 22, 25, 35, 41, 42, 49, 52, 55, 64
    "16" "4761739001010010"  # F2
    "000000" "000000001000" "000042" "2912" "0051" "00"  # F3, F4 10.00, F11, F14, F22 051, F25
    "31" "4761739001010010D291220112345670"  # F35: 31 digits, padded with 0
    "5445524D30303031" "4D45524348414E5430303030303031" "383430"  # F41, F42, F49 840
    "0123456789ABCDEF"  # F52 PIN block
    "0044"  # F55: 44 bytes
    "5A084761739001010010" "9F26080102030405060708" "9F36020001" "57104761739001010010D29122011234567F"
    "89ABCDEF01234567"  # F64 MAC
)
# The 0810 to an ISO 8583:1987 sign-on (F70 001) in the all-ASCII dialect: F48 is the hex of TPK under TMK (16) +
# KCV (3) + TAK under TMK (16) + KCV (3) (specs/iso87ascii.toml [security]).
ISO_TPK_WRAPPED: Final = "CB4AB541CD5AD4FC256A882726936A5A"
ISO_TAK_WRAPPED: Final = "D0D7CB5B1A70AC6A75E0431E2A75B492"
ISO_KEY_BLOCK: Final = ISO_TPK_WRAPPED + "08D7B4" + ISO_TAK_WRAPPED + "EB7A8D"
ISO87ASCII_SIGNON_RESPONSE: Final = bytes.fromhex(
    "30383130"  # MTI 0810
    "38323230303030303032383130303030"  # primary bitmap 8220000002810000: 1, 7, 11, 39, 41, 48
    "30343030303030303030303030303030"  # secondary bitmap 0400000000000000: 70
    "30313031313033303030" "303030303031" "3030"  # F7 0101103000, F11 000001, F39 00
    "5445524D30303031"  # F41 TERM0001
    "303736" + ISO_KEY_BLOCK.encode().hex() +  # F48 LLLVAR: 76 hex characters
    "303031"  # F70 001 sign-on
)
# fmt: on


def walk(rows: tuple[FieldRow, ...]) -> Iterator[FieldRow]:
    for row in rows:
        yield row
        yield from walk(row.parts)


def shown_strings(rows: tuple[FieldRow, ...]) -> list[str]:
    return [text for row in walk(rows) for text in (row.id, row.name, row.value, row.note or "")]


def by_id(rows: tuple[FieldRow, ...]) -> dict[str, FieldRow]:
    return {row.id: row for row in walk(rows)}


def test_the_hand_written_key_blocks_are_genuine() -> None:
    """The check values the console shows are those the keys really have (the blocks unwrap under TMK)."""
    assert key_check_value(TPK, 4).hex().upper() == "08D7B4FB"
    assert key_check_value(CUP_TAK, 4).hex().upper() == "D5D44FF7"
    keys = parse_cup_key_block(TMK, "003", bytes.fromhex(CUP_KEY_BLOCK))
    assert (keys.tpk, keys.tak) == (TPK, CUP_TAK)
    keys = parse_iso87_key_block(TMK, bytes.fromhex(ISO_KEY_BLOCK))
    assert (keys.tpk, keys.tak) == (TPK, ISO_TAK)


def test_a_cup_chip_sale_field_by_field() -> None:
    _, message = decode(CUP_SALE, CUP)
    rows = describe(message, CUP)
    assert [row.id for row in rows] == ["2", "3", "4", "11", "22", "25", "26", "35", "41", "42", "49", "52", "53",
                                        "55", "60", "64"]  # fmt: skip
    shown = by_id(rows)
    assert (shown["2"].name, shown["2"].value, shown["2"].note) == ("Primary Account Number", "621483*********6789",
                                                                    "masked")  # fmt: skip
    assert (shown["4"].name, shown["4"].value) == ("Amount, Transaction", "000000012345")
    assert (shown["35"].value, shown["35"].note) == ("", "[not shown: track data]")
    assert (shown["52"].value, shown["52"].note) == ("", "[not shown: PIN block]")
    assert (shown["53"].value, shown["53"].note) == ("", "[not shown: security data]")
    assert (shown["64"].value, shown["64"].note) == ("4142434431323334", "MAC")
    assert [(p.id, p.name, p.value) for p in shown["60"].parts] == [
        ("60.1", "Type", "22"), ("60.2", "Batch", "000024"), ("60.3", "Network management code", "000"),
        ("60.4", "Sub-field 60.4", "5"), ("60.5", "Sub-field 60.5", "0"),
    ]  # fmt: skip


def test_field_55_is_shown_tag_by_tag_with_the_pan_masked_and_track_2_left_out() -> None:
    _, message = decode(CUP_SALE, CUP)
    chip = by_id(describe(message, CUP))["55"]
    assert (chip.value, chip.note) == ("111 bytes", "EMV TLV")
    tags = {part.id: (part.name, part.value, part.note) for part in chip.parts}
    assert list(tags)[:3] == ["55.9F26", "55.9F27", "55.9F10"]
    assert tags["55.9F26"] == ("Application Cryptogram", "1122334455667788", None)
    assert tags["55.9F36"] == ("Application Transaction Counter", "0012", None)
    assert tags["55.95"] == ("Terminal Verification Results", "0000000000", None)
    assert tags["55.5F34"] == ("PAN Sequence Number", "01", None)
    assert tags["55.5A"] == ("Application PAN", mask_pan(CUP_PAN), "masked")
    assert tags["55.57"] == ("Track 2 Equivalent Data", "", "[not shown: track data]")


def test_nothing_secret_of_a_cup_sale_is_shown() -> None:
    _, message = decode(CUP_SALE, CUP)
    text = repr([row.as_json() for row in describe(message, CUP)])
    for secret in (CUP_PAN, CUP_TRACK2, "2912101123456789", "1A2B3C4D5E6F7081", "2600000000000000"):
        assert secret not in text


def test_a_cup_signon_response_shows_its_key_block_as_check_values() -> None:
    _, message = decode(CUP_SIGNON_RESPONSE, CUP)
    rows = describe(message, CUP)
    key_block = by_id(rows)["62"]
    assert (key_block.name, key_block.value) == ("Reserved Private (sign-on key block)", "")
    assert key_block.note == "[key block, KCV TPK 08D7B4FB, TAK D5D44FF7]"
    text = repr([row.as_json() for row in rows])
    assert CUP_TPK_WRAPPED not in text
    assert CUP_TAK_WRAPPED not in text
    assert [p.value for p in by_id(rows)["60"].parts] == ["00", "000001", "003"]


def test_an_iso87_signon_response_shows_its_f48_key_block_as_check_values() -> None:
    dialect = DIALECTS["iso87ascii"]
    _, message = decode(ISO87ASCII_SIGNON_RESPONSE, dialect)
    rows = describe(message, dialect)
    assert [row.id for row in rows] == ["7", "11", "39", "41", "48", "70"]
    assert (by_id(rows)["48"].value, by_id(rows)["48"].note) == ("", "[key block, KCV TPK 08D7B4, TAK EB7A8D]")
    text = repr([row.as_json() for row in rows])
    assert ISO_TPK_WRAPPED not in text
    assert ISO_TAK_WRAPPED not in text


@pytest.mark.parametrize(
    ("dialect_name", "message", "note"),
    [
        # A network management response the dialect cannot place: its key field may be a key block, so it is one.
        pytest.param("iso87ascii", Message("0810", {"48": "00" * 38}), "[key block, KCV TPK 000000, TAK 000000]",
                     id="iso87-unclassified-0810"),
        pytest.param("iso87bcd", Message("0810", {"48": "not a key block", "70": "161"}), "[key block]",
                     id="iso87-key-change-odd-block"),
        pytest.param("cup", Message("0810", {"60": "00000001001", "62": "AB" * 23}), "[key block]",
                     id="cup-block-of-no-known-length"),
        pytest.param("cup", Message("0810", {"60": "00000001380", "62": "9F0605A000000333"}), "[not shown]",
                     id="cup-ic-parameter-download-f62"),
    ],
)  # fmt: skip
def test_key_fields_never_show_their_bytes(dialect_name: str, message: Message, note: str) -> None:
    dialect = DIALECTS[dialect_name]
    key_field = dialect.security.signon_key_field
    assert key_field is not None
    row = by_id(describe(message, dialect))[key_field]
    assert (row.value, row.note) == ("", note)


def test_a_cup_settlement_response_splits_its_totals() -> None:
    _, message = decode(CUP_SETTLEMENT_RESPONSE, CUP)
    totals = by_id(describe(message, CUP))["48"]
    assert [(p.name, p.value) for p in totals.parts] == [
        ("Domestic debit amount", "123.45"), ("Domestic debit count", "1"), ("Domestic credit amount", "0.00"),
        ("Domestic credit count", "0"), ("Foreign debit amount", "0.00"), ("Foreign debit count", "0"),
        ("Foreign credit amount", "0.00"), ("Foreign credit count", "0"),
    ]  # fmt: skip
    assert totals.parts[0].id == "48.domestic.debit_minor"


def test_a_cup_batch_uploads_records_keep_only_6_and_4_digits_of_each_pan() -> None:
    _, message = decode(CUP_BATCH_UPLOAD, CUP)
    records = by_id(describe(message, CUP))["48"]
    assert CUP_PAN not in records.value
    assert records.value.startswith("0100000123" + "0" + "621483")
    assert records.parts == ()


def test_an_iso87_chip_sale_in_bcd() -> None:
    dialect = DIALECTS["iso87bcd"]
    _, message = decode(ISO87BCD_SALE, dialect)
    rows = describe(message, dialect)
    shown = by_id(rows)
    assert (shown["2"].name, shown["2"].value) == ("Primary Account Number (PAN)", "476173******0010")
    assert (shown["22"].value, shown["41"].value, shown["42"].value) == ("051", "TERM0001", "MERCHANT0000001")
    assert (shown["35"].value, shown["35"].note) == ("", "[not shown: track data]")
    assert (shown["52"].value, shown["52"].note) == ("", "[not shown: PIN block]")
    assert (shown["64"].name, shown["64"].value, shown["64"].note) == ("MAC", "89ABCDEF01234567", "MAC")
    assert [(p.id, p.value, p.note) for p in shown["55"].parts] == [
        ("55.5A", "476173******0010", "masked"), ("55.9F26", "0102030405060708", None), ("55.9F36", "0001", None),
        ("55.57", "", "[not shown: track data]"),
    ]  # fmt: skip
    text = repr([row.as_json() for row in rows])
    for secret in (ISO_PAN, ISO_TRACK2, "0123456789ABCDEF"):
        assert secret not in text


@pytest.mark.parametrize("dialect_name", sorted(DIALECTS))
@pytest.mark.parametrize(
    ("field_id", "note"),
    [("35", "[not shown: track data]"), ("36", "[not shown: track data]"), ("45", "[not shown: track data]"),
     ("52", "[not shown: PIN block]"), ("53", "[not shown: security data]"), ("96", "[not shown: security data]")],
)  # fmt: skip
def test_hidden_fields_in_every_dialect(dialect_name: str, field_id: str, note: str) -> None:
    dialect = DIALECTS[dialect_name]
    value = "4761739001010010=2912201123456789"
    (row,) = describe(Message("0200", {field_id: value}), dialect)
    assert (row.value, row.note) == ("", note)


@pytest.mark.parametrize(
    ("dialect_name", "chip_data", "value", "note"),
    [
        pytest.param("cup", "9F2608AABB", "5 bytes",
                     "malformed EMV TLV: tag 9F26 at byte 2: length 8 runs past the end of the data (2 byte(s) left)",
                     id="truncated"),
        pytest.param("iso87ascii", "5A08476173900101001", "19 characters", "malformed EMV TLV: not hexadecimal",
                     id="odd-hex"),
        pytest.param("iso87bcd", "00", "1 bytes", "malformed EMV TLV: tag 00 at byte 0: byte 00 is padding, not a tag",
                     id="padding"),
    ],
)  # fmt: skip
def test_malformed_chip_data_is_named_not_shown(dialect_name: str, chip_data: str, value: str, note: str) -> None:
    (row,) = describe(Message("0200", {"55": chip_data}), DIALECTS[dialect_name])
    assert (row.value, row.note, row.parts) == (value, note, ())


@pytest.mark.parametrize(
    ("dialect_name", "fields", "expected"),
    [
        pytest.param("cup", {"99": "x"}, [("99", "Field 99", "x", None)], id="undefined-field"),
        pytest.param("iso87ascii", {"43": "\x01SHOP"}, [("43", "Card Acceptor Name/Location", "0153484F50", "hex")],
                     id="non-printable"),
        pytest.param("cup", {"47": "0102"},
                     [("47", "Additional Data, National (kept, not interpreted)", "0102", "hex")], id="binary"),
        pytest.param("cup", {"60": "2200"}, [("60.1", "Type", "22", None), ("60.2", "Batch", "00", "short: 2 of 6")],
                     id="short-sub-fields"),
        pytest.param("cup", {"61": "0000010000020101999"},
                     [("61.1", "Batch", "000001", None), ("61.2", "STAN", "000002", None),
                      ("61.3", "Date", "0101", None),
                      ("61.rest", "Further data (the dialect names no sub-field)", "999", None)],
                     id="sub-fields-and-more"),
        pytest.param("iso87binary", {"2": "12345"}, [("2", "Primary Account Number (PAN)", "*****", "masked")],
                     id="short-pan"),
    ],
)  # fmt: skip
def test_rows_of_odd_fields(dialect_name: str, fields: dict[str, str], expected: list[tuple[str, ...]]) -> None:
    rows = describe(Message("0200", fields), DIALECTS[dialect_name])
    shown = [(row.id, row.name, row.value, row.note) for row in rows]
    leaves = [(p.id, p.name, p.value, p.note) for row in rows for p in row.parts]
    assert (leaves or shown) == expected


def test_a_row_as_json() -> None:
    row = FieldRow("60", "Reserved Private", "22", (FieldRow("60.1", "Type", "22"),), note=None)
    part = {"id": "60.1", "name": "Type", "value": "22", "parts": [], "note": None}
    assert row.as_json() == {"id": "60", "name": "Reserved Private", "value": "22", "parts": [part], "note": None}


@pytest.mark.parametrize(
    ("dialect_name", "code", "meaning"),
    [
        ("cup", "00", "Approved"),  # also OUT_OF_BALANCE's code in CUP: the settlement's F48 says which
        ("cup", "51", "Insufficient funds"),
        ("cup", "A0", "MAC check failed"),
        ("cup", "25", "Original not found, already cancelled, batch closed or void window expired"),
        ("cup", "58", "Terminal disabled or not signed on"),
        ("cup", "63", "DUKPT KSN used again"),
        ("cup", "Z9", "Unknown code Z9"),
        ("cup", None, None),
        ("iso87ascii", "00", "Approved"),
        ("iso87ascii", "63", "MAC check failed or DUKPT KSN used again"),
        ("iso87ascii", "95", "Out of balance"),
        ("iso87ascii", "A0", "Unknown code A0"),
        ("iso87bcd", "12", "Already cancelled, not voidable, batch closed, void window expired, operator not permitted "
                           "or invalid transaction"),
        ("iso87binary", "05", "Cryptogram failed or cryptogram replayed"),
    ],
)  # fmt: skip
def test_response_meaning(dialect_name: str, code: str | None, meaning: str | None) -> None:
    assert response_meaning(code, DIALECTS[dialect_name]) == meaning


PANS: Final = st.text("0123456789", min_size=12, max_size=19)
VALUES: Final = st.text(st.characters(codec="utf-8"), max_size=40) | st.text("0123456789ABCDEF", max_size=40)


@st.composite
def sales(draw: st.DrawFn) -> tuple[Dialect, Message, str, str]:
    """A dialect's sale template with random values, its card in F2, track 2 and F55 tag 5A, sometimes elsewhere too."""
    dialect = DIALECTS[draw(st.sampled_from(sorted(DIALECTS)))]
    pan = draw(PANS)
    track2 = pan + draw(st.sampled_from(["=", "D"])) + draw(st.text("0123456789", min_size=4, max_size=20))
    fields = {field_id: draw(VALUES) for field_id in dialect.templates["sale"].fields}
    padded = pan + "F" * (len(pan) % 2)
    chip = f"5A{len(padded) // 2:02X}{padded}" + draw(st.text("0123456789ABCDEF", max_size=30))
    fields |= {"2": pan, "35": track2, "55": draw(st.sampled_from([chip, chip[:-1], draw(VALUES)]))}
    for field_id in draw(st.lists(st.sampled_from(sorted(dialect.spec)), max_size=4)):
        fields[field_id] = draw(st.sampled_from([pan, track2, f"x{pan}y", draw(VALUES)]))
    for header_id in ("h", "t", "p"):
        fields.pop(header_id, None)
    mti = draw(st.sampled_from(["0200", "0210", "0810", "0500", "0510", "0320"]))
    return dialect, Message(mti, fields), pan, track2


@settings(max_examples=300, deadline=None)
@given(sales())
def test_no_clear_pan_or_track_2_is_ever_shown(sale: tuple[Dialect, Message, str, str]) -> None:
    dialect, message, pan, track2 = sale
    rows = describe(message, dialect)
    assert sorted(row.id for row in rows) == sorted(message.fields)
    for text in shown_strings(rows):
        assert pan not in text
        assert track2 not in text
