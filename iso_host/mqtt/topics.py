"""Broker settings (the ``[events]`` section, or a command's flags) and MQTT topic names. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from iso_host.errors import ConfigError
from iso_host.urls import redacted_url

DEFAULT_URL: Final = "mqtt://127.0.0.1:1883"
DEFAULT_PREFIX: Final = "iso-host"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where the broker is and how to log in (the ``[events]`` section, or a command's flags)."""

    url: str = DEFAULT_URL
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None  # the host's base id; each connection adds its role ("-relay", "-control")
    topic_prefix: str = DEFAULT_PREFIX
    ca_file: str | None = None  # mqtts: the CA that signed the broker's certificate (default: the system's)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def broker_address(url: str) -> BrokerAddress:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``.

    Raises:
        ConfigError: another scheme, no host, or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        expected = "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
        raise ConfigError(f"events.mqtt_url: {expected}, got {redacted_url(url)!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"events.mqtt_url: bad port in {redacted_url(url)!r}") from None
    if not parts.hostname:
        raise ConfigError(f"events.mqtt_url: no host in {redacted_url(url)!r}")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port if port is not None else (8883 if tls else 1883), tls)


_NOT_IN_A_LEVEL: Final = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


def topic_level(text: str) -> str:
    """``text`` as one topic level: a terminal id is whatever field 41 carried, and a fuzzer's ``/``, ``+``
    or ``#`` must neither add levels nor make a wildcard that no broker accepts in a publish."""
    return text.translate(_NOT_IN_A_LEVEL)


def event_topic(prefix: str, tid: str | None, kind: str) -> str:
    """``<prefix>/events/<tid>/<kind>``; host-wide events (no terminal) go under ``host``."""
    return f"{prefix}/events/{topic_level(tid) if tid else 'host'}/{kind}"


def control_topic(prefix: str, command: str) -> str:
    return f"{prefix}/control/{command}"


def reply_topic(prefix: str, request_id: str) -> str:
    return f"{prefix}/control/replies/{request_id}"
