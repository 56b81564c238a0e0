"""Codec: known bytes in both directions, decode errors that name the field and offset, and fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_host.errors import PeerError
from iso_host.wire import (
    NEED_DATA,
    Dialect,
    Envelope,
    FrameDecoder,
    Message,
    WireDecodeError,
    builtin_dialect_names,
    decode,
    encode,
    encode_frame,
    load_dialect,
    reply_mti,
)

DIALECTS: dict[str, Dialect] = {name: load_dialect(name) for name in builtin_dialect_names()}
DIALECT_NAMES = sorted(DIALECTS)

TPDU = bytes.fromhex("6000030000")  # 60, destination NII 0003, source NII 0000
CUP_HEADER = bytes.fromhex("603100000000")
CUP_ENVELOPE = Envelope(TPDU, CUP_HEADER)
NO_ENVELOPE = Envelope()
CUP_PREFIX = bytes(CUP_ENVELOPE)  # 11 bytes: every cup offset below counts them
PAN = "4761739001010010"

SALE_VALUES: dict[str, Any] = {
    "pan": PAN, "amount": 1234, "stan": 42, "tid": "TERM0001", "mid": "MERCHANT0000001",
    "currency": "156", "batch": 1, "expiry": "2912", "now": datetime(2025, 1, 1, 12, 30, 5, tzinfo=UTC),
}  # fmt: skip


def _envelope(dialect: Dialect) -> Envelope:
    return CUP_ENVELOPE if dialect.tpdu else NO_ENVELOPE


def _sample_sale(name: str) -> tuple[Envelope, Message, bytes]:
    dialect = DIALECTS[name]
    message = dialect.render("sale", SALE_VALUES)
    return _envelope(dialect), message, encode(message, _envelope(dialect), dialect)


ISO87_SALE = Message("0200", {"2": PAN, "3": "000000", "4": "000000001234", "11": "000001", "41": "TERM0001"})
# Fields 2, 3, 4, 11, 41: bitmap bytes 70 20 00 00 00 80 00 00; F2 is LLVAR, so "16" precedes it.
ISO87_SALE_FIELDS = b"16" + PAN.encode() + b"000000" + b"000000001234" + b"000001" + b"TERM0001"
ISO87_ECHO = Message("0800", {"7": "0101123005", "11": "000002", "41": "TERM0001", "70": "301"})
# Fields 1 (secondary bitmap present), 7, 11, 41 and 70: primary 82 20 00 00 00 80 00 00,
# secondary 04 00 00 00 00 00 00 00 (field 70 is the sixth bit of the secondary bitmap).
ISO87_ECHO_FIELDS = b"0101123005" + b"000002" + b"TERM0001" + b"301"

CUP_SALE = Message(
    "0200",
    {
        "2": "6212345678901234567", "3": "000000", "4": "000000001234", "11": "000042", "22": "021",
        "25": "00", "41": "TERM0001", "42": "MERCHANT0000001", "49": "156", "60": "22000001000",
    },
)  # fmt: skip
CUP_SALE_RAW = CUP_PREFIX + bytes.fromhex(
    "0200"  # MTI, BCD
    "7020048000C08010"  # bitmap: 2 3 4 | 11 | 22 | 25 | - | 41 42 | 49 | 60
    "19 62123456789012345670"  # F2: BCD length 19 digits, 19 digits right-padded with 0 to 10 bytes
    "000000"  # F3, 6 digits in 3 bytes
    "000000001234"  # F4, 12 digits in 6 bytes
    "000042"  # F11
    "0210"  # F22 "021" left-aligned, right-padded with 0
    "00"  # F25
    "5445524D30303031"  # F41 "TERM0001", ASCII
    "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001", ASCII
    "313536"  # F49 "156", ASCII
    "0011 220000010000"  # F60: BCD LLL length 11 digits, then 11 digits right-padded to 6 bytes
)
CUP_ECHO = Message("0820", {"11": "000001", "41": "TERM0001", "42": "MERCHANT0000001", "60": "00000001301"})
CUP_ECHO_RAW = CUP_PREFIX + bytes.fromhex(
    "0820 0020000000C00010 000001 5445524D30303031 4D45524348414E5430303030303031 0011 000000013010"
)

# (dialect, envelope, message, raw frame body, last field: the one trailing data is blamed on)
KNOWN = [
    pytest.param(
        "iso87ascii", NO_ENVELOPE, ISO87_SALE, b"0200" + b"7020000000800000" + ISO87_SALE_FIELDS, "41",
        id="iso87ascii-0200",
    ),
    pytest.param(
        "iso87ascii", NO_ENVELOPE, ISO87_ECHO,
        b"0800" + b"8220000000800000" + b"0400000000000000" + ISO87_ECHO_FIELDS, "70",
        id="iso87ascii-0800-secondary-bitmap",
    ),
    pytest.param(
        "iso87binary", NO_ENVELOPE, ISO87_SALE, b"0200" + bytes.fromhex("7020000000800000") + ISO87_SALE_FIELDS, "41",
        id="iso87binary-0200",
    ),
    pytest.param(
        "iso87binary", NO_ENVELOPE, ISO87_ECHO,
        b"0800" + bytes.fromhex("8220000000800000" "0400000000000000") + ISO87_ECHO_FIELDS, "70",
        id="iso87binary-0800-secondary-bitmap",
    ),
    pytest.param("cup", CUP_ENVELOPE, CUP_SALE, CUP_SALE_RAW, "60", id="cup-0200-odd-pan"),
    pytest.param("cup", CUP_ENVELOPE, CUP_ECHO, CUP_ECHO_RAW, "60", id="cup-0820"),
]  # fmt: skip


def _iso87(bitmap_hex: bytes, fields: bytes = b"", *, binary: bool = False) -> bytes:
    bitmap = bytes.fromhex(bitmap_hex.decode()) if binary else bitmap_hex
    return b"0200" + bitmap + fields


def _cup(mti_and_rest: str) -> bytes:
    return CUP_PREFIX + bytes.fromhex(mti_and_rest)


# (dialect, raw frame body, field, offset). Offsets count from the first byte after the length header.
BAD_FRAMES = [
    pytest.param("iso87ascii", b"", "t", 0, id="ascii-empty"),
    pytest.param("iso87ascii", b"02", "t", 0, id="ascii-mti-truncated"),
    pytest.param("iso87ascii", b"0200" + b"Z" * 16, "p", 4, id="ascii-bitmap-not-hex"),
    pytest.param("iso87ascii", b"0200" + b"7020", "p", 4, id="ascii-bitmap-truncated"),
    pytest.param("iso87ascii", _iso87(b"2000000000000000", b"000"), "3", 20, id="ascii-field-truncated"),
    pytest.param(
        "iso87ascii", _iso87(b"6000000000000000", b"16" + PAN.encode() + b"000"), "3", 38,
        id="ascii-field-truncated-after-pan",
    ),
    pytest.param("iso87ascii", _iso87(b"4000000000000000", b"1X" + PAN.encode()), "2", 20, id="ascii-ll-not-digits"),
    pytest.param("iso87ascii", _iso87(b"4000000000000000", b"20" + b"0" * 20), "2", 20, id="ascii-ll-over-max"),
    pytest.param("iso87ascii", _iso87(b"4000000000000000", b"16" + b"4761"), "2", 22, id="ascii-llvar-truncated"),
    pytest.param("iso87ascii", _iso87(b"2000000000000000", b"0000001"), "3", 26, id="ascii-extra-bytes"),
    pytest.param("iso87binary", b"020", "t", 0, id="binary-mti-truncated"),
    pytest.param("iso87binary", b"0200\x20\x00", "p", 4, id="binary-bitmap-truncated"),
    pytest.param(
        "iso87binary", _iso87(b"2000000000000000", b"\xff" * 6, binary=True), "3", 12, id="binary-field-not-ascii"
    ),
    pytest.param(
        "iso87binary", _iso87(b"2000000000000000", b"0000", binary=True), "3", 12, id="binary-field-truncated"
    ),
    pytest.param(
        "iso87binary", _iso87(b"2000000000000000", b"000000+", binary=True), "3", 18, id="binary-extra-bytes"
    ),
    pytest.param("cup", b"", "header", 0, id="cup-empty"),
    pytest.param("cup", CUP_PREFIX[:3], "header", 3, id="cup-shorter-than-tpdu"),
    pytest.param("cup", CUP_PREFIX[:10], "header", 10, id="cup-shorter-than-header"),
    pytest.param("cup", CUP_PREFIX, "t", 11, id="cup-no-mti"),
    pytest.param("cup", _cup("02"), "t", 11, id="cup-mti-truncated"),
    pytest.param("cup", _cup("0200 2000"), "p", 13, id="cup-bitmap-truncated"),
    pytest.param("cup", _cup("0200 8000000000000000"), "p", 13, id="cup-bit-1-undefined"),
    pytest.param("cup", _cup("0200 0800000000000000"), "p", 13, id="cup-field-5-undefined"),
    pytest.param("cup", _cup("0200 6800000000000000 16" + PAN + "000000"), "p", 13, id="cup-field-5-after-2-3"),
    pytest.param("cup", _cup("0200 2000000000000000 0000"), "3", 21, id="cup-field-truncated"),
    pytest.param("cup", _cup("0200 4000000000000000 20" + "00" * 10), "2", 21, id="cup-ll-over-max"),
    pytest.param("cup", _cup("0200 4000000000000000 1A" + PAN), "2", 21, id="cup-ll-not-bcd"),
    pytest.param("cup", _cup("0200 2000000000000000 000000 00"), "3", 24, id="cup-extra-bytes"),
    pytest.param(
        # pyiso8583 blames a short value on the byte where the value starts, after its length prefix.
        "cup", _cup("0200 2000000000000010 000000 0011 2200"), "60", 26, id="cup-lllvar-truncated"
    ),
]  # fmt: skip

# (dialect, raw frame body, the partial message the error must carry)
PARTIALS = [
    pytest.param("iso87ascii", b"02", None, id="mti-unread"),
    pytest.param("iso87ascii", b"0200" + b"Z" * 16, Message("0200"), id="mti-only"),
    pytest.param(
        "iso87ascii", _iso87(b"6000000000000000", b"16" + PAN.encode() + b"000"), Message("0200", {"2": PAN}),
        id="earlier-fields-kept-failed-field-dropped",
    ),
    pytest.param("cup", CUP_PREFIX[:3], None, id="cup-no-envelope"),
    pytest.param("cup", _cup("0A00 4000000000000000"), None, id="cup-mti-not-digits"),
    pytest.param(
        "cup", _cup("0200 6000000000000000 16" + PAN + "0000"), Message("0200", {"2": PAN}),
        id="cup-earlier-fields-kept",
    ),
    pytest.param(
        "iso87ascii", _iso87(b"2000000000000000", b"0000001"), Message("0200", {"3": "000000"}),
        id="extra-bytes-keep-last-field",
    ),
    pytest.param(
        "cup", _cup("0200 0800000000000000"), Message("0200"),
        id="cup-undefined-field-keeps-mti",
    ),
]  # fmt: skip


class TestSampleSale:
    """Each dialect's own sale template survives a round trip."""

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_round_trip(self, name: str) -> None:
        """A sale rendered from the dialect's template encodes then decodes to the same message and envelope."""
        envelope, message, raw = _sample_sale(name)
        assert decode(raw, DIALECTS[name]) == (envelope, message)

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_template_fields(self, name: str) -> None:
        """The template fills in the values it was given."""
        _, message, _ = _sample_sale(name)
        assert message.mti == "0200"
        assert (message.get("2"), message.get("4"), message.get("11")) == (PAN, "000000001234", "000042")

    def test_cup_envelope_is_the_first_eleven_bytes(self) -> None:
        """The cup TPDU and header are written verbatim in front of the BCD MTI."""
        _, _, raw = _sample_sale("cup")
        assert raw[:11] == TPDU + CUP_HEADER
        assert raw[11:13] == b"\x02\x00"


