"""Replay (``iso-host replay``): send a recorded trace's requests to a live host, one task per recorded
connection, and judge each reply against the recorded one; with a ``--keys`` file, re-key the requests for a
host whose working keys differ from the recorded ones (re-MAC, PIN blocks moved to the live TPK).

Reading traces and the field diff are ``captures.py``; the arguments and the report are ``cli/replay.py``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from iso_host import security
from iso_host.core.message_auth import MAC_PLACEHOLDER, has_mac, mac_field_of, seal
from iso_host.errors import ConfigError, WireError
from iso_host.styles import family_of
from iso_host.terminal import junit
from iso_host.terminal.captures import (
    DEFAULT_IGNORE,
    Connection,
    Difference,
    ReplayError,
    Result,
    Status,
    Trace,
    decode_frame,
    describe,
    evaluate,
    field_label,
    frame_body,
)
from iso_host.vocab import MAC_ALGORITHMS
from iso_host.wire import Dialect, Envelope, FrameDecoder, Message, decode, encode, encode_frame

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


def junit_cases(results: list[Result]) -> list[junit.Case]:
    """One testcase per replayed request (``CONN-INDEX MTI STAN``): a failure lists its differences, or says no reply
    came; a request the trace redacted is skipped."""
    cases = []
    for r in results:
        classname, name = f"replay.connection{r.conn}", f"{r.conn}-{r.index} {r.mti} {r.stan}"
        if r.status is Status.DIFFERED:
            details = "\n".join(f"{field_label(d.field)}: expected {d.expected!r}, actual {d.actual!r}"
                                for d in r.differences)  # fmt: skip
            cases.append(junit.Case(classname, name, junit.FAILURE, kind="difference",
                                    message=f"{len(r.differences)} field(s) differ", details=details))  # fmt: skip
        elif r.status is Status.NO_REPLY:
            no_reply = junit.Case(classname, name, junit.FAILURE, kind="no-reply", message="no reply", details=r.note)
            cases.append(no_reply)
        elif r.status is Status.SKIPPED:
            cases.append(junit.Case(classname, name, junit.SKIPPED, message=r.note or "redacted in the trace"))
        else:
            cases.append(junit.Case(classname, name))
    return cases
