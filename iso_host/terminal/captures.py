"""Replay traces: reading them, and comparing a host's responses with the recorded ones field by field.

Pure: ``read_trace`` turns the host's JSONL, hex lines or a pcap / pcapng capture (through dpkt) into a
``Trace``; ``evaluate`` judges one reply; ``junit_tree`` reports. Sockets and keys live in ``replay_cli.py``.
Field values leave this module masked (F2) or hidden (35, 36, 52, 55, 62), never in clear.
"""

from __future__ import annotations

import enum
import io
import json
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import dpkt  # type: ignore[import-untyped,unused-ignore]

from iso_host.cards import displayed
from iso_host.errors import IsoHostError, WireError
from iso_host.wire import NEED_DATA, Dialect, FrameDecoder, LengthHeader, Message, decode, encode_frame

DEFAULT_IGNORE: Final = frozenset({"7", "12", "13", "37", "38", "64", "128"})  # times, RRN, approval code, MAC
PCAP_MAGICS: Final = frozenset({b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1"})
PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
SEQUENCE_SPACE: Final = 2**32  # TCP sequence numbers wrap (RFC 9293)
LINK_LAYERS: Final[dict[int, Any]] = {  # pcap LINKTYPE_ values
    1: dpkt.ethernet.Ethernet, 0: dpkt.loopback.Loopback, 108: dpkt.loopback.Loopback, 113: dpkt.sll.SLL,
    276: dpkt.sll2.SLL2,
}  # fmt: skip
RAW_IP_LINKS: Final = frozenset({12, 14, 101})


class ReplayError(IsoHostError):
    """A trace that cannot be read, a keys file that does not fit it, or a host that cannot be reached."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request (a whole frame, length header included; None: redacted) and the response recorded for it."""

    request: bytes | None
    expected: bytes | None  # None: nothing to compare with, but a reply must still arrive
    closes: bool = False  # the host closed the connection instead of answering (as recorded)


@dataclass(frozen=True, slots=True)
class Connection:
    conn: int
    exchanges: tuple[Exchange, ...]
    start: float = 0.0  # recorded times (any unit): a connection that ended before another began replays first
    end: float = 0.0


@dataclass(frozen=True, slots=True)
class Trace:
    format: str
    dialect_name: str | None
    connections: tuple[Connection, ...]
    skipped_lines: int = 0  # redacted or undecodable lines


def _unhex(text: object, where: str) -> bytes:
    try:
        return bytes.fromhex(text if isinstance(text, str) else "-")
    except ValueError:
        raise ReplayError(f"{where}: the frame is not hex") from None


def read_jsonl(text: str, source: str) -> Trace:
    """The host's own trace: ``in`` lines are requests, ``out`` lines responses, paired in order per ``conn``."""
    frames: dict[int, tuple[list[bytes | None], list[bytes | None], list[float]]] = {}
    dialects: set[str] = set()
    skipped = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            conn, direction, time = int(entry["conn"]), entry["dir"], float(entry.get("mono_ns") or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ReplayError(f"{source}: line {number}: not a trace line (conn, dir, hex)") from None
        if direction not in ("in", "out", "close"):
            raise ReplayError(f"{source}: line {number}: dir must be in, out or close, got {direction!r}")
        requests, responses, times = frames.setdefault(conn, ([], [], []))
        times.append(time)
        if direction == "close":
            continue
        if isinstance(entry.get("dialect"), str):
            dialects.add(entry["dialect"])
        frame = None if entry.get("hex") is None else _unhex(entry["hex"], f"{source}: line {number}")
        skipped += frame is None
        (requests if direction == "in" else responses).append(frame)
    if len(dialects) > 1:
        raise ReplayError(f"{source}: lines of several dialects ({', '.join(sorted(dialects))}); give --dialect")
    connections = tuple(
        Connection(conn, tuple(
            Exchange(request, *((responses[i], False) if i < len(responses) else (None, True)))
            if request is not None else Exchange(None, None) for i, request in enumerate(requests)
        ), min(times), max(times))
        for conn, (requests, responses, times) in sorted(frames.items())
    )  # fmt: skip
    return Trace("jsonl", next(iter(dialects), None), connections, skipped)


def read_hex_lines(text: str, source: str) -> Trace:
    """One whole request frame per line, as hex (blank lines and ``#`` comments skipped): one connection."""
    frames = [
        _unhex("".join(line.split()), f"{source}: line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return Trace("hex", None, (Connection(1, tuple(Exchange(frame, None) for frame in frames)),))


def _ip_packet(linktype: int, buf: bytes) -> Any:
    if linktype in RAW_IP_LINKS:
        return dpkt.ip6.IP6(buf) if buf[:1] and buf[0] >> 4 == 6 else dpkt.ip.IP(buf)
    return LINK_LAYERS[linktype](buf).data


def _tcp_segments(data: bytes) -> Iterator[tuple[float, bytes, bytes, Any]]:
    """(time, source address, destination address, TCP segment) for every TCP packet of the capture."""
    try:
        reader_class = dpkt.pcapng.Reader if data[:4] == PCAPNG_MAGIC else dpkt.pcap.Reader
        reader = reader_class(io.BytesIO(data))
        linktype = reader.datalink()
        if linktype not in LINK_LAYERS and linktype not in RAW_IP_LINKS:
            raise ReplayError(f"capture: link type {linktype} is not supported (Ethernet, loopback, Linux SLL, raw IP)")
        for time, buf in reader:
            packet = _ip_packet(linktype, buf)
            if isinstance(packet, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(packet.data, dpkt.tcp.TCP):
                yield float(time), bytes(packet.src), bytes(packet.dst), packet.data
    except (dpkt.Error, ValueError, struct.error) as error:
        raise ReplayError(f"capture: unreadable ({error.__class__.__name__}: {error})") from None


@dataclass
class _Stream:
    """One TCP connection to the host port, both directions (True: client to host)."""

    start: float
    end: float
    initial: dict[bool, int] = field(default_factory=dict)  # sequence number of the first data byte
    segments: dict[bool, list[tuple[int, bytes]]] = field(default_factory=lambda: {True: [], False: []})
    finished: bool = False
    host_closed: bool = False  # a FIN or RST from the host


def _assemble(initial: int | None, segments: list[tuple[int, bytes]], where: str) -> bytes:
    """The byte stream in sequence order; retransmitted and overlapping bytes are taken once."""
    if not segments:
        return b""
    if initial is None:  # the capture began after the SYN: start at the lowest sequence number seen
        first = segments[0][0]
        initial = first + min((seq - first + SEQUENCE_SPACE // 2) % SEQUENCE_SPACE for seq, _ in segments)
        initial -= SEQUENCE_SPACE // 2
    stream = bytearray()
    for offset, data in sorted(((seq - initial) % SEQUENCE_SPACE, data) for seq, data in segments):
        if offset >= SEQUENCE_SPACE // 2 or offset + len(data) <= len(stream):
            continue  # before the stream began (a keep-alive probe), or a retransmission
        if offset > len(stream):
            raise ReplayError(f"capture: {where}: {offset - len(stream)} bytes missing at byte {len(stream)}")
        stream += data[len(stream) - offset :]
    return bytes(stream)


def _streams(data: bytes, port: int | None) -> tuple[list[_Stream], int]:
    packets = list(_tcp_segments(data))
    if port is None:
        opening = (tcp for *_, tcp in packets if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK)
        syn = next(opening, None)
        if syn is None:
            raise ReplayError("capture: no SYN to find the host port by; give --port-in-capture")
        port = int(syn.dport)
    active: dict[tuple[bytes, int, bytes], _Stream] = {}
    streams: list[_Stream] = []
    for time, source, destination, tcp in packets:
        if port not in (tcp.dport, tcp.sport):
            continue
        to_host = tcp.dport == port
        key = (source, tcp.sport, destination) if to_host else (destination, tcp.dport, source)
        stream = active.get(key)
        is_syn = bool(tcp.flags & dpkt.tcp.TH_SYN)
        if stream is None or (is_syn and to_host and (stream.finished or stream.segments[True])):
            stream = active[key] = _Stream(time, time)
            streams.append(stream)
        stream.end = time
        if is_syn:
            stream.initial[to_host] = (tcp.seq + 1) % SEQUENCE_SPACE
        if tcp.data:
            stream.segments[to_host].append((tcp.seq, bytes(tcp.data)))
        closing = bool(tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST))
        stream.finished |= closing
        stream.host_closed |= closing and not to_host
    return streams, port


def split_frames(data: bytes, header: LengthHeader, where: str) -> list[bytes]:
    """Whole frames (length header included) of a byte stream; a stream that ends inside a frame is an error."""
    decoder = FrameDecoder(header, max_frame_bytes=header.max_length)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    frames: list[bytes] = []
    try:
        while (frame := decoder.next_frame()) is not NEED_DATA:
            assert isinstance(frame, bytes)
            frames.append(encode_frame(header, frame))
    except WireError as error:
        raise ReplayError(f"{where}: {error}") from None
    return frames


def read_capture(data: bytes, dialect: Dialect | None, port: int | None) -> Trace:
    """Each TCP stream to the host port is a connection: client bytes are requests, host bytes responses."""
    if dialect is None:
        raise ReplayError("--dialect: required for a capture (its length header splits the TCP streams)")
    streams, port = _streams(data, port)
    header = dialect.length_header
    connections: list[Connection] = []
    for conn, stream in enumerate(streams, 1):
        where = f"connection {conn} to port {port}"
        requests, responses = (
            split_frames(_assemble(stream.initial.get(side), stream.segments[side], where), header, f"capture: {where}")
            for side in (True, False)
        )
        exchanges = tuple(
            Exchange(r, responses[i]) if i < len(responses) else Exchange(r, None, closes=stream.host_closed)
            for i, r in enumerate(requests)
        )
        if exchanges:
            connections.append(Connection(conn, exchanges, stream.start, stream.end))
    return Trace("pcapng" if data[:4] == PCAPNG_MAGIC else "pcap", dialect.name, tuple(connections))


def read_trace(data: bytes, source: str, dialect: Dialect | None = None, port: int | None = None) -> Trace:
    """Read a trace of any supported format, told apart by its content (and, for captures, its name)."""
    if data[:4] in PCAP_MAGICS or data[:4] == PCAPNG_MAGIC or source.lower().endswith((".pcap", ".pcapng", ".cap")):
        trace = read_capture(data, dialect, port)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ReplayError(f"{source}: neither a capture nor a text trace (not UTF-8)") from None
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        trace = read_jsonl(text, source) if first.startswith("{") else read_hex_lines(text, source)
    if not any(exchange.request for c in trace.connections for exchange in c.exchanges):
        raise ReplayError(f"{source}: no requests in the trace")
    return trace


def frame_body(frame: bytes, header: LengthHeader) -> bytes:
    """The body of one whole frame; raises ``WireError`` if the length header does not fit it exactly."""
    size = header.size_bytes
    if (length := header.read(frame[:size]) if len(frame) >= size else -1) != len(frame) - size:
        raise WireError(f"length header says {length} bytes, frame has {len(frame) - size}", field="length", offset=0)
    return frame[size:]


def check_frames(trace: Trace, dialect: Dialect) -> None:
    """Every recorded frame is one whole frame of this dialect's length header."""
    for connection in trace.connections:
        for index, exchange in enumerate(connection.exchanges, 1):
            for what, frame in (("request", exchange.request), ("recorded response", exchange.expected)):
                if frame is None:
                    continue
                try:
                    frame_body(frame, dialect.length_header)
                except WireError as error:
                    msg = f"connection {connection.conn} {what} {index}: {error} ({dialect.name} framing)"
                    raise ReplayError(msg) from None


class Status(enum.Enum):
    MATCHED = "matched"
    DIFFERED = "differed"
    NO_REPLY = "no reply"
    SKIPPED = "skipped"
    UNCHECKED = "no expectation"


@dataclass(frozen=True, slots=True)
class Difference:
    """One field that differs; the values are as shown to people (masked or hidden), never clear card data."""

    field: str
    expected: str
    actual: str


@dataclass(frozen=True, slots=True)
class Result:
    conn: int
    index: int  # 1-based, within the connection
    mti: str
    stan: str
    status: Status
    differences: tuple[Difference, ...] = ()
    note: str = ""


def field_label(field_id: str) -> str:
    """``F39`` for a field, the name itself for the MTI or a framing part."""
    return f"F{field_id}" if field_id[:1].isdigit() else field_id


def shown(field_id: str, value: str | None) -> str:
    """A field value as it may be printed: F2 masked 6/4, track data, PIN block, chip data and keys hidden."""
    return "(absent)" if value is None else displayed(field_id, value)


def compare(expected: Message, actual: Message, ignore: frozenset[str]) -> tuple[Difference, ...]:
    """The MTI and every field present in either message, except the ignored ones, in field order."""
    differences = [Difference("MTI", expected.mti, actual.mti)] if expected.mti != actual.mti else []
    for field_id in sorted(set(expected.fields) | set(actual.fields), key=int):
        want, got = expected.fields.get(field_id), actual.fields.get(field_id)
        if field_id not in ignore and want != got:
            differences.append(Difference(field_id, shown(field_id, want), shown(field_id, got)))
    return tuple(differences)


def decode_frame(frame: bytes, dialect: Dialect) -> Message:
    """Decode one whole frame (length header included); raises ``WireError``."""
    return decode(frame_body(frame, dialect.length_header), dialect)[1]


def describe(frame: bytes, dialect: Dialect) -> tuple[str, str, str | None]:
    """MTI, STAN and kind of a request, or placeholders for one this dialect cannot decode."""
    try:
        message = decode_frame(frame, dialect)
    except WireError:
        return "????", "------", None
    rule = dialect.classify(message)
    return message.mti, message.fields.get("11", "------"), rule.kind if rule else None


def evaluate(
    exchange: Exchange, actual: bytes | None, dialect: Dialect, ignore: frozenset[str], *, at: tuple[int, int],
    note: str = "", closed: bool = False, extra: tuple[Difference, ...] = (),
) -> Result:  # fmt: skip
    """Judge one reply to the request at ``at`` (connection, index) against the recorded one.

    Args:
        actual: the whole reply frame, or None when none came: ``closed`` says the host closed the
            connection, ``note`` why there was no reply.
    """
    assert exchange.request is not None
    conn, index = at
    mti, stan, kind = describe(exchange.request, dialect)
    if actual is None:
        status = Status.MATCHED if exchange.closes and closed and not extra else Status.NO_REPLY
        return Result(conn, index, mti, stan, status, extra, note)
    if exchange.closes:
        extra = (*extra, Difference("reply", "the connection closed (as recorded)", "a reply"))
    try:
        got = decode_frame(actual, dialect)
    except WireError as error:
        problem = Difference(error.field, "a decodable response", f"byte {error.offset}: {error.reason}")
        return Result(conn, index, mti, stan, Status.DIFFERED, (*extra, problem))
    if exchange.expected is None:
        return Result(conn, index, mti, stan, Status.DIFFERED if extra else Status.UNCHECKED, extra, "no expectation")
    try:
        want = decode_frame(exchange.expected, dialect)
    except WireError as error:
        return Result(conn, index, mti, stan, Status.UNCHECKED, extra, f"recorded response undecodable: {error}")
    if kind == "signon" and dialect.security.signon_key_field:
        ignore |= {dialect.security.signon_key_field}  # fresh random keys at every sign-on
    differences = (*extra, *compare(want, got, ignore))
    return Result(conn, index, mti, stan, Status.DIFFERED if differences else Status.MATCHED, differences)


def junit_tree(results: list[Result], suite: str = "iso-host replay") -> ET.ElementTree:
    """One testsuite, one testcase per request; a failure lists the differences (or says there was no reply)."""
    counts = {status: sum(r.status is status for r in results) for status in Status}
    root = ET.Element("testsuite", name=suite, tests=str(len(results)), errors="0",
                      failures=str(counts[Status.DIFFERED] + counts[Status.NO_REPLY]),
                      skipped=str(counts[Status.SKIPPED]))  # fmt: skip
    for result in results:
        name = f"{result.conn}-{result.index} {result.mti} {result.stan}"
        case = ET.SubElement(root, "testcase", name=name, classname=f"replay.connection{result.conn}")
        if result.status is Status.DIFFERED:
            message = f"{len(result.differences)} field(s) differ"
            ET.SubElement(case, "failure", type="difference", message=message).text = "\n".join(
                f"{field_label(d.field)}: expected {d.expected!r}, actual {d.actual!r}" for d in result.differences
            )
        elif result.status is Status.NO_REPLY:
            ET.SubElement(case, "failure", type="no-reply", message="no reply").text = result.note
        elif result.status is Status.SKIPPED:
            ET.SubElement(case, "skipped", message=result.note or "redacted in the trace")
    return ET.ElementTree(root)
