"""A TCP proxy between a host and its PostgreSQL server that the tests break on purpose.

Modes, switched at any moment: ``forward`` (a plain proxy), ``hang`` (bytes stop flowing both ways; the
sockets stay open, as with a server that stopped answering), ``refuse`` (every connection is cut and new ones
are closed at once, as with a server that is down) and ``cut_after_commit`` (the next COMMIT a client sends is
delivered to the server, then both sides are closed before the server's answer comes back: the server
commits, the client never learns it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

COMMIT_TEXT = b"COMMIT\x00"  # how a COMMIT statement's text ends inside a frontend Query or Parse message


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "forward"
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.commits_cut = 0
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._swallowing: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.resume()
        self._cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def url_for(self, url: str) -> str:
        """``url`` (a PostgreSQL URL) pointed at this proxy instead of its server."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def hang(self) -> None:
        self.mode = "hang"
        self.resumed.clear()

    def refuse(self) -> None:
        self.mode = "refuse"
        self._cut_all()

    def cut_next_commit(self) -> None:
        self.mode = "cut_after_commit"

    def resume(self) -> None:
        self.mode = "forward"
        self.resumed.set()

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, server_writer)
        self._writers.update(pair)
        upstream = asyncio.create_task(self._pipe(client_reader, server_writer, pair, upstream=True))
        downstream = asyncio.create_task(self._pipe(server_reader, client_writer, pair, upstream=False))
        for task in (upstream, downstream):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], *, upstream: bool) -> None:  # fmt: skip
        # A pipe's loop: it ends when either side closes, or when a fault cuts the pair.
        try:
            while data := await reader.read(65_536):
                await self.resumed.wait()
                if upstream and self.mode == "cut_after_commit" and COMMIT_TEXT in data:
                    self.mode = "forward"
                    self._swallowing.add(pair)  # the server's answers to this client are withheld from now on
                elif not upstream and pair in self._swallowing:
                    if COMMIT_TEXT in data:  # CommandComplete "COMMIT": the server has committed; never tell
                        self.commits_cut += 1
                        self._swallowing.discard(pair)
                        return
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for side in pair:
                with contextlib.suppress(Exception):
                    side.transport.abort()
                self._writers.discard(side)


@asynccontextmanager
async def fault_proxy(url: str) -> AsyncIterator[tuple[FaultProxy, str]]:
    """A proxy in front of the server of ``url``; yields it and the URL that goes through it."""
    parts = urlsplit(url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        yield proxy, proxy.url_for(url)
    finally:
        await proxy.stop()
