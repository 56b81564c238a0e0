"""The host's MQTT side: the outbox relay and, when enabled, the live-control listener, as background tasks.

Neither is on a reply's path: both run beside the TCP server and reconnect on their own, so a broker that
is down or slow costs terminals nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from iso_host.clock import HostClock
from iso_host.config import Config
from iso_host.core.pipeline import Host
from iso_host.errors import StoreError
from iso_host.events.flush import flush_refusals, flush_refusals_forever
from iso_host.events.relay import PRUNE_EVERY_S, Relay, machine_now
from iso_host.log import get_logger
from iso_host.mqtt.topics import BrokerSettings, broker_address, control_topic

if TYPE_CHECKING:
    from iso_host.control.listener import ControlListener

FLUSH_ON_STOP_S: Final = 2.0  # at shutdown, the relay gets this long to empty the outbox; the rest waits for next start


async def broker_answers(settings: BrokerSettings, timeout_s: float) -> bool:
    """Whether the broker's port takes a TCP connection within ``timeout_s`` (closed again at once): a refused
    connection, an unknown host or an unreachable network is known in milliseconds, and waiting for the relay would
    only hold the host's start."""
    address = broker_address(settings.url)
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(address.host, address.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class MqttTasks:
    relay: Relay | None = None
    control: ControlListener | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    host: Host | None = None  # whose counted refusals are committed once more at stop
    broker: BrokerSettings | None = None  # where the relay connects: ``ready`` asks it first whether it answers

    async def ready(self, timeout_s: float) -> bool:
        """Wait until the relay is connected and the listener subscribed; False (and go on) after ``timeout_s``, or at
        once when the broker refuses connections (the relay and the listener keep retrying in the background)."""
        events = self._readiness()
        if not events:
            return True
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self.broker is not None and not await broker_answers(self.broker, timeout_s):
            return False
        waits = [asyncio.create_task(event.wait()) for event in events]
        _, pending = await asyncio.wait(waits, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        for task in pending:
            task.cancel()
        return not pending

    def _readiness(self) -> list[asyncio.Event]:
        events = [self.relay.connected] if self.relay is not None else []
        return events + ([self.control.ready] if self.control is not None else [])

    async def stop(self, flush_s: float = FLUSH_ON_STOP_S) -> None:
        """Commit the refusals counted since the last aggregate event, give the relay a moment to publish what is
        committed, then stop everything."""
        if self.host is not None and self.host.events is not None:
            with contextlib.suppress(StoreError):
                await flush_refusals(self.host.events, self.host.store, self.host.clock)
        if self.relay is not None:
            await self.relay.drain(flush_s)
        await self.cancel()

    async def cancel(self) -> None:
        """Stop everything now; what is committed and not yet published waits in the outbox for the next start."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


def start_relay(
    host: Host, settings: BrokerSettings, *, keep_sent_s: float, prune_every_s: float = PRUNE_EVERY_S
) -> MqttTasks:
    """Start the outbox relay for a host with events on; the host wakes it after each commit with an event."""
    assert host.events is not None, "a host without an event sink writes no events to relay"
    relay = Relay(host.store, settings, machine_now, keep_sent_s=keep_sent_s, prune_every_s=prune_every_s)
    host.events.notify = relay.wake
    tasks = [
        asyncio.create_task(relay.run(), name="events-relay"),
        asyncio.create_task(flush_refusals_forever(host.events, host.store, host.clock), name="events-refusals"),
    ]
    return MqttTasks(relay, tasks=tasks, host=host, broker=settings)


def start_mqtt_tasks(
    config: Config, host: Host, reload_cards: Callable[[], int] | None = None, *, control_secret: bytes | None = None
) -> MqttTasks:
    """Start the relay when events are on, and the control listener when control is enabled too (taking signed
    commands only when there is a ``control_secret``)."""
    if config.events is None or host.events is None:
        return MqttTasks()
    assert isinstance(host.clock, HostClock), "live control moves the host's clock"
    running = start_relay(host, config.events, keep_sent_s=config.events_keep_sent_s)
    relay = running.relay
    assert relay is not None
    if config.control_enabled:
        from iso_host.control.controls import host_controls  # noqa: PLC0415 - only hosts with control enabled
        from iso_host.control.listener import ControlListener, Signing  # noqa: PLC0415
        from iso_host.control.signing import Verifier  # noqa: PLC0415

        controls = host_controls(host, reload_cards)
        signing = Signing(Verifier(control_secret), time.time, time.monotonic) if control_secret else None
        if signing is None and config.events.username is None:
            get_logger(component="control").warning(
                "control_unauthenticated", topic=control_topic(config.events.topic_prefix, "+"),
                hint="anyone who can publish there steers this host: set [control] secret_file or broker credentials",
            )  # fmt: skip
        running.control = ControlListener(controls, host.store, config.events, relay.wake, signing)
        running.tasks.append(asyncio.create_task(running.control.run(), name="control-listener"))
    return running
