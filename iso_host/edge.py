"""The asyncio Protocol edge: one ``Connection`` object per socket, no task and no timeout object while it idles.

The event loop calls ``data_received`` with whatever the socket gave; bytes go into the connection's
``FrameDecoder`` at once. A whole frame starts one task that answers it, and every frame behind it, in order,
then ends: pipelined frames are answered in the order they came. While a request is in the pipeline, reading goes
on into the decoder until it holds ``read_chunk_bytes``, then the transport is paused; a peer that reads no replies
pauses the transport's writing, which pauses reading too, and a reply still unwritten after ``frame_timeout_s``
closes the connection (``write_timeout``).

One timer per connection, moved lazily: it holds the earliest of the idle deadline (``idle_timeout_s`` after the
last answer or accept) and the frame deadline (``frame_timeout_s`` from a frame's first byte, or from the answer
before it, to its last byte). A deadline that moved later is found when the timer fires and the timer set again,
so an answered request costs no timer operation. The limits, the TLS handshake (``loop.start_tls`` under
``tls_handshake_timeout_s``, holding a gate slot), the log lines and the trace hooks are the streams edge's
(``server.py``); ``Server`` owns what the two share.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Iterator, MutableMapping
from typing import Any, Final, Protocol, TypeVar, cast

from iso_host.core.outcome import Answerer, Outcome
from iso_host.errors import WireError
from iso_host.gate import ConnectionGate, ThrottledLog
from iso_host.limits import Limits
from iso_host.tls import certificate_subject
from iso_host.trace import IN, OUT, Tracer
from iso_host.wire import NEED_DATA, FrameDecoder, encode_frame

T = TypeVar("T")
CLOSE_TIMEOUT_S: Final = 2.0  # a peer that neither takes the rest of a reply nor answers TLS's close is cut off


class Listener(Protocol):
    """What a connection needs of the server that accepted it (``server.Server``)."""

    @property
    def host(self) -> Answerer: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def ssl_context(self) -> ssl.SSLContext | None: ...

    @property
    def tracer(self) -> Tracer | None: ...

    @property
    def log(self) -> Any: ...

    @property
    def gate(self) -> ConnectionGate: ...

    @property
    def throttled(self) -> ThrottledLog: ...

    @property
    def ids(self) -> Iterator[int]: ...

    stopping: bool

    @property
    def connections(self) -> MutableMapping[int, Any]: ...

    def connection_gone(self) -> None: ...



async def handshake_within(handshake: Awaitable[T], timeout_s: float) -> tuple[T | None, str | None]:
    """Await a TLS handshake for at most ``timeout_s``: its result and None, or None and why it failed ("timeout",
    the SSL error's reason, or the class of the OSError when the peer went away mid-handshake)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await handshake, None
    except TimeoutError:
        return None, "timeout"
    except ssl.SSLError as error:
        return None, error.reason or error.__class__.__name__
    except OSError as error:  # ConnectionError and kin
        return None, error.__class__.__name__


def log_outcome(log: Any, outcome: Outcome, started: float, *, stalled: bool, frame_timeout_s: float) -> None:
    """The line a frame's answer logs, on either edge: frame_rejected (the field and byte offset) or request_decided
    (latency since ``started``, a ``time.perf_counter`` reading), and write_timeout when the peer read no reply."""
    if outcome.error is not None:
        log.warning("frame_rejected", field=outcome.error.field, offset=outcome.error.offset,
                    error=outcome.error.reason, mti=outcome.mti, replied=outcome.reply is not None,
                    **outcome.log)  # fmt: skip
    else:
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        log.info("request_decided", mti=outcome.mti, kind=outcome.kind, reason=outcome.reason,
                 response_code=outcome.response_code, latency_ms=latency_ms, **outcome.log)  # fmt: skip
    if stalled:
        log.warning("write_timeout", frame_timeout_s=frame_timeout_s)

class Connection(asyncio.Protocol):
    """One client connection on the Protocol edge (``__slots__``: an idle one is a few hundred bytes)."""

    __slots__ = (
        "abort_timer",
        "address",
        "busy",
        "closing",
        "conn_id",
        "deadline",
        "decoder",
        "drain",
        "eof",
        "frame_deadline",
        "lost",
        "opened",
        "peer",
        "read_paused",
        "server",
        "slot",
        "task",
        "tid",
        "timer",
        "timer_at",
        "transport",
    )  # fmt: skip

    def __init__(self, server: Listener) -> None:
        self.server = server
        self.conn_id = 0
        self.peer = "?"
        self.address = "?"
        self.transport: asyncio.Transport | None = None
        self.decoder: FrameDecoder | None = None
        self.task: asyncio.Task[None] | None = None  # the TLS handshake, or the frames being answered
        self.opened = False  # plain TCP accepted, or TLS handshake done: "connection_opened" was logged
        self.busy = False  # a request is in the pipeline: shutdown waits for it
        self.closing = False  # we closed it (a line saying why was written)
        self.lost = False  # the socket is closed
        self.slot = False  # holds a ConnectionGate slot
        self.eof = False
        self.read_paused = False
        self.drain: asyncio.Future[None] | None = None  # set while the transport's write buffer is over its mark
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when ``timer`` fires (kept here: not every loop's handles tell)
        self.deadline: float | None = None  # when the timer must act (idle or frame deadline); None: not now
        self.frame_deadline: float | None = None
        self.abort_timer: asyncio.TimerHandle | None = None
        self.tid: object = None  # the terminal (F41) of the last request answered here, for the console

    def log(self) -> Any:
        return self.server.log.bind(conn_id=self.conn_id, peer=self.peer)

    # --- asyncio's callbacks --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do the same job without subclassing asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        server = self.server
        self.transport = transport
        self.conn_id = next(server.ids)
        peer = transport.get_extra_info("peername")
        if peer:
            self.address, self.peer = str(peer[0]), f"{peer[0]}:{peer[1]}"
        refused = "stopping" if server.stopping else server.gate.enter(self.address)
        if refused is not None:
            gate = server.gate
            server.throttled.note("connection_refused", refused, peer=self.peer,
                                  max_connections=gate.max_connections, per_peer=gate.per_peer)  # fmt: skip
            self.closing = True
            transport.close()
            return
        self.slot = True
        server.connections[self.conn_id] = self
        self.decoder = FrameDecoder(server.host.dialect.length_header, max_frame_bytes=server.limits.max_frame_bytes)
        if server.ssl_context is not None:
            transport.pause_reading()  # the ClientHello's bytes are for the TLS layer, not for this protocol
            self.task = asyncio.get_running_loop().create_task(self._handshake(transport, server.ssl_context))
        else:
            self._open(transport)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        if decoder is None or self.closing:
            return
        decoder.receive_data(data)
        if not self.opened:
            return  # bytes that came with the end of the TLS handshake: answered once it is done
        if self.busy:
            self._update_reading()
        else:
            self._next(answered=False)

    def eof_received(self) -> bool:
        if self.decoder is not None and not self.closing:
            self.decoder.receive_data(b"")
            self.eof = True
            if self.opened and not self.busy:
                self._next(answered=False)
        # Plain TCP stays half-open until the replies still owed are written; asyncio's TLS transport closes anyway.
        return self.server.ssl_context is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timers()
        if self.drain is not None and not self.drain.done():
            self.drain.set_exception(ConnectionResetError("Connection lost"))
            self.drain.exception()  # retrieved: nobody may be waiting for it
        if self.opened and not self.closing:
            self.closing = True
            self.log().info("connection_closed", why=f"peer: {exc.__class__.__name__}" if exc else "peer closed")
        if not self.busy and self.task is None:
            self._finish()

    def pause_writing(self) -> None:
        if self.drain is None or self.drain.done():
            self.drain = asyncio.get_running_loop().create_future()
        self._update_reading()

    def resume_writing(self) -> None:
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self.drain = None
        self._update_reading()

    # --- the connection's course ----------------------------------------------------------------------------------

    def _open(self, transport: asyncio.Transport) -> None:
        server = self.server
        self.transport = transport
        self.opened = True
        self.log().info("connection_opened", connections=len(server.connections))
        self._next(answered=False)

    async def _handshake(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        """The TLS handshake under ``tls_handshake_timeout_s``; a failure is a throttled line and an abort."""
        timeout_s = self.server.limits.tls_handshake_timeout_s
        loop = asyncio.get_running_loop()
        # asyncio's own handshake timer is only a backstop behind ours
        start = loop.start_tls(transport, self, context, server_side=True, ssl_handshake_timeout=timeout_s + 1)
        try:
            tls, why = await handshake_within(start, timeout_s)
        except asyncio.CancelledError:
            tls, why = None, ""  # the host is stopping
        if why is None:
            self.task = None
            if tls is None or self.lost:
                self._abort()
                return
            self._open(tls)
            return
        self.task = None
        if why:
            self.server.throttled.note("tls_handshake_failed", why, peer=self.peer, tls_handshake_timeout_s=timeout_s)
        else:
            self.log().info("connection_closed", why="host stopping")
        self._abort()

    def _next(self, *, answered: bool) -> None:
        """Not busy: answer the next whole frame, or wait for more bytes under the right deadline."""
        decoder = self.decoder
        assert decoder is not None
        assert not self.busy
        if self.closing:
            return
        try:
            frame = decoder.next_frame()
        except WireError as error:  # FrameTooLarge included: the stream cannot be resynchronised
            self.log().warning("frame_rejected", field=error.field, offset=error.offset, error=error.reason)
            self.close()
            return
        if frame is not NEED_DATA:
            assert isinstance(frame, bytes)
            self.busy = True
            self.deadline = None
            self.task = asyncio.get_running_loop().create_task(self._answer_all(frame))
            return
        if self.eof:
            self.log().info("connection_closed", why="peer closed")
            self.close()
            return
        self._update_reading()
        if not decoder.in_frame:
            self.frame_deadline = None
            self._set_deadline(self._idle_deadline())
            return
        if answered or self.frame_deadline is None:
            self.frame_deadline = asyncio.get_running_loop().time() + self.server.limits.frame_timeout_s
        self._set_deadline(self.frame_deadline)

    async def _answer_all(self, frame: bytes) -> None:
        """Answer ``frame`` and every whole frame behind it, in order; the connection's one task while busy."""
        decoder = self.decoder
        assert decoder is not None
        try:
            while True:
                if not await self._answer(frame):
                    self.close()
                    return
                following = decoder.next_frame()
                if following is NEED_DATA:
                    break
                assert isinstance(following, bytes)
                frame = following
        except WireError as error:
            self.log().warning("frame_rejected", field=error.field, offset=error.offset, error=error.reason)
            self.close()
        except asyncio.CancelledError:
            self.log().info("connection_closed", why="host stopping")
            self.close()
        except (ConnectionError, ssl.SSLError) as error:
            if not self.closing:
                self.closing = True
                self.log().info("connection_closed", why=f"peer: {error.__class__.__name__}")
            self._abort()
        except Exception:
            # A bug in the host: this connection ends, every other one carries on.
            self.log().exception("connection_failed")
            self.close()
        finally:
            self.busy = False
            self.task = None
        if self.lost:
            self._finish()
        elif not self.closing:
            self._next(answered=True)

    async def _answer(self, frame: bytes) -> bool:
        """Handle one frame; returns False when the connection must close."""
        server = self.server
        transport = self.transport
        assert transport is not None
        started = time.perf_counter()
        tracer = server.tracer
        stalled = False
        if tracer is not None:
            tracer.frame(self.conn_id, IN, self.peer, frame)
        subject = certificate_subject(transport.get_extra_info("peercert"))  # mutual TLS, after handshake
        outcome = await server.host.handle(frame, peer_subject=subject)
        self.tid = outcome.log.get("tid", self.tid)
        if outcome.delay_s:
            await asyncio.sleep(outcome.delay_s)  # a scenario stalls this reply; other connections go on
        if outcome.reply is not None:
            if self.lost:
                raise ConnectionResetError("Connection lost")
            transport.write(encode_frame(server.host.dialect.length_header, outcome.reply))
            if tracer is not None:
                tracer.frame(self.conn_id, OUT, self.peer, outcome.reply)
            if self.drain is not None:
                try:
                    async with asyncio.timeout(server.limits.frame_timeout_s):  # a peer that reads no replies
                        await asyncio.shield(self.drain)
                except TimeoutError:
                    stalled = True
        log_outcome(self.log(), outcome, started, stalled=stalled, frame_timeout_s=server.limits.frame_timeout_s)
        if server.stopping or stalled:
            return False
        return not outcome.close

    def _idle_deadline(self) -> float | None:
        idle_s = self.server.limits.idle_timeout_s
        return None if idle_s is None else asyncio.get_running_loop().time() + idle_s

    def _set_deadline(self, when: float | None) -> None:
        self.deadline = when
        if when is None or (self.timer is not None and self.timer_at <= when):
            return  # the timer fires earlier and finds the deadline moved
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_at = asyncio.get_running_loop().call_at(when, self._on_timer), when

    def _on_timer(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.closing or self.busy:
            return
        if asyncio.get_running_loop().time() < deadline:
            self.timer, self.timer_at = asyncio.get_running_loop().call_at(deadline, self._on_timer), deadline
            return
        decoder = self.decoder
        assert decoder is not None
        if decoder.in_frame:
            self.log().warning("frame_timeout", frame_timeout_s=self.server.limits.frame_timeout_s,
                               buffered_bytes=decoder.buffered_bytes)  # fmt: skip
        else:
            self.log().info("connection_idle", idle_timeout_s=self.server.limits.idle_timeout_s)
        self.close()

    def _update_reading(self) -> None:
        """Pause reading while replies wait to be written, or while a request is in the pipeline and a chunk's worth
        of bytes is already buffered; resume otherwise."""
        transport, decoder = self.transport, self.decoder
        if transport is None or decoder is None or self.lost or self.closing:
            return
        pause = self.drain is not None or (self.busy and decoder.buffered_bytes >= self.server.limits.read_chunk_bytes)
        if pause != self.read_paused:
            self.read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # --- the end --------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """The host is stopping: close now unless busy (a request in the pipeline closes after its reply)."""
        if self.task is not None and not self.busy:  # a handshake
            self.task.cancel()
        elif not self.busy and not self.closing and not self.lost:
            self.log().info("connection_closed", why="host stopping")
            self.close()

    def close(self) -> None:
        """Close gracefully (the rest of a reply, TLS's close_notify) within ``CLOSE_TIMEOUT_S``, else abort."""
        self.closing = True
        self.deadline = None
        transport = self.transport
        if transport is None or self.lost or self.abort_timer is not None:
            return
        transport.close()
        self.abort_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._abort)

    def _abort(self) -> None:
        self.closing = True
        if self.transport is not None and not self.lost:
            self.transport.abort()
        if not self.opened and not self.busy:
            self._finish()  # a failed handshake: no connection_lost may come back to this protocol

    def _cancel_timers(self) -> None:
        for timer in (self.timer, self.abort_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.abort_timer = None

    def _finish(self) -> None:
        """Give the gate slot back, once: the socket is closed and nothing of the connection runs any more."""
        if not self.slot:
            return
        self.slot = False
        self._cancel_timers()
        server = self.server
        del server.connections[self.conn_id]
        server.gate.leave(self.address)
        if self.opened and server.tracer is not None:
            server.tracer.connection_closed(self.conn_id, self.peer)
        server.connection_gone()
