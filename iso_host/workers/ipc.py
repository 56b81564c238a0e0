"""The bytes between a worker and the core, sans-IO: requests (a frame and its connection's TLS subject) one way,
answers (an ``Outcome``) the other, each a message behind a 4-byte big-endian length.

A message starts with a 4-byte request number; the core answers with the same number. An answer carries the
outcome's fields as JSON (names, codes and log fields: nothing of the card) followed by the reply's bytes.
"""

from __future__ import annotations

import json
import struct
from typing import Final

from iso_host.core.pipeline import Outcome
from iso_host.errors import WireError
from iso_host.vocab import Reason

MAX_MESSAGE_BYTES: Final = 1 << 20  # a frame is at most 64 KiB; anything longer is a broken peer
_LENGTH: Final = struct.Struct(">I")
_REQUEST: Final = struct.Struct(">IH")  # number, subject length
_ANSWER: Final = struct.Struct(">II")  # number, JSON length
HELLO: Final = 0  # request number 0: a worker's first message, naming itself (JSON)


class IpcError(Exception):
    """The other side sent bytes that are not a message of this protocol."""


def framed(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def hello(index: int, pid: int) -> bytes:
    body = json.dumps({"worker": index, "pid": pid}).encode()
    return framed(_REQUEST.pack(HELLO, 0) + body)


def request(number: int, frame: bytes, peer_subject: str | None) -> bytes:
    subject = peer_subject.encode() if peer_subject is not None else b""
    return framed(_REQUEST.pack(number, len(subject) if peer_subject is not None else 0xFFFF) + subject + frame)


def parse_request(payload: bytes) -> tuple[int, bytes, str | None]:
    """``(number, frame, peer_subject)``; for ``HELLO`` the frame is the worker's JSON."""
    if len(payload) < _REQUEST.size:
        raise IpcError(f"request of {len(payload)} bytes is shorter than its header")
    number, subject_length = _REQUEST.unpack_from(payload)
    start = _REQUEST.size
    if subject_length == 0xFFFF:
        return number, payload[start:], None
    subject = payload[start : start + subject_length].decode()
    return number, payload[start + subject_length :], subject


def answer(number: int, outcome: Outcome) -> bytes:
    error = outcome.error
    fields = {
        "close": outcome.close, "reason": outcome.reason, "code": outcome.response_code, "mti": outcome.mti,
        "kind": outcome.kind, "log": outcome.log, "delay_s": outcome.delay_s, "reply": outcome.reply is not None,
        "error": None if error is None else [error.reason, error.field, error.offset],
    }  # fmt: skip
    body = json.dumps(fields, separators=(",", ":"), default=str).encode()
    return framed(_ANSWER.pack(number, len(body)) + body + (outcome.reply or b""))


def parse_answer(payload: bytes) -> tuple[int, Outcome]:
    if len(payload) < _ANSWER.size:
        raise IpcError(f"answer of {len(payload)} bytes is shorter than its header")
    number, body_length = _ANSWER.unpack_from(payload)
    start = _ANSWER.size
    try:
        fields = json.loads(payload[start : start + body_length])
        error = fields["error"]
        outcome = Outcome(
            payload[start + body_length :] if fields["reply"] else None, close=fields["close"],
            reason=Reason(fields["reason"]) if fields["reason"] is not None else None,
            response_code=fields["code"], mti=fields["mti"], kind=fields["kind"], log=fields["log"],
            error=WireError(error[0], field=error[1], offset=error[2]) if error is not None else None,
            delay_s=fields["delay_s"],
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, IndexError) as problem:
        raise IpcError(f"answer {number}: {problem}") from None
    return number, outcome


class MessageReader:
    """Whole messages out of a byte stream (h11-style: feed bytes, take what is complete)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > MAX_MESSAGE_BYTES:
                raise IpcError(f"a message of {length} bytes announced (at most {MAX_MESSAGE_BYTES})")
            end = start + _LENGTH.size + length
            if len(buffer) < end:
                break
            messages.append(bytes(buffer[start + _LENGTH.size : end]))
            start = end
        del buffer[:start]
        return messages