class TestKnownBytes:
    """Hand-checked frames, in both directions, whole, byte by byte and with trailing data."""

    @pytest.mark.parametrize(("name", "envelope", "message", "raw", "last_field"), KNOWN)
    def test_encode(self, name: str, envelope: Envelope, message: Message, raw: bytes, last_field: str) -> None:
        """The message encodes to exactly the known bytes."""
        assert encode(message, envelope, DIALECTS[name]) == raw

    @pytest.mark.parametrize(("name", "envelope", "message", "raw", "last_field"), KNOWN)
    def test_decode(self, name: str, envelope: Envelope, message: Message, raw: bytes, last_field: str) -> None:
        """The known bytes decode to exactly the message and its envelope."""
        assert decode(raw, DIALECTS[name]) == (envelope, message)

    @pytest.mark.parametrize(("name", "envelope", "message", "raw", "last_field"), KNOWN)
    def test_decode_one_byte_at_a_time(
        self, name: str, envelope: Envelope, message: Message, raw: bytes, last_field: str
    ) -> None:
        """Framed with the dialect's length header and fed byte by byte, the frame decodes to the message."""
        dialect = DIALECTS[name]
        decoder = FrameDecoder(dialect.length_header, max_frame_bytes=8_192)
        frames = []
        for byte in encode_frame(dialect.length_header, raw):
            decoder.receive_data(bytes([byte]))
            while (frame := decoder.next_frame()) is not NEED_DATA:
                assert isinstance(frame, bytes)
                frames.append(frame)
        assert [decode(frame, dialect) for frame in frames] == [(envelope, message)]

    @pytest.mark.parametrize(("name", "envelope", "message", "raw", "last_field"), KNOWN)
    def test_trailing_data_is_refused(
        self, name: str, envelope: Envelope, message: Message, raw: bytes, last_field: str
    ) -> None:
        """One byte after the last field is a format error at the byte where the extra data starts."""
        with pytest.raises(WireDecodeError, match="Extra data after last field") as info:
            decode(raw + b"0", DIALECTS[name])
        assert (info.value.field, info.value.offset) == (last_field, len(raw))
        assert info.value.envelope == envelope


