"""The asyncio listener: listen, read frames, hand them to the pipeline, write replies, shut down cleanly.

Two edges behind one ``Server``: ``protocol`` (the default: ``edge.py``, an ``asyncio.Protocol`` per connection,
no task while it idles) and ``streams`` (here: a StreamReader/StreamWriter and one task per connection, kept for
comparison, ``[server] edge = "streams"``). Both answer the frames of a connection in order. Timeouts and limits come
from ``Limits``. A peer error closes at most that peer's connection; nothing here can stop the host
from serving everyone else. Every connection holds a slot of the ``ConnectionGate`` from its accept to its
close: a TLS handshake (done here, under ``tls_handshake_timeout_s``, not by asyncio's listener) included.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import socket
import ssl
import time
from typing import Any, Final, Literal

from iso_host.core.outcome import Answerer
from iso_host.edge import CLOSE_TIMEOUT_S, Connection, handshake_within, log_outcome
from iso_host.errors import ConfigError, WireError
from iso_host.gate import AcceptErrors, ConnectionGate, ThrottledLog
from iso_host.limits import ACCEPT_BACKLOG, Limits
from iso_host.log import get_logger
from iso_host.tls import certificate_subject
from iso_host.trace import IN, OUT, Tracer
from iso_host.wire import NEED_DATA, FrameDecoder, encode_frame

Edge = Literal["protocol", "streams"]
EDGES: Final[tuple[Edge, ...]] = ("protocol", "streams")


def open_file_limit() -> int:
    """The process's soft open-file limit (``ulimit -n``)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cannot_listen(host: str, port: int, error: OSError) -> ConfigError:
    """The one line for an address the host cannot listen on (taken, not this machine's, not allowed)."""
    reason = os.strerror(error.errno) if error.errno else str(error)  # not socket.create_server's longer strerror
    return ConfigError(f"server.port: cannot listen on {host}:{port}: {reason}")


class _Connection:
    def __init__(self, conn_id: int, writer: asyncio.StreamWriter, peer: str) -> None:
        self.conn_id = conn_id
        self.peer = peer
        self.writer = writer
        self.busy = False  # True while a request is in the pipeline: shutdown waits for it
        self.task: asyncio.Task[None] | None = None
        self.tid: object = None  # the terminal (F41) of the last request answered here, for the console


