"""The bytes between a worker and the core, sans-IO: requests (a frame and its connection's TLS subject) one way,
answers (an ``Outcome``) the other, each a message behind a 4-byte big-endian length.

A message starts with a 4-byte request number; the core answers with the same number. An answer carries the
outcome's fields (names, codes and log fields: nothing of the card) followed by the reply's bytes.
"""

from __future__ import annotations

import json
import struct
from typing import Final

from iso_host.core.outcome import Outcome
from iso_host.errors import WireError
from iso_host.vocab import Reason

MAX_MESSAGE_BYTES: Final = 1 << 20  # a frame is at most 64 KiB; anything longer is a broken peer
_LENGTH: Final = struct.Struct(">I")
_REQUEST: Final = struct.Struct(">IH")  # number, subject length
_ANSWER: Final = struct.Struct(">IBdI")  # number, flags, delay (s), length of the JSON of extra log fields
_CLOSE: Final = 1
_REPLY: Final = 2
_ABSENT: Final = 255  # a text's length byte: no value
_NONE_TEXT: Final = bytes((_ABSENT,))
_TEXT_LOG_FIELDS: Final = frozenset({"tid", "stan"})  # log fields carried as texts of their own
_ERROR_KEY: Final = "\x00error"  # the decode error, among the extra log fields (no log field has such a name)
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
    """An outcome in a fixed layout (JSON, at ~6 µs a side, cost a tenth of a worker's share of a sale): flags, the
    scenario's delay, six short texts (reason, code, MTI, kind, TID, STAN; absent ones marked), then, only when there
    are any, the rest of the log fields and the decode error as JSON, then the reply."""
    log = outcome.log
    error = outcome.error
    extra: dict[str, object] = {key: value for key, value in log.items() if key not in _TEXT_LOG_FIELDS}
    if error is not None:
        extra[_ERROR_KEY] = [error.reason, error.field, error.offset]
    extra_bytes = json.dumps(extra, separators=(",", ":"), default=str).encode() if extra else b""
    flags = (outcome.close and _CLOSE) | (outcome.reply is not None and _REPLY)
    head = _ANSWER.pack(number, flags, outcome.delay_s, len(extra_bytes))
    texts = b"".join(_text(value) for value in (outcome.reason, outcome.response_code, outcome.mti, outcome.kind,
                                                 log.get("tid"), log.get("stan")))  # fmt: skip
    return framed(head + texts + extra_bytes + (outcome.reply or b""))


def parse_answer(payload: bytes) -> tuple[int, Outcome]:
    if len(payload) < _ANSWER.size:
        raise IpcError(f"answer of {len(payload)} bytes is shorter than its header")
    number, flags, delay_s, extra_length = _ANSWER.unpack_from(payload)
    position = _ANSWER.size
    texts: list[str | None] = []
    try:
        for _ in range(6):
            length = payload[position]
            if length == _ABSENT:
                texts.append(None)
                position += 1
            else:
                texts.append(payload[position + 1 : position + 1 + length].decode())
                position += 1 + length
        reason, code, mti, kind, tid, stan = texts
        log: dict[str, object] = {key: value for key, value in (("tid", tid), ("stan", stan)) if value is not None}
        error = None
        if extra_length:
            extra = json.loads(payload[position : position + extra_length])
            wire_error = extra.pop(_ERROR_KEY, None)
            if wire_error is not None:
                error = WireError(wire_error[0], field=wire_error[1], offset=wire_error[2])
            log.update(extra)
            position += extra_length
        outcome = Outcome(
            payload[position:] if flags & _REPLY else None, close=bool(flags & _CLOSE),
            reason=Reason(reason) if reason is not None else None, response_code=code, mti=mti, kind=kind, log=log,
            error=error, delay_s=delay_s,
        )  # fmt: skip
    except (ValueError, IndexError, TypeError) as problem:
        raise IpcError(f"answer {number}: {problem}") from None
    return number, outcome


def _text(value: object) -> bytes:
    if value is None:
        return _NONE_TEXT
    encoded = str(value).encode()
    if len(encoded) > _ABSENT - 1:  # never from a decoded field (F41 is 8, F11 6); cut whole characters, 4 bytes each
        encoded = str(value)[: (_ABSENT - 1) // 4].encode()
    return bytes((len(encoded),)) + encoded


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
