"""Trace capture: every frame in and out of the host as JSON lines (``iso-host serve --trace FILE``).

The format is a contract: the replay tool reads it. One JSON object per line, keys in this order::

    {"conn": 7, "dir": "in", "mono_ns": 81234567890123, "wall": "2025-01-31T09:30:00.123456Z",
     "dialect": "cup", "peer": "127.0.0.1:50312", "hex": "00456000..."}

- ``conn``: the connection id (the log's ``conn_id``), unique within one run of the host.
- ``dir``: ``"in"``, a frame from the terminal; ``"out"``, a frame the host wrote; ``"close"``, the connection
  ended (this line has no ``hex``). Requests are ``in`` and responses ``out``, paired in order per ``conn``.
  An ``in`` the host did not answer (it closed the connection instead) is followed by no ``out``.
- ``mono_ns``: ``time.monotonic_ns()`` when the server had the whole frame (``in``) or had handed it to
  the socket (``out``). Comparable within one run of the host only.
- ``wall``: the same moment in UTC, ISO 8601 with microseconds and ``Z``.
- ``dialect``: the dialect's name; ``peer``: the terminal's ``host:port``.
- ``hex``: the whole frame as on the wire, length header included (and the TPDU and dialect header, when
  the dialect has them), in uppercase hex.

Redaction (``--trace-redact``) masks card data inside the recorded bytes: the frame is decoded with the
dialect, the fields below are masked, and it is encoded again with the same envelope and length header.
Lengths do not change, so a redacted frame still decodes with the dialect; a MAC (F64/F128) no longer
matches the redacted bytes. A frame with nothing to mask is recorded as it came.

- F2 (PAN): the first 6 and last 4 digits stay, the ones between become ``0``.
- F35, F36 (tracks 2 and 3): the first 6 and last 4 digits of the PAN part (the first run of digits)
  stay, every other digit becomes ``0``; separators (``=``, ``D``) stay. F45 (track 1): the same, and
  the letters after the PAN (the cardholder's name) become ``0`` too.
- F52 (PIN block) and F55 (ICC data, which may carry the PAN and track 2 in its TLVs): all ``0``.
- CUP batch upload (F48 records): each record's PAN is masked as F2.

A frame that does not decode (or encode again) is recorded without its bytes, which may hold card data:
``"hex": null, "undecodable": true, "length": <bytes on the wire, length header included>``.
Without redaction every frame is recorded as it came. Bytes the framing refuses (a length header over
``max_frame_bytes`` or one that does not parse) are not frames: only the connection's ``close`` line follows.

The event loop only appends to a bounded queue; a writer thread drains it every ``WRITER_INTERVAL_S``
(formatting, redaction and file I/O happen there). When the queue is full a line is dropped and counted,
with a ``trace_lines_dropped`` warning at most once per second; a dropped line can upset the in/out
pairing of its connection, so read a replay of such a trace with that warning in mind.

Rotation: before a line would take the file over ``max_bytes``, FILE becomes FILE.1 (FILE.1 becomes
FILE.2 and so on, ``keep_files`` of them) and a new FILE starts; a non-empty FILE found at start is
rotated the same way, so runs never mix. Only a regular file rotates: a FILE that is a device or a
named pipe (``/dev/null``) is written as it is. Reading a whole capture means FILE.5 ... FILE.1, then
FILE; a connection's lines may span two files.
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from iso_host.cards import mask_pan_digits
from iso_host.errors import ConfigError, WireError
from iso_host.log import get_logger
from iso_host.private_files import open_private
from iso_host.styles import family_of
from iso_host.wire import Dialect, Message, decode, encode

DEFAULT_MAX_BYTES: Final = 100 * 1024 * 1024  # a file an editor and jq still open quickly
KEEP_FILES: Final = 5  # FILE.1 .. FILE.5
MAX_PENDING_LINES: Final = 65_536  # seconds of frames at full load, tens of MB at most; beyond it lines drop
WRITER_INTERVAL_S: Final = 0.05  # how often the writer drains the queue (and how stale the file may be)
DROP_WARNING_INTERVAL_S: Final = 1.0  # at most one trace_lines_dropped warning per second
CLOSE_TIMEOUT_S: Final = 30.0  # waiting for the writer to write what is queued at shutdown

IN, OUT, CLOSE = "in", "out", "close"

_DIGIT: Final = re.compile(r"[0-9]")
_ALPHANUMERIC: Final = re.compile(r"[0-9A-Za-z]")
_FIRST_DIGITS: Final = re.compile(r"[0-9]+")
_json_string: Final = json.encoder.encode_basestring_ascii  # a str as a JSON string literal, quotes included
_SENSITIVE_FIELDS: Final = frozenset({"2", "35", "36", "45", "52", "55"})

# (conn, dir, mono_ns, wall_ns, peer, body or None); a tuple, because the event loop builds one per frame.
_Event = tuple[int, str, int, int, str, bytes | None]


def _mask_track(track: str, after_pan: re.Pattern[str] = _DIGIT) -> str:
    """Tracks 1, 2 and 3: the PAN part (first run of digits) keeps 6 + 4 digits; ``after_pan`` matches become 0."""
    pan = _FIRST_DIGITS.search(track)
    if pan is None:
        return after_pan.sub("0", track)
    start, end = pan.span()
    return track[:start] + mask_pan_digits(pan.group()) + after_pan.sub("0", track[end:])


def _zeros(value: str) -> str:
    return "0" * len(value)


_MASKS: Final[dict[str, Callable[[str], str]]] = {
    "2": mask_pan_digits,
    "35": _mask_track,
    "36": _mask_track,
    "45": lambda track: _mask_track(track, _ALPHANUMERIC),
    "52": _zeros,
    "55": _zeros,
}
assert set(_MASKS) == _SENSITIVE_FIELDS


def redact_body(body: bytes, dialect: Dialect) -> bytes | None:
    """The frame body (after the length header) with card data masked; None when it does not decode."""
    try:
        envelope, message = decode(body, dialect)
    except WireError:
        return None
    fields = dict(message.fields)
    for field_id in _SENSITIVE_FIELDS.intersection(fields):
        fields[field_id] = _MASKS[field_id](fields[field_id])
    rule = dialect.classify(message)
    fields = family_of(dialect).redact(fields, rule.kind if rule is not None else None)
    if fields == message.fields:
        return body
    try:
        return encode(Message(message.mti, fields), envelope, dialect)
    except ValueError:
        return None


class Tracer:
    """Records frames to a JSON-lines file from a writer thread; the event loop only appends to a queue.

    Construct it before the port is bound (it opens the file and starts the writer); ``close()`` writes
    what is queued, closes the file and joins the writer. ``Server.stop`` calls it.
    """

    def __init__(
        self,
        path: Path,
        dialect: Dialect,
        *,
        redact: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep_files: int = KEEP_FILES,
        max_pending_lines: int = MAX_PENDING_LINES,
        writer_interval_s: float = WRITER_INTERVAL_S,
    ) -> None:
        """Open ``path`` (rotating a non-empty file already there) and start the writer thread.

        Raises:
            ConfigError: the file cannot be rotated or opened.
        """
        assert max_bytes > 0
        assert keep_files >= 1
        assert max_pending_lines > 0
        self.path = path
        self.dialect = dialect
        self.redact = redact
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.lines_written = 0
        self.dropped_count = 0
        self.rotations = 0
        self.log = get_logger(trace=str(path))
        self._max_pending = max_pending_lines
        self._interval_s = writer_interval_s
        self._pending: collections.deque[_Event] = collections.deque()
        self._reported_drops = 0
        self._last_drop_warning_s = float("-inf")
        self._closed = False
        self._failed = False
        self._dialect_json = _json_string(dialect.name)
        self._wall_second = -1
        self._wall_prefix = ""
        # Only a regular file rotates: never rename /dev/null, /dev/stdout or a named pipe.
        self._rotates = not path.exists() or path.is_file()
        try:
            if self._rotates and path.exists() and path.stat().st_size > 0:
                self._shift_old_files()
            self._file = os.fdopen(open_private(path), "wb")  # 0600: an unredacted trace holds card data
        except OSError as error:
            raise ConfigError(f"--trace {path}: cannot open: {error.strerror}") from None
        self._size = 0
        self._in_flight = 0  # lines taken off the queue and not yet written (lost if the writer fails)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iso-host-trace", daemon=True)
        self._thread.start()

    # The event loop's side: no I/O, no formatting, never blocks.

    def frame(self, conn_id: int, direction: str, peer: str, body: bytes) -> None:
        """A frame body (without its length header) read from or written to connection ``conn_id``."""
        assert direction in (IN, OUT), direction
        self._put((conn_id, direction, time.monotonic_ns(), time.time_ns(), peer, body))

    def connection_closed(self, conn_id: int, peer: str) -> None:
        self._put((conn_id, CLOSE, time.monotonic_ns(), time.time_ns(), peer, None))

    def _put(self, event: _Event) -> None:
        if len(self._pending) < self._max_pending and not self._failed and not self._closed:
            self._pending.append(event)  # deque.append is atomic: the writer thread pops from the other end
            return
        self.dropped_count += 1
        now = time.monotonic()
        if now - self._last_drop_warning_s >= DROP_WARNING_INTERVAL_S:
            self._last_drop_warning_s = now
            why = "writer failed" if self._failed else "closed" if self._closed else "queue full"
            self.log.warning("trace_lines_dropped", dropped_count=self.dropped_count - self._reported_drops,
                             total_dropped_count=self.dropped_count, why=why,
                             max_pending_lines=self._max_pending)  # fmt: skip
            self._reported_drops = self.dropped_count

    def close(self) -> None:
        """Write what is queued, close the file and stop the writer (blocking: run it in a thread)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            self.log.error("trace_close_timeout", close_timeout_s=CLOSE_TIMEOUT_S, pending_lines=len(self._pending))
        self.log.info("trace_closed", lines_written=self.lines_written, dropped_count=self.dropped_count,
                      rotations=self.rotations)  # fmt: skip

    # The writer thread's side.

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                self._write_pending()
            self._write_pending()  # what was queued before close()
        except Exception:
            self._failed = True
            self.log.exception("trace_writer_failed", lost_lines=self._in_flight)
        finally:
            self._file.close()

    def _write_pending(self) -> None:
        lines = [self._line(self._pending.popleft()) for _ in range(len(self._pending))]
        if not lines:
            return
        self._in_flight = len(lines)
        chunk = bytearray()
        for line in lines:
            if self._size + len(chunk) + len(line) > self.max_bytes and self._size + len(chunk) > 0 and self._rotates:
                self._file.write(chunk)
                self._size += len(chunk)
                chunk.clear()
                self._rotate()
            chunk += line
        self._file.write(chunk)
        self._file.flush()
        self._size += len(chunk)
        self.lines_written += len(lines)

    def _line(self, event: _Event) -> bytes:
        """One JSON line, put together by hand: ``json.dumps`` of a dict costs as much as everything else here."""
        conn_id, direction, mono_ns, wall_ns, peer, body = event
        wall = self._wall(wall_ns)
        head = (f'{{"conn": {conn_id:d}, "dir": "{direction}", "mono_ns": {mono_ns:d}, "wall": "{wall}", '
                f'"dialect": {self._dialect_json}, "peer": {_json_string(peer)}')  # fmt: skip
        if body is None:
            return f"{head}}}\n".encode("ascii")
        header = self.dialect.length_header
        recorded = self._redact(body) if self.redact else body
        if recorded is None:
            length = header.size_bytes + len(body)
            return f'{head}, "hex": null, "undecodable": true, "length": {length:d}}}\n'.encode("ascii")
        return f'{head}, "hex": "{(header.write(len(recorded)) + recorded).hex().upper()}"}}\n'.encode("ascii")

    def _wall(self, wall_ns: int) -> str:
        """UTC ISO 8601 with microseconds; the date and time up to the second are formatted once per second."""
        seconds, nanoseconds = divmod(wall_ns, 1_000_000_000)
        if seconds != self._wall_second:
            self._wall_second = seconds
            self._wall_prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{self._wall_prefix}{nanoseconds // 1_000:06d}Z"

    def _redact(self, body: bytes) -> bytes | None:
        try:
            return redact_body(body, self.dialect)
        except Exception as error:  # a frame the codec fails on in a way decode() does not wrap: keep tracing
            self.log.warning("trace_frame_unredactable", error=error.__class__.__name__)
            return None

    def _rotate(self) -> None:
        self._file.close()
        self._shift_old_files()
        self._file = os.fdopen(open_private(self.path), "wb")
        self._size = 0
        self.rotations += 1

    def _shift_old_files(self) -> None:
        """FILE.(n-1) → FILE.n ... FILE → FILE.1; what was FILE.keep_files is overwritten."""
        for number in range(self.keep_files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
