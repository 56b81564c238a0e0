"""`iso-host events tail` and `iso-host control`: watch a host's event stream and drive it live, over MQTT.

The command-line edge of broker.py and mqtt.py. Both commands take the broker from ``--config`` (its
``[events]`` section) and/or the ``--mqtt-url``, ``--username``, ``--password`` and ``--topic-prefix`` flags.

``events tail`` exits 0 after ``--count`` distinct events (or on Ctrl-C when neither ``--count`` nor
``--timeout`` is given), 1 when ``--timeout`` passed first, 2 on an error. ``control`` exits 0 when the host
answered ok, 1 when it answered with an error, 2 when it did not answer in time or on an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import aiomqtt

from iso_host.broker import DEFAULT_PREFIX, DEFAULT_URL, BrokerSettings, broker_address, control_topic, reply_topic
from iso_host.config import load_config, valid_topic_prefix
from iso_host.control.commands import COMMANDS
from iso_host.errors import ConfigError
from iso_host.mqtt import client, describe_broker

EXIT_OK, EXIT_SHORT, EXIT_ERROR = 0, 1, 2
QOS: Final = 1
SEEN_IDS_MAX: Final = 100_000  # event ids remembered to drop re-deliveries: a few MB at most
DETAIL_CHARS_MAX: Final = 80  # a control event's detail in the table; --json shows all of it
DEFAULT_CONTROL_TIMEOUT_S: Final = 5.0
CONTROL_COMMANDS: Final = tuple(COMMANDS)  # what the host's listener carries out
REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ERRNO_PREFIX: Final = re.compile(r"^\[Errno -?\d+\] ")
# (header, width, right-aligned): the decision-event table of `events tail`
COLUMNS: Final = (
    ("TIME (UTC)", 23, False), ("KIND", 12, False), ("TID", 8, False), ("STAN", 6, False), ("RRN", 12, False),
    ("AMOUNT", 12, True), ("CUR", 3, False), ("PAN", 19, False), ("RC", 2, False), ("REASON", 22, False),
    ("LATENCY_MS", 10, True),
)  # fmt: skip
assert len(CONTROL_COMMANDS) == len(set(CONTROL_COMMANDS))
assert DETAIL_CHARS_MAX > 3


# --- the broker flags, shared by both commands -------------------------------------------------------------


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker (the --config file's [events], with these flags on top)")
    group.add_argument("--config", metavar="FILE", help="take the broker from this config file's [events] section")
    group.add_argument("--mqtt-url", metavar="URL", help=f"mqtt://HOST[:PORT] or mqtts://HOST[:PORT] ({DEFAULT_URL})")
    group.add_argument("--username", help="broker user name")
    group.add_argument("--password", help="broker password (needs --username or the config's username)")
    group.add_argument("--topic-prefix", metavar="PREFIX", help=f"the host's topic prefix ({DEFAULT_PREFIX})")


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    """The broker of ``--config`` (its [events]) with the flags on top, or the flags alone.

    Raises:
        ConfigError: the config has events off, or a flag is wrong.
    """
    settings = BrokerSettings()
    if args.config is not None:
        events = load_config(args.config).events
        if events is None:
            raise ConfigError(f"{args.config}: events are off (no [events] mqtt_url); use --mqtt-url instead")
        settings = replace(events, client_id=None)  # the host's id: two clients sharing it would kick each other
    if args.mqtt_url is not None:
        try:
            broker_address(args.mqtt_url)
        except ConfigError as error:
            raise ConfigError(str(error).replace("events.mqtt_url", "--mqtt-url", 1)) from None
        settings = replace(settings, url=args.mqtt_url)
    if args.username is not None:
        settings = replace(settings, username=args.username, password=args.password)
    elif args.password is not None:
        settings = replace(settings, password=args.password)
    if settings.password is not None and settings.username is None:
        raise ConfigError("--password needs --username")
    if args.topic_prefix is not None:
        if not valid_topic_prefix(args.topic_prefix):
            problem = "must be topic levels without +, # or empty levels"
            raise ConfigError(f"--topic-prefix: {problem}, got {args.topic_prefix!r}")
        settings = replace(settings, topic_prefix=args.topic_prefix)
    return settings


def _reason(error: BaseException) -> str:
    """``[Errno 111] Connection refused`` → ``Connection refused``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
    return ERRNO_PREFIX.sub("", text)


def _say(command: str, text: str) -> None:
    print(f"iso-host: {command}: {text}", file=sys.stderr, flush=True)


# --- events tail ------------------------------------------------------------------------------------------


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


