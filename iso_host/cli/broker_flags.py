"""What `iso-host events tail` and `iso-host control` share: the broker flags, and running one MQTT command.

Both commands take the broker from ``--config`` (its ``[events]`` section) and/or the ``--mqtt-url``,
``--username``, ``--password`` and ``--topic-prefix`` flags. A broker that cannot be reached, or is lost, is
one line on standard error and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Final

import aiomqtt

from iso_host.cli.exit_codes import EXIT_ERROR
from iso_host.config import load_config, valid_topic_prefix
from iso_host.errors import ConfigError
from iso_host.mqtt.client import describe_broker
from iso_host.mqtt.topics import DEFAULT_PREFIX, DEFAULT_URL, BrokerSettings, broker_address

QOS: Final = 1
ERRNO_PREFIX: Final = re.compile(r"^\[Errno -?\d+\] ")


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


def reason(error: BaseException) -> str:
    """``[Errno 111] Connection refused`` → ``Connection refused``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
    return ERRNO_PREFIX.sub("", text)


def say(command: str, text: str) -> None:
    print(f"iso-host: {command}: {text}", file=sys.stderr, flush=True)


def cell(value: Any) -> str:
    """A field as one table cell: ``-`` for null, never a control character (a line is one event)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "".join(c if c.isprintable() else "?" for c in text)



class BrokerLostError(Exception):
    """The broker went away after the command had reached it."""


def run_mqtt(
    command: str, settings: BrokerSettings, run: Callable[[], Coroutine[Any, Any, int]], *, on_interrupt: int
) -> int:
    """Run one command's coroutine; a broker that cannot be reached, or is lost, is one line and exit 2."""
    try:
        return asyncio.run(run())
    except aiomqtt.MqttError as error:
        say(command, f"cannot reach {describe_broker(settings)}: {reason(error)}")
    except BrokerLostError as error:
        say(command, f"lost the connection to {describe_broker(settings)}: {error}")
    except KeyboardInterrupt:
        return on_interrupt
    return EXIT_ERROR
