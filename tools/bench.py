"""Throughput and latency of iso-host beside a bare pyiso8583 responder, under the same load.

``python tools/bench.py`` starts ``iso-host serve`` (temporary SQLite ledger, one terminal per connection) and
``tools/baseline_server.py`` on 127.0.0.1 and drives each in turn from spawned load processes: strict
request/response sales, real client bytes encoded before the clock starts, responses checked (0210, F11 echoed,
F39 "00") after it stops. Runs alternate and medians are reported, because the machine is shared. Every wait is
bounded, and every subprocess is stopped on the way out, error or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from iso_host.terminal.client import ClientState, TerminalClient
from iso_host.terminal.state_files import MAX_STAN
from iso_host.wire import Dialect, LengthHeader, WireDecodeError, decode, load_dialect

LOOPBACK: Final = "127.0.0.1"
DIALECT_NAME: Final = "iso87binary"
MID: Final = "BENCHMERCHANT01"  # field 42 is 15 characters
PAN: Final = "4761739001010010"  # a Luhn-valid test card
MAX_TERMINALS: Final = 9_999_999  # tids are "T" + 7 digits (field 41 is 8 characters)
LISTENING: Final = re.compile(r"listening on [\w.:\[\]-]+:(\d+)")  # in the JSON line's "event", or plain
POLL_S: Final = 0.05  # how often a waiting parent looks again
READY_TIMEOUT_S: Final = 30.0  # a server that has not bound its port by then has failed
STOP_TIMEOUT_S: Final = 20.0  # after SIGTERM; then SIGKILL
BARRIER_TIMEOUT_S: Final = 60.0  # spawning the load processes and connecting every terminal
REQUEST_TIMEOUT_S: Final = 10.0  # one response; a later one fails the rest of that connection
RUN_TIMEOUT_S: Final = 600.0  # one whole run, all load processes together
FIGURES: Final = ("tps", "p50_ms", "p99_ms")  # reported as medians of the runs
assert len(MID) == 15
assert POLL_S < READY_TIMEOUT_S < RUN_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One load process's figures. ``*_s`` stamps are ``time.monotonic()``, one clock machine-wide."""

    started_s: float
    finished_s: float
    latencies_s: list[float]  # one per response received
    approved: int  # responses that are 0210s for the right STAN with F39 "00"
    failures: int  # planned requests that were not approved
    error: str | None = None


def sale_frames(dialect: Dialect, terminal: int, count: int, stan_start: int) -> tuple[list[bytes], list[str]]:
    """``count`` framed sales from terminal ``T{terminal:07d}``, with their STANs (``stan_start + 1`` on)."""
    client = TerminalClient(dialect, f"T{terminal:07d}", MID, ClientState(stan=stan_start))
    now = datetime.now().astimezone()
    messages = [client.build("sale", now, amount=100 + n, pan=PAN) for n in range(count)]
    return [client.frame(message) for message in messages], [message.fields["11"] for message in messages]


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: list[bytes],
                   header: LengthHeader) -> tuple[list[float], list[bytes]]:  # fmt: skip
    """Send each frame and await its response before the next, as a terminal does; stop at the first failure."""
    latencies_s: list[float] = []
    responses: list[bytes] = []
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):  # TimeoutError is an OSError
        for frame in frames:
            sent_s = time.perf_counter()
            writer.write(frame)  # one request in flight, so the buffer never grows: no drain needed
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                length = header.read(await reader.readexactly(header.size_bytes))
                responses.append(await reader.readexactly(length))
            latencies_s.append(time.perf_counter() - sent_s)
    assert len(latencies_s) == len(responses) <= len(frames)
    return latencies_s, responses


def count_approved(dialect: Dialect, responses: list[bytes], stans: list[str]) -> int:
    approved = 0
    for body, stan in zip(responses, stans[: len(responses)], strict=True):
        with contextlib.suppress(WireDecodeError):
            _, message = decode(body, dialect)
            fields = message.fields
            approved += message.mti == "0210" and fields.get("11") == stan and fields.get("39") == "00"
    return approved


