"""The two connection edges (``[server] edge``): the Protocol edge (default) and the streams edge keep the same
contract. Pipelined frames are answered in order, the frame deadline and the idle timeout close a connection,
framing errors close it with a line, stop closes idle connections, TLS carries the client certificate's subject,
and a peer that reads no replies pauses the Protocol edge's reading until it reads again."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from hosting import RunningHost, local_now, running_host
from structlog.testing import capture_logs
from tls_material import make_tls_files
from waiting import DEFAULT_TIMEOUT_S, until

from iso_host.config import load_config
from iso_host.edge import Connection
from iso_host.errors import ConfigError
from iso_host.limits import Limits
from iso_host.server import EDGES, Edge, Server
from iso_host.tls import client_context, server_context
from iso_host.wire import decode

SHORT_TIMEOUT_S = 0.3
EDGE_PARAMS = pytest.mark.parametrize("edge", EDGES)


@asynccontextmanager
async def edge_host(
    tmp_path: Path, edge: Edge, limits: Limits | None = None, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RunningHost]:
    """A host from ``running_host`` served by a second ``Server`` with the given edge."""
    async with running_host(tmp_path, "iso87binary") as running:
        server = Server(running.server.host, limits or Limits(), edge=edge, ssl_context=ssl_context)
        address = await server.start("127.0.0.1", 0)
        try:
            yield replace(running, address=address, server=server)
        finally:
            await server.stop(grace_s=2.0)


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the host has closed the connection (a reset counts)."""
    try:
        async with asyncio.timeout(DEFAULT_TIMEOUT_S):
            while await reader.read(65_536):
                pass
            return True
    except ConnectionResetError:
        return True


async def read_replies(host: RunningHost, reader: asyncio.StreamReader, count: int) -> list[str]:
    """``count`` reply frames; their STANs (F11), in the order they came."""
    stans = []
    for _ in range(count):
        async with asyncio.timeout(DEFAULT_TIMEOUT_S):
            size = int.from_bytes(await reader.readexactly(2), "big")
            _, message = decode(await reader.readexactly(size), host.dialect)
        assert message.mti == "0810"
        stans.append(message.fields["11"])
    return stans


@EDGE_PARAMS
async def test_pipelined_frames_are_answered_in_order(tmp_path: Path, edge: Edge) -> None:
    """Thirty echo frames in one write, and two more split across the write's boundary: every reply, in order."""
    async with edge_host(tmp_path, edge) as host:
        client = host.client()
        frames = [client.frame(client.build("echo", local_now())) for _ in range(32)]
        stans = [decode(frame[2:], host.dialect)[1].fields["11"] for frame in frames]
        reader, writer = await asyncio.open_connection(*host.address)
        joined = b"".join(frames)
        cut = len(b"".join(frames[:30])) + 3  # inside the 31st frame's body
        writer.write(joined[:cut])
        assert await read_replies(host, reader, 30) == stans[:30]
        writer.write(joined[cut:])
        assert await read_replies(host, reader, 2) == stans[30:]
        writer.close()


@EDGE_PARAMS
async def test_frame_deadline_idle_timeout_and_framing_errors_close(tmp_path: Path, edge: Edge) -> None:
    """A half frame: frame_timeout; a silent connection: connection_idle; an oversized length header and EOF inside a
    frame: frame_rejected. Each closes only its own connection."""
    limits = Limits(frame_timeout_s=SHORT_TIMEOUT_S, idle_timeout_s=SHORT_TIMEOUT_S, max_frame_bytes=1_000)
    with capture_logs() as logs:
        async with edge_host(tmp_path, edge, limits) as host:
            half_reader, half_writer = await asyncio.open_connection(*host.address)
            half_writer.write(b"\x00\x40" + b"0800")
            idle_reader, idle_writer = await asyncio.open_connection(*host.address)
            big_reader, big_writer = await asyncio.open_connection(*host.address)
            big_writer.write(b"\xff\xff")
            eof_reader, eof_writer = await asyncio.open_connection(*host.address)
            eof_writer.write(b"\x00\x40" + b"08")
            eof_writer.write_eof()
            for reader in (half_reader, idle_reader, big_reader, eof_reader):
                assert await closed(reader)
            for writer in (half_writer, idle_writer, big_writer, eof_writer):
                writer.close()
            await until(lambda: host.server.connection_count == 0, what="every connection gave its slot back")
    events = [entry["event"] for entry in logs]
    assert events.count("frame_timeout") == 1
    assert events.count("frame_rejected") == 2
    assert events.count("connection_idle") >= 1
    assert events.count("connection_opened") == events.count("connection_closed") + events.count(
        "frame_timeout"
    ) + events.count("frame_rejected") + events.count("connection_idle")