def _cell(value: Any) -> str:
    """A field as one table cell: ``-`` for null, never a control character (a line is one event)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "".join(c if c.isprintable() else "?" for c in text)


def _time(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return _cell(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _amount(value: Any) -> str:
    """Minor units as major units with 2 decimals (``1234`` → ``12.34``), exactly: no float rounding."""
    if isinstance(value, bool) or not isinstance(value, int):
        return _cell(value)
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"


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
    head = [_time(event.get("time")), _cell(event.get("kind")), _cell(event.get("tid"))]
    if event.get("kind") == "control":
        detail = _cell(event.get("detail"))
        if len(detail) > DETAIL_CHARS_MAX:
            detail = detail[: DETAIL_CHARS_MAX - 3] + "..."
        return f"{_row(head)} {_cell(event.get('command'))} {detail}"
    latency = event.get("latency_ms")
    rest = [
        _cell(event.get("stan")), _cell(event.get("rrn")), _amount(event.get("amount_minor")),
        _cell(event.get("currency")), _cell(event.get("masked_pan")), _cell(event.get("response_code")),
        _cell(event.get("reason")), f"{latency:.1f}" if isinstance(latency, int | float) else _cell(latency),
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
        _say("events", f"skipped a message on {message.topic.value} that is not a JSON object")
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
            raise BrokerLostError(_reason(error)) from None


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
        _say("events", f"{wanted} within {options.timeout_s:g} s on {options.topic_filter}")
        return EXIT_SHORT
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
    return _run_mqtt("events", settings, lambda: tail(settings, options, sys.stdout), on_interrupt=(
        EXIT_OK if args.count is None and args.timeout is None else EXIT_SHORT))  # fmt: skip


class BrokerLostError(Exception):
    """The broker went away after the command had reached it."""


def _run_mqtt(
    command: str, settings: BrokerSettings, run: Callable[[], Coroutine[Any, Any, int]], *, on_interrupt: int
) -> int:
    """Run one command's coroutine; a broker that cannot be reached, or is lost, is one line and exit 2."""
    try:
        return asyncio.run(run())
    except aiomqtt.MqttError as error:
        _say(command, f"cannot reach {describe_broker(settings)}: {_reason(error)}")
    except BrokerLostError as error:
        _say(command, f"lost the connection to {describe_broker(settings)}: {error}")
    except KeyboardInterrupt:
        return on_interrupt
    return EXIT_ERROR


# --- control ----------------------------------------------------------------------------------------------


def _json_value(pair: str, raw: str) -> Any:
    """A ``key:=value`` value: JSON (``5``, ``true``, ``{"a":1}``); NaN and Infinity are refused, as JSON does.

    Raises:
        ConfigError: the value is not JSON.
    """

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw, parse_constant=no_constants)
    except ValueError as error:
        raise ConfigError(f"{pair!r}: the value after := must be JSON ({error})") from None


def control_payload(pairs: list[str], json_payload: str | None) -> dict[str, Any]:
    """``--json-payload`` with the ``key=value`` pairs on top; ``a.b=1`` is ``{"a": {"b": 1}}``.

    Raises:
        ConfigError: a pair without ``=``, an empty key part, or a key that is both a value and an object.
    """
    payload: dict[str, Any] = {}
    if json_payload is not None:
        try:
            payload = json.loads(json_payload)
        except ValueError as error:
            raise ConfigError(f"--json-payload: not JSON: {error}") from None
        if not isinstance(payload, dict):
            raise ConfigError(f"--json-payload: must be a JSON object, got {json_payload!r}")
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        is_json = key.endswith(":")
        path = key.removesuffix(":").split(".")
        if not equals or "" in path:
            raise ConfigError(f"{pair!r}: expected KEY=TEXT or KEY:=JSON (KEY may be dotted: scenario.respond=05)")
        node = payload
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{pair!r}: {'.'.join(path[: depth + 1])} is already a value, not an object")
        node[path[-1]] = _json_value(pair, raw) if is_json else raw
    return payload


