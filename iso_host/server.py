"""The asyncio edge: listen, read frames, hand them to the pipeline, write replies, shut down cleanly.

One task per connection; frames on a connection are answered in order. Timeouts and limits come
from ``Limits``. A peer error closes at most that peer's connection; nothing here can stop the host
from serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from typing import Any

from iso_host.core.pipeline import Host
from iso_host.errors import WireError
from iso_host.limits import Limits
from iso_host.log import get_logger
from iso_host.tls import certificate_subject
from iso_host.trace import IN, OUT, Tracer
from iso_host.wire import NEED_DATA, FrameDecoder, encode_frame


class _Connection:
    def __init__(self, conn_id: int, writer: asyncio.StreamWriter, peer: str) -> None:
        self.conn_id = conn_id
        self.peer = peer
        self.writer = writer
        self.busy = False  # True while a request is in the pipeline: shutdown waits for it
        self.task: asyncio.Task[None] | None = None


class Server:
    """Serves one ``Host`` on a TCP port.

    With a ``tracer`` every frame in and out, and every connection's end, is handed to it (``stop`` closes it).
    """

    def __init__(
        self, host: Host, limits: Limits, *, ssl_context: ssl.SSLContext | None = None, tracer: Tracer | None = None
    ) -> None:
        assert tracer is None or tracer.dialect == host.dialect, "the tracer records with the host's dialect"
        self.host = host
        self.limits = limits
        self.ssl_context = ssl_context
        self.tracer = tracer
        self.log = get_logger(dialect=host.dialect.name)
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._stopping = False

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self, bind_host: str, port: int) -> tuple[str, int]:
        """Bind and start accepting; returns the real address (port 0 picks a free port)."""
        self._server = await asyncio.start_server(
            self._on_connect, bind_host, port, ssl=self.ssl_context, limit=self.limits.read_chunk_bytes
        )
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish and reply, then close every connection."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        # A connection accepted just now has a handler task that has not run yet: let it run, see that the
        # host is stopping and close its socket, rather than be cancelled before it could.
        await asyncio.sleep(0)
        for connection in list(self._connections.values()):
            if not connection.busy and connection.task is not None:
                connection.task.cancel()
        tasks = [c.task for c in self._connections.values() if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.close)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if peer else "?"
        log = self.log.bind(conn_id=conn_id, peer=peer_text)
        if self._stopping or len(self._connections) >= self.limits.max_connections:
            log.warning("connection_refused", why="stopping" if self._stopping else "max_connections",
                        max_connections=self.limits.max_connections)  # fmt: skip
            writer.close()
            return
        connection = _Connection(conn_id, writer, peer_text)
        connection.task = asyncio.current_task()
        self._connections[conn_id] = connection
        log.info("connection_opened", connections=len(self._connections))
        try:
            await self._serve(connection, reader, log)
        except asyncio.CancelledError:
            log.info("connection_closed", why="host stopping")
        except (ConnectionError, ssl.SSLError) as error:
            log.info("connection_closed", why=f"peer: {error.__class__.__name__}")
        except Exception:
            # A bug in the host: this connection ends, every other one carries on.
            log.exception("connection_failed")
        finally:
            del self._connections[conn_id]
            if self.tracer is not None:
                self.tracer.connection_closed(conn_id, peer_text)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader, decoder: FrameDecoder, log: Any) -> bytes | None:
        """One socket read under the right timeout; None when the timeout expired (already logged)."""
        timeout = self.limits.frame_timeout_s if decoder.in_frame else self.limits.idle_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await reader.read(self.limits.read_chunk_bytes)
        except TimeoutError:
            if decoder.in_frame:
                log.warning("frame_timeout", frame_timeout_s=timeout, buffered_bytes=decoder.buffered_bytes)
            else:
                log.info("connection_idle", idle_timeout_s=timeout)
            return None

    async def _serve(self, connection: _Connection, reader: asyncio.StreamReader, log: Any) -> None:
        header = self.host.dialect.length_header
        decoder = FrameDecoder(header, max_frame_bytes=self.limits.max_frame_bytes)
        # The connection's read loop: it ends on EOF, a timeout, a framing error or shutdown.
        while True:
            data = await self._read(reader, decoder, log)
            if data is None:
                return
            decoder.receive_data(data)
            try:
                while (frame := decoder.next_frame()) is not NEED_DATA:
                    if not await self._answer(connection, frame, header, log):
                        return
            except WireError as error:  # FrameTooLarge included: the stream cannot be resynchronised
                log.warning("frame_rejected", field=error.field, offset=error.offset, error=error.reason)
                return
            if not data:
                log.info("connection_closed", why="peer closed")
                return

    async def _answer(self, connection: _Connection, frame: bytes, header: Any, log: Any) -> bool:
        """Handle one frame; returns False when the connection must close."""
        started = time.perf_counter()
        connection.busy = True
        tracer = self.tracer
        if tracer is not None:
            tracer.frame(connection.conn_id, IN, connection.peer, frame)
        try:
            subject = certificate_subject(connection.writer.get_extra_info("peercert"))  # mutual TLS, after handshake
            outcome = await self.host.handle(frame, peer_subject=subject)
            if outcome.delay_s:
                await asyncio.sleep(outcome.delay_s)  # a scenario stalls this reply; other connections go on
            if outcome.reply is not None:
                connection.writer.write(encode_frame(header, outcome.reply))
                if tracer is not None:
                    tracer.frame(connection.conn_id, OUT, connection.peer, outcome.reply)
                await connection.writer.drain()
        finally:
            connection.busy = False
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if outcome.error is not None:
            log.warning("frame_rejected", field=outcome.error.field, offset=outcome.error.offset,
                        error=outcome.error.reason, mti=outcome.mti, replied=outcome.reply is not None,
                        **outcome.log)  # fmt: skip
        else:
            log.info("request_decided", mti=outcome.mti, kind=outcome.kind, reason=outcome.reason,
                     response_code=outcome.response_code, latency_ms=latency_ms, **outcome.log)  # fmt: skip
        if self._stopping:
            return False
        return not outcome.close
