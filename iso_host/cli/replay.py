"""`iso-host replay`: send a recorded trace to a live host and compare its responses field by field.

The command's edge: its arguments, the ``--keys`` file's path, progress and the report; the engine (sockets,
one task per recorded connection, re-keying) is ``iso_host.terminal.replay``. Exit 0 when every reply
matched, 1 when one differed or never came, 2 on an error (unreadable trace, keys file or dialect; a host
that cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Final, TextIO

from iso_host.cli.exit_codes import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK
from iso_host.errors import ConfigError, IsoHostError
from iso_host.terminal.captures import (
    DEFAULT_IGNORE,
    Difference,
    ReplayError,
    Result,
    Status,
    Trace,
    check_frames,
    field_label,
    read_trace,
)
from iso_host.terminal.junit import write_junit
from iso_host.terminal.replay import ReplayOptions, junit_cases, load_keys, replay
from iso_host.wire import Dialect, load_dialect

FAILED: Final = (Status.DIFFERED, Status.NO_REPLY)
PROGRESS_WIDTH: Final = 30  # characters of the bar


def parse_ignore(text: str | None) -> frozenset[str]:
    """``--ignore 39,F41`` → {"39", "41"}."""
    fields = [part.strip().upper().removeprefix("F") for part in (text or "").split(",") if part.strip()]
    if not all(part.isdigit() and 1 <= int(part) <= 128 for part in fields):
        raise ConfigError(f"--ignore: expected field numbers 1..128 such as 39,41, got {text!r}")
    return frozenset(str(int(part)) for part in fields)


class Progress:
    """A text progress bar on a terminal's stderr; silent when stderr is a file or a pipe."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.count, self.stream, self.enabled = total, 0, stream, stream.isatty()

    def __call__(self, _result: Result) -> None:
        self.count += 1
        if self.enabled:
            filled = PROGRESS_WIDTH * self.count // max(self.total, 1)
            bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
            self.stream.write(f"\rreplay [{bar}] {self.count}/{self.total}")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")


def print_report(trace: Trace, results: list[Result], title: str) -> None:
    """The summary table, then one row per difference (and per request that got no reply)."""
    counts = Counter(result.status for result in results)
    sent = len(results) - counts[Status.SKIPPED]
    print(f"{title} ({trace.format}, {len(trace.connections)} connection{'s' * (len(trace.connections) != 1)})")
    if trace.skipped_lines:
        print(f"{trace.skipped_lines} redacted or undecodable trace lines skipped")
    print(f"{'sent':>8} {'matched':>8} {'differed':>8} {'no reply':>8} {'skipped':>8} {'no expectation':>15}")
    print(f"{sent:>8} {counts[Status.MATCHED]:>8} {counts[Status.DIFFERED]:>8} {counts[Status.NO_REPLY]:>8} "
          f"{counts[Status.SKIPPED]:>8} {counts[Status.UNCHECKED]:>15}")  # fmt: skip
    failed = [result for result in results if result.status in FAILED]
    if not failed:
        return
    print(f"\n{'CONN':>4} {'REQ':>4} {'MTI':<4} {'STAN':<6} {'FIELD':<6} {'EXPECTED':<20} ACTUAL")
    for result in failed:
        rows = list(result.differences)
        if result.status is Status.NO_REPLY:
            rows.append(Difference("reply", "a reply", f"no reply: {result.note}"))
        for row in rows:
            print(f"{result.conn:>4} {result.index:>4} {result.mti:<4} {result.stan:<6} {field_label(row.field):<6} "
                  f"{row.expected:<20} {row.actual}")  # fmt: skip


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--to: expected HOST:PORT, got {text!r}")
    return host, int(port)


def _load(args: argparse.Namespace) -> tuple[Trace, Dialect]:
    dialect = load_dialect(args.dialect) if args.dialect else None
    try:
        data = Path(args.trace).read_bytes()
    except OSError as error:
        raise ReplayError(f"{args.trace}: cannot read the trace: {error.strerror}") from None
    trace = read_trace(data, args.trace, dialect, args.port_in_capture)
    if dialect is None:
        if trace.dialect_name is None:
            raise ReplayError(f"--dialect: required for a {trace.format} trace (it does not name its dialect)")
        dialect = load_dialect(trace.dialect_name)
    check_frames(trace, dialect)
    return trace, dialect


def command_replay(args: argparse.Namespace) -> int:
    """Run ``iso-host replay``; errors print one line and exit 2."""
    try:
        host, port = _address(args.to)
        ignore = DEFAULT_IGNORE | parse_ignore(args.ignore)
        trace, dialect = _load(args)
        keys = load_keys(args.keys) if args.keys else None
        progress = Progress(sum(len(c.exchanges) for c in trace.connections), sys.stderr)
        options = ReplayOptions(host, port, ignore, args.timeout, keys)
        try:
            results = asyncio.run(replay(trace, dialect, options, progress))
        finally:
            progress.finish()
        print_report(trace, results, f"replayed {args.trace} to {args.to} in dialect {dialect.name}")
        if args.junit:
            write_junit(Path(args.junit), "iso-host replay", junit_cases(results))
    except (IsoHostError, OSError) as error:
        print(f"iso-host: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_NEGATIVE if any(result.status in FAILED for result in results) else EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay_parser = commands.add_parser(
        "replay", help="replay a recorded trace against a host, diff the responses",
        epilog="Exit codes: 0 every reply matched; 1 a reply differed or never came; 2 an unreadable trace, keys file"
               " or dialect, or a host that cannot be reached (one line on stderr).",
    )  # fmt: skip
    replay_parser.add_argument("trace", metavar="TRACE", help="the host's JSONL trace, hex frames (one a line), pcap")
    replay_parser.add_argument("--to", required=True, help="HOST:PORT of the host to replay against")
    replay_parser.add_argument("--dialect", help="dialect name or .toml path (default: the one the trace names)")
    replay_parser.add_argument("--ignore", help="more fields to leave out of the comparison, e.g. 39,41")
    replay_parser.add_argument("--keys", help="TOML [[terminals]] tid, mid, tmk: re-MAC and re-encrypt PINs")
    replay_parser.add_argument("--junit", metavar="OUT.xml", help="also write a JUnit XML report")
    replay_parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                               help="seconds to connect and to wait for each reply (default 10)")  # fmt: skip
    replay_parser.add_argument("--port-in-capture", type=int, metavar="PORT",
                               help="a pcap's host port: the TCP streams to it are the terminals' (default: the"
                                    " port of the first SYN)")  # fmt: skip
    replay_parser.set_defaults(handler=command_replay)