class TestDecodeErrors:
    """WireDecodeError names the field and offset, keeps the envelope, and carries what was read."""

    @pytest.mark.parametrize(("name", "raw", "field", "offset"), BAD_FRAMES)
    def test_decode_error_names_field_and_offset(self, name: str, raw: bytes, field: str, offset: int) -> None:
        """A malformed message is rejected with the field and byte offset that broke it."""
        with pytest.raises(WireDecodeError) as info:
            decode(raw, DIALECTS[name])
        error = info.value
        assert type(error) is WireDecodeError
        assert (error.field, error.offset) == (field, offset)
        assert str(error) == f"field {field} at byte {offset}: {error.reason}"

    @pytest.mark.parametrize(("name", "raw", "field", "offset"), BAD_FRAMES)
    def test_error_is_a_peer_error(self, name: str, raw: bytes, field: str, offset: int) -> None:
        """Every decode error is the peer's fault (the pipeline answers FORMAT_ERROR where it can)."""
        with pytest.raises(PeerError):
            decode(raw, DIALECTS[name])

    @pytest.mark.parametrize(
        ("raw", "envelope"),
        [
            pytest.param(CUP_PREFIX[:10], NO_ENVELOPE, id="too-short-for-envelope"),
            pytest.param(_cup("02"), CUP_ENVELOPE, id="mti-truncated"),
            pytest.param(_cup("0200 0800000000000000"), CUP_ENVELOPE, id="undefined-field"),
            pytest.param(_cup("0200 2000000000000000 0000"), CUP_ENVELOPE, id="field-truncated"),
        ],
    )
    def test_cup_error_keeps_the_envelope(self, raw: bytes, envelope: Envelope) -> None:
        """The TPDU and header ride on the error, so a FORMAT_ERROR reply can be addressed."""
        with pytest.raises(WireDecodeError) as info:
            decode(raw, DIALECTS["cup"])
        assert info.value.envelope == envelope

    @pytest.mark.parametrize(("name", "raw", "partial"), PARTIALS)
    def test_partial_holds_mti_and_earlier_fields(self, name: str, raw: bytes, partial: Message | None) -> None:
        """Once the MTI is read, partial holds it and every field decoded before the failure; else None."""
        with pytest.raises(WireDecodeError) as info:
            decode(raw, DIALECTS[name])
        assert info.value.partial == partial

    def test_error_text_holds_no_card_data(self) -> None:
        """The message names the field, never the PAN that was being decoded."""
        with pytest.raises(WireDecodeError) as info:
            decode(_iso87(b"6000000000000000", b"16" + PAN.encode() + b"000"), DIALECTS["iso87ascii"])
        assert PAN not in str(info.value)
        assert PAN not in repr(info.value.args)


