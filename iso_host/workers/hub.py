"""The core's side of the workers: a Unix socket each worker connects to, whose frames the ``Host`` answers.

Each request runs as its own task (a worker's connections are independent; one connection's frames come one at a
time, since its worker waits for each answer). Answers finished in one turn of the event loop leave in one write.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from iso_host.core.outcome import Outcome
from iso_host.core.pipeline import Host
from iso_host.log import get_logger
from iso_host.workers.ipc import HELLO, IpcError, MessageReader, answer, parse_request


class Hub:
    """Listens on ``path`` for workers and answers their frames with ``host``."""

    def __init__(self, host: Host, path: str) -> None:
        self.host = host
        self.path = path
        self.log = get_logger(dialect=host.dialect.name)
        self.links: set[Link] = set()
        self.workers: dict[int, int] = {}  # index -> pid, of every worker that said hello
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._changed: asyncio.Event = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: Link(self), self.path)

    def said_hello(self, index: int, pid: int) -> None:
        self.workers[index] = pid
        self.log.info("worker_ready", worker=index, pid=pid)
        self._changed.set()

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        """Until ``ready()`` holds, checked each time a worker says hello."""
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening; let the requests in the pipeline finish (within ``grace_s``), then close every link."""
        if self._server is not None:
            self._server.close()
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for link in list(self.links):
            link.close()
        if self._server is not None:
            await self._server.wait_closed()


class Link(asyncio.Protocol):
    """One worker's connection to the hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.reader = MessageReader()
        self.transport: asyncio.Transport | None = None
        self.outgoing: list[bytes] = []
        self.worker: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.hub.links.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self.reader.feed(data):
                number, frame, subject = parse_request(payload)
                if number == HELLO:
                    self._hello(frame)
                    continue
                task = asyncio.get_running_loop().create_task(self._answer(number, frame, subject))
                self.hub.tasks.add(task)
                task.add_done_callback(self.hub.tasks.discard)
        except (IpcError, ValueError) as error:
            self.hub.log.error("worker_link_broken", worker=self.worker, error=str(error))  # noqa: TRY400 (no trace)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.links.discard(self)
        self.transport = None
        if self.worker is not None:
            self.hub.workers.pop(self.worker, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _hello(self, body: bytes) -> None:
        worker: dict[str, Any] = json.loads(body)
        self.worker = int(worker["worker"])
        self.hub.said_hello(self.worker, int(worker["pid"]))

    async def _answer(self, number: int, frame: bytes, subject: str | None) -> None:
        try:
            outcome = await self.hub.host.handle(frame, peer_subject=subject)
        except Exception:
            # A bug in the host: the worker closes this one connection, every other one carries on.
            self.hub.log.exception("request_failed", worker=self.worker)
            outcome = Outcome(None, close=True)
        self._send(answer(number, outcome))

    def _send(self, message: bytes) -> None:
        if self.transport is None:
            return  # the worker is gone; what the request committed stays committed
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outgoing.append(message)

    def _flush(self) -> None:
        if self.transport is not None and self.outgoing:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()
