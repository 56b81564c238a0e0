"""Framing: length headers around ISO 8583 messages. Nothing here awaits, and every buffer has a bound.

Shaped like h11: the edge feeds bytes with ``receive_data`` and drains whole frames with
``next_frame`` until it returns ``NEED_DATA``. A frame is the message body after the length header
(TPDU and dialect header included; ``envelope.py`` splits those off).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from iso_host.errors import FrameTooLarge, WireError


class NeedData(enum.Enum):
    """Returned by ``next_frame`` while the buffer holds no whole frame."""

    NEED_DATA = "need-data"


NEED_DATA: Final = NeedData.NEED_DATA


def _read_ascii4(raw: bytes) -> int:
    if not raw.isdigit():
        raise WireError(f"ascii4 length header is not 4 ASCII digits: {raw!r}", field="length", offset=0)
    return int(raw.decode("ascii"), 10)


def _read_binary2(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _read_bcd2(raw: bytes) -> int:
    digits = raw.hex()
    if not digits.isdigit():
        raise WireError(f"bcd2 length header is not BCD: {digits.upper()}", field="length", offset=0)
    return int(digits, 10)


def _write_ascii4(length: int) -> bytes:
    return b"%04d" % length


def _write_binary2(length: int) -> bytes:
    return length.to_bytes(2, "big")


def _write_bcd2(length: int) -> bytes:
    return bytes.fromhex(f"{length:04d}")


@dataclass(frozen=True, slots=True)
class LengthHeader:
    """How a frame's length is written in front of it."""

    name: str
    size_bytes: int
    max_length: int
    read: Callable[[bytes], int]
    write: Callable[[int], bytes]


LENGTH_HEADERS: Final[dict[str, LengthHeader]] = {
    "ascii4": LengthHeader("ascii4", 4, 9_999, _read_ascii4, _write_ascii4),
    "binary2": LengthHeader("binary2", 2, 65_535, _read_binary2, _write_binary2),
    "bcd2": LengthHeader("bcd2", 2, 9_999, _read_bcd2, _write_bcd2),
}


def encode_frame(header: LengthHeader, body: bytes) -> bytes:
    """Prefix ``body`` with its length header.

    Raises:
        ValueError: the body is longer than the header can express (a bug on our side).
    """
    if len(body) > header.max_length:
        msg = f"frame of {len(body)} bytes does not fit a {header.name} length header"
        raise ValueError(msg)
    return header.write(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frames; survives any segmentation of the stream."""

    def __init__(self, header: LengthHeader, *, max_frame_bytes: int) -> None:
        assert max_frame_bytes > 0
        self.header = header
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._eof = False

    @property
    def in_frame(self) -> bool:
        """True while part of a frame has arrived and the rest has not."""
        return bool(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        assert not self._eof, "data after end of stream"
        self._buffer += data

    def next_frame(self) -> bytes | NeedData:
        """Return the next whole frame body, or ``NEED_DATA``.

        Zero-length frames are keep-alives some terminals send; they are consumed silently.

        Raises:
            WireError: a length header that cannot be read, or the stream ended inside a frame.
            FrameTooLarge: the header announces more than ``max_frame_bytes``.
        """
        size = self.header.size_bytes
        while len(self._buffer) >= size:
            length = self.header.read(bytes(self._buffer[:size]))
            if length > self.max_frame_bytes:
                msg = f"length header announces {length} bytes, more than max_frame_bytes {self.max_frame_bytes}"
                raise FrameTooLarge(msg, field="length", offset=0)
            if len(self._buffer) < size + length:
                break
            body = bytes(self._buffer[size : size + length])
            del self._buffer[: size + length]
            if length:
                return body
        if self._eof and self._buffer:
            msg = f"connection closed {len(self._buffer)} bytes into a frame"
            raise WireError(msg, field="length", offset=0)
        return NEED_DATA
