"""Holding connections over real sockets: dripped frames, one address's share, stalled and failed TLS handshakes.

Each test performs the attack with small configured limits and shows that the host closes what it must while a
legitimate terminal is served; the times are measured, never slept.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from hosting import RunningHost, local_now, running_host
from structlog.testing import capture_logs
from tls_material import TlsFiles, make_tls_files
from waiting import DEFAULT_TIMEOUT_S, until

from iso_host.limits import Limits
from iso_host.terminal.client import ClientError
from iso_host.tls import client_context, server_context
from iso_host.wire import decode

FRAME_TIMEOUT_S = 0.5  # short, so that a test waits little for the deadline
HANDSHAKE_TIMEOUT_S = 0.5
DRIP_EVERY_S = 0.1  # the attacker's pace: well inside the frame timeout, so a per-read timeout would never fire
SLACK_S = 2.5  # how late past its deadline a close may come on a slow, shared machine


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the host has closed the connection (a reset counts); the deadline only fails a host that never does."""
    try:
        async with asyncio.timeout(DEFAULT_TIMEOUT_S):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pieces: list[bytes]) -> tuple[int, bytes]:
    """Send ``pieces`` ``DRIP_EVERY_S`` apart, pacing each by waiting that long for the host's close or answer;
    returns how many pieces went out before it came, and what came: b"" for a close, else an answer's first byte."""
    for sent, piece in enumerate(pieces, 1):
        writer.write(piece)
        await writer.drain()
        try:
            async with asyncio.timeout(DRIP_EVERY_S):
                return sent, await reader.read(1)
        except TimeoutError:
            continue
    raise AssertionError("the host neither closed nor answered")


async def echo_from(host: RunningHost, local_ip: str) -> str:
    """An echo written by hand from ``local_ip`` (any 127.x address is this machine's); its F39."""
    request = host.client().frame(host.client().build("echo", local_now()))
    reader, writer = await asyncio.open_connection(*host.address, local_addr=(local_ip, 0))
    try:
        writer.write(request)
        async with asyncio.timeout(DEFAULT_TIMEOUT_S):
            size = int.from_bytes(await reader.readexactly(2), "big")
            body = await reader.readexactly(size)
    finally:
        writer.close()
    return decode(body, host.dialect)[1].fields["39"]


class TestFrameDeadline:
    async def test_dripped_frame_is_closed_at_its_deadline(self, tmp_path: Path) -> None:
        """A frame dripped a byte every 0.1 s (each read well inside the timeout) is closed frame_timeout_s after
        its first byte, while the drip still goes on."""
        limits = Limits(frame_timeout_s=FRAME_TIMEOUT_S)
        frame = (200).to_bytes(2, "big") + b"0800" + bytes(196)  # 20 s at the drip's pace
        with capture_logs() as logs:
            async with running_host(tmp_path, "iso87binary", limits) as host:
                reader, writer = await asyncio.open_connection(*host.address)
                loop = asyncio.get_running_loop()
                started = loop.time()
                sent, came = await drip(reader, writer, [bytes([byte]) for byte in frame])
                elapsed = loop.time() - started
                writer.close()
                rows = host.ledger_rows()
        assert (came, sent < len(frame)) == (b"", True), "the host closed before the frame was complete"
        assert FRAME_TIMEOUT_S <= elapsed < FRAME_TIMEOUT_S + SLACK_S, elapsed
        (timeout,) = [entry for entry in logs if entry["event"] == "frame_timeout"]
        assert timeout["frame_timeout_s"] == FRAME_TIMEOUT_S
        assert 2 < timeout["buffered_bytes"] < len(frame)
        assert rows == []

    async def test_frame_in_pieces_within_the_deadline_is_answered(self, tmp_path: Path) -> None:
        """The deadline spans the whole frame, not each read: a frame in three pieces inside it is answered, and
        the next frame on the connection gets a deadline of its own."""
        limits = Limits(frame_timeout_s=2.0)
        async with running_host(tmp_path, "iso87binary", limits) as host:
            client = host.client()
            for _ in range(2):
                frame = client.frame(client.build("echo", local_now()))
                reader, writer = await asyncio.open_connection(*host.address)
                third = len(frame) // 3
                pieces = [frame[:third], frame[third : 2 * third], frame[2 * third :]]
                sent, first = await drip(reader, writer, pieces)
                assert sent == len(pieces)
                async with asyncio.timeout(DEFAULT_TIMEOUT_S):
                    size = int.from_bytes(first + await reader.readexactly(1), "big")
                    reply = await reader.readexactly(size)
                assert decode(reply, host.dialect)[1].fields["39"] == "00"
                writer.close()