class TestEncode:
    """encode derives the bitmap and refuses values the dialect cannot carry."""

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_rejects_value_too_long(self, name: str) -> None:
        """A value over max_len is our bug, reported as ValueError naming the MTI and the field."""
        message = Message("0210", {"39": "000"})
        with pytest.raises(ValueError, match="cannot encode 0210 field 39"):
            encode(message, _envelope(DIALECTS[name]), DIALECTS[name])

    def test_rejects_field_the_dialect_does_not_define(self) -> None:
        """cup has no field 5, so asking for it is a ValueError, not a KeyError."""
        with pytest.raises(ValueError, match="field 5"):
            encode(Message("0200", {"5": "000000000001"}), CUP_ENVELOPE, DIALECTS["cup"])


class TestEnvelope:
    """The TPDU and header between the length header and the MTI."""

    def test_reply_swaps_tpdu_niis(self) -> None:
        """A reply's TPDU swaps destination and source: 6000030000 becomes 6000000003."""
        reply = CUP_ENVELOPE.reply()
        assert reply.tpdu == bytes.fromhex("6000000003")
        assert reply.header == CUP_HEADER

    def test_reply_of_reply_is_the_original(self) -> None:
        """Swapping twice gives the request's envelope back."""
        assert CUP_ENVELOPE.reply().reply() == CUP_ENVELOPE

    def test_empty_envelope_reply_is_empty(self) -> None:
        """Dialects without a TPDU reply with no envelope."""
        assert NO_ENVELOPE.reply() == NO_ENVELOPE
        assert bytes(NO_ENVELOPE) == b""

    def test_bytes_are_tpdu_then_header(self) -> None:
        """The envelope is written TPDU first."""
        assert bytes(CUP_ENVELOPE) == bytes.fromhex("6000030000603100000000")


