"""Trace capture (`serve --trace`): every frame in and out as JSON lines, redacted on request, rotated by size."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hosting import TEST_PAN, RunningHost, local_now, running_host
from processes import serving, terminal
from structlog.testing import capture_logs
from waiting import until_blocking

from iso_host.cli.main import main
from iso_host.errors import ConfigError
from iso_host.limits import Limits
from iso_host.server import Server
from iso_host.styles import UploadRecord
from iso_host.styles.cup import upload_records_field
from iso_host.trace import Tracer, redact_body
from iso_host.wire import Dialect, Envelope, Message, decode, encode, encode_frame, load_dialect

LINE_KEYS = ["conn", "dir", "mono_ns", "wall", "dialect", "peer", "hex"]
MASKED_PAN = TEST_PAN[:6] + "000000" + TEST_PAN[-4:]
PAN_MIDDLE = TEST_PAN[6:-4]
PIN_BLOCK = "0123456789ABCDEF"  # not a real PIN block: the host need not accept it, only the trace must hide it


@asynccontextmanager
async def traced_host(tmp_path: Path, dialect_name: str, **options: Any) -> AsyncIterator[tuple[RunningHost, Path]]:
    """A host from ``running_host`` served by a second ``Server`` that has a tracer; the trace is complete on exit."""
    path = tmp_path / "trace.jsonl"
    async with running_host(tmp_path, dialect_name) as running:
        tracer = Tracer(path, running.dialect, **options)
        server = Server(running.server.host, Limits(), tracer=tracer)
        address = await server.start("127.0.0.1", 0)
        try:
            yield replace(running, address=address, server=server), path
        finally:
            await server.stop(grace_s=2.0)  # closes the tracer: everything is written


def read_trace(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


def frame_of(line: dict[str, Any], dialect: Dialect) -> bytes:
    """The frame body (after the length header) a line recorded; checks the header announces its length."""
    raw = bytes.fromhex(line["hex"])
    header = dialect.length_header
    assert header.read(raw[: header.size_bytes]) == len(raw) - header.size_bytes
    return raw[header.size_bytes :]


def message_of(line: dict[str, Any], dialect: Dialect) -> Message:
    return decode(frame_of(line, dialect), dialect)[1]


async def wait_for_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the host sends until it closes the connection."""
    received = b""
    async with asyncio.timeout(5):
        while chunk := await reader.read(65_536):
            received += chunk
    return received


async def test_sale_and_echo_recorded_in_order(tmp_path: Path, dialect_name: str) -> None:
    """Every frame in and out, in order, with the connection id and a close line; the bytes are the wire's."""
    async with traced_host(tmp_path, dialect_name) as (running, path):
        client = await running.connected_client()  # signs on where the dialect requires it
        exchanged: list[tuple[bytes, bytes]] = []
        sale = client.build("sale", local_now(), amount=1234, pan=TEST_PAN)
        for request in (sale, client.build("echo", local_now())):
            sent = client.frame(request)
            await client.send_raw(sent)
            exchanged.append((sent, await client.receive_frame()))
        await client.close()
        second = await running.connected_client(signon=False)
        await second.request(second.build("echo", local_now()))
        await second.close()
    lines = read_trace(path)
    dialect = running.dialect
    signon = ["in", "out"] if dialect.security.require_signon else []
    first = [line for line in lines if line["conn"] == 1]
    assert [line["dir"] for line in first] == [*signon, "in", "out", "in", "out", "close"]
    assert [line["dir"] for line in lines if line["conn"] == 2] == ["in", "out", "close"]
    assert lines == sorted(lines, key=lambda line: line["mono_ns"])
    for line in lines:
        expected = LINE_KEYS if line["dir"] != "close" else LINE_KEYS[:-1]
        assert list(line) == expected, line
        assert line["dialect"] == dialect_name
        assert re.fullmatch(r"127\.0\.0\.1:\d+", line["peer"])
        assert datetime.fromisoformat(line["wall"]).utcoffset() == UTC.utcoffset(None)
        assert line["wall"].endswith("Z")
    assert len({line["peer"] for line in first}) == 1
    recorded = first[len(signon) : len(signon) + 4]
    pairs = list(zip(recorded[::2], recorded[1::2], strict=True))
    for (sent, received), (request_line, response_line) in zip(exchanged, pairs, strict=True):
        assert request_line["hex"] == sent.hex().upper()
        assert response_line["hex"] == encode_frame(dialect.length_header, received).hex().upper()
        assert message_of(request_line, dialect) == decode(sent[dialect.length_header.size_bytes :], dialect)[1]
        assert message_of(response_line, dialect) == client.decode_response(received)
    assert message_of(recorded[0], dialect).fields["2"] == TEST_PAN  # without --trace-redact: as on the wire
    assert message_of(recorded[1], dialect).mti == "0210"