class Server:
    """Serves one ``Host`` on a TCP port.

    With a ``tracer`` every frame in and out, and every connection's end, is handed to it (``stop`` closes it).
    """

    def __init__(
        self,
        host: Answerer,
        limits: Limits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        tracer: Tracer | None = None,
        edge: Edge = "protocol",
        log_fields: dict[str, object] | None = None,
    ) -> None:
        assert tracer is None or tracer.dialect == host.dialect, "the tracer records with the host's dialect"
        self.host = host
        self.limits = limits
        self.ssl_context = ssl_context
        self.tracer = tracer
        self.edge = edge
        self.log = get_logger(dialect=host.dialect.name, **(log_fields or {}))
        self._server: asyncio.Server | None = None
        self.connections: dict[int, _Connection | Connection] = {}
        self.ids = itertools.count(1)
        self.stopping = False
        self._all_gone: asyncio.Future[None] | None = None  # while stopping: set once no connection is left
        self.gate = ConnectionGate(limits)
        self.throttled = ThrottledLog(self.log, limits.log_every_s)
        self._accept_errors = AcceptErrors(self.throttled, open_file_limit)

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    @property
    def serving(self) -> bool:
        """Accepting connections now."""
        return self._server is not None and self._server.is_serving() and not self.stopping

    def connected_terminals(self) -> set[str]:
        """The terminals (F41) that sent a request on a connection still open."""
        return {str(c.tid) for c in self.connections.values() if c.tid is not None}

    async def start(self, bind_host: str = "", port: int = 0, *, sock: socket.socket | None = None) -> tuple[str, int]:
        """Bind and start accepting, or accept on ``sock``, a listening socket made elsewhere (a worker's, handed down
        by the core); returns the real address (port 0 picks a free port)."""
        loop = asyncio.get_running_loop()
        self._accept_errors.install(loop)
        try:
            if self.edge == "protocol" and sock is not None:
                self._server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=ACCEPT_BACKLOG)
            elif self.edge == "protocol":
                self._server = await loop.create_server(
                    lambda: Connection(self), bind_host, port, backlog=ACCEPT_BACKLOG
                )
            elif sock is not None:
                self._server = await asyncio.start_server(
                    self._on_connect, sock=sock, limit=self.limits.read_chunk_bytes, backlog=ACCEPT_BACKLOG
                )
            else:
                self._server = await asyncio.start_server(
                    self._on_connect, bind_host, port, limit=self.limits.read_chunk_bytes, backlog=ACCEPT_BACKLOG
                )
        except OSError:
            self._accept_errors.uninstall()
            raise
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish and reply, then close every connection."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        # A connection accepted just now has a handler task that has not run yet: let it run, see that the
        # host is stopping and close its socket, rather than be cancelled before it could.
        await asyncio.sleep(0)
        if self.edge == "protocol":
            await self._stop_protocol(grace_s)
        for connection in list(self.connections.values()):
            if isinstance(connection, _Connection) and not connection.busy and connection.task is not None:
                connection.task.cancel()
        tasks = [c.task for c in self.connections.values() if isinstance(c, _Connection) and c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self.throttled.flush()
        self._accept_errors.uninstall()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.close)

    async def _stop_protocol(self, grace_s: float) -> None:
        """The Protocol edge's part of ``stop``: idle connections close now, busy ones after their reply; past
        ``grace_s`` their requests are cancelled, and past ``CLOSE_TIMEOUT_S`` more every socket is aborted."""
        for connection in list(self.connections.values()):
            if isinstance(connection, Connection):
                connection.stop()
        if not await self._connections_gone(grace_s):
            for connection in list(self.connections.values()):
                if isinstance(connection, Connection) and connection.task is not None:
                    connection.task.cancel()
            if not await self._connections_gone(CLOSE_TIMEOUT_S + 1.0):
                for connection in list(self.connections.values()):
                    if isinstance(connection, Connection) and connection.transport is not None:
                        connection.transport.abort()
                await self._connections_gone(1.0)

    async def _connections_gone(self, timeout_s: float) -> bool:
        if not self.connections:
            return True
        self._all_gone = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self._all_gone
        except TimeoutError:
            return False
        finally:
            self._all_gone = None
        return True

    def connection_gone(self) -> None:
        """A Protocol connection gave its slot back."""
        if not self.connections and self._all_gone is not None and not self._all_gone.done():
            self._all_gone.set_result(None)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self.ids)
        peer = writer.get_extra_info("peername")
        address, peer_text = (str(peer[0]), f"{peer[0]}:{peer[1]}") if peer else ("?", "?")
        refused = "stopping" if self.stopping else self.gate.enter(address)
        if refused is not None:
            self.throttled.note("connection_refused", refused, peer=peer_text,
                                max_connections=self.gate.max_connections, per_peer=self.gate.per_peer)  # fmt: skip
            writer.close()
            return
        log = self.log.bind(conn_id=conn_id, peer=peer_text)
        connection = _Connection(conn_id, writer, peer_text)
        connection.task = asyncio.current_task()
        self.connections[conn_id] = connection
        opened = False
        try:
            # No await before the handshake: bytes of the ClientHello must not reach the plain stream's buffer.
            if self.ssl_context is not None and not await self._handshake(writer, peer_text):
                return
            opened = True
            log.info("connection_opened", connections=len(self.connections))
            await self._serve(connection, reader, log)
        except asyncio.CancelledError:
            log.info("connection_closed", why="host stopping")
        except (ConnectionError, ssl.SSLError) as error:
            log.info("connection_closed", why=f"peer: {error.__class__.__name__}")
        except Exception:
            # A bug in the host: this connection ends, every other one carries on.
            log.exception("connection_failed")
        finally:
            if opened:
                await _close(writer)
            else:
                writer.transport.abort()  # a failed handshake: the TLS layer never opened, nothing to flush
            del self.connections[conn_id]
            self.gate.leave(address)
            if opened and self.tracer is not None:
                self.tracer.connection_closed(conn_id, peer_text)

    async def _handshake(self, writer: asyncio.StreamWriter, peer_text: str) -> bool:
        """The TLS handshake under ``tls_handshake_timeout_s``; False when it failed (a throttled line says why)."""
        assert self.ssl_context is not None
        timeout_s = self.limits.tls_handshake_timeout_s
        # asyncio's own handshake timer is only a backstop behind ours
        _, why = await handshake_within(writer.start_tls(self.ssl_context, ssl_handshake_timeout=timeout_s + 1),
                                        timeout_s)  # fmt: skip
        if why is None:
            return True
        self.throttled.note("tls_handshake_failed", why, peer=peer_text, tls_handshake_timeout_s=timeout_s)
        return False

    async def _read(
        self, reader: asyncio.StreamReader, decoder: FrameDecoder, frame_deadline: float | None, log: Any
    ) -> bytes | None:
        """One socket read, within the frame's deadline when a frame is partly in, else under the idle timeout;
        None when the time is up (already logged)."""
        timeout: float | None
        if decoder.in_frame:
            assert frame_deadline is not None
            timeout = max(frame_deadline - asyncio.get_running_loop().time(), 0.0)
        else:
            timeout = self.limits.idle_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await reader.read(self.limits.read_chunk_bytes)
        except TimeoutError:
            if decoder.in_frame:
                log.warning("frame_timeout", frame_timeout_s=self.limits.frame_timeout_s,
                            buffered_bytes=decoder.buffered_bytes)  # fmt: skip
            else:
                log.info("connection_idle", idle_timeout_s=timeout)
            return None

    async def _serve(self, connection: _Connection, reader: asyncio.StreamReader, log: Any) -> None:
        header = self.host.dialect.length_header
        decoder = FrameDecoder(header, max_frame_bytes=self.limits.max_frame_bytes)
        loop = asyncio.get_running_loop()
        # A frame's deadline runs from its first byte (or, behind a frame just answered, from the answer) to its
        # last, however the bytes are spread over reads: dripping a frame does not keep a connection.
        frame_deadline: float | None = None
        # The connection's read loop: it ends on EOF, a timeout, a framing error or shutdown.
        while True:
            data = await self._read(reader, decoder, frame_deadline, log)
            if data is None:
                return
            decoder.receive_data(data)
            answered = False
            try:
                while (frame := decoder.next_frame()) is not NEED_DATA:
                    answered = True
                    if not await self._answer(connection, frame, header, log):
                        return
            except WireError as error:  # FrameTooLarge included: the stream cannot be resynchronised
                log.warning("frame_rejected", field=error.field, offset=error.offset, error=error.reason)
                return
            if not data:
                log.info("connection_closed", why="peer closed")
                return
            if not decoder.in_frame:
                frame_deadline = None
            elif answered or frame_deadline is None:
                frame_deadline = loop.time() + self.limits.frame_timeout_s

    async def _answer(self, connection: _Connection, frame: bytes, header: Any, log: Any) -> bool:
        """Handle one frame; returns False when the connection must close."""
        started = time.perf_counter()
        connection.busy = True
        tracer = self.tracer
        stalled = False
        if tracer is not None:
            tracer.frame(connection.conn_id, IN, connection.peer, frame)
        try:
            subject = certificate_subject(connection.writer.get_extra_info("peercert"))  # mutual TLS, after handshake
            outcome = await self.host.handle(frame, peer_subject=subject)
            connection.tid = outcome.log.get("tid", connection.tid)
            if outcome.delay_s:
                await asyncio.sleep(outcome.delay_s)  # a scenario stalls this reply; other connections go on
            if outcome.reply is not None:
                connection.writer.write(encode_frame(header, outcome.reply))
                if tracer is not None:
                    tracer.frame(connection.conn_id, OUT, connection.peer, outcome.reply)
                try:
                    async with asyncio.timeout(self.limits.frame_timeout_s):  # a peer that reads no replies
                        await connection.writer.drain()
                except TimeoutError:
                    stalled = True
        finally:
            connection.busy = False
        log_outcome(log, outcome, started, stalled=stalled, frame_timeout_s=self.limits.frame_timeout_s)
        if self.stopping or stalled:
            return False
        return not outcome.close


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close gracefully (the rest of a reply, TLS's close_notify) within ``CLOSE_TIMEOUT_S``, else abort."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
        writer.transport.abort()
