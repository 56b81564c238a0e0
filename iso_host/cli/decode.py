"""`iso-host decode`: a frame (hex), a host trace or a pcap capture, message by message, field by field.

Each message is shown as the console's inspector shows it (``console.fields.describe``: names, sub-fields, field 55's
tags, key blocks as check values; the PAN masked, tracks, PIN blocks and keys left out), with the meaning of F39. The
traces are read by the replay tool's readers (``terminal.captures``). Exit 0 when every frame decoded, 1 when one did
not (its error names the field and the byte offset, and the fields before it are shown), 2 for bad arguments or an
unreadable file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from iso_host.cli.exit_codes import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK
from iso_host.console.fields import FieldRow, describe, kind_rule, response_meaning
from iso_host.errors import IsoHostError, WireError
from iso_host.terminal.captures import read_capture, read_trace
from iso_host.wire import Dialect, Message, WireDecodeError, decode, load_dialect

LABEL_WIDTH: Final = 10  # "F2", "60.1", "55.9F26": the parts are indented, their labels narrower
NAME_WIDTH: Final = 40  # names longer than this push their value right rather than being cut
RESPONSE_CODE: Final = "39"


class DecodeUsageError(IsoHostError):
    """Arguments or a file that leave nothing to decode: one line, exit 2."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame to decode and where it came from (``conn``, ``direction`` and ``time`` for traces)."""

    raw: bytes  # as given: with its length header when ``has_header``
    has_header: bool
    index: int
    conn: int | None = None
    direction: str | None = None
    time: str | None = None
    peer: str | None = None


@dataclass
class Decoded:
    """What one frame decoded to; ``rows`` are masked (``describe``), never clear card data."""

    frame: Frame
    dialect: Dialect
    mti: str | None = None
    kind: str | None = None
    rows: tuple[FieldRow, ...] = ()
    meaning: str | None = None
    envelope: dict[str, str] = field(default_factory=dict)
    error: WireError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, object]:
        where = {key: value for key, value in (("conn", self.frame.conn), ("dir", self.frame.direction),
                                               ("time", self.frame.time), ("peer", self.frame.peer)) if value}
        error = None if self.error is None else {
            "field": self.error.field, "offset": self.error.offset, "reason": self.error.reason,
        }  # fmt: skip
        return {
            "frame": self.frame.index, **where, "dialect": self.dialect.name, "recorded": bool(self.frame.raw),
            "length_header": self.frame.has_header, "bytes": len(self.frame.raw), **self.envelope,
            "mti": self.mti, "kind": self.kind,
            "response_code": _response_code(self.rows), "meaning": self.meaning,
            "fields": [row.as_json() for row in self.rows], "error": error,
        }  # fmt: skip


def _response_code(rows: tuple[FieldRow, ...]) -> str | None:
    return next((row.value for row in rows if row.id == RESPONSE_CODE), None)


def _kind(message: Message, dialect: Dialect) -> str | None:
    """The kind of a request, or of the request a response answers (0210 is classified as its 0200)."""
    rule = kind_rule(message, dialect)
    return rule.kind if rule is not None else None


def has_length_header(raw: bytes, dialect: Dialect) -> bool:
    """Whether ``raw`` starts with the dialect's length header announcing exactly the bytes after it."""
    header = dialect.length_header
    if len(raw) <= header.size_bytes:
        return False
    try:
        return header.read(raw[: header.size_bytes]) == len(raw) - header.size_bytes
    except WireError:
        return False


