"""`iso-host events tail`: print a host's events as they are published, once each, as a table or as JSON.

Exits 0 after ``--count`` distinct events (or on Ctrl-C when neither ``--count`` nor ``--timeout`` is given),
1 when ``--timeout`` passed first, 2 on an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import aiomqtt

from iso_host.cli.broker_flags import (
    QOS,
    BrokerLostError,
    add_broker_arguments,
    broker_settings,
    cell,
    reason,
    run_mqtt,
    say,
)
from iso_host.cli.exit_codes import EXIT_NEGATIVE, EXIT_OK
from iso_host.errors import ConfigError
from iso_host.money import format_amount
from iso_host.mqtt.client import client
from iso_host.mqtt.topics import BrokerSettings

SEEN_IDS_MAX: Final = 100_000  # event ids remembered to drop re-deliveries: a few MB at most
DETAIL_CHARS_MAX: Final = 80  # a control event's detail in the table; --json shows all of it
# (header, width, right-aligned): the decision-event table
COLUMNS: Final = (
    ("TIME (UTC)", 23, False), ("KIND", 12, False), ("TID", 8, False), ("STAN", 6, False), ("RRN", 12, False),
    ("AMOUNT", 12, True), ("CUR", 3, False), ("PAN", 19, False), ("RC", 2, False), ("REASON", 22, False),
    ("LATENCY_MS", 10, True),
)  # fmt: skip
assert DETAIL_CHARS_MAX > 3


@dataclass(frozen=True, slots=True)
class TailOptions:
    topic_filter: str
    as_json: bool = False
    count: int | None = None  # stop after this many distinct events
    timeout_s: float | None = None  # give up this long after subscribing


class SeenIds:
    """The last ``capacity`` event ids, to drop an at-least-once re-delivery; the oldest is forgotten first."""

    def __init__(self, capacity: int) -> None:
        assert capacity > 0
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        if len(self._order) == self.capacity:
            self._ids.discard(self._order.popleft())
        self._order.append(event_id)
        self._ids.add(event_id)
        assert len(self._ids) == len(self._order) <= self.capacity
        return True


def _topic_level(flag: str, value: str | None) -> str:
    if value is None:
        return "+"
    if not value or any(c in value for c in "/+#"):
        raise ConfigError(f"{flag}: must be one topic level without /, + or #, got {value!r}")
    return value


def _time(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return cell(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _amount(value: Any) -> str:
    """Minor units as major units with 2 decimals (``1234`` → ``12.34``); anything else as a plain cell."""
    if isinstance(value, bool) or not isinstance(value, int):
        return cell(value)
    return format_amount(value)


def _row(cells: list[str]) -> str:
    """The first ``len(cells)`` columns, padded to their widths (a wider cell pushes the rest right)."""
    assert len(cells) <= len(COLUMNS)
    columns = COLUMNS[: len(cells)]
    padded = (f"{c:>{w}}" if right else f"{c:<{w}}" for c, (_, w, right) in zip(cells, columns, strict=True))
    return " ".join(padded)


def table_header() -> str:
    return _row([header for header, _, _ in COLUMNS]).rstrip()


def table_line(event: dict[str, Any]) -> str:
    """One event as a table row; a control event shows its command and detail after the terminal id."""
    head = [_time(event.get("time")), cell(event.get("kind")), cell(event.get("tid"))]
    if event.get("kind") == "control":
        detail = cell(event.get("detail"))
        if len(detail) > DETAIL_CHARS_MAX:
            detail = detail[: DETAIL_CHARS_MAX - 3] + "..."
        return f"{_row(head)} {cell(event.get('command'))} {detail}"
    latency = event.get("latency_ms")
    rest = [
        cell(event.get("stan")), cell(event.get("rrn")), _amount(event.get("amount_minor")),
        cell(event.get("currency")), cell(event.get("masked_pan")), cell(event.get("response_code")),
        cell(event.get("reason")), f"{latency:.1f}" if isinstance(latency, int | float) else cell(latency),
    ]  # fmt: skip
    return _row(head + rest).rstrip()


def _event_of(message: aiomqtt.Message) -> tuple[str, dict[str, Any]] | None:
    """The message's text and its JSON object, or None (with a warning) when it is not one."""
    payload = message.payload
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else str(payload)
        event = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        event = None
    if not isinstance(event, dict):
        say("events", f"skipped a message on {message.topic.value} that is not a JSON object")
        return None
    return text, event