def card_sale(running: RunningHost, client: Any) -> Message:
    """A sale carrying everything redaction must hide: PAN, track 2, PIN block (and track 3 where defined)."""
    request: Message = client.build("sale", local_now(), amount=500, pan=TEST_PAN)
    separator = "D" if running.dialect.spec["35"]["data_enc"] == "b" else "="
    request.fields["35"] = f"{TEST_PAN}{separator}29122010000000000000"
    request.fields["52"] = PIN_BLOCK
    if "36" in running.dialect.spec:
        request.fields["36"] = f"99{TEST_PAN}{separator}1234567890"
    return request


async def test_redacted_trace_hides_card_data_and_still_decodes(tmp_path: Path, dialect_name: str) -> None:
    """--trace-redact: no clear PAN anywhere, PIN block zeroed, and every frame still decodes with the dialect."""
    async with traced_host(tmp_path, dialect_name, redact=True) as (running, path):
        client = await running.connected_client()
        await client.request(card_sale(running, client))
        await client.request(client.build("echo", local_now()))
        await client.close()
    text = path.read_text(encoding="ascii").upper()
    for secret in (TEST_PAN, PIN_BLOCK, TEST_PAN.encode().hex().upper(), PAN_MIDDLE.encode().hex().upper()):
        assert secret not in text
    frames = [line for line in read_trace(path) if line["dir"] != "close"]
    assert len(frames) == (6 if running.dialect.security.require_signon else 4)
    messages = [message_of(line, running.dialect) for line in frames]  # every recorded frame decodes
    sale = next(message for message in messages if message.mti == "0200")
    assert sale.fields["2"] == MASKED_PAN
    assert sale.fields["35"].startswith(MASKED_PAN)
    assert set(sale.fields["35"][len(TEST_PAN) + 1 :]) == {"0"}
    assert sale.fields["52"] == "0" * len(PIN_BLOCK)
    for message in messages:
        assert all(PAN_MIDDLE not in value for value in message.fields.values()), message.mti
    if "36" in sale.fields:
        assert sale.fields["36"] == f"99{TEST_PAN[:4]}{'0' * 8}{TEST_PAN[-4:]}{sale.fields['35'][16]}{'0' * 10}"


@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "clear"])
async def test_undecodable_frames(tmp_path: Path, redact: bool) -> None:
    """A frame that does not decode is recorded without its bytes when redacting, as it came otherwise."""
    dialect = load_dialect("iso87ascii")
    sale = Message("0200", {"2": TEST_PAN, "3": "000000", "4": "000000000100", "11": "000001"})
    body = encode(sale, Envelope(), dialect)
    cut = body.index(TEST_PAN.encode()) + 12  # a PAN that stops after 12 digits: the MTI decodes, F2 does not
    truncated = body[:cut]
    garbage = b"not an ISO 8583 message"
    async with traced_host(tmp_path, "iso87ascii", redact=redact) as (running, path):
        reader, writer = await asyncio.open_connection(*running.address)
        writer.write(encode_frame(dialect.length_header, truncated))
        writer.write(encode_frame(dialect.length_header, garbage))
        await writer.drain()
        answered = await wait_for_eof(reader)  # a format error for the first, then the host closes
        writer.close()
        await writer.wait_closed()
    lines = read_trace(path)
    assert [line["dir"] for line in lines] == ["in", "out", "in", "close"]
    reply = decode(answered[4:], dialect)[1]
    assert message_of(lines[1], dialect) == reply
    assert reply.fields["39"] == "30"
    for line, sent in ((lines[0], truncated), (lines[2], garbage)):
        if redact:
            assert line["hex"] is None
            assert line["undecodable"] is True
            assert line["length"] == len(sent) + 4
        else:
            assert line["hex"] == encode_frame(dialect.length_header, sent).hex().upper()
    if redact:
        assert TEST_PAN[:12].encode().hex().upper() not in path.read_text(encoding="ascii").upper()


