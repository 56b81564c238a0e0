"""Bad input over real sockets: a clear answer or a clean close, an unchanged ledger, other peers unharmed."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hosting import TEST_PAN, local_now, running_host
from structlog.testing import capture_logs
from waiting import DEFAULT_TIMEOUT_S, until

from iso_host.limits import Limits
from iso_host.terminal.client import ClientError
from iso_host.wire import decode, encode_frame

SHORT_TIMEOUT_S = 0.3  # a host timeout short enough that a test need not wait long for it to fire


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """Everything the host sends until it closes the connection; the deadline only fails a host that never does."""
    async with asyncio.timeout(timeout_s):
        return await reader.read()


class TestGarbage:
    async def test_garbage_on_one_connection_does_not_disturb_another(self, tmp_path: Path, dialect_name: str) -> None:
        """Random bytes on one connection are refused while a sale on another connection is approved."""
        async with running_host(tmp_path, dialect_name) as host:
            garbage_reader, garbage_writer = await asyncio.open_connection(*host.address)
            rng = random.Random(8583)
            body = bytes(rng.randrange(256) for _ in range(60))
            garbage_writer.write(encode_frame(host.dialect.length_header, body))
            await garbage_writer.drain()
            async with await host.connected_client() as client:
                response = await client.request(client.build("sale", local_now(), amount=4200, pan=TEST_PAN))
            assert response.fields["39"] == "00"
            async with asyncio.timeout(DEFAULT_TIMEOUT_S):  # an answer or a close, whichever the host gives
                answer = await garbage_reader.read(4096)
            if answer:  # the MTI happened to be readable: then the answer must be a format error
                _, refusal = decode(answer[host.dialect.length_header.size_bytes :], host.dialect)
                assert refusal.fields["39"] == "30"
            garbage_writer.close()
            rows = host.ledger_rows()
        assert [row["amount_minor"] for row in rows] == [4200]

    async def test_broken_field_gets_format_error(self, tmp_path: Path, dialect_name: str) -> None:
        """A frame whose MTI reads but whose last field is cut short gets a 30 that echoes the readable fields."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client() as client:
                request = client.build("sale", local_now(), amount=99, pan=TEST_PAN)
                framed = client.frame(request)
                header_bytes = host.dialect.length_header.size_bytes
                cut = framed[header_bytes:-3]
                await client.send_raw(encode_frame(host.dialect.length_header, cut))
                response = await client.receive()
                assert response.mti == "0210"
                assert response.fields["39"] == "30"
                assert response.fields["11"] == request.fields["11"]
                # The connection stays usable after a format error.
                follow_up = await client.request(client.build("echo", local_now()))
                assert follow_up.fields["39"] == "00"
            assert host.ledger_rows() == []

    async def test_unreadable_mti_closes_the_connection(self, tmp_path: Path) -> None:
        """When not even the MTI can be read there is no one to answer: the host closes cleanly."""
        async with running_host(tmp_path, "iso87ascii") as host:
            reader, writer = await asyncio.open_connection(*host.address)
            writer.write(b"0002" + b"\xff\xfe")
            await writer.drain()
            assert await read_until_closed(reader) == b""
            writer.close()
            assert host.ledger_rows() == []

    async def test_oversized_frame_closes_the_connection(self, tmp_path: Path) -> None:
        """A length header over max_frame_bytes closes the connection before the body is read."""
        async with running_host(tmp_path, "iso87binary", Limits(max_frame_bytes=512)) as host:
            reader, writer = await asyncio.open_connection(*host.address)
            writer.write((4_000).to_bytes(2, "big"))
            await writer.drain()
            assert await read_until_closed(reader) == b""
            writer.close()

    async def test_ascii_length_header_that_is_not_digits(self, tmp_path: Path) -> None:
        """An ascii4 header with letters in it closes the connection."""
        async with running_host(tmp_path, "iso87ascii") as host:
            reader, writer = await asyncio.open_connection(*host.address)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            await writer.drain()
            assert await read_until_closed(reader) == b""
            writer.close()

    @pytest.mark.parametrize("seed", range(5))
    async def test_mutated_frames_never_reach_the_ledger_unless_valid(self, tmp_path: Path, seed: int) -> None:
        """Mutated sales get 00 (still valid), 30, another decline, no answer or a close, and every 00 is a ledger
        row."""
        rng = random.Random(seed)
        async with running_host(tmp_path, "cup") as host:
            approvals = 0
            for _ in range(10):
                client = await host.connected_client()
                async with client:
                    body = bytearray(client.frame(client.build("sale", local_now(), amount=10, pan=TEST_PAN))[2:])
                    position = rng.randrange(len(body))
                    body[position] ^= 1 << rng.randrange(8)
                    echo = client.build("echo", local_now())
                    try:
                        await client.send_raw(encode_frame(host.dialect.length_header, bytes(body)))
                        # A fence: the connection's requests are answered in order, so an answer to the mutated
                        # frame comes before the echo's; the echo's first means the mutated frame got none.
                        await client.send_raw(client.frame(echo))
                        response = client.decode_response(await client.receive_frame())
                    except ClientError as error:
                        if "no response" in str(error):
                            raise  # the host neither answered nor closed: a hang, not an outcome
                        continue  # closed (or an unreadable answer): no approval
                    if (response.mti, response.fields.get("11")) == ("0810", echo.fields["11"]):
                        continue
                    approvals += response.fields.get("39") == "00"
            assert len(host.ledger_rows()) == approvals