async def drive(port: int, first_terminal: int, connections: int, count: int, stan_start: int,
                barrier: Barrier) -> WorkerReport:  # fmt: skip
    dialect = load_dialect(DIALECT_NAME)
    plans = [sale_frames(dialect, first_terminal + i, count, stan_start) for i in range(connections)]
    streams = [await asyncio.open_connection(LOOPBACK, port) for _ in plans]
    try:
        barrier.wait(BARRIER_TIMEOUT_S)  # every load process starts sending at the same moment
        started_s = time.monotonic()
        outcomes = await asyncio.gather(
            *(exchange(r, w, frames, dialect.length_header) for (r, w), (frames, _) in zip(streams, plans, strict=True))
        )
        finished_s = time.monotonic()
    finally:
        for _, writer in streams:
            writer.close()
    approved = sum(count_approved(dialect, o[1], stans) for o, (_, stans) in zip(outcomes, plans, strict=True))
    latencies_s = [latency for outcome in outcomes for latency in outcome[0]]
    return WorkerReport(started_s, finished_s, latencies_s, approved, connections * count - approved)


def load_process(port: int, first_terminal: int, connections: int, count: int, stan_start: int,
                 barrier: Barrier, results: Queue[dict[str, Any]]) -> None:  # fmt: skip
    """Entry point of a load process: it always puts exactly one report, so the parent never waits in vain."""
    try:
        report = asyncio.run(drive(port, first_terminal, connections, count, stan_start, barrier))
    except Exception as error:  # the parent must hear about any failure rather than time out
        barrier.abort()  # and the other load processes must not wait for this one
        report = WorkerReport(0.0, 0.0, [], 0, connections * count, f"{type(error).__name__}: {error}")
    results.put(asdict(report))  # a dict: a class defined in __mp_main__ does not unpickle in the parent


def collect(results: Queue[dict[str, Any]], processes: Sequence[BaseProcess], barrier: Barrier) -> list[WorkerReport]:
    reports: list[WorkerReport] = []
    for _ in range(int(RUN_TIMEOUT_S / POLL_S)):
        if len(reports) == len(processes):
            return reports
        try:
            reports.append(WorkerReport(**results.get(timeout=POLL_S)))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in processes):
                barrier.abort()  # release the processes still waiting for the one that died
                raise RuntimeError("a load process died without reporting") from None
    raise TimeoutError(f"the load processes did not finish within {RUN_TIMEOUT_S:g} s")


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when it is empty)."""
    assert 0 < fraction <= 1
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else math.nan


def run_load(port: int, connections: int, count: int, process_count: int, stan_start: int) -> dict[str, Any]:
    """One run against the server on ``port``: its tps, p50_ms, p99_ms, counts and load-process errors."""
    context = multiprocessing.get_context("spawn")
    shares = [connections // process_count + (i < connections % process_count) for i in range(process_count)]
    barrier = context.Barrier(process_count)
    results: Queue[dict[str, Any]] = context.Queue()
    processes = [
        context.Process(target=load_process, daemon=True,
                        args=(port, sum(shares[:i]), share, count, stan_start, barrier, results))
        for i, share in enumerate(shares)
    ]  # fmt: skip
    try:
        for process in processes:
            process.start()
        reports = collect(results, processes, barrier)
    finally:
        for process in processes:
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join(STOP_TIMEOUT_S)
    latencies_ms = sorted(latency * 1000 for report in reports for latency in report.latencies_s)
    timed = [r for r in reports if r.error is None] or [WorkerReport(0.0, 0.0, [], 0, 0)]
    wall_s = max(r.finished_s for r in timed) - min(r.started_s for r in timed)
    return {
        "tps": len(latencies_ms) / wall_s if wall_s > 0 else 0.0, "p50_ms": percentile(latencies_ms, 0.50),
        "p99_ms": percentile(latencies_ms, 0.99), "completed": len(latencies_ms), "wall_s": wall_s,
        "approved": sum(r.approved for r in reports), "failures": sum(r.failures for r in reports),
        "errors": [r.error for r in reports if r.error is not None],
    }  # fmt: skip


def stop_server(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait, SIGKILL if need be; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
    return process.returncode


def wait_listening(process: subprocess.Popen[bytes], log_path: Path, probe_port: int | None) -> int:
    """The server's port once it accepts: from its ``listening on`` line, else from a connect to ``probe_port``."""
    for _ in range(int(READY_TIMEOUT_S / POLL_S)):
        output = log_path.read_text(encoding="utf-8", errors="replace")
        if match := LISTENING.search(output):
            return int(match.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"{log_path.stem} exited {process.returncode} before listening:\n{output[-2000:]}")
        if probe_port is not None:
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, probe_port), timeout=POLL_S):
                return probe_port
        time.sleep(POLL_S)
    raise TimeoutError(f"{log_path.stem} was not listening after {READY_TIMEOUT_S:g} s")


