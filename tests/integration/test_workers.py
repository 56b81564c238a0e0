"""``iso-host serve --workers 2``: two protocol worker processes on one port, one core deciding for both.

A real ``serve`` process with its workers; the test opens connections until it holds one on each worker (the
workers' ``connection_opened`` lines name the worker and the peer's port) and then checks what must hold across them:
a void on one worker cancels the sale made on the other, once; a STAN repeated on the other worker is a duplicate; a
test card's balance is one balance; a sign-on on one worker keys the terminal's MAC'd sale on the other; RRNs stay
unique. The sale and void frames are written by hand from ISO 8583:1987 (iso87binary: 2-byte length, binary bitmap,
ASCII fields), not by the host's encoder.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from processes import ISO_HOST
from waiting import until, until_blocking

from iso_host.clock import local_now
from iso_host.config import DEMO_TMK
from iso_host.terminal.client import TerminalClient
from iso_host.wire import Message, decode, load_dialect

ISO87 = load_dialect("iso87binary")
HAND_TERMINAL = b"TERM0002" b"MERCHANT0000001"  # F41, F42; TERM0002 has no keys: nothing is MAC'd
CARD = "4761739001010010"  # the [[cards]] entry below: 20.00 to spend
CONFIG = f"""
[log]
sample_approvals = 1  # every request_decided line: the test reads which worker answered

[[terminals]]
tid = "TERM0001"
mid = "MERCHANT0000001"
tmk = "{DEMO_TMK}"

[[terminals]]
tid = "TERM0002"
mid = "MERCHANT0000001"

[[cards]]
pan = "{CARD}"
balance = "20.00"
"""


# fmt: off
def sale(stan: bytes, amount: bytes) -> bytes:
    """0200 sale: F2 (LLVAR, ASCII length), F3 000000, F4, F11, F41, F42; binary bitmap 7020000000C00000."""
    return (b"0200" + bytes.fromhex("7020000000C00000") + b"16" + CARD.encode() + b"000000" + amount + stan
            + HAND_TERMINAL)


def void(stan: bytes, amount: bytes, rrn: bytes) -> bytes:
    """0200 void: F2, F3 020000, F4, F11, F37 (the sale's RRN), F41, F42; bitmap 7020000008C00000 (bit 37 = 0x08 in
    the fifth byte)."""
    return (b"0200" + bytes.fromhex("7020000008C00000") + b"16" + CARD.encode() + b"020000" + amount + stan + rrn
            + HAND_TERMINAL)
# fmt: on


class HostLog:
    """The serve process's JSON lines, read by a thread, searched with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[dict[str, object]] = []
        self._fresh: queue.SimpleQueue[dict[str, object]] = queue.SimpleQueue()
        assert process.stdout is not None
        stream = process.stdout
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._fresh.put(json.loads(line))

    def _take(self) -> None:
        while not self._fresh.empty():
            self.lines.append(self._fresh.get())

    def find(self, event: str, **fields: object) -> dict[str, object] | None:
        self._take()
        for line in self.lines:
            if line["event"] == event and all(line.get(k) == v for k, v in fields.items()):
                return line
        return None

    def find_starting(self, prefix: str) -> dict[str, object] | None:
        self._take()
        return next((line for line in self.lines if str(line["event"]).startswith(prefix)), None)

    async def wait(self, event: str, **fields: object) -> dict[str, object]:
        await until(lambda: self.find(event, **fields) is not None, what=f"a {event} line with {fields}")
        found = self.find(event, **fields)
        assert found is not None
        return found