def decode_frame(frame: Frame, dialect: Dialect) -> Decoded:
    """One frame decoded and described; a frame that does not decode keeps its error and what decoded before it."""
    result = Decoded(frame, dialect)
    body = frame.raw
    if not body:  # not recorded: nothing to decode, nothing failed
        return result
    if frame.has_header:
        header = dialect.length_header
        size = header.size_bytes
        try:
            length = header.read(body[:size]) if len(body) >= size else -1
        except WireError as error:
            result.error = error
            return result
        if length != len(body) - size:
            result.error = WireError(f"{header.name} length header says {length} bytes, the frame has "
                                     f"{len(body) - size}", field="length", offset=0)  # fmt: skip
            return result
        body = body[size:]
    try:
        envelope, message = decode(body, dialect)
    except WireDecodeError as error:
        result.error = error
        envelope, partial = error.envelope, error.partial
        if partial is None:
            return result
        message = partial
    if envelope.tpdu:
        result.envelope["tpdu"] = envelope.tpdu.hex().upper()
    if envelope.header:
        result.envelope["header"] = envelope.header.hex().upper()
    result.mti = message.mti
    result.kind = _kind(message, dialect)
    result.rows = describe(message, dialect)
    if (code := _response_code(result.rows)) is not None:
        result.meaning = response_meaning(code, dialect)
    return result


# --- where frames come from ------------------------------------------------------------------------------------------


def _unhex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        raise DecodeUsageError(f"{what}: not hexadecimal") from None


def hex_frames(parts: list[str], dialect: Dialect, header: bool | None) -> Iterator[Frame]:
    raw = _unhex(" ".join(parts), "HEX")
    if not raw:
        raise DecodeUsageError("HEX: no bytes to decode")
    yield Frame(raw, has_length_header(raw, dialect) if header is None else header, 1)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise DecodeUsageError(f"{path}: cannot read: {error.strerror}") from None


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def jsonl_frames(text: str) -> Iterator[Frame]:
    """The frames of a host trace (already checked by ``read_trace``) in the order they were written."""
    index = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry["dir"] == "close":
            continue
        index += 1
        where = {"conn": int(entry["conn"]), "direction": entry["dir"], "time": entry.get("wall"),
                 "peer": entry.get("peer")}  # fmt: skip
        if entry.get("hex") is None:  # a redacted trace keeps no bytes of a frame the host could not decode
            yield Frame(b"", True, index, **where)
            continue
        yield Frame(bytes.fromhex(entry["hex"]), True, index, **where)


def capture_frames(data: bytes, source: str, dialect: Dialect | None, port: int | None, *,
                   pcap_only: bool) -> tuple[Iterator[Frame], str | None]:  # fmt: skip
    """Frames of any trace the replay tool reads, and the dialect the trace names (JSONL only)."""
    trace = read_capture(data, dialect, port) if pcap_only else read_trace(data, source, dialect, port)
    if trace.format == "jsonl":
        return jsonl_frames(data.decode("utf-8")), trace.dialect_name

    def frames() -> Iterator[Frame]:
        index = 0
        for connection in trace.connections:
            time = _utc(connection.start) if trace.format.startswith("pcap") else None
            for exchange in connection.exchanges:
                for direction, raw in (("in", exchange.request), ("out", exchange.expected)):
                    if raw is not None:
                        index += 1
                        yield Frame(raw, True, index, conn=connection.conn, direction=direction, time=time)

    return frames(), trace.dialect_name


# --- output ----------------------------------------------------------------------------------------------------------


def _row_lines(rows: tuple[FieldRow, ...], width: int, meaning: str | None, depth: int = 1) -> Iterator[str]:
    """A row per line, its parts indented below it; labels and names in columns as long as they fit."""
    for row in rows:
        label = f"F{row.id}" if depth == 1 and row.id[:1].isdigit() else row.id
        notes = [note for note in (row.note, meaning if depth == 1 and row.id == RESPONSE_CODE else None) if note]
        value = row.value or (notes.pop(0) if notes else "")  # a hidden value: the note says what was there
        note = f"  ({'; '.join(notes)})" if notes else ""
        label_width = max(LABEL_WIDTH - 2 * (depth - 1), len(label) + 1)
        yield f"{'  ' * depth}{label:<{label_width}}{row.name:<{width}}  {value}{note}".rstrip()
        yield from _row_lines(row.parts, width, meaning, depth + 1)


def _names(rows: tuple[FieldRow, ...]) -> Iterator[str]:
    for row in rows:
        yield row.name
        yield from _names(row.parts)


