"""Framing: length headers, any segmentation of the stream, bounds and end of stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_host.errors import FrameTooLarge, WireError
from iso_host.wire import LENGTH_HEADERS, NEED_DATA, FrameDecoder, LengthHeader, encode_frame

MAX_FRAME_BYTES = 8_192
BODY = b"0800\x82\x20\x00\x00\x00\x80\x00\x00TERM0001"

HEADER_NAMES = sorted(LENGTH_HEADERS)

# (header name, body length, the header bytes written in front of it)
HEADER_BYTES = [
    pytest.param("ascii4", 0, b"0000", id="ascii4-0"),
    pytest.param("ascii4", 18, b"0018", id="ascii4-18"),
    pytest.param("ascii4", 9_999, b"9999", id="ascii4-max"),
    pytest.param("binary2", 0, b"\x00\x00", id="binary2-0"),
    pytest.param("binary2", 18, b"\x00\x12", id="binary2-18"),
    pytest.param("binary2", 300, b"\x01\x2c", id="binary2-300"),
    pytest.param("binary2", 65_535, b"\xff\xff", id="binary2-max"),
    pytest.param("bcd2", 0, b"\x00\x00", id="bcd2-0"),
    pytest.param("bcd2", 18, b"\x00\x18", id="bcd2-18"),
    pytest.param("bcd2", 300, b"\x03\x00", id="bcd2-300"),
    pytest.param("bcd2", 9_999, b"\x99\x99", id="bcd2-max"),
]

# (header name, a header the decoder must refuse)
BAD_HEADERS = [
    pytest.param("ascii4", b"00x8", id="ascii4-letter"),
    pytest.param("ascii4", b" 018", id="ascii4-space"),
    pytest.param("ascii4", b"-018", id="ascii4-sign"),
    pytest.param("ascii4", b"\x00\x00\x00\x12", id="ascii4-binary"),
    pytest.param("bcd2", b"\x00\x1a", id="bcd2-nibble-a"),
    pytest.param("bcd2", b"\xf0\x18", id="bcd2-nibble-f"),
]


def _decoder(name: str, max_frame_bytes: int = MAX_FRAME_BYTES) -> FrameDecoder:
    return FrameDecoder(LENGTH_HEADERS[name], max_frame_bytes=max_frame_bytes)


def _drain(decoder: FrameDecoder) -> list[bytes]:
    frames: list[bytes] = []
    while (frame := decoder.next_frame()) is not NEED_DATA:
        assert isinstance(frame, bytes)
        frames.append(frame)
    return frames


def _feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list[bytes]:
    """Feed ``stream`` split at ``cuts``, draining frames after every piece, as the edge does."""
    frames: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        piece = stream[start:cut]
        start = cut
        if piece:
            decoder.receive_data(piece)
            frames += _drain(decoder)
    return frames


class TestLengthHeaders:
    """The table of length headers and how each writes and reads a length."""

    def test_table_names_every_header(self) -> None:
        """Exactly ascii4, binary2 and bcd2 are known, each under its own name."""
        assert HEADER_NAMES == ["ascii4", "bcd2", "binary2"]
        assert all(header.name == name for name, header in LENGTH_HEADERS.items())

    @pytest.mark.parametrize(("name", "length", "raw"), HEADER_BYTES)
    def test_write(self, name: str, length: int, raw: bytes) -> None:
        """A length is written as the dialect's terminals expect it."""
        assert LENGTH_HEADERS[name].write(length) == raw

    @pytest.mark.parametrize(("name", "length", "raw"), HEADER_BYTES)
    def test_read(self, name: str, length: int, raw: bytes) -> None:
        """A header is read back as the length it was written from."""
        assert LENGTH_HEADERS[name].read(raw) == length