async def tail(settings: BrokerSettings, options: TailOptions, out: TextIO) -> int:
    """Print events until ``count`` distinct ones came (0) or ``timeout_s`` passed (0 if any came, else 1).

    Raises:
        aiomqtt.MqttError: the broker could not be reached.
        BrokerLostError: the broker went away after it was reached.
    """
    async with client(settings, "events-tail") as mqtt:
        try:
            await mqtt.subscribe(options.topic_filter, qos=QOS)
            print(f"subscribed to {options.topic_filter}", file=sys.stderr, flush=True)
            return await _print_events(mqtt, options, out)
        except aiomqtt.MqttError as error:
            raise BrokerLostError(reason(error)) from None


async def _print_events(mqtt: aiomqtt.Client, options: TailOptions, out: TextIO) -> int:
    seen, shown = SeenIds(SEEN_IDS_MAX), 0
    deadline = None if options.timeout_s is None else asyncio.get_running_loop().time() + options.timeout_s
    if not options.as_json:
        print(table_header(), file=out, flush=True)
    try:
        async with asyncio.timeout_at(deadline):
            async for message in mqtt.messages:  # ends only by count, deadline, Ctrl-C or a lost broker
                received = _event_of(message)
                if received is None:
                    continue
                text, event = received
                event_id = event.get("event_id")
                if isinstance(event_id, str) and not seen.first_time(event_id):
                    continue  # at-least-once: the broker or the relay sent this one again
                print(text if options.as_json else table_line(event), file=out, flush=True)
                shown += 1
                if options.count is not None and shown >= options.count:
                    return EXIT_OK
    except TimeoutError:
        if options.count is None and shown > 0:
            return EXIT_OK
        wanted = "no events" if shown == 0 else f"{shown} of {options.count} events"
        say("events", f"{wanted} within {options.timeout_s:g} s on {options.topic_filter}")
        return EXIT_NEGATIVE
    raise aiomqtt.MqttError("the broker ended the subscription")


def command_events_tail(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count: must be events >= 1, got {args.count}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout: must be seconds > 0, got {args.timeout:g}")
    settings = broker_settings(args)
    tid, kind = _topic_level("--tid", args.tid), _topic_level("--kind", args.kind)
    topic_filter = f"{settings.topic_prefix}/events/{tid}/{kind}"
    options = TailOptions(topic_filter, as_json=args.json, count=args.count, timeout_s=args.timeout)
    return run_mqtt("events", settings, lambda: tail(settings, options, sys.stdout), on_interrupt=(
        EXIT_OK if args.count is None and args.timeout is None else EXIT_NEGATIVE))  # fmt: skip


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = commands.add_parser("events", help="watch the host's event stream (MQTT)")
    events_commands = events.add_subparsers(dest="events_command", required=True)
    tail_parser = events_commands.add_parser("tail", help="print events as they are published")
    tail_parser.add_argument("--tid", help="only this terminal's events ('host' for host-wide control events)")
    tail_parser.add_argument("--kind", help="only this kind: sale, void, ..., unclassified, control")
    tail_parser.add_argument("--json", action="store_true", help="one JSON object per line, exactly as received")
    tail_parser.add_argument("--count", type=int, metavar="N", help="exit 0 after N distinct events")
    tail_parser.add_argument("--timeout", type=float, metavar="S",
                             help="exit 1 if fewer than N (or no) events came within S seconds")  # fmt: skip
    add_broker_arguments(tail_parser)
    tail_parser.set_defaults(handler=command_events_tail)