class TestReplyMti:
    """reply_mti gives the response MTI of a request."""

    @pytest.mark.parametrize(
        ("request_mti", "response_mti"),
        [
            pytest.param("0100", "0110", id="authorization"),
            pytest.param("0200", "0210", id="financial"),
            pytest.param("0220", "0230", id="advice"),
            pytest.param("0320", "0330", id="batch-upload"),
            pytest.param("0400", "0410", id="reversal"),
            pytest.param("0500", "0510", id="settlement"),
            pytest.param("0800", "0810", id="network"),
            pytest.param("0820", "0830", id="network-advice"),
            pytest.param("0401", "0411", id="repeat-keeps-origin"),
        ],
    )
    def test_reply_mti(self, request_mti: str, response_mti: str) -> None:
        """The message function digit goes from request to response; class and origin are kept."""
        assert reply_mti(request_mti) == response_mti


# --- Fuzzing: decode raises WireDecodeError or succeeds, never anything else. ----------------------------

_SAMPLES = {name: _sample_sale(name)[2] for name in DIALECT_NAMES}
_MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 1 << 16), st.integers(0, 255))


def _mutate(raw: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(raw)
    for operation, position, value in mutations:
        if operation == "insert":
            data.insert(position % (len(data) + 1), value)
        elif data:
            index = position % len(data)
            if operation == "flip":
                data[index] ^= value or 0x01
            else:
                del data[index]
    return bytes(data)


@st.composite
def _frames(draw: st.DrawFn, name: str) -> bytes:
    """Random bytes, a mutated valid sale, or a valid start with a random bitmap and random fields."""
    dialect = DIALECTS[name]
    choice = draw(st.sampled_from(["random", "mutated", "random-bitmap"]))
    if choice == "random":
        return draw(st.binary(max_size=120))
    if choice == "mutated":
        return _mutate(_SAMPLES[name], draw(st.lists(_MUTATION, min_size=1, max_size=6)))
    bitmap = draw(st.binary(min_size=8, max_size=8))
    if dialect.spec["p"]["data_enc"] != "b":
        bitmap = bitmap.hex().upper().encode()
    mti = b"\x02\x00" if dialect.spec["t"]["data_enc"] == "b" else b"0200"
    return bytes(_envelope(dialect)) + mti + bitmap + draw(st.binary(max_size=120))


def _decode_error(frame: bytes, dialect: Dialect) -> WireDecodeError | None:
    """The WireDecodeError decode raised, or None; any other exception escapes and fails the test."""
    try:
        envelope, message = decode(frame, dialect)
    except WireDecodeError as error:
        return error
    assert isinstance(envelope, Envelope)
    assert isinstance(message, Message)
    return None


class TestDecodeProperties:
    """Properties that hold for any input."""

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    @settings(max_examples=300, deadline=None)
    @given(data=st.data())
    def test_decode_raises_only_wire_decode_error(self, name: str, data: st.DataObject) -> None:
        """Any bytes either decode or raise WireDecodeError with a sane field, offset and partial."""
        frame = data.draw(_frames(name))
        error = _decode_error(frame, DIALECTS[name])
        if error is not None:
            assert 0 <= error.offset <= len(frame)
            assert error.field
            assert error.partial is None or (len(error.partial.mti) == 4 and error.partial.mti.isdigit())
            assert PAN not in str(error)

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    @settings(max_examples=200, deadline=None)
    @given(
        pan=st.text("0123456789", min_size=12, max_size=19),
        amount=st.integers(0, 10**12 - 1),
        stan=st.integers(0, 999_999),
        batch=st.integers(0, 999_999),
        tid=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=8),
    )
    def test_rendered_sale_round_trips(self, name: str, pan: str, amount: int, stan: int, batch: int, tid: str) -> None:
        """Any sale the template can render decodes back to itself, odd-length BCD values included."""
        dialect = DIALECTS[name]
        values = {**SALE_VALUES, "pan": pan, "amount": amount, "stan": stan, "batch": batch, "tid": tid}
        message = dialect.render("sale", values)
        assert decode(encode(message, _envelope(dialect), dialect), dialect) == (_envelope(dialect), message)