def read_rotated(path: Path, max_bytes: int) -> list[dict[str, Any]]:
    """The lines of FILE.5 .. FILE.1 and FILE, oldest first, after checking that exactly those exist."""
    names = sorted(p.name for p in path.parent.glob(f"{path.name}*"))
    assert names == [path.name, *(f"{path.name}.{n}" for n in range(1, 6))]
    files = [path.with_name(f"{path.name}.{n}") for n in range(5, 0, -1)] + [path]
    assert all(0 < f.stat().st_size <= max_bytes for f in files)
    return [line for f in files for line in read_trace(f)]


async def test_rotation_keeps_five_old_files(tmp_path: Path) -> None:
    """Past --trace-max-bytes the file moves to FILE.1 (FILE.1 to FILE.2 ...); five old files at most."""
    max_bytes = 2_000
    (tmp_path / "trace.jsonl").write_text("a previous run\n")  # moved aside at start, never mixed in
    async with traced_host(tmp_path, "iso87binary", max_bytes=max_bytes) as (running, path):
        client = await running.connected_client()
        for _ in range(40):
            await client.request(client.build("echo", local_now()))
        await client.close()
    lines = read_rotated(path, max_bytes)
    assert lines == sorted(lines, key=lambda line: line["mono_ns"])
    assert lines[-1]["dir"] == "close"
    assert 6 < len(lines) < 81  # the oldest lines rotated away: 40 requests, 40 responses and the close


def test_full_queue_drops_lines_and_warns_once(tmp_path: Path) -> None:
    """The event loop never waits: past max_pending_lines a line is dropped, counted and warned about."""
    dialect = load_dialect("iso87binary")
    tracer = Tracer(tmp_path / "t.jsonl", dialect, max_pending_lines=3, writer_interval_s=60.0)
    with capture_logs() as logs:
        for conn_id in range(10):
            tracer.connection_closed(conn_id, "127.0.0.1:1")
    tracer.close()
    assert tracer.dropped_count == 7
    warnings = [entry for entry in logs if entry["event"] == "trace_lines_dropped"]
    assert [(w["dropped_count"], w["why"]) for w in warnings] == [(1, "queue full")]
    assert [line["conn"] for line in read_trace(tmp_path / "t.jsonl")] == [0, 1, 2]


def test_a_failing_writer_stops_the_trace_not_the_host(tmp_path: Path) -> None:
    """A write or rotation that fails ends tracing (logged once); later lines are dropped and counted."""
    path = tmp_path / "t.jsonl"
    tracer = Tracer(path, load_dialect("iso87binary"), max_bytes=1, writer_interval_s=0.01)
    path.unlink()  # the first rotation cannot move FILE aside
    with capture_logs() as logs:
        tracer.connection_closed(1, "127.0.0.1:1")
        tracer.connection_closed(2, "127.0.0.1:1")
        until_blocking(
            lambda: any(entry["event"] == "trace_writer_failed" for entry in logs),
            what="the writer thread logs trace_writer_failed",
        )
        tracer.connection_closed(3, "127.0.0.1:1")
        tracer.close()
    events = [(entry["event"], entry.get("why")) for entry in logs]
    assert ("trace_writer_failed", None) in events
    assert ("trace_lines_dropped", "writer failed") in events
    assert tracer.dropped_count == 1


def test_only_a_regular_file_rotates(tmp_path: Path) -> None:
    """A named pipe (or /dev/null) as --trace is written to and never renamed, whatever --trace-max-bytes says."""
    fifo = tmp_path / "trace.pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    tracer = Tracer(fifo, load_dialect("iso87binary"), max_bytes=1)
    for conn_id in range(3):
        tracer.connection_closed(conn_id, "127.0.0.1:1")
    tracer.close()
    reader.join(5)
    assert tracer.rotations == 0
    assert [json.loads(line)["conn"] for line in received[0].splitlines()] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.pipe"]