class TestLimits:
    async def test_half_frame_times_out(self, tmp_path: Path) -> None:
        """A frame that stops half-way is dropped once frame_timeout_s expires: logged, and the connection closed."""
        limits = Limits(frame_timeout_s=SHORT_TIMEOUT_S)
        with capture_logs() as logs:
            async with running_host(tmp_path, "iso87binary", limits) as host:
                reader, writer = await asyncio.open_connection(*host.address)
                writer.write(b"\x00\x40" + b"0200")
                await writer.drain()
                assert await read_until_closed(reader) == b""
                writer.close()
        (timeout,) = [entry for entry in logs if entry["event"] == "frame_timeout"]
        assert (timeout["frame_timeout_s"], timeout["buffered_bytes"]) == (SHORT_TIMEOUT_S, 6)
        assert not any(entry["event"] == "connection_idle" for entry in logs), "the half frame is not idleness"

    async def test_idle_connection_times_out_when_configured(self, tmp_path: Path) -> None:
        """With idle_timeout_s set, a silent connection is closed once it expires, and that is logged."""
        with capture_logs() as logs:
            async with running_host(tmp_path, "iso87binary", Limits(idle_timeout_s=SHORT_TIMEOUT_S)) as host:
                reader, writer = await asyncio.open_connection(*host.address)
                assert await read_until_closed(reader) == b""
                writer.close()
        (idle,) = [entry for entry in logs if entry["event"] == "connection_idle"]
        assert idle["idle_timeout_s"] == SHORT_TIMEOUT_S

    async def test_max_connections(self, tmp_path: Path) -> None:
        """Connections beyond max_connections are closed at once; those within keep working."""
        async with running_host(tmp_path, "iso87binary", Limits(max_connections=2)) as host:
            first = await host.connected_client()
            second = await host.connected_client()
            await until(lambda: host.server.connection_count == 2, what="the host holds both allowed connections")
            reader, writer = await asyncio.open_connection(*host.address)
            assert await read_until_closed(reader) == b""
            writer.close()
            for client in (first, second):
                response = await client.request(client.build("echo", local_now()))
                assert response.fields["39"] == "00"
                await client.close()


class TestShutdown:
    async def test_in_flight_request_is_answered_during_shutdown(self, tmp_path: Path) -> None:
        """Stopping the server lets a request already in the pipeline reply before its connection closes."""
        async with running_host(tmp_path, "iso87binary") as host:
            client = await host.connected_client()
            idle_reader, idle_writer = await asyncio.open_connection(*host.address)
            await until(lambda: host.server.connection_count == 2, what="the host holds both connections")
            original_apply = host.store.apply
            applying, gate = asyncio.Event(), asyncio.Event()

            async def gated_apply(commands: object, *, deadline: float | None = None) -> None:
                applying.set()  # the sale is in the pipeline, and stays there until the test opens the gate
                await gate.wait()
                await original_apply(commands, deadline=deadline)  # type: ignore[arg-type]

            host.store.apply = gated_apply  # type: ignore[method-assign]
            request = client.frame(client.build("sale", local_now(), amount=5, pan=TEST_PAN))
            await client.send_raw(request)
            await asyncio.wait_for(applying.wait(), DEFAULT_TIMEOUT_S)
            # A grace far beyond any deadline here: the request in flight is never cut off by it.
            stopping = asyncio.create_task(host.server.stop(grace_s=600))
            # The idle connection's close shows that the stop is under way; only then may the sale go on.
            assert await read_until_closed(idle_reader) == b""
            idle_writer.close()
            assert not stopping.done(), "the stop waits for the request in flight"
            gate.set()
            response = await client.receive(timeout_s=DEFAULT_TIMEOUT_S)
            async with asyncio.timeout(DEFAULT_TIMEOUT_S):  # once the reply is out, the stop ends: no grace waited
                await stopping
            assert response.fields["39"] == "00"
            assert len(host.ledger_rows()) == 1
            await client.close()

    async def test_idle_connections_are_closed_on_stop(self, tmp_path: Path) -> None:
        """An idle connection is closed as soon as the host stops, not left to the stop's grace period."""
        with capture_logs() as logs:
            async with running_host(tmp_path, "iso87binary") as host:
                reader, writer = await asyncio.open_connection(*host.address)
                await until(lambda: host.server.connection_count == 1, what="the host holds the idle connection")
                # A grace far beyond the deadline: a stop that waited it out for the idle connection fails here.
                async with asyncio.timeout(DEFAULT_TIMEOUT_S):
                    await host.server.stop(grace_s=600)
                assert await read_until_closed(reader) == b""
                writer.close()
        assert [entry["why"] for entry in logs if entry["event"] == "connection_closed"] == ["host stopping"]