@contextmanager
def serving_workers(tmp_path: Path) -> Iterator[tuple[tuple[str, int], HostLog, subprocess.Popen[str]]]:
    config = tmp_path / "host.toml"
    config.write_text(CONFIG)
    process = subprocess.Popen(
        [*ISO_HOST, "serve", "--port", "0", "--log-format", "json", "--workers", "2", "--config", str(config)],
        cwd=tmp_path, env=dict(os.environ, HOME=str(tmp_path)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log = HostLog(process)
    try:
        yield _address(log), log, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)
        log.thread.join(timeout=30)  # it reads to the end of the output, then the pipes can close
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _address(log: HostLog) -> tuple[str, int]:
    until_blocking(lambda: log.find_starting("listening on ") is not None, what="the host listening", timeout_s=60)
    line = log.find_starting("listening on ")
    assert line is not None
    host, port = str(line["event"]).removeprefix("listening on ").rsplit(":", 1)
    return host, int(port)


class Connection:
    """A connection of this test's, and the worker that accepted it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, worker: int) -> None:
        self.reader, self.writer, self.worker = reader, writer, worker

    async def exchange(self, body: bytes) -> Message:
        self.writer.write(len(body).to_bytes(2, "big") + body)
        size = int.from_bytes(await self.reader.readexactly(2), "big")
        return decode(await self.reader.readexactly(size), ISO87)[1]


async def _worker_of(log: HostLog, writer: asyncio.StreamWriter) -> int:
    port = writer.get_extra_info("sockname")[1]
    opened = await log.wait("connection_opened", peer=f"127.0.0.1:{port}")
    return int(str(opened["worker"]))


@asynccontextmanager
async def one_on_each_worker(address: tuple[str, int], log: HostLog) -> AsyncIterator[tuple[Connection, Connection]]:
    """Connect until one connection is on worker 1 and one on worker 2 (which worker accepts is the kernel's choice)."""
    held: dict[int, Connection] = {}
    spare: list[asyncio.StreamWriter] = []
    try:
        for _ in range(200):
            reader, writer = await asyncio.open_connection(*address)
            worker = await _worker_of(log, writer)
            if worker in held:
                spare.append(writer)
            else:
                held[worker] = Connection(reader, writer, worker)
            if len(held) == 2:
                break
        assert sorted(held) == [1, 2], f"200 connections all went to worker {sorted(held)}"
        yield held[1], held[2]
    finally:
        for writer in [*spare, *(c.writer for c in held.values())]:
            writer.close()


async def test_a_void_on_one_worker_cancels_the_sale_made_on_the_other(tmp_path: Path) -> None:
    with serving_workers(tmp_path) as (address, log, _):
        async with one_on_each_worker(address, log) as (first, second):
            sold = await first.exchange(sale(b"000101", b"000000001500"))
            assert sold.fields["39"] == "00"
            rrn = sold.fields["37"].encode()
            voided = await second.exchange(void(b"000102", b"000000001500", rrn))
            assert voided.fields["39"] == "00"
            # once: the second void of it, back on the first worker, is refused
            assert (await first.exchange(void(b"000103", b"000000001500", rrn))).fields["39"] == "12"
            # the STAN of the first sale again, on the other worker: a duplicate
            assert (await second.exchange(sale(b"000101", b"000000000100"))).fields["39"] == "94"
            # one card book: 15.00 came back with the void, so 20.00 can be spent; on the other worker, 0.01 more cannot
            spent = await first.exchange(sale(b"000104", b"000000002000"))
            assert spent.fields["39"] == "00"
            assert len({sold.fields["37"], voided.fields["37"], spent.fields["37"]}) == 3, "one RRN sequence"
            assert (await second.exchange(sale(b"000105", b"000000000001"))).fields["39"] == "51"
            await log.wait("request_decided", worker=1, kind="void", response_code="12")
            await log.wait("request_decided", worker=2, kind="void", response_code="00")


async def test_a_sign_on_on_one_worker_keys_the_mac_d_sale_on_the_other(tmp_path: Path) -> None:
    with serving_workers(tmp_path) as (address, log, _):
        async with one_on_each_worker(address, log) as (first, second):
            first.writer.close()
            second.writer.close()
        clients: dict[int, TerminalClient] = {}
        signer = TerminalClient(ISO87, "TERM0001", "MERCHANT0000001")
        try:
            # two terminal clients sharing one terminal's state, on different workers
            for _ in range(200):
                client = TerminalClient(ISO87, "TERM0001", "MERCHANT0000001", signer.state)
                await client.connect(*address)
                assert client._writer is not None
                worker = await _worker_of(log, client._writer)
                if worker in clients:
                    await client.close()
                    continue
                clients[worker] = client
                if len(clients) == 2:
                    break
            request = clients[1].build("signon", local_now())
            response = await clients[1].request(request)
            assert response.fields["39"] == "00"
            clients[1].accept_signon(response, request, bytes.fromhex(DEMO_TMK))
            clients[2].mac = clients[1].mac
            assert clients[2].mac is not None
            sold = await clients[2].request(clients[2].build("sale", local_now(), amount=100, pan=CARD))
            assert sold.fields["39"] == "00", "worker 2 verified the MAC with the keys worker 1's sign-on issued"
            await log.wait("request_decided", worker=2, kind="sale", response_code="00")
        finally:
            for client in clients.values():
                await client.close()


async def test_a_worker_that_dies_is_replaced_and_the_others_keep_serving(tmp_path: Path) -> None:
    """SIGKILL one worker: the core logs worker_exited, starts another under the same number, and sales go on."""
    with serving_workers(tmp_path) as (address, log, _):
        async with one_on_each_worker(address, log) as (first, second):
            victim = first.worker
            os.kill(int(str((await log.wait("worker_ready", worker=victim))["pid"])), signal.SIGKILL)
            exited = await log.wait("worker_exited", worker=victim)
            assert exited["status"] == -signal.SIGKILL
            restarted = await log.wait("worker_restarted", worker=victim)
            await log.wait("worker_ready", worker=victim, pid=restarted["pid"])
            # the other worker never stopped: its connection still answers
            assert (await second.exchange(sale(b"000301", b"000000000100"))).fields["39"] == "00"
        # and new connections are served, whichever worker takes them
        reader, writer = await asyncio.open_connection(*address)
        try:
            fresh = Connection(reader, writer, await _worker_of(log, writer))
            assert (await fresh.exchange(sale(b"000302", b"000000000100"))).fields["39"] == "00"
        finally:
            writer.close()


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["--workers", "0"], "iso-host: --workers: must be 1..64 worker processes, got 0"),
        (["--workers", "2", "--trace", "t.jsonl"], "iso-host: --trace: not with --workers"),
    ],
)
def test_bad_worker_settings_are_one_line(tmp_path: Path, arguments: list[str], line: str) -> None:
    done = subprocess.run([*ISO_HOST, "serve", "--port", "0", *arguments], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)), check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(line), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_taken_port_is_one_line_with_workers(tmp_path: Path) -> None:
    """The core binds the port itself (no SO_REUSEPORT): a second host on it is refused, not given a share."""
    with serving_workers(tmp_path) as ((host, port), _, _):
        done = subprocess.run(
            [*ISO_HOST, "serve", "--workers", "2", "--host", host, "--port", str(port), "--ledger",
             f"sqlite:///{tmp_path / 'other.db'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)),
            check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"iso-host: server.port: cannot listen on {host}:{port}: Address already in use\n"