class TestPerPeer:
    async def test_one_address_gets_its_share_and_no_more(self, tmp_path: Path) -> None:
        """With max_connections_per_peer = 3 a fourth connection from 127.0.0.1 is closed at once (one throttled
        line), 127.0.0.2 is served meanwhile, and 127.0.0.1 gets a slot again once one of its three closes."""
        limits = Limits(max_connections=10, max_connections_per_peer=3)
        with capture_logs() as logs:
            async with running_host(tmp_path, "iso87binary", limits) as host:
                held = [await asyncio.open_connection(*host.address) for _ in range(3)]
                await until(lambda: host.server.connection_count == 3, what="the host holds 127.0.0.1's three")
                extra_reader, extra_writer = await asyncio.open_connection(*host.address)
                assert await closed(extra_reader)
                extra_writer.close()
                assert await echo_from(host, "127.0.0.2") == "00"
                held[0][1].close()
                await until(lambda: host.server.gate.peer_count("127.0.0.1") == 2, what="one of the three is gone")
                assert await echo_from(host, "127.0.0.1") == "00"
                await until(lambda: host.server.connection_count == 2, what="the echo's connection gives its slot back")
                for _, writer in held[1:]:
                    writer.close()
        refused = [entry for entry in logs if entry["event"] == "connection_refused"]
        assert [(entry["why"], entry["count"], entry["per_peer"]) for entry in refused] == [
            ("max_connections_per_peer", 1, 3)
        ]


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path)


class TestTlsHandshakes:
    async def test_stalled_handshakes_time_out_and_a_terminal_gets_through(
        self, tmp_path: Path, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Six TCP connections that never send a ClientHello fill max_connections = 6 (handshakes hold slots);
        they are dropped after tls_handshake_timeout_s, and a valid mTLS terminal's echo then gets through."""
        context = server_context(str(tls_files.server_cert), str(tls_files.server_key), str(tls_files.ca))
        limits = Limits(max_connections=6, tls_handshake_timeout_s=HANDSHAKE_TIMEOUT_S)
        terminal_tls = client_context(str(tls_files.ca), str(tls_files.client_cert), str(tls_files.client_key))
        with capture_logs() as logs:
            async with running_host(tmp_path, "cup", limits, ssl_context=context) as host:
                loop = asyncio.get_running_loop()
                started = loop.time()
                stalled = [await asyncio.open_connection(*host.address) for _ in range(6)]
                await until(lambda: host.server.connection_count == 6, what="the stalled handshakes hold every slot")

                async def echo_answered() -> bool:
                    client = host.client()
                    try:
                        await client.connect(*host.address, ssl_context=terminal_tls, timeout_s=2.0)
                        async with client:
                            response = await client.request(client.build("echo", local_now()), timeout_s=2.0)
                    except (ClientError, ConnectionError):
                        return False  # refused: every slot is taken
                    return response.fields["39"] == "00"

                await until(echo_answered, what="a valid mTLS terminal gets an echo through")
                elapsed = loop.time() - started
                for reader, writer in stalled:
                    assert await closed(reader)
                    writer.close()
        assert HANDSHAKE_TIMEOUT_S <= elapsed < HANDSHAKE_TIMEOUT_S + SLACK_S, elapsed
        failures = [entry for entry in logs if entry["event"] == "tls_handshake_failed"]
        assert {entry["why"] for entry in failures} == {"timeout"}
        assert [entry["count"] for entry in failures] == [1, 5], "one line at once, the rest counted in one more"
        assert not [record for record in caplog.records if record.levelno >= logging.WARNING]

    async def test_failed_handshakes_are_logged_rate_limited(
        self, tmp_path: Path, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Twenty plaintext peers on a TLS port: each is dropped, and the log gets one line at once and one line
        with the count of the rest (at the end of the interval, here at stop), nothing on asyncio's logger."""
        context = server_context(str(tls_files.server_cert), str(tls_files.server_key))
        with capture_logs() as logs:
            async with running_host(tmp_path, "iso87binary", ssl_context=context) as host:
                for _ in range(20):
                    reader, writer = await asyncio.open_connection(*host.address)
                    writer.write(b"GET / HTTP/1.1\r\nHost: iso-host\r\n\r\n")
                    assert await closed(reader)
                    writer.close()
                await until(lambda: host.server.connection_count == 0, what="every plaintext peer is dropped")
                first = [entry for entry in logs if entry["event"] == "tls_handshake_failed"]
                assert [entry["count"] for entry in first] == [1], "the rest wait for the end of the interval"
        failures = [entry for entry in logs if entry["event"] == "tls_handshake_failed"]
        assert [entry["count"] for entry in failures] == [1, 19]
        assert len({entry["why"] for entry in failures}) == 1
        assert failures[0]["why"] != "timeout"
        assert failures[0]["every_s"] == Limits().log_every_s
        assert not [record for record in caplog.records if record.levelno >= logging.WARNING]

    async def test_tls_sale_after_the_handshake_moved_into_the_server(
        self, tmp_path: Path, tls_files: TlsFiles
    ) -> None:
        """The handshake the server now runs itself still serves a pipelined exchange: two echoes on one connection."""
        context = server_context(str(tls_files.server_cert), str(tls_files.server_key))
        async with running_host(tmp_path, "iso87binary", ssl_context=context) as host:
            client = host.client()
            await client.connect(*host.address, ssl_context=client_context(str(tls_files.ca)))
            async with client:
                for _ in range(2):
                    response = await client.request(client.build("echo", local_now()))
                    assert response.fields["39"] == "00"
            await until(lambda: host.server.connection_count == 0, what="the closed connection gives its slot back")
