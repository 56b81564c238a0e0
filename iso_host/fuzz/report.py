"""The fuzzer's options, verdicts and summary: what a host did wrong with a frame, the table of a run. No I/O.

What counts as a finding (``judge``): no answer and no close within the timeout; a close without an answer
for a frame whose MTI reads (DESIGN.md: such a frame gets a response 30, only an unreadable one a close);
an approval (F39 00) of a frame that does not decode or whose MAC does not verify with the terminal's TAK.
"""

from __future__ import annotations

import argparse
import secrets
import ssl
from collections import Counter
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Final

from iso_host.config import DEMO_TMK, hex_key
from iso_host.core.message_auth import mac_field_of, verify_message_mac
from iso_host.errors import ConfigError
from iso_host.fuzz.mutations import FuzzFrame, Reading, Tak
from iso_host.wire import Dialect, Message, load_dialect

ANSWERED: Final = "answered"
CLOSED: Final = "closed"  # the host closed without answering
TIMEOUT: Final = "timeout"  # neither an answer nor a close
OUTCOMES: Final = (ANSWERED, CLOSED, TIMEOUT)


@dataclass(frozen=True, slots=True)
class FuzzOptions:
    """What ``iso-host fuzz`` was asked to do, checked."""

    host: str
    port: int
    dialect: Dialect
    count: int
    rate: float  # frames per second, 0: as fast as the host answers
    seed: int
    connections: int
    health_every: int  # 0: a health check at the start and at the end only
    timeout_s: float
    tid: str
    mid: str
    tmk: bytes | None = field(repr=False)  # sign on with it (and again whenever a fuzz frame may have changed keys)
    static_tak: Tak | None  # --keys tak=HEX: the terminal's static MAC key
    out: Path
    max_frame_bytes: int
    ssl_context: ssl.SSLContext | None = None


@dataclass
class Tally:
    """What became of the frames of one mutation."""

    sent: int = 0
    answered: int = 0
    closed: int = 0
    timeouts: int = 0
    findings: int = 0
    approved: int = 0  # answered with F39 00
    remaced: int = 0  # sent with a MAC recomputed after the mutation

    def count(self, outcome: str, *, found: bool, approved: bool, remaced: bool) -> None:
        assert outcome in OUTCOMES
        assert outcome == ANSWERED or not approved
        self.sent += 1
        self.approved += approved
        self.remaced += remaced
        self.answered += outcome == ANSWERED
        self.closed += outcome == CLOSED
        self.timeouts += outcome == TIMEOUT
        self.findings += found
        assert self.answered + self.closed + self.timeouts == self.sent


def expects_answer(reading: Reading, body_bytes: int, max_frame_bytes: int) -> bool:
    """Whether a host must answer (DESIGN.md: response 30 once the MTI and routing fields could be read).

    A body over the host's frame limit, or one whose MTI cannot be read, may be answered by a close.
    """
    return 0 < body_bytes <= max_frame_bytes and reading.mti_read


def mac_verifies(dialect: Dialect, body: bytes, message: Message, tak: Tak) -> bool:
    """Whether the body's MAC is the one ``tak`` gives (constant time)."""
    return verify_message_mac(body[dialect.envelope_bytes :], message, dialect, tak.algorithm, tak.key)


def invalid_because(dialect: Dialect, frame: FuzzFrame) -> str | None:
    """Why approving this frame would be wrong (it does not decode, its MAC does not verify), or None."""
    message = frame.reading.message
    if message is None:
        return f"it does not decode: {frame.reading.error or 'over the frame limit'}"
    if (
        frame.mac_kind
        and frame.tak is not None
        and not frame.remaced
        and not mac_verifies(dialect, frame.body, message, frame.tak)
    ):
        return f"its MAC (field {mac_field_of(message)}) does not verify with the terminal's TAK"
    return None


def judge(frame: FuzzFrame, outcome: str, *, approved: bool, invalid: str | None,
          max_frame_bytes: int) -> tuple[str, str] | None:  # fmt: skip
    """(finding, what happened) when the host's handling of a frame is wrong, else None.

    Args:
        outcome: ``ANSWERED``, ``CLOSED`` (the host closed without answering) or ``TIMEOUT`` (neither).
        approved: the answer carried F39 = 00.
        invalid: ``invalid_because(...)`` for the frame.
    """
    assert outcome in OUTCOMES
    if outcome == TIMEOUT:
        return "timeout", "no answer and no close within the timeout"
    if outcome == CLOSED:
        if not expects_answer(frame.reading, len(frame.body), max_frame_bytes):
            return None
        where = "it decodes" if frame.reading.message is not None else f"its MTI reads ({frame.reading.error})"
        return "close_without_answer", f"closed without an answer, but {where}"
    if approved and invalid is not None:
        return "approved_invalid", f"approved (F39 00), but {invalid}"
    return None