def start_server(command: list[str], log_path: Path, probe_port: int | None) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server whose output goes to ``log_path``; return it once it accepts, with its port."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        return process, wait_listening(process, log_path, probe_port)
    except BaseException:
        stop_server(process)
        raise


@dataclass(frozen=True, slots=True)
class HostTarget:
    """One iso-host configuration under test: its ledger and whether it group-commits."""

    name: str
    ledger: str  # "sqlite" or "postgresql"
    group_commit: bool
    events: bool = False  # publish every sale's event through the outbox to MQTT
    workers: int = 1  # serve --workers N
    console: bool = False  # the web console on, with a browser's live stream open during each run


SWITCHES: Final = {"on": [True], "off": [False], "both": [True, False]}


def host_targets(
    ledgers: list[str], group_commit: str, events: str = "off", workers: Sequence[int] = (1,), console: str = "off"
) -> list[HostTarget]:
    return [
        HostTarget(f"{ledger}{'' if on else '-nogc'}{'-events' if publish else ''}{f'-w{count}' if count > 1 else ''}"
                   f"{'-console' if watched else ''}", ledger, on, publish, count, watched)
        for ledger in ledgers for on in SWITCHES[group_commit] for publish in SWITCHES[events] for count in workers
        for watched in SWITCHES[console]
    ]  # fmt: skip


CONSOLE: Final = re.compile(r"console on (http://[\w.:\[\]-]+/)")


class ConsoleWatcher:
    """A browser's live view of the console: the SSE stream read by a thread for as long as the host runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rows = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        address = urlsplit(self.url)
        connection = http.client.HTTPConnection(address.hostname or LOOPBACK, address.port, timeout=READY_TIMEOUT_S)
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection.request("GET", "/api/stream")
            stream = connection.getresponse()
            while not self.stopping and (line := stream.readline()):
                if line.startswith(b"data: "):
                    self.rows += len(json.loads(line[6:]))
        connection.close()


def console_url(log_path: Path) -> str:
    """The console's address from its ``console on`` line (printed right after ``listening on``)."""
    for _ in range(int(READY_TIMEOUT_S / POLL_S)):
        if match := CONSOLE.search(log_path.read_text(encoding="utf-8", errors="replace")):
            return match.group(1)
        time.sleep(POLL_S)
    raise TimeoutError(f"{log_path.stem} printed no 'console on' line")


@contextlib.contextmanager
def ledger_url(target: HostTarget, directory: Path, postgres_base: str) -> Iterator[str]:
    """A fresh, empty ledger for one target: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if target.ledger == "sqlite":
        yield f"sqlite:///{directory / (target.name + '.db')}"
        return
    import psycopg  # noqa: PLC0415 - only when PostgreSQL is benchmarked

    name = f"iso_host_bench_{target.name.replace('-', '_')}_{os.getpid()}"
    base = urlsplit(postgres_base)
    with psycopg.connect(postgres_base, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit((base.scheme, base.netloc, f"/{name}", base.query, ""))
    finally:
        with psycopg.connect(postgres_base, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def write_host_config(directory: Path, target: HostTarget, url: str, connections: int, mqtt_url: str) -> Path:
    parts = [f"[ledger]\nurl = {json.dumps(url)}\ngroup_commit = {str(target.group_commit).lower()}\n"]
    if target.events:
        prefix = f"iso-host-bench-{os.getpid()}"
        parts.append(f"\n[events]\nmqtt_url = {json.dumps(mqtt_url)}\ntopic_prefix = {json.dumps(prefix)}\n")
    parts += [f'\n[[terminals]]\ntid = "T{i:07d}"\nmid = "{MID}"\n' for i in range(connections)]
    path = directory / f"{target.name}.toml"
    path.write_text("".join(parts), encoding="utf-8")
    return path


def count_rows(url: str, query: str) -> int:
    """The count a ``SELECT COUNT(*)`` gives on the ledger."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            rows: int = connection.execute(query).fetchone()[0]
            return rows
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as connection:
        row = connection.execute(query).fetchone()
        return int(row[0]) if row else 0


