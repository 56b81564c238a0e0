"""`iso-host replay`: send a recorded trace to a live host and compare its responses field by field.

The edge of ``replay.py``: sockets (one task per recorded connection), the ``--keys`` file and the
re-keying it allows, progress and the report. Exit 0 when every reply matched, 1 when one differed or
never came, 2 on an error (unreadable trace, keys file or dialect; a host that cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import re
import sys
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from iso_host import security
from iso_host.cli.exit_codes import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK
from iso_host.core.message_auth import MAC_PLACEHOLDER, has_mac, mac_field_of, seal
from iso_host.errors import ConfigError, IsoHostError, WireError
from iso_host.styles import family_of
from iso_host.terminal.captures import (
    DEFAULT_IGNORE,
    Connection,
    Difference,
    ReplayError,
    Result,
    Status,
    Trace,
    check_frames,
    decode_frame,
    describe,
    evaluate,
    field_label,
    frame_body,
    junit_tree,
    read_trace,
)
from iso_host.vocab import MAC_ALGORITHMS
from iso_host.wire import Dialect, Envelope, FrameDecoder, Message, decode, encode, encode_frame, load_dialect

FAILED: Final = (Status.DIFFERED, Status.NO_REPLY)
PROGRESS_WIDTH: Final = 30  # characters of the bar
READ_CHUNK_BYTES: Final = 65_536
CLOSED: Final = "the host closed the connection"
HEX_KEY: Final = re.compile(r"(?:[0-9A-Fa-f]{16}){1,3}")  # a single, double or triple length DES key


@dataclass(frozen=True, slots=True)
class TerminalKeys:
    """A terminal of the ``--keys`` file: its master key unwraps both the recorded and the live sign-on keys."""

    tid: str
    mid: str
    tmk: bytes = field(repr=False)
    mac_algorithm: str | None = None  # overrides the dialect's


class Rekeyer:
    """Re-MACs requests and re-encrypts PIN blocks for a host whose working keys differ from the recorded ones."""

    def __init__(self, dialect: Dialect, terminals: Mapping[str, TerminalKeys]) -> None:
        self.dialect = dialect
        self.terminals = terminals
        self.recorded: dict[str, security.CupWorkingKeys] = {}  # from the recorded sign-on responses
        self.live: dict[str, security.CupWorkingKeys] = {}  # from the live host's

    def _terminal(self, frame: bytes) -> tuple[Envelope, Message, TerminalKeys] | None:
        try:
            envelope, message = decode(frame_body(frame, self.dialect.length_header), self.dialect)
        except WireError:
            return None
        terminal = self.terminals.get(message.fields.get("41", "").strip())
        if terminal is None or message.fields.get("42", terminal.mid).strip() != terminal.mid:
            return None
        return envelope, message, terminal

    def prepare(self, frame: bytes) -> bytes:
        """The request to send: a fresh MAC under the live TAK, F52 moved from the recorded TPK to the live one."""
        found = self._terminal(frame)
        live = self.live.get(found[2].tid) if found else None
        if found is None or live is None:
            return frame  # not a --keys terminal, or not signed on to the live host (yet)
        envelope, message, terminal = found
        rule = self.dialect.classify(message)
        algorithm = terminal.mac_algorithm or self.dialect.security.mac_algorithm
        mac = has_mac(message) and rule is not None and rule.kind in self.dialect.security.mac_kinds and algorithm
        recorded = self.recorded.get(terminal.tid)
        if "52" in message.fields and recorded is not None:
            try:
                clear = security.decrypt_pin_block(recorded.tpk, bytes.fromhex(message.fields["52"]))
            except (security.SecurityError, ValueError):
                return frame  # not a PIN block under the recorded TPK: send it as recorded
            message.fields["52"] = security.encrypt_pin_block(live.tpk, clear).hex().upper()
        elif not mac:
            return frame
        try:
            if mac and algorithm:
                message.fields[mac_field_of(message)] = MAC_PLACEHOLDER
                body = seal(encode(message, Envelope(), self.dialect), message, self.dialect, algorithm, live.tak)
            else:
                body = encode(message, Envelope(), self.dialect)
        except (security.SecurityError, ValueError) as error:
            raise ReplayError(f"--keys: {terminal.tid}: cannot MAC a request with {algorithm}: {error}") from None
        return encode_frame(self.dialect.length_header, bytes(envelope) + body)

    def _unwrap(self, terminal: TerminalKeys, request: Message, frame: bytes) -> security.CupWorkingKeys | None:
        """The keys of an approved sign-on response; raises ``security.SecurityError`` when the TMK does not fit."""
        response = decode_frame(frame, self.dialect)
        block = response.fields.get(self.dialect.security.signon_key_field or "")
        if response.fields.get("39") != "00" or block is None:
            return None
        family = family_of(self.dialect)
        return family.accept_keys(terminal.tmk, family.key_layout(request, self.dialect), bytes.fromhex(block))

    def learn(self, request: bytes, expected: bytes | None, actual: bytes | None) -> tuple[Difference, ...]:
        """After a sign-on: keep the recorded and the live keys; a live key block that does not unwrap differs.

        Raises:
            ReplayError: the ``--keys`` TMK does not unwrap the recorded sign-on keys.
        """
        found = self._terminal(request)
        if found is None or (rule := self.dialect.classify(found[1])) is None or rule.kind != "signon":
            return ()
        _, message, terminal = found
        try:
            if expected is not None and (keys := self._unwrap(terminal, message, expected)) is not None:
                self.recorded[terminal.tid] = keys
        except (security.SecurityError, WireError, ValueError) as error:
            raise ReplayError(f"--keys: {terminal.tid}: the recorded sign-on keys do not unwrap: {error}") from None
        try:
            if actual is not None and (keys := self._unwrap(terminal, message, actual)) is not None:
                self.live[terminal.tid] = keys
        except (security.SecurityError, WireError, ValueError) as error:
            key_field = self.dialect.security.signon_key_field or "?"
            return (Difference(key_field, "keys that unwrap under the TMK", f"rejected: {error}"),)
        return ()


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    host: str
    port: int
    ignore: frozenset[str] = DEFAULT_IGNORE
    timeout_s: float = 10.0  # to connect, and for each reply
    keys: Mapping[str, TerminalKeys] | None = None


async def _exchange(
    request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: FrameDecoder, timeout_s: float
) -> tuple[bytes | None, str]:
    """Send one request; the whole reply frame, or None and why (``CLOSED`` when the host closed)."""
    try:
        writer.write(request)
        async with asyncio.timeout(timeout_s):
            await writer.drain()
            while not isinstance(frame := decoder.next_frame(), bytes):
                if not (data := await reader.read(READ_CHUNK_BYTES)) and not decoder.in_frame:
                    return None, CLOSED
                decoder.receive_data(data)
    except TimeoutError:
        return None, f"no reply within {timeout_s:g} s"
    except ConnectionError:
        return None, CLOSED
    except WireError as error:
        return None, f"unreadable reply: {error}"
    return encode_frame(decoder.header, frame), ""


async def _replay_connection(
    connection: Connection, dialect: Dialect, options: ReplayOptions, rekeyer: Rekeyer | None,
    report: Callable[[Result], None],
) -> None:  # fmt: skip
    """Send the connection's requests in order, each after the previous reply."""
    if not any(exchange.request for exchange in connection.exchanges):  # all redacted: nothing to connect for
        for index, _ in enumerate(connection.exchanges, 1):
            report(Result(connection.conn, index, "????", "------", Status.SKIPPED, (), "redacted in the trace"))
        return
    try:
        async with asyncio.timeout(options.timeout_s):
            reader, writer = await asyncio.open_connection(options.host, options.port)
    except (OSError, TimeoutError) as error:
        raise ReplayError(f"cannot connect to {options.host}:{options.port}: {error}") from None
    decoder = FrameDecoder(dialect.length_header, max_frame_bytes=dialect.length_header.max_length)
    lost = ""  # set once a request got no reply: a late reply could no longer be told from the next one
    try:
        for index, exchange in enumerate(connection.exchanges, 1):
            request = exchange.request
            if request is None or lost:
                mti, stan, _ = describe(request, dialect) if request else ("????", "------", None)
                report(Result(connection.conn, index, mti, stan, Status.SKIPPED, (), lost or "redacted in the trace"))
                continue
            sent = rekeyer.prepare(request) if rekeyer else request
            actual, why = await _exchange(sent, reader, writer, decoder, options.timeout_s)
            if actual is None:
                lost = f"not sent: request {index} of this connection got no reply"
            extra = rekeyer.learn(request, exchange.expected, actual) if rekeyer else ()
            report(evaluate(exchange, actual, dialect, options.ignore, at=(connection.conn, index), note=why,
                            closed=why == CLOSED, extra=extra))  # fmt: skip
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def replay(
    trace: Trace, dialect: Dialect, options: ReplayOptions, on_result: Callable[[Result], None] | None = None
) -> list[Result]:
    """Replay the connections concurrently, except that one which ended (as recorded) before another began
    is replayed before it, so a sale on one connection still comes before its void on the next.

    Raises:
        ReplayError: a connection could not be opened, or the ``--keys`` file does not fit the trace.
    """
    rekeyer = Rekeyer(dialect, options.keys) if options.keys else None
    by_end = sorted(trace.connections, key=lambda connection: connection.end)
    ends = [connection.end for connection in by_end]
    done = [False] * len(by_end)
    finished = [0]  # how many connections, in order of recorded end, are all done
    changed = asyncio.Condition()
    results: list[Result] = []
    failures: list[ReplayError] = []

    def report(result: Result) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    async def run(position: int, connection: Connection) -> None:
        before = bisect.bisect_left(ends, connection.start)  # connections that ended before this one began
        async with changed:
            await changed.wait_for(lambda: finished[0] >= before)
        try:
            await _replay_connection(connection, dialect, options, rekeyer, report)
        except ReplayError as error:
            failures.append(error)
        finally:
            async with changed:
                done[position] = True
                while finished[0] < len(done) and done[finished[0]]:
                    finished[0] += 1
                changed.notify_all()

    async with asyncio.TaskGroup() as group:
        for position, connection in enumerate(by_end):
            group.create_task(run(position, connection))
    if failures:
        raise failures[0]
    return sorted(results, key=lambda result: (result.conn, result.index))


