"""The console wired to a running host: its monitor on the pipeline, its metrics, live control's view of the host,
the token, and the HTTP listener (``app.start`` calls ``open_console``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Protocol

from iso_host.clock import HostClock
from iso_host.config_http import HttpConfig
from iso_host.console.http import Console, RunningConsole, start_console
from iso_host.console.metrics import Metrics
from iso_host.console.monitor import Monitor
from iso_host.control.controls import host_controls
from iso_host.core.pipeline import Host

TOKEN_BYTES = 24


class Listening(Protocol):
    """The edge the console reports on: a ``Server`` or a ``WorkerPool``."""

    @property
    def connection_count(self) -> int | None: ...

    @property
    def serving(self) -> bool: ...

    def connected_terminals(self) -> set[str] | None: ...


def console_token(settings: HttpConfig) -> tuple[str | None, bool]:
    """The token changes need, and whether it was made just now (to be printed once): the configured one, else a
    fresh one when control is on beyond loopback, else none."""
    if settings.token is not None:
        return settings.token, False
    if settings.control and not settings.loopback:
        return secrets.token_urlsafe(TOKEN_BYTES), True
    return None, False


async def open_console(
    host: Host, settings: HttpConfig, listening: Listening, *, ledger_url: str,
    reload_cards: Callable[[], int] | None, wake_relay: Callable[[], None] | None, token: str | None,
) -> RunningConsole:  # fmt: skip
    """Put a monitor on the pipeline and serve the console.

    Raises:
        ConfigError: the console's address cannot be listened on.
    """
    assert isinstance(host.clock, HostClock), "the console's clock view moves the host's clock"
    monitor = Monitor(host.dialect, monotonic=time.monotonic)
    metrics = Metrics(connections=lambda: listening.connection_count,
                      signed_on=lambda: sum(t.signed_on for t in host.terminals.values()))  # fmt: skip
    monitor.metrics = metrics
    controls = host_controls(host, reload_cards)
    console = Console(
        host=host, monitor=monitor, metrics=metrics, controls=controls, settings=settings,
        ledger_url=ledger_url, token=token, listening=lambda: listening.serving,
        connected=listening.connected_terminals, wake_relay=wake_relay, events_on=host.events is not None,
    )  # fmt: skip
    running = await start_console(console)
    host.observer = monitor
    return running