def ledger_rows(url: str) -> int:
    """Rows in the ledger's transactions table (the durability check: one per approved sale)."""
    return count_rows(url, "SELECT COUNT(*) FROM transactions")


def outbox_rows(url: str) -> tuple[int, int]:
    """Events in the outbox, and how many of them the broker has not acknowledged."""
    return (count_rows(url, "SELECT COUNT(*) FROM outbox"),
            count_rows(url, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"))  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="iso-host beside a bare pyiso8583 responder: sales/s, latency")
    parser.add_argument("--connections", type=int, default=64, help="concurrent terminals in all (64)")
    parser.add_argument("--count", type=int, default=600, help="sales per connection per run (600)")
    parser.add_argument("--processes", type=int, default=2, help="load processes (2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per target; medians are reported (3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--host-args", default="", help="extra arguments for iso-host serve, one shell string")
    parser.add_argument("--ledgers", default="sqlite", help="comma-separated: sqlite, postgresql (sqlite)")
    parser.add_argument("--group-commit", choices=["on", "off", "both"], default="on",
                        help="run each ledger with group commit on, off, or both (on)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server to create the bench databases on")
    parser.add_argument("--events", choices=["on", "off", "both"], default="off",
                        help="run each host publishing events to MQTT, not, or both (off)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="the hosts' log level (default: iso-host's own, info, with approvals sampled)")
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883", help="the broker for --events")
    parser.add_argument("--console", choices=["on", "off", "both"], default="off",
                        help="run each host with its web console off (--no-http), on with a live stream open, or both")
    parser.add_argument("--workers", default="1",
                        help="comma-separated serve --workers counts, each a target of its own, e.g. 1,2 (1)")
    options = parser.parse_args(argv)
    for name in ("connections", "count", "processes", "repeat"):
        if getattr(options, name) < 1:
            parser.error(f"--{name}: must be a whole number >= 1, got {getattr(options, name)}")
    if options.connections > MAX_TERMINALS:
        parser.error(f"--connections: at most {MAX_TERMINALS}, got {options.connections}")
    if options.count * options.repeat > MAX_STAN:
        parser.error(f"--count x --repeat must stay within {MAX_STAN} STANs per terminal")
    options.processes = min(options.processes, options.connections)
    try:
        options.workers = [int(count) for count in options.workers.split(",")]
    except ValueError:
        parser.error(f"--workers: whole numbers separated by commas, got {options.workers!r}")
    if not options.workers or min(options.workers) < 1:
        parser.error(f"--workers: each count must be >= 1, got {options.workers}")
    options.ledgers = [name.strip() for name in options.ledgers.split(",") if name.strip()]
    if not options.ledgers or set(options.ledgers) - {"sqlite", "postgresql"}:
        parser.error(f"--ledgers: sqlite and/or postgresql, got {options.ledgers}")
    return options


def json_safe(value: Any) -> Any:
    """``value`` with NaN (no latencies: every request failed) as null, which strict JSON readers accept."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def report(summary: dict[str, Any]) -> None:
    print(f"iso-host bench: {summary['connections']} connections x {summary['count']} sales, "
          f"{summary['processes']} load processes, {summary['repeat']} runs each (medians)")  # fmt: skip
    print(f"{'target':<16} {'tps':>9} {'p50_ms':>8} {'p99_ms':>8} {'tps/baseline':>13}")
    baseline_tps = summary["targets"]["baseline"]["tps"]
    for name, figures in summary["targets"].items():
        ratio = figures["tps"] / baseline_tps if baseline_tps else math.nan
        print(f"{name:<16} {figures['tps']:>9.0f} {figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} {ratio:>13.2f}")
    for name, check in summary["ledgers"].items():
        verdict = "ok" if check["rows"] == check["approved"] else "MISMATCH"
        print(f"ledger {name}: {check['rows']} rows for {check['approved']} approved sales ({verdict})")
        if "events" in check:
            verdict = "ok" if check["events"] == check["rows"] else "MISMATCH"
            print(f"outbox {name}: {check['events']} events for {check['rows']} rows ({verdict}), "
                  f"{check['events_pending']} not yet published when the host stopped")  # fmt: skip
    for name, rows in summary.get("streamed_rows", {}).items():
        print(f"console {name}: {rows} rows streamed to the open live view")
    print(f"failures {summary['failures']}; exit codes {summary['exit_codes']}; {summary['runtime_s']:.1f} s")


def run_target(options: argparse.Namespace, name: str, port: int, runs: dict[str, list[dict[str, Any]]],
               index: int) -> None:  # fmt: skip
    result = run_load(port, options.connections, options.count, options.processes, stan_start=index * options.count)
    runs.setdefault(name, []).append(result)
    print(f"run {index + 1}/{options.repeat} {name:<16} {result['tps']:>7.0f} tps  p50 {result['p50_ms']:.2f} ms  "
          f"p99 {result['p99_ms']:.2f} ms  {result['wall_s']:.1f} s  failures {result['failures']} "
          f"{'; '.join(result['errors'])}", file=sys.stderr)  # fmt: skip


def bench(options: argparse.Namespace, executable: str, directory: Path) -> dict[str, Any]:
    """Start every server, run the alternating loads, stop the servers; the figures and checks as a dict."""
    runs: dict[str, list[dict[str, Any]]] = {}
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    urls: dict[str, str] = {}
    exit_codes: dict[str, int] = {}
    events_targets: set[str] = set()
    watchers: dict[str, ConsoleWatcher] = {}
    with contextlib.ExitStack() as stack:
        try:
            for target in host_targets(options.ledgers, options.group_commit, options.events, options.workers,
                                       options.console):  # fmt: skip
                urls[target.name] = stack.enter_context(ledger_url(target, directory, options.postgres))
                config = write_host_config(directory, target, urls[target.name], options.connections,
                                           options.mqtt_url)  # fmt: skip
                if target.events:
                    events_targets.add(target.name)
                # The host's own default log level (info: request_decided lines, approvals sampled), as it runs.
                level = ["--log-level", options.log_level] if options.log_level else []
                command = [executable, "serve", "--config", str(config), "--port", "0", *level,
                           "--log-format", "json", "--workers", str(target.workers),
                           *(["--http", f"{LOOPBACK}:0"] if target.console else ["--no-http"]),
                           *shlex.split(options.host_args)]  # fmt: skip
                log_path = directory / f"{target.name}.log"
                servers[target.name], ports[target.name] = start_server(command, log_path, None)
                if target.console:
                    watchers[target.name] = ConsoleWatcher(console_url(log_path))
            baseline_command = [sys.executable, str(Path(__file__).with_name("baseline_server.py")), "--port", "0"]
            servers["baseline"], ports["baseline"] = start_server(baseline_command, directory / "baseline.log", None)
            for index in range(options.repeat):
                for name, port in ports.items():
                    run_target(options, name, port, runs, index)
        finally:
            for watcher in watchers.values():
                watcher.stopping = True
            for name, process in servers.items():
                exit_codes[name] = stop_server(process)
        ledgers = {name: {"rows": ledger_rows(url), "approved": sum(r["approved"] for r in runs.get(name, []))}
                   for name, url in urls.items()}  # fmt: skip
        for name in events_targets:
            ledgers[name]["events"], ledgers[name]["events_pending"] = outbox_rows(urls[name])
    targets = {name: {key: statistics.median(r[key] for r in results) for key in FIGURES}
               for name, results in runs.items()}  # fmt: skip
    return {
        "connections": options.connections, "count": options.count, "processes": options.processes,
        "repeat": options.repeat, "targets": targets, "ledgers": ledgers,
        "failures": sum(r["failures"] for results in runs.values() for r in results), "exit_codes": exit_codes,
        "runs": runs, "streamed_rows": {name: watcher.rows for name, watcher in watchers.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    executable = shutil.which("iso-host")
    if executable is None:
        print("bench: iso-host is not on PATH (pip install -e .)", file=sys.stderr)
        return 2
    begun_s = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="iso-host-bench-") as directory:
            summary = bench(options, executable, Path(directory))
    except (OSError, RuntimeError, sqlite3.Error, ImportError) as error:  # TimeoutError is an OSError
        print(f"bench: {error}", file=sys.stderr)
        return 2
    summary["runtime_s"] = round(time.monotonic() - begun_s, 1)
    exits_ok = set(summary["exit_codes"].values()) == {0}
    durable = all(check["rows"] == check["approved"] and check.get("events", check["rows"]) == check["rows"]
                  for check in summary["ledgers"].values())  # fmt: skip
    summary["ok"] = summary["failures"] == 0 and durable and exits_ok
    if options.json:
        print(json.dumps(json_safe(summary), allow_nan=False))
    else:
        report(summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
