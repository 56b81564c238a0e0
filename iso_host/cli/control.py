"""`iso-host control COMMAND [KEY=TEXT | KEY:=JSON ...]`: send one live-control command, print the reply.

Exits 0 when the host answered ok, 1 when it answered with an error, 2 when it did not answer in time or on
an error. With a control secret (``ISO_HOST_CONTROL_SECRET``, ``--secret-file``, or the ``--config`` file's
``[control] secret_file``) the command is signed (``control/signing.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

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
from iso_host.cli.exit_codes import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK
from iso_host.config import load_config
from iso_host.control.commands import COMMANDS, REQUEST_ID
from iso_host.control.secret import ENV_VAR, load_secret
from iso_host.control.signing import sign
from iso_host.errors import ConfigError
from iso_host.mqtt.client import client
from iso_host.mqtt.topics import BrokerSettings, control_topic, reply_topic

DEFAULT_CONTROL_TIMEOUT_S: Final = 5.0
SHOWN_REPLY_CHARS_MAX: Final = 80  # a reply that is not one, quoted in the error
CONTROL_COMMANDS: Final = tuple(COMMANDS)  # what the host's listener carries out


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


def signed_or_plain(secret: bytes | None, topic: str, payload: dict[str, Any]) -> str:
    """The message for ``topic``: ``payload`` signed now with a fresh nonce, or as JSON without a secret."""
    if secret is None:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return sign(secret, topic, payload, ts=int(time.time()), nonce=secrets.token_urlsafe(24)).decode("utf-8")


async def request(
    settings: BrokerSettings, command: str, payload: dict[str, Any], timeout_s: float, secret: bytes | None = None
) -> Reply:
    """Publish one control command (signed with ``secret``) and wait for its reply (subscribed first, so it
    cannot be missed).

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
            topic = control_topic(settings.topic_prefix, command)
            await mqtt.publish(topic, signed_or_plain(secret, topic, payload), qos=QOS)
            async with asyncio.timeout(timeout_s):
                async for message in mqtt.messages:  # the topic is this request's own: the first message is it
                    raw = message.payload
                    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)
                    return Reply(text, _reply_body(text))
        except TimeoutError:
            raise NoReplyError(replies) from None
        except aiomqtt.MqttError as error:
            raise BrokerLostError(reason(error)) from None
    raise BrokerLostError("the broker ended the subscription")


def _reply_body(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        shown = text if len(text) <= SHOWN_REPLY_CHARS_MAX else text[: SHOWN_REPLY_CHARS_MAX - 3] + "..."
        raise BadReplyError(f"the reply is not a JSON object with ok true or false: {shown!r}")
    return body


async def _control(settings: BrokerSettings, command: str, payload: dict[str, Any], timeout_s: float,
                   *, as_json: bool, secret: bytes | None) -> int:  # fmt: skip
    try:
        reply = await request(settings, command, payload, timeout_s, secret)
    except NoReplyError as error:
        say("control", f"no reply from the host within {timeout_s:g} s on {error}; "
                        "is [control] enabled = true and the host running?")  # fmt: skip
        return EXIT_ERROR
    except BadReplyError as error:
        say("control", str(error))
        return EXIT_ERROR
    ok = reply.body["ok"]
    if as_json:
        print(reply.text, flush=True)
    elif ok:
        print("ok", flush=True)
        if reply.body.get("result") is not None:
            print(json.dumps(reply.body["result"], indent=2, ensure_ascii=False), flush=True)
    else:
        print(f"error: {cell(reply.body.get('error'))}", file=sys.stderr, flush=True)
    return EXIT_OK if ok else EXIT_NEGATIVE


def command_control(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise ConfigError(f"--timeout: must be seconds > 0, got {args.timeout:g}")
    payload = with_request_id(control_payload(args.pairs, args.json_payload))
    settings = broker_settings(args)
    secret = control_secret(args)
    return run_mqtt(
        "control", settings,
        lambda: _control(settings, args.control_command, payload, args.timeout, as_json=args.json, secret=secret),
        on_interrupt=EXIT_ERROR,
    )  # fmt: skip


def control_secret(args: argparse.Namespace) -> bytes | None:
    """``--secret-file``, else ``ISO_HOST_CONTROL_SECRET``, else the ``--config`` file's ``[control] secret_file``.

    Raises:
        ConfigError: the file cannot be read, is open to others, or holds too short a secret.
    """
    if args.secret_file is not None:
        return load_secret(args.secret_file, {}, what="--secret-file")  # the flag, named on purpose, wins
    path = load_config(args.config).control_secret_file if args.config is not None else None
    return load_secret(path, what=f"{args.config}: control.secret_file")


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


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    control.add_argument("--secret-file", metavar="FILE",
                         help=f"sign the command with the control secret in FILE (mode 0600; else {ENV_VAR}, "
                         "else the --config file's [control] secret_file)")  # fmt: skip
    add_broker_arguments(control)
    control.set_defaults(handler=command_control)
