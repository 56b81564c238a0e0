"""A worker's side of the link to the core: ``RemoteHost`` answers frames the way ``Host`` does, by asking the core.

Requests made in one turn of the worker's event loop leave in one write; answers come back by request number.
If the core goes away, every request waiting and every later one is answered "close the connection", and
``lost`` is set so that the worker stops.
"""

from __future__ import annotations

import asyncio
import os

from iso_host.core.outcome import Outcome
from iso_host.wire import Dialect
from iso_host.workers.ipc import IpcError, MessageReader, hello, parse_answer, request

_CORE_GONE = {"why": "the host's core is gone"}


class RemoteHost(asyncio.Protocol):
    """The core's ``Host`` as a worker sees it (``core.pipeline.Answerer``)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.lost = asyncio.Event()
        self.problem: str | None = None
        self._number = 0  # of the last request: 1 .. 2**32 - 1, then round again (0 is the hello's)
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        self._reader = MessageReader()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, path: str, dialect: Dialect, index: int) -> RemoteHost:
        """Connect to the core's hub at ``path`` and say which worker this is."""
        _, remote = await asyncio.get_running_loop().create_unix_connection(lambda: cls(dialect), path)
        assert remote._transport is not None
        remote._transport.write(hello(index, os.getpid()))
        return remote

    async def handle(self, frame: bytes, *, peer_subject: str | None = None) -> Outcome:
        if self._transport is None:
            return Outcome(None, close=True, log=dict(_CORE_GONE))
        number = self._number = self._number % 0xFFFFFFFF + 1
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(request(number, frame, peer_subject))
        try:
            return await future
        finally:
            self._waiting.pop(number, None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- asyncio's callbacks --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._reader.feed(data):
                number, outcome = parse_answer(payload)
                future = self._waiting.get(number)
                if future is not None and not future.done():
                    future.set_result(outcome)
        except IpcError as error:
            self.problem = str(error)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.problem is None:
            self.problem = f"{exc.__class__.__name__}: {exc}" if exc else "the core closed the link"
        for future in self._waiting.values():
            if not future.done():
                future.set_result(Outcome(None, close=True, log=dict(_CORE_GONE)))
        self.lost.set()

    def _flush(self) -> None:
        if self._transport is not None and self._outgoing:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()
