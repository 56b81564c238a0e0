"""`iso-host serve` under a low open-file limit (set for the child with ``preexec_fn``), and a host out of files.

The host raises its soft limit when the hard one allows, serves fewer connections with one warning line when it
does not, refuses to start with one line when almost nothing is left, and never prints an EMFILE traceback: a
burst of sockets beyond the limit is refused or waited out, and a legitimate echo is answered afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hosting import MID, TID
from processes import ISO_HOST
from waiting import until, until_blocking

from iso_host.clock import local_now
from iso_host.limits import RESERVED_FILES, Limits
from iso_host.terminal.client import ClientError, TerminalClient
from iso_host.wire import load_dialect

HARD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
TESTS = Path(__file__).resolve().parents[1]


@dataclass
class Child:
    """A host process, its JSON log lines as they come (read by a thread) and its stderr at the end."""

    process: subprocess.Popen[str]
    lines: list[dict[str, object]] = field(default_factory=list)
    stderr: str = ""

    def events(self, name: str) -> list[dict[str, object]]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def port(self) -> int:
        for line in list(self.lines):
            event = str(line.get("event"))
            if event.startswith("listening on "):
                return int(event.rsplit(":", 1)[1])
            if event == "starved":
                return int(str(line["port"]))
        raise AssertionError("no address yet")


def _read_lines(child: Child) -> None:
    assert child.process.stdout is not None
    for text in child.process.stdout:
        child.lines.append(json.loads(text))


def _read_stderr(child: Child) -> None:
    assert child.process.stderr is not None
    child.stderr = child.process.stderr.read()


@contextmanager
def child_host(tmp_path: Path, argv: list[str], preexec_fn: Callable[[], None] | None = None) -> Iterator[Child]:
    """Run ``argv``; yields once it printed its address, stops it with SIGTERM at the end."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS / "integration"), str(TESTS), *sys.path])}
    # preexec_fn only calls setrlimit in the child: no lock another thread could hold at the fork
    process = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=preexec_fn,  # noqa: PLW1509
    )  # fmt: skip
    child = Child(process)
    readers = [threading.Thread(target=read, args=(child,), daemon=True) for read in (_read_lines, _read_stderr)]
    for reader in readers:
        reader.start()
    try:
        until_blocking(lambda: _has_address(child) or process.poll() is not None, what="the host prints its address")
        assert _has_address(child), "the host exited before printing its address (its stderr follows at the end)"
        yield child
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        for reader in readers:
            reader.join(timeout=15)
        for pipe in (process.stdout, process.stderr):
            assert pipe is not None
            pipe.close()


def _has_address(child: Child) -> bool:
    try:
        child.port()
    except AssertionError:
        return False
    return True


def nofile(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def serve(*extra: str) -> list[str]:
    return [*ISO_HOST, "serve", "--port", "0", "--log-format", "json", *extra]


async def echo(port: int, local_ip: str = "127.0.0.1", timeout_s: float = 5.0) -> bool:
    """An echo from ``local_ip``: True when answered 00, False when refused or unanswered."""
    dialect = load_dialect("iso87binary")
    client = TerminalClient(dialect, TID, MID)
    frame = client.frame(client.build("echo", local_now()))
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local_ip, 0))
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(frame)
        async with asyncio.timeout(timeout_s):
            size = int.from_bytes(await reader.readexactly(2), "big")
            body = await reader.readexactly(size)
        return client.decode_response(body).fields["39"] == "00"
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ClientError):
        return False
    finally:
        writer.close()


def no_tracebacks(child: Child) -> None:
    assert "Traceback" not in child.stderr, child.stderr
    assert "out of system resource" not in child.stderr, child.stderr


def test_soft_limit_is_raised_to_what_max_connections_needs(tmp_path: Path) -> None:
    """With a soft limit of 256 under a higher hard limit the host raises its soft limit (one info line) and keeps
    max_connections."""
    needed = Limits().max_connections + RESERVED_FILES
    if HARD_LIMIT != resource.RLIM_INFINITY and needed > HARD_LIMIT:
        pytest.skip(f"the hard open-file limit {HARD_LIMIT} is below {needed}")
    with child_host(tmp_path, serve(), nofile(256, HARD_LIMIT)) as child:
        limits = Path(f"/proc/{child.process.pid}/limits").read_text()
        (row,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert int(row.split()[3]) == needed
        assert asyncio.run(echo(child.port()))
    (raised,) = child.events("open_files_raised")
    assert (raised["soft_from"], raised["soft_to"]) == (256, needed)
    assert child.events("max_connections_lowered") == []
    no_tracebacks(child)


def test_low_hard_limit_lowers_max_connections_and_a_burst_beyond_it_is_survived(tmp_path: Path) -> None:
    """soft = hard = 600: one warning line, max_connections 600 - reserve; 700 sockets from 127.0.0.1 get
    their per-peer share (256) and the rest are closed, an echo from 127.0.0.2 is answered meanwhile, and one from
    127.0.0.1 once the burst is gone; no traceback."""
    with child_host(tmp_path, serve(), nofile(600, 600)) as child:
        (lowered,) = child.events("max_connections_lowered")
        assert (lowered["configured"], lowered["max_connections"]) == (10_000, 600 - RESERVED_FILES)
        assert "ulimit -n" in str(lowered["hint"])
        asyncio.run(_burst(child.port(), 700, held=Limits().max_connections_per_peer))
    no_tracebacks(child)


async def _burst(port: int, size: int, *, held: int) -> None:
    burst = [await asyncio.open_connection("127.0.0.1", port) for _ in range(size)]
    reads = [asyncio.create_task(reader.read()) for reader, _ in burst]
    await until(lambda: sum(task.done() for task in reads) >= size - held, what="the surplus is closed", timeout_s=30)
    assert await echo(port, "127.0.0.2"), "another address is served during the burst"
    assert sum(task.done() for task in reads) == size - held, "the share stays open"
    for _, writer in burst:
        writer.close()
    await asyncio.gather(*reads, return_exceptions=True)
    await until(lambda: echo(port), what="127.0.0.1 is served once the burst is gone")


def test_hard_limit_too_low_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    """soft = hard = 150 leaves no room next to the reserve: exit 2 and one line naming the setting and the fix."""
    process = subprocess.run(serve(), cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             preexec_fn=nofile(150, 150), check=False)  # fmt: skip
    assert process.returncode == 2
    (line,) = process.stderr.strip().splitlines()
    assert line.startswith("iso-host: limits.max_connections: the open-file limit (ulimit -n) is 150"), line
    assert "ulimit -n" in line


def test_accept_out_of_files_is_one_line_and_the_host_keeps_serving(tmp_path: Path) -> None:
    """A host left with 4 spare files gets 12 connections: accept fails with EMFILE, which is logged as one
    throttled line (not a traceback); once they close, an echo is answered."""
    with child_host(tmp_path, [sys.executable, str(TESTS / "integration" / "starved_host.py"), str(tmp_path)]) as child:
        asyncio.run(_starve(child, 12))
    failures = child.events("accept_failed")
    assert failures, child.lines[-5:]
    assert failures[0]["why"] == "EMFILE"
    assert failures[0]["count"] == 1
    assert len(failures) <= 3, "one line per interval, with a count"
    no_tracebacks(child)


async def _starve(child: Child, size: int) -> None:
    burst = [await asyncio.open_connection("127.0.0.1", child.port()) for _ in range(size)]
    await until(lambda: bool(child.events("accept_failed")), what="accept runs out of files")
    for _, writer in burst:
        writer.close()
    await until(lambda: echo(child.port()), what="an echo is answered once the burst is gone", timeout_s=20)