class TestEncodeFrame:
    """encode_frame puts a length header in front of a body."""

    @pytest.mark.parametrize("name", HEADER_NAMES)
    def test_round_trip(self, name: str) -> None:
        """A framed body decodes back to the same body."""
        decoder = _decoder(name)
        decoder.receive_data(encode_frame(LENGTH_HEADERS[name], BODY))
        assert _drain(decoder) == [BODY]

    @pytest.mark.parametrize(("name", "length", "raw"), [p for p in HEADER_BYTES if p.values[1] < 400])
    def test_known_bytes(self, name: str, length: int, raw: bytes) -> None:
        """The frame is the header bytes followed by the body, unchanged."""
        body = bytes(range(256)) * 2
        assert encode_frame(LENGTH_HEADERS[name], body[:length]) == raw + body[:length]

    @pytest.mark.parametrize(
        ("name", "too_long"),
        [
            pytest.param("ascii4", 10_000, id="ascii4"),
            pytest.param("binary2", 65_536, id="binary2"),
            pytest.param("bcd2", 10_000, id="bcd2"),
        ],
    )
    def test_rejects_body_the_header_cannot_express(self, name: str, too_long: int) -> None:
        """A body longer than the header's maximum is our bug, reported as ValueError."""
        with pytest.raises(ValueError, match=f"frame of {too_long} bytes does not fit a {name} length header"):
            encode_frame(LENGTH_HEADERS[name], bytes(too_long))


@pytest.mark.parametrize("name", HEADER_NAMES)
class TestFrameDecoder:
    """FrameDecoder splits a byte stream into frame bodies, whatever the segmentation."""

    def test_whole_frame(self, name: str) -> None:
        """One frame delivered in one chunk gives one body, then NEED_DATA."""
        decoder = _decoder(name)
        decoder.receive_data(encode_frame(LENGTH_HEADERS[name], BODY))
        assert decoder.next_frame() == BODY
        assert decoder.next_frame() is NEED_DATA
        assert not decoder.in_frame
        assert decoder.buffered_bytes == 0

    def test_one_byte_at_a_time(self, name: str) -> None:
        """A frame fed one byte at a time comes out only once its last byte arrives."""
        decoder = _decoder(name)
        stream = encode_frame(LENGTH_HEADERS[name], BODY)
        for index in range(len(stream) - 1):
            decoder.receive_data(stream[index : index + 1])
            assert decoder.next_frame() is NEED_DATA
            assert decoder.in_frame
        decoder.receive_data(stream[-1:])
        assert decoder.next_frame() == BODY
        assert decoder.next_frame() is NEED_DATA

    def test_many_frames_in_one_chunk(self, name: str) -> None:
        """Several frames that arrive together come out in order."""
        header = LENGTH_HEADERS[name]
        bodies = [BODY, b"x", bytes(300), BODY[::-1]]
        decoder = _decoder(name)
        decoder.receive_data(b"".join(encode_frame(header, body) for body in bodies))
        assert _drain(decoder) == bodies

    def test_frames_with_trailing_partial_data(self, name: str) -> None:
        """Whole frames come out; the start of the next one stays buffered until the rest arrives."""
        header = LENGTH_HEADERS[name]
        next_frame = encode_frame(header, b"next body")
        decoder = _decoder(name)
        decoder.receive_data(encode_frame(header, BODY) * 2 + next_frame[:5])
        assert _drain(decoder) == [BODY, BODY]
        assert decoder.in_frame
        assert decoder.buffered_bytes == 5
        decoder.receive_data(next_frame[5:])
        assert _drain(decoder) == [b"next body"]

    def test_trailing_partial_header(self, name: str) -> None:
        """A single byte of the next header is kept, not misread."""
        header = LENGTH_HEADERS[name]
        decoder = _decoder(name)
        decoder.receive_data(encode_frame(header, BODY) + header.write(len(BODY))[:1])
        assert _drain(decoder) == [BODY]
        assert decoder.buffered_bytes == 1
        decoder.receive_data(header.write(len(BODY))[1:] + BODY)
        assert _drain(decoder) == [BODY]

    def test_keep_alive_frames_are_skipped(self, name: str) -> None:
        """Zero-length frames between and after real ones never come out."""
        header = LENGTH_HEADERS[name]
        keep_alive = encode_frame(header, b"")
        decoder = _decoder(name)
        decoder.receive_data(keep_alive * 3 + encode_frame(header, BODY) + keep_alive + encode_frame(header, b"z"))
        assert _drain(decoder) == [BODY, b"z"]
        decoder.receive_data(keep_alive)
        assert decoder.next_frame() is NEED_DATA
        assert not decoder.in_frame

    def test_frame_of_exactly_max_frame_bytes(self, name: str) -> None:
        """max_frame_bytes is inclusive."""
        decoder = _decoder(name, max_frame_bytes=100)
        decoder.receive_data(encode_frame(LENGTH_HEADERS[name], bytes(100)))
        assert _drain(decoder) == [bytes(100)]

    def test_rejects_oversized_as_soon_as_the_header_arrives(self, name: str) -> None:
        """A header announcing more than max_frame_bytes raises FrameTooLarge before any body byte."""
        decoder = _decoder(name, max_frame_bytes=100)
        decoder.receive_data(LENGTH_HEADERS[name].write(101))
        with pytest.raises(FrameTooLarge, match="more than max_frame_bytes 100") as info:
            decoder.next_frame()
        assert (info.value.field, info.value.offset) == ("length", 0)

    def test_rejects_oversized_after_good_frames(self, name: str) -> None:
        """Frames before an oversized header still come out first."""
        header = LENGTH_HEADERS[name]
        decoder = _decoder(name, max_frame_bytes=100)
        decoder.receive_data(encode_frame(header, b"ok") + header.write(9_999))
        assert decoder.next_frame() == b"ok"
        with pytest.raises(FrameTooLarge) as info:
            decoder.next_frame()
        assert (info.value.field, info.value.offset) == ("length", 0)

    def test_eof_between_frames(self, name: str) -> None:
        """The peer closing after whole frames is a clean end."""
        decoder = _decoder(name)
        decoder.receive_data(encode_frame(LENGTH_HEADERS[name], BODY))
        decoder.receive_data(b"")
        assert _drain(decoder) == [BODY]
        assert decoder.next_frame() is NEED_DATA

    def test_eof_on_empty_stream(self, name: str) -> None:
        """The peer closing before sending anything is a clean end."""
        decoder = _decoder(name)
        decoder.receive_data(b"")
        assert decoder.next_frame() is NEED_DATA

    @pytest.mark.parametrize("past_header", [-1, 0, 3], ids=["in-header", "after-header", "in-body"])
    def test_eof_inside_a_frame(self, name: str, past_header: int) -> None:
        """The peer closing part-way through a header or a body raises WireError."""
        header = LENGTH_HEADERS[name]
        cut = header.size_bytes + past_header
        decoder = _decoder(name)
        decoder.receive_data(encode_frame(header, b"ok") + encode_frame(header, BODY)[:cut])
        decoder.receive_data(b"")
        assert decoder.next_frame() == b"ok"
        with pytest.raises(WireError, match="connection closed") as info:
            decoder.next_frame()
        assert type(info.value) is WireError
        assert (info.value.field, info.value.offset) == ("length", 0)


