"""Memory per idle connection of ``iso-host serve``, for each connection edge, in one run.

``python tools/idle_memory.py`` starts ``iso-host serve`` (temporary SQLite ledger, warning log level) once per
edge (``--edge protocol`` and ``--edge streams``), opens and closes a warm-up batch of connections, reads the
server's RSS (``/proc/PID/status`` VmRSS), opens ``--connections`` idle TCP connections that send nothing, waits until
the server holds them all (its open descriptors, ``/proc/PID/fd``), reads the RSS again and prints the difference
per connection, and the RSS that 10,000 idle connections would take at that rate. The connection count is capped by
what the open-file limits of this process and of the server leave (``gate.fit_open_file_limit`` keeps a reserve);
every subprocess is stopped on the way out, error or not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from iso_host.limits import RESERVED_FILES

LOOPBACK: Final = "127.0.0.1"
EDGES: Final = ("protocol", "streams")
READY_TIMEOUT_S: Final = 30.0  # the server's "listening on" line
HELD_TIMEOUT_S: Final = 60.0  # the server accepting every connection
STOP_TIMEOUT_S: Final = 20.0  # after SIGTERM; then SIGKILL
POLL_S: Final = 0.05
WARM_UP: Final = 200  # connections opened and closed first: the allocator's and asyncio's one-time growth
TARGET: Final = 10_000  # issue 15: 10,000 idle connections under 100 MB


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_server(edge: str, directory: Path, connections: int) -> tuple[subprocess.Popen[str], int]:
    config = directory / f"{edge}.toml"
    config.write_text(f"[ledger]\nurl = {json.dumps(f'sqlite:///{directory / edge}.db')}\n"
                      f"[limits]\nmax_connections = {connections + WARM_UP}\n"
                      f"max_connections_per_peer = {connections + WARM_UP}\nidle_timeout_s = 3600\n")  # fmt: skip
    executable = shutil.which("iso-host") or "iso-host"
    command = [executable, "serve", "--config", str(config), "--port", "0", "--no-http", "--log-level", "warning",
               "--log-format", "json", "--edge", edge]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        event = json.loads(line).get("event", "")
        if event.startswith("listening on"):
            return process, int(event.rpartition(":")[2])
    stop_server(process)
    raise RuntimeError(f"iso-host serve --edge {edge} did not start listening within {READY_TIMEOUT_S} s")


def stop_server(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_fds(pid: int, at_least: int, what: str) -> None:
    deadline = time.monotonic() + HELD_TIMEOUT_S
    while open_fds(pid) < at_least:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not within {HELD_TIMEOUT_S} s: {what} ({open_fds(pid)} descriptors, {at_least} wanted)"
            )
        time.sleep(POLL_S)


def connect(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sockets.append(socket.create_connection((LOOPBACK, port), timeout=10.0))
    return sockets


def measure(edge: str, connections: int, directory: Path) -> dict[str, Any]:
    """One edge: the server's RSS before and after ``connections`` idle connections."""
    process, port = start_server(edge, directory, connections)
    sockets: list[socket.socket] = []
    try:
        base_fds = open_fds(process.pid)
        warm = connect(port, WARM_UP)
        wait_fds(process.pid, base_fds + WARM_UP, "the warm-up connections accepted")
        for sock in warm:
            sock.close()
        deadline = time.monotonic() + HELD_TIMEOUT_S
        while open_fds(process.pid) > base_fds and time.monotonic() < deadline:
            time.sleep(POLL_S)
        before = rss_kib(process.pid)
        sockets = connect(port, connections)
        wait_fds(process.pid, base_fds + connections, f"{connections} idle connections held")
        after = rss_kib(process.pid)
    finally:
        for sock in sockets:
            sock.close()
        stop_server(process)
    per_connection = (after - before) / connections
    return {"edge": edge, "connections": connections, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_connection": round(per_connection, 2),
            "rss_at_10000_mb": round((before + per_connection * TARGET) * 1024 / 1e6, 1)}  # fmt: skip


def affordable(wanted: int) -> int:
    """Connections both ends can hold: this process's descriptors (raised to the hard limit) and the server's
    (the same hard limit, less the reserve ``fit_open_file_limit`` keeps)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    room = wanted if soft == resource.RLIM_INFINITY else soft - RESERVED_FILES - WARM_UP - 64
    return max(1, min(wanted, room))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS per idle connection of iso-host serve, per connection edge")
    parser.add_argument("--connections", type=int, default=TARGET, help=f"idle connections to open ({TARGET})")
    parser.add_argument("--repeat", type=int, default=1, help="runs per edge, alternating; medians reported (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    options = parser.parse_args(argv)
    if options.connections < 1 or options.repeat < 1:
        parser.error("--connections and --repeat must be whole numbers >= 1")
    connections = affordable(options.connections)
    results: dict[str, list[dict[str, Any]]] = {edge: [] for edge in EDGES}
    with tempfile.TemporaryDirectory(prefix="iso-host-idle-") as directory:
        for _ in range(options.repeat):
            for edge in EDGES:
                results[edge].append(measure(edge, connections, Path(directory)))
    summary = {edge: {"connections": connections,
                      "kib_per_connection": statistics.median(r["kib_per_connection"] for r in runs),
                      "rss_before_mb": round(statistics.median(r["rss_before_kib"] for r in runs) * 1024 / 1e6, 1),
                      "rss_at_10000_mb": statistics.median(r["rss_at_10000_mb"] for r in runs), "runs": runs}
               for edge, runs in results.items()}  # fmt: skip
    if options.json:
        print(json.dumps(summary))
        return 0
    if connections < options.connections:
        print(f"(the open-file limit allows {connections} connections, not {options.connections})")
    for edge, figures in summary.items():
        print(
            f"{edge:9} {figures['kib_per_connection']:6.2f} KiB per idle connection ({connections} connections,"
            f" RSS {figures['rss_before_mb']} MB before); 10,000 idle connections: {figures['rss_at_10000_mb']} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