def with_request_id(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with its ``request_id`` first: the one given, checked, or a new random one."""
    request_id = payload.get("request_id", f"cli-{uuid.uuid4().hex}")
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise ConfigError(f"request_id: must be 1..64 of A-Z a-z 0-9 _ . -, got {request_id!r}")
    return {"request_id": request_id, **{k: v for k, v in payload.items() if k != "request_id"}}


@dataclass(frozen=True, slots=True)
class Reply:
    text: str  # as received
    body: dict[str, Any]


class NoReplyError(Exception):
    """The host did not answer within the timeout."""


class BadReplyError(Exception):
    """What came on the reply topic is not a control reply."""


async def request(settings: BrokerSettings, command: str, payload: dict[str, Any], timeout_s: float) -> Reply:
    """Publish one control command and wait for its reply (subscribed first, so it cannot be missed).

    Raises:
        NoReplyError: nothing came on the reply topic within ``timeout_s``.
        BadReplyError: what came is not a control reply.
        aiomqtt.MqttError: the broker could not be reached.
        BrokerLostError: the broker went away after it was reached.
    """
    replies = reply_topic(settings.topic_prefix, payload["request_id"])
    async with client(settings, "control-cli") as mqtt:
        try:
            await mqtt.subscribe(replies, qos=QOS)
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            await mqtt.publish(control_topic(settings.topic_prefix, command), text, qos=QOS)
            async with asyncio.timeout(timeout_s):
                async for message in mqtt.messages:  # the topic is this request's own: the first message is it
                    raw = message.payload
                    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)
                    return Reply(text, _reply_body(text))
        except TimeoutError:
            raise NoReplyError(replies) from None
        except aiomqtt.MqttError as error:
            raise BrokerLostError(_reason(error)) from None
    raise BrokerLostError("the broker ended the subscription")


def _reply_body(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        shown = text if len(text) <= DETAIL_CHARS_MAX else text[: DETAIL_CHARS_MAX - 3] + "..."
        raise BadReplyError(f"the reply is not a JSON object with ok true or false: {shown!r}")
    return body


async def _control(settings: BrokerSettings, command: str, payload: dict[str, Any], timeout_s: float,
                   *, as_json: bool) -> int:  # fmt: skip
    try:
        reply = await request(settings, command, payload, timeout_s)
    except NoReplyError as error:
        _say("control", f"no reply from the host within {timeout_s:g} s on {error}; "
                        "is [control] enabled = true and the host running?")  # fmt: skip
        return EXIT_ERROR
    except BadReplyError as error:
        _say("control", str(error))
        return EXIT_ERROR
    ok = reply.body["ok"]
    if as_json:
        print(reply.text, flush=True)
    elif ok:
        print("ok", flush=True)
        if reply.body.get("result") is not None:
            print(json.dumps(reply.body["result"], indent=2, ensure_ascii=False), flush=True)
    else:
        print(f"error: {_cell(reply.body.get('error'))}", file=sys.stderr, flush=True)
    return EXIT_OK if ok else EXIT_SHORT


def command_control(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise ConfigError(f"--timeout: must be seconds > 0, got {args.timeout:g}")
    payload = with_request_id(control_payload(args.pairs, args.json_payload))
    settings = broker_settings(args)
    return _run_mqtt(
        "control", settings, lambda: _control(settings, args.control_command, payload, args.timeout, as_json=args.json),
        on_interrupt=EXIT_ERROR,
    )  # fmt: skip


# --- parsers ----------------------------------------------------------------------------------------------


class _IntermixedParser(argparse.ArgumentParser):
    """Flags may come between and after KEY=VALUE pairs (``control add-scenario --config F a=1``).

    Plain argparse takes ``nargs="*"`` positionals in one go and refuses those after a flag; this parser
    parses the ``intermixed`` way (Python docs, "Intermixed parsing") even as a subcommand's parser.
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:  # parse_known_intermixed_args calls back here, twice
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_events_parser(commands: Any) -> None:
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


def add_control_parser(commands: Any) -> None:
    control = commands.add_parser(
        "control", help="send a live control command to a running host (MQTT)",
        description="Publish COMMAND with a JSON payload built from KEY=TEXT and KEY:=JSON pairs and print the "
        "host's reply. KEY=TEXT sends a string (tid=TERM0001, scenario.respond=51); KEY:=JSON sends JSON "
        "(seconds:=86400, scenario.times:=1, scenario.no_reply:=true). "
        "Dotted keys nest: scenario.respond=05 is {\"scenario\": {\"respond\": \"05\"}}.",
    )  # fmt: skip
    control.__class__ = _IntermixedParser  # add_parser builds the root's parser class; only this one intermixes
    control.add_argument("control_command", metavar="COMMAND", choices=CONTROL_COMMANDS,
                         help=", ".join(CONTROL_COMMANDS))  # fmt: skip
    control.add_argument("pairs", metavar="KEY=TEXT|KEY:=JSON", nargs="*",
                         help="arguments, e.g. tid=TERM0001 seconds:=86400")  # fmt: skip
    control.add_argument("--json-payload", metavar="JSON", help="a JSON object to start from (pairs go on top)")
    control.add_argument("--timeout", type=float, default=DEFAULT_CONTROL_TIMEOUT_S, metavar="S",
                         help=f"seconds to wait for the reply ({DEFAULT_CONTROL_TIMEOUT_S:g})")  # fmt: skip
    control.add_argument("--json", action="store_true", help="print the reply as received")
    add_broker_arguments(control)
    control.set_defaults(handler=command_control)