@dataclass
class Stats:
    """The counts of a run."""

    tallies: dict[str, Tally]  # by mutation
    found: Counter[str] = field(default_factory=Counter)  # findings by kind
    health_runs: int = 0
    health_failures: int = 0
    restores: int = 0  # times the terminal's session was put back after a fuzzed sign-on or sign-off
    saved: int = 0  # reproducers written


def summary_lines(stats: Stats, elapsed_s: float, out: Path) -> list[str]:
    """The table of a run (one row per mutation, then the total), its rate and its findings."""
    tallies = stats.tallies
    total = Tally(*(sum(column) for column in zip(*(astuple(t) for t in tallies.values()), strict=True)))
    columns = ("SENT", "RE-MACD", "ANSWERED", "APPROVED", "CLOSED", "TIMEOUTS", "FINDINGS")
    lines = [f"{'MUTATION':<14}" + "".join(f" {column:>9}" for column in columns)]
    for name, t in [*tallies.items(), ("total", total)]:
        counts = (t.sent, t.remaced, t.answered, t.approved, t.closed, t.timeouts, t.findings)
        lines.append(f"{name:<14}" + "".join(f" {count:>9}" for count in counts))
    lines.append(f"health checks: {stats.health_runs} run, {stats.health_failures} failed; "
                 f"session restores: {stats.restores}")  # fmt: skip
    rate = total.sent / elapsed_s if elapsed_s > 0 else 0.0
    lines.append(f"{total.sent} frames in {elapsed_s:.1f} s: {rate:.0f} frames/s")
    if not stats.found:
        lines.append("findings: none")
    else:
        listed = ", ".join(f"{what} {count}" for what, count in sorted(stats.found.items()))
        lines.append(f"findings: {sum(stats.found.values())} ({listed}); {stats.saved} reproducers in {out}")
    return lines


def parse_keys(text: str | None, dialect: Dialect) -> Tak | None:
    """``--keys tak=HEX[,mac=ALGORITHM]``: the terminal's static MAC key, or None without the flag.

    Raises:
        ConfigError: naming the flag; the key itself is never echoed.
    """
    if text is None:
        return None
    pairs = dict(part.partition("=")[::2] for part in text.split(","))
    unknown = sorted(set(pairs) - {"tak", "mac"})
    if unknown or "tak" not in pairs:
        raise ConfigError(f"--keys: expected tak=HEX[,mac=ALGORITHM], got keys {sorted(pairs)}")
    algorithm = pairs.get("mac") or dialect.security.mac_algorithm
    if algorithm is None:
        raise ConfigError(f"--keys: dialect {dialect.name} has no MAC algorithm; add mac=ALGORITHM")
    return Tak(algorithm, hex_key("--keys tak", pairs["tak"]))


def options_from(args: argparse.Namespace, ssl_context: ssl.SSLContext | None) -> FuzzOptions:
    """The checked options of ``iso-host fuzz``. Raises ConfigError naming the flag."""
    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--to: expected HOST:PORT, got {args.to!r}")
    for flag, value, low in (("--count", args.count, 1), ("--connections", args.connections, 1),
                             ("--health-every", args.health_every, 0), ("--rate", args.rate, 0)):  # fmt: skip
        if value < low:
            raise ConfigError(f"{flag}: must be at least {low}, got {value}")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout: must be seconds > 0, got {args.timeout}")
    dialect = load_dialect(args.dialect)
    static_tak = parse_keys(args.keys, dialect)
    # Sign on with --tmk; a dialect that requires sign-on gets the demo TMK unless a static TAK stands in.
    tmk_text = args.tmk or (DEMO_TMK if dialect.security.require_signon and static_tak is None else None)
    if not 0 < args.max_frame_bytes < dialect.length_header.max_length:
        limit = dialect.length_header.max_length
        raise ConfigError(f"--max-frame-bytes: must be 1..{limit - 1} for a {dialect.length_header.name} header")
    return FuzzOptions(
        host=host, port=int(port), dialect=dialect, count=args.count, rate=args.rate,
        seed=args.seed if args.seed is not None else secrets.randbelow(2**32), connections=args.connections,
        health_every=args.health_every, timeout_s=args.timeout, tid=args.tid, mid=args.mid,
        tmk=hex_key("--tmk", tmk_text) if tmk_text else None, static_tak=static_tak, out=Path(args.out),
        max_frame_bytes=args.max_frame_bytes,
        ssl_context=ssl_context,
    )  # fmt: skip
