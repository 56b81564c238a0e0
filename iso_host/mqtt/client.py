"""MQTT connections for the event relay, live control and the ``events`` / ``control`` commands (aiomqtt).

One place turns the ``[events]`` settings into a client, so that TLS, credentials and client ids are handled
alike everywhere.
"""

from __future__ import annotations

import os
import ssl
from typing import Final

import aiomqtt

from iso_host.errors import ConfigError
from iso_host.mqtt.topics import BrokerSettings, broker_address

CONNECT_TIMEOUT_S: Final = 5.0
MAX_INFLIGHT: Final = 100  # unacknowledged QoS 1 messages on the wire at once
MAX_PENDING_CALLS: Final = 10_000


def tls_context(settings: BrokerSettings) -> ssl.SSLContext:
    """TLS 1.2+ verifying the broker against ``ca_file`` or the system's store.

    Raises:
        ConfigError: the CA file is missing or unusable.
    """
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"events.ca_file: cannot load {settings.ca_file}: {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client(settings: BrokerSettings, role: str, *, clean_session: bool = True) -> aiomqtt.Client:
    """A client for one connection (use as ``async with``); its id is ``<client_id>-<role>``.

    Raises:
        ConfigError: the URL or the CA file is wrong.
    """
    address = broker_address(settings.url)
    base = settings.client_id or f"iso-host-{os.getpid()}"
    connection = aiomqtt.Client(
        address.host, address.port, username=settings.username, password=settings.password,
        identifier=f"{base}-{role}", clean_session=clean_session, timeout=CONNECT_TIMEOUT_S,
        tls_context=tls_context(settings) if address.tls else None, max_inflight_messages=MAX_INFLIGHT,
    )  # fmt: skip
    # The relay keeps a window of publishes in flight, by design; aiomqtt would warn about each past 10.
    connection.pending_calls_threshold = MAX_PENDING_CALLS
    return connection


def check_settings(settings: BrokerSettings) -> None:
    """Fail at start, not in a background task later, when the URL or the CA file is wrong.

    Raises:
        ConfigError: naming the key.
    """
    if broker_address(settings.url).tls:
        tls_context(settings)


def describe_broker(settings: BrokerSettings) -> str:
    """The broker's URL for messages and logs (it carries no password: credentials are separate keys)."""
    address = broker_address(settings.url)
    return f"{'mqtts' if address.tls else 'mqtt'}://{address.host}:{address.port}"


def error_line(error: BaseException) -> str:
    """One line about an error for logs and replies: its type and the first line of its text."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
