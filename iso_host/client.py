"""A terminal: framing, STAN, requests from the dialect's templates. Used by the CLI, tests and tools."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from iso_host.errors import IsoHostError
from iso_host.wire import NEED_DATA, Dialect, Envelope, FrameDecoder, Message, decode, encode, encode_frame

DEFAULT_TPDU = bytes.fromhex("6000030000")  # 60 + destination NII 0003 + source NII 0000
DEFAULT_CUP_HEADER = bytes.fromhex("603100000000")  # magstripe application, software version 31
MAX_STAN = 999_999


class ClientError(IsoHostError):
    """The host could not be reached or answered with something we cannot read."""


@dataclass
class TerminalState:
    """What a terminal keeps between runs: its STAN counter and batch number."""

    stan: int = 0
    batch: int = 1

    def next_stan(self) -> int:
        self.stan = self.stan % MAX_STAN + 1
        return self.stan

    @classmethod
    def load(cls, path: Path) -> TerminalState:
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(stan=int(raw["stan"]), batch=int(raw["batch"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ClientError(f"{path}: unreadable terminal state file ({error.__class__.__name__})") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"stan": self.stan, "batch": self.batch}), encoding="utf-8")
        temporary.replace(path)


class TerminalClient:
    """One connection to a host, speaking one dialect as one terminal."""

    def __init__(self, dialect: Dialect, tid: str, mid: str, state: TerminalState | None = None) -> None:
        self.dialect = dialect
        self.tid = tid
        self.mid = mid
        self.state = state or TerminalState()
        self.envelope = Envelope(
            DEFAULT_TPDU if dialect.tpdu else b"",
            DEFAULT_CUP_HEADER[: dialect.header_bytes].ljust(dialect.header_bytes, b"\0"),
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder(dialect.length_header, max_frame_bytes=dialect.length_header.max_length)

    async def connect(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                      timeout_s: float = 10.0) -> None:  # fmt: skip
        try:
            async with asyncio.timeout(timeout_s):
                self._reader, self._writer = await asyncio.open_connection(host, port, ssl=ssl_context)
        except (OSError, TimeoutError) as error:
            raise ClientError(f"cannot connect to {host}:{port}: {error}") from None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self._writer.wait_closed()
            self._writer = None

    async def __aenter__(self) -> TerminalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def build(self, template: str, now: datetime, **values: Any) -> Message:
        """A request from the dialect's template, with the next STAN."""
        defaults: dict[str, Any] = {
            "pan": "", "amount": 0, "tid": self.tid, "mid": self.mid, "currency": self.dialect.default_currency,
            "batch": self.state.batch, "expiry": "", "now": now,
        }  # fmt: skip
        return self.dialect.render(template, {**defaults, **values, "stan": self.state.next_stan()})

    def frame(self, message: Message) -> bytes:
        return encode_frame(self.dialect.length_header, encode(message, self.envelope, self.dialect))

    async def send_raw(self, data: bytes) -> None:
        if self._writer is None:
            raise ClientError("not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self, timeout_s: float = 30.0) -> Message:
        """The next response frame, decoded."""
        if self._reader is None:
            raise ClientError("not connected")
        try:
            async with asyncio.timeout(timeout_s):
                while (frame := self._decoder.next_frame()) is NEED_DATA:
                    data = await self._reader.read(65_536)
                    if not data:
                        raise ClientError("the host closed the connection without answering")
                    self._decoder.receive_data(data)
        except TimeoutError:
            raise ClientError(f"no response within {timeout_s:g} s") from None
        assert isinstance(frame, bytes)
        _, message = decode(frame, self.dialect)
        return message

    async def request(self, message: Message, timeout_s: float = 30.0) -> Message:
        """Send one request and wait for its response."""
        await self.send_raw(self.frame(message))
        return await self.receive(timeout_s)