def load_keys(path: str) -> dict[str, TerminalKeys]:
    """The ``--keys`` file: ``[[terminals]]`` with ``tid``, ``mid``, ``tmk`` (hex) and optionally ``mac``.

    Raises:
        ConfigError: naming every bad key in one pass (never a key's value).
    """
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the keys file: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not TOML: {error}") from None
    entries = document.get("terminals")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: terminals must be [[terminals]] tables with tid, mid and tmk")
    problems: list[str] = []
    terminals: dict[str, TerminalKeys] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{path}: terminals[{number}]"
        problems += [f"{where}: unknown key {key!r}" for key in sorted(set(entry) - {"tid", "mid", "tmk", "mac"})]
        tid, mid, mac, tmk = entry.get("tid"), entry.get("mid"), entry.get("mac"), entry.get("tmk")
        if not isinstance(tid, str) or not tid:
            problems.append(f"{where}.tid must be the terminal id (F41), got {tid!r}")
        if not isinstance(mid, str) or not mid:
            problems.append(f"{where}.mid must be the merchant id (F42), got {mid!r}")
        if not isinstance(tmk, str) or not HEX_KEY.fullmatch(tmk):
            problems.append(f"{where}.tmk must be 16, 32 or 48 hex digits")  # the value is a key: never echoed
        if mac is not None and mac not in MAC_ALGORITHMS:
            problems.append(f"{where}.mac must be one of {', '.join(MAC_ALGORITHMS)}, got {mac!r}")
        if not problems:
            terminals[str(tid)] = TerminalKeys(str(tid), str(mid), bytes.fromhex(str(tmk)), mac)
    if problems:
        raise ConfigError("; ".join(problems))
    return terminals


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
            junit_tree(results).write(args.junit, encoding="utf-8", xml_declaration=True)
    except (IsoHostError, OSError) as error:
        print(f"iso-host: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_NEGATIVE if any(result.status in FAILED for result in results) else EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay_parser = commands.add_parser("replay", help="replay a recorded trace against a host, diff the responses")
    replay_parser.add_argument("trace", metavar="TRACE", help="the host's JSONL trace, hex frames (one a line), pcap")
    replay_parser.add_argument("--to", required=True, help="HOST:PORT of the host to replay against")
    replay_parser.add_argument("--dialect", help="dialect name or .toml path (default: the one the trace names)")
    replay_parser.add_argument("--ignore", help="more fields to leave out of the comparison, e.g. 39,41")
    replay_parser.add_argument("--keys", help="TOML [[terminals]] tid, mid, tmk: re-MAC and re-encrypt PINs")
    replay_parser.add_argument("--junit", metavar="OUT.xml", help="also write a JUnit XML report")
    replay_parser.add_argument("--timeout", type=float, default=10.0, help="seconds to connect and for each reply")
    replay_parser.add_argument("--port-in-capture", type=int, help="the host's port in a capture (default: first SYN)")
    replay_parser.set_defaults(handler=command_replay)