@pytest.mark.parametrize("trace", [True, False], ids=["trace", "no-trace"])
def test_serve_trace_flags(tmp_path: Path, trace: bool) -> None:
    """`serve --trace FILE --trace-redact` records a redacted sale and flushes at SIGTERM; without --trace, no file."""
    flags = ["--trace", "out/trace.jsonl", "--trace-redact", "--trace-max-bytes", "1000000"] if trace else []
    (tmp_path / "out").mkdir()
    with serving(tmp_path, "--dialect", "iso87binary", *flags) as (address, process):
        result = terminal(tmp_path, address, "--dialect", "iso87binary", "sale", "12.34", "--pan", TEST_PAN)
        assert result.returncode == 0, result.stderr
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
        assert process.returncode == 0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "trace" in p.name)
    if not trace:
        assert files == []
        return
    assert files == ["out/trace.jsonl"]
    lines = read_trace(tmp_path / "out" / "trace.jsonl")
    assert [line["dir"] for line in lines] == ["in", "out", "close"]
    dialect = load_dialect("iso87binary")
    assert message_of(lines[0], dialect).fields["2"] == MASKED_PAN
    assert TEST_PAN not in (tmp_path / "out" / "trace.jsonl").read_text(encoding="ascii")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(["--trace-redact"], "need --trace FILE", id="redact-without-trace"),
        pytest.param(["--trace", "t.jsonl", "--trace-max-bytes", "0"], "must be bytes > 0, got 0", id="zero-bytes"),
    ],
)
def test_bad_trace_flags_fail_before_binding(
    tmp_path: Path, flags: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad --trace flag is one line on stderr and exit code 2 (checked before logging is set up)."""
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--ledger", f"sqlite:///{tmp_path / 'l.db'}", *flags]) == 2
    error = capsys.readouterr().err
    assert expected in error
    assert len(error.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "t.jsonl")


def test_unopenable_trace_file_is_a_config_error(tmp_path: Path) -> None:
    """`serve` reports a trace file it cannot open as a ConfigError naming the flag, before it binds."""
    with pytest.raises(ConfigError, match=r"--trace .*t\.jsonl: cannot open"):
        Tracer(tmp_path / "missing" / "t.jsonl", load_dialect("iso87binary"))


def test_redaction_of_the_other_card_fields(dialect_name: str) -> None:
    """Track 1 (name too), ICC data, and the PANs of a CUP batch upload are masked; the frame still decodes."""
    dialect = load_dialect(dialect_name)
    fields = {"2": TEST_PAN, "3": "000000", "4": "000000000100", "11": "000001", "41": "TERM0001",
              "42": "MERCHANT0000001", "55": "5A08" + TEST_PAN + "9F2701"}  # fmt: skip
    if "45" in dialect.spec:
        fields["45"] = f"B{TEST_PAN}^DOE/JOHN^2912201"
    envelope = Envelope(bytes.fromhex("6000010000"), bytes(dialect.header_bytes)) if dialect.tpdu else Envelope()
    body = encode(Message("0200", fields), envelope, dialect)
    redacted = redact_body(body, dialect)
    assert redacted is not None
    assert len(redacted) == len(body)
    decoded_envelope, message = decode(redacted, dialect)
    assert decoded_envelope == envelope
    assert message.fields["55"] == "0" * len(fields["55"])
    if "45" in fields:
        assert message.fields["45"] == f"B{MASKED_PAN}^000/0000^0000000"
    if dialect.family == "cup":
        upload = dialect.render("batch_upload", {"stan": 7, "tid": "TERM0001", "mid": "MERCHANT0000001", "batch": 1,
            "records": upload_records_field([UploadRecord("000001", TEST_PAN, 100, False)] * 2)})  # fmt: skip
        body = encode(upload, envelope, dialect)
        redacted = redact_body(body, dialect)
        assert redacted is not None
        records = decode(redacted, dialect)[1].fields["48"]
        assert records == "02" + f"00000001{MASKED_PAN:0>20}000000000100" * 2