@EDGE_PARAMS
async def test_stop_closes_idle_connections_and_gives_slots_back(tmp_path: Path, edge: Edge) -> None:
    async with running_host(tmp_path, "iso87binary") as running:
        server = Server(running.server.host, Limits(), edge=edge)
        address = await server.start("127.0.0.1", 0)
        peers = [await asyncio.open_connection(*address) for _ in range(5)]
        await until(lambda: server.connection_count == 5, what="the host holds five idle connections")
        with capture_logs() as logs:
            await server.stop(grace_s=2.0)
        assert server.connection_count == 0
        assert server.gate.count == 0
        for reader, writer in peers:
            assert await closed(reader)
            writer.close()
    assert [entry["why"] for entry in logs if entry["event"] == "connection_closed"] == ["host stopping"] * 5


@EDGE_PARAMS
async def test_mutual_tls_echo_on_either_edge(tmp_path: Path, edge: Edge) -> None:
    """The handshake runs under the server's timeout holding a slot; an echo goes through, and the slot is freed."""
    files = make_tls_files(tmp_path)
    context = server_context(str(files.server_cert), str(files.server_key), str(files.ca))
    terminal_tls = client_context(str(files.ca), str(files.client_cert), str(files.client_key))
    async with edge_host(tmp_path, edge, ssl_context=context) as host:
        client = host.client()
        await client.connect(*host.address, ssl_context=terminal_tls, timeout_s=5.0)
        async with client:
            first, second = client.build("echo", local_now()), client.build("echo", local_now())
            await client.send_raw(client.frame(first) + client.frame(second))  # both in one TLS record
            replies = [client.decode_response(await client.receive_frame()) for _ in range(2)]
        assert [reply.fields["11"] for reply in replies] == [first.fields["11"], second.fields["11"]]
        await until(lambda: host.server.connection_count == 0, what="the TLS connection gave its slot back")


async def test_a_peer_that_reads_nothing_pauses_reading_until_it_reads(tmp_path: Path) -> None:
    """Pipelined echoes from a peer that reads no replies fill the write buffer: the Protocol edge stops reading
    (no unbounded buffering of requests), and once the peer reads, every reply comes, in order."""
    async with edge_host(tmp_path, "protocol", Limits(frame_timeout_s=DEFAULT_TIMEOUT_S)) as host:
        client = host.client()
        frames = [client.frame(client.build("echo", local_now())) for _ in range(3_000)]
        stans = [decode(frame[2:], host.dialect)[1].fields["11"] for frame in frames]
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4_096)  # before connect: a small window
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, host.address)
        reader, writer = await asyncio.open_connection(sock=raw)
        await until(lambda: host.server.connection_count == 1, what="the host holds the connection")
        (connection,) = host.server.connections.values()
        assert isinstance(connection, Connection)
        assert connection.transport is not None
        connection.transport.set_write_buffer_limits(high=4_096)
        connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4_096)
        writer.write(b"".join(frames))  # the client's own buffer holds what the host does not read
        # Reading may pause first while a request is handled with a chunk buffered; what must come is the pause
        # because replies wait to be written.
        await until(lambda: connection.read_paused and connection.drain is not None,
                    what="the host stops reading from a peer that reads nothing, its replies waiting")  # fmt: skip
        assert await read_replies(host, reader, len(frames)) == stans
        assert not connection.read_paused
        writer.close()


def test_config_edge(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('[server]\nedge = "streams"\n')
    assert load_config(str(path)).edge == "streams"
    path.write_text('[server]\nedge = "uvloop"\n')
    with pytest.raises(ConfigError, match=r"server\.edge"):
        load_config(str(path))
    path.write_text("[server]\n")
    assert load_config(str(path)).edge == "protocol"