class TestFrameDecoderBadHeaders:
    """Headers that are not lengths in the configured encoding."""

    @pytest.mark.parametrize(("name", "raw"), BAD_HEADERS)
    def test_rejects_unreadable_header(self, name: str, raw: bytes) -> None:
        """A header that is not digits (ascii4) or not BCD (bcd2) raises WireError naming the length."""
        decoder = _decoder(name)
        decoder.receive_data(raw + BODY)
        with pytest.raises(WireError, match=f"{name} length header is not") as info:
            decoder.next_frame()
        assert type(info.value) is WireError
        assert (info.value.field, info.value.offset) == ("length", 0)

    def test_binary2_reads_any_two_bytes(self) -> None:
        """Every binary2 header is a length; only the bound can refuse it."""
        decoder = _decoder("binary2", max_frame_bytes=65_535)
        decoder.receive_data(b"\xff\xfe")
        assert decoder.next_frame() is NEED_DATA


@st.composite
def _bodies_and_cuts(draw: st.DrawFn) -> tuple[str, list[bytes], list[int]]:
    name = draw(st.sampled_from(HEADER_NAMES))
    bodies = draw(st.lists(st.binary(max_size=300), max_size=12))
    stream_length = sum(LENGTH_HEADERS[name].size_bytes + len(body) for body in bodies)
    cuts = draw(st.lists(st.integers(0, stream_length), max_size=20))
    return name, bodies, cuts


class TestFrameDecoderProperties:
    """Properties over random bodies and random segmentations."""

    @settings(max_examples=300, deadline=None)
    @given(_bodies_and_cuts())
    def test_any_segmentation_gives_the_same_bodies(self, case: tuple[str, list[bytes], list[int]]) -> None:
        """Concatenated frames, split anywhere, decode to the bodies in order, keep-alives dropped."""
        name, bodies, cuts = case
        header: LengthHeader = LENGTH_HEADERS[name]
        stream = b"".join(encode_frame(header, body) for body in bodies)
        decoder = _decoder(name)
        assert _feed_in_pieces(decoder, stream, cuts) == [body for body in bodies if body]
        assert not decoder.in_frame
        decoder.receive_data(b"")
        assert decoder.next_frame() is NEED_DATA
