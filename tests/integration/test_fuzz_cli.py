"""`iso-host fuzz` over TCP: clean against a real `iso-host serve` in every dialect; findings against a bad host."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from processes import ISO_HOST
from waiting import until_blocking

from iso_host.fuzz.mutations import Mutator
from iso_host.fuzz.run import build_seeds
from iso_host.wire import NEED_DATA, Envelope, FrameDecoder, Message, encode, encode_frame, load_dialect, reply_mti

FRAMES_PER_DIALECT = 3_000
START_DEADLINE_S = 20.0


@contextmanager
def serving_logged(tmp_path: Path, dialect: str) -> Iterator[tuple[str, Path]]:
    """`iso-host serve --port 0` with its log in a file (a pipe nobody drains would stall a busy host)."""
    log_path = tmp_path / "host.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*ISO_HOST, "serve", "--port", "0", "--dialect", dialect, "--log-format", "json", "--log-level", "error"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            addresses: list[str] = []

            def listening() -> bool:
                assert process.poll() is None, f"iso-host serve exited: {log_path.read_text()}"
                events = (json.loads(line).get("event", "") for line in log_path.read_text().splitlines())
                addresses.extend(e.removeprefix("listening on ") for e in events if e.startswith("listening on "))
                return bool(addresses)

            until_blocking(listening, timeout_s=START_DEADLINE_S, what=f"a 'listening on' line in {log_path}")
            yield addresses[0], log_path
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)


def fuzz(address: str, dialect: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ISO_HOST, "fuzz", "--to", address, "--dialect", dialect, "--out", str(out), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso87binary", "cup"])
def test_fuzzing_iso_host_finds_nothing(tmp_path: Path, dialect: str) -> None:
    """3,000 mutated frames of every kind (cup: signed on, re-MAC'd) leave iso-host answering, healthy, unbroken."""
    out = tmp_path / "findings"
    with serving_logged(tmp_path, dialect) as (address, log_path):
        result = fuzz(address, dialect, out, "--count", str(FRAMES_PER_DIALECT), "--seed", "1", "--connections", "8",
                      "--health-every", "500", "--timeout", "10")  # fmt: skip
        host_log = log_path.read_text()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MUTATION" in result.stdout
    total = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert int(total.split()[1]) == FRAMES_PER_DIALECT
    assert "health checks: 7 run, 0 failed" in result.stdout  # at the start, every 500 frames, at the end
    assert "frames/s" in result.stdout
    assert "findings: none" in result.stdout
    assert not out.exists()
    assert "connection_failed" not in host_log


async def approve_everything(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A host that answers every frame with an approval, whatever it holds."""
    dialect = load_dialect("iso87binary")
    decoder = FrameDecoder(dialect.length_header, max_frame_bytes=dialect.length_header.max_length)
    approved = Message(reply_mti("0200"), {"39": "00"})
    approval = encode_frame(dialect.length_header, encode(approved, Envelope(), dialect))
    try:
        # The connection's read loop: it ends when the fuzzer closes.
        while data := await reader.read(65_536):
            decoder.receive_data(data)
            while decoder.next_frame() is not NEED_DATA:
                writer.write(approval)
            await writer.drain()
    except (ConnectionError, ValueError):
        pass  # an oversized frame: this host is bad, but not at framing
    finally:
        writer.close()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A host that reads and never answers."""
    with_reads = await reader.read(65_536)
    while with_reads:  # the connection's read loop: it ends when the fuzzer gives up and closes
        with_reads = await reader.read(65_536)
    writer.close()


@asynccontextmanager
async def fake_host(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                    ) -> AsyncIterator[str]:  # fmt: skip
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield f"{host}:{port}"
    finally:
        server.close()


async def fuzz_async(address: str, out: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *ISO_HOST, "fuzz", "--to", address, "--dialect", "iso87binary", "--out", str(out), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def test_a_host_that_approves_everything_is_caught(tmp_path: Path) -> None:
    """Approvals of frames that do not decode are findings: exit 1, one reproducer each, replayable from the seed."""
    out = tmp_path / "findings"
    async with fake_host(approve_everything) as address:
        code, output = await fuzz_async(address, out, "--count", "200", "--seed", "5", "--timeout", "5")
    assert code == 1, output
    assert "approved_invalid" in output
    reproducers = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    assert reproducers
    assert {r["finding"] for r in reproducers} == {"approved_invalid"}
    first = reproducers[0]
    assert {"seed", "index", "mutation", "hex", "what", "frame_hex"} <= set(first)
    assert first["seed"] == 5
    # The reproducer's bytes are frame (seed, index) of the engine: nothing else went into them.
    dialect = load_dialect("iso87binary")
    mutator = Mutator(dialect, build_seeds(dialect, "TERM0001", "MERCHANT0000001", None), max_frame_bytes=8_192)
    assert mutator.frame(5, first["index"], None).body.hex().upper() == first["hex"]


async def test_a_host_that_never_answers_is_caught(tmp_path: Path) -> None:
    """Timeouts and a failed health check are findings: exit 1, with reproducers."""
    out = tmp_path / "findings"
    async with fake_host(never_answer) as address:
        code, output = await fuzz_async(address, out, "--count", "3", "--seed", "9", "--timeout", "0.3",
                                        "--connections", "1", "--health-every", "0")  # fmt: skip
    assert code == 1, output
    assert "timeout 3" in output
    assert "health_check_failed 2" in output
    found = {json.loads(path.read_text())["finding"] for path in out.glob("*.json")}
    assert found == {"timeout", "health_check_failed"}


def test_an_unreachable_host_is_a_usage_error(tmp_path: Path) -> None:
    """No host at the address: exit 2 and a message, no findings."""
    with socket_closed_port() as address:
        result = fuzz(address, "iso87binary", tmp_path / "findings", "--count", "5")
    assert result.returncode == 2
    assert "cannot connect" in result.stderr
    assert not (tmp_path / "findings").exists()


@contextmanager
def socket_closed_port() -> Iterator[str]:
    """An address where nothing listens: a port the OS gave us, closed again."""
    import socket  # noqa: PLC0415 - only this helper needs it

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"127.0.0.1:{port}"