def print_text(result: Decoded) -> None:
    frame = result.frame
    where = " ".join(str(part) for part in (
        f"conn {frame.conn}" if frame.conn is not None else None, frame.direction, frame.time, frame.peer,
    ) if part)  # fmt: skip
    header = f"{result.dialect.length_header.name} length header" if frame.has_header else "no length header"
    envelope = "".join(f", {key.upper()} {value}" for key, value in result.envelope.items())
    print(f"frame {frame.index}" + (f" ({where})" if where else "") + f": {len(frame.raw)} bytes, {header}{envelope}")
    if not frame.raw:
        print("  not recorded: the host could not decode this frame to redact it")
        return
    if result.error is not None:
        print(f"  does not decode: {result.error}")
        if result.mti is None:
            return
        print("  decoded before it:")
    kind = f"  {result.kind}" if result.kind else ""
    print(f"  MTI {result.mti}{kind}")
    width = min(max(map(len, _names(result.rows)), default=0), NAME_WIDTH)
    for line in _row_lines(result.rows, width, result.meaning):
        print(line)


def _dialect(args: argparse.Namespace, named: str | None) -> Dialect:
    name = args.dialect or named
    if name is None:
        raise DecodeUsageError("--dialect: required (only a host trace names its dialect)")
    return load_dialect(name)


def _frames(args: argparse.Namespace) -> tuple[Iterator[Frame], Dialect]:
    if args.trace or args.pcap:
        source = args.trace or args.pcap
        given = load_dialect(args.dialect) if args.dialect else None
        frames, named = capture_frames(_read(source), source, given, args.port_in_capture, pcap_only=bool(args.pcap))
        return frames, given or _dialect(args, named)
    if not args.hex:
        raise DecodeUsageError("give a frame as HEX, or --trace FILE, or --pcap FILE")
    dialect = _dialect(args, None)
    return hex_frames(args.hex, dialect, args.header), dialect


def command_decode(args: argparse.Namespace) -> int:
    try:
        if args.hex and (args.trace or args.pcap):
            raise DecodeUsageError("give HEX or --trace/--pcap, not both")
        frames, dialect = _frames(args)
        results = [decode_frame(frame, dialect) for frame in frames]
    except (IsoHostError, UnicodeDecodeError) as error:
        print(f"iso-host: {error}", file=sys.stderr)
        return EXIT_ERROR
    failed = sum(not result.ok for result in results)
    for number, result in enumerate(results):
        if args.json:
            print(json.dumps(result.as_json()))
            continue
        if number:
            print()
        print_text(result)
    if not args.json and len(results) > 1:
        unrecorded = sum(not result.frame.raw for result in results)
        print(f"\n{len(results)} frames: {len(results) - failed - unrecorded} decoded, {failed} did not decode"
              + (f", {unrecorded} not recorded" if unrecorded else ""))  # fmt: skip
    return EXIT_NEGATIVE if failed else EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "decode", help="decode a frame (hex), a host trace or a pcap into named fields, card data masked",
        description="Decode ISO 8583 frames into fields: names, sub-fields, F55 tags, F39's meaning; the PAN masked, "
        "tracks, PIN blocks and keys not shown. Exit 0: every frame decoded; 1: one did not (the field and byte "
        "offset are named); 2: bad arguments or an unreadable file.",
    )  # fmt: skip
    parser.add_argument("hex", nargs="*", metavar="HEX", help="one frame in hex (spaces allowed)")
    parser.add_argument("--dialect", metavar="NAME|PATH",
                        help="the frames' dialect (required but for a host trace, which names its own)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--trace", metavar="FILE", help="a trace written by `iso-host serve --trace` (or hex lines)")
    source.add_argument("--pcap", metavar="FILE", help="a pcap/pcapng capture: TCP streams to the host's port")
    parser.add_argument("--port-in-capture", type=int, metavar="PORT",
                        help="the host's port in a capture (default: the port of the first SYN)")
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                        help="HEX starts with the dialect's length header (default: detected from its first bytes)")
    parser.add_argument("--json", action="store_true", help="one JSON object per message (JSON lines)")
    parser.set_defaults(handler=command_decode)
