"""The outbox relay: publishes committed events to MQTT in commit order, marks them sent, prunes old ones.

Rule: the relay is never on a reply's path. The host commits an event with its ledger change and answers;
the relay picks the event up afterwards. If the broker is down, events wait in the outbox (the ledger's
database) and go out, in order, once it is back: at least once, each with the ``event_id`` consumers
de-duplicate by. A publish counts as sent only when the broker acknowledged it (QoS 1 PUBACK).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import aiomqtt

from iso_host.errors import StoreError
from iso_host.ledger.model import PendingEvent
from iso_host.ledger.store import Store
from iso_host.log import get_logger
from iso_host.mqtt.client import client, describe_broker, error_line
from iso_host.mqtt.reconnect import keep_connected
from iso_host.mqtt.topics import BrokerSettings, event_topic

BATCH_SIZE: Final = 500  # events read and published per round
POLL_S: Final = 1.0  # a wake-up is missed only if a commit raced the read; this catches it
PUBLISH_TIMEOUT_S: Final = 10.0  # no PUBACK by then: the connection is treated as lost
# Publishes in flight at once. aiomqtt walks its pending calls on every publish, so a whole batch at once costs
# quadratic time (measured: 160 us of CPU per event at 500, 73 us at 32); 32 still keeps the link busy.
PUBLISH_WINDOW: Final = 32
PRUNE_EVERY_S: Final = 60.0
QOS: Final = 1


def machine_now() -> datetime:
    """The outbox's own bookkeeping (sent at, prune after) runs on the machine's time: the host's clock is
    for business days, and live control may move it by days."""
    return datetime.now(UTC)


class Relay:
    """One per host process; ``run`` until cancelled. ``wake`` after committing an event."""

    def __init__(
        self, store: Store, settings: BrokerSettings, clock: Callable[[], datetime], *,
        keep_sent_s: float = 3_600.0, batch_size: int = BATCH_SIZE, prune_every_s: float = PRUNE_EVERY_S,
    ) -> None:  # fmt: skip
        self.store = store
        self.settings = settings
        self.clock = clock
        self.keep_sent = timedelta(seconds=keep_sent_s)
        self.batch_size = batch_size
        self.prune_every_s = prune_every_s
        self.published = 0  # events the broker acknowledged, since start
        self.connected = asyncio.Event()  # set while connected (for tests and status)
        self.idle = asyncio.Event()  # set when a read found nothing pending
        self._wakeup = asyncio.Event()
        self._log = get_logger(component="events", broker=describe_broker(settings))
        self._last_prune = 0.0

    async def drain(self, timeout_s: float) -> bool:
        """Publish what is committed so far, for at most ``timeout_s``; True when the outbox is empty."""
        if not self.connected.is_set():
            return False
        self.idle.clear()
        self.wake()
        try:
            await asyncio.wait_for(self.idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def wake(self) -> None:
        """Events were committed: publish them soon. Cheap and safe to call from the event loop at any rate."""
        self._wakeup.set()

    async def run(self) -> None:
        """Connect, publish, and on any broker trouble reconnect with backoff; never returns until cancelled."""
        # A bug must not end event delivery for the life of the host, either: it is logged and retried too.
        await keep_connected(
            lambda: client(self.settings, "relay"), self._session, ready=self.connected,
            outages=(aiomqtt.MqttError, StoreError, OSError), on_outage=self._outage, on_other_error=self._failed,
        )  # fmt: skip

    async def _session(self, mqtt: aiomqtt.Client, connected: Callable[[], None]) -> None:
        connected()
        self._log.info("events_connected")
        await self._publish_forever(mqtt)

    async def _outage(self, error: Exception, retry_s: float) -> None:
        pending = await self._pending_count()
        self._log.warning(
            "events_unavailable", error=error_line(error), pending=pending, retry_s=retry_s,
            hint="events wait in the outbox and go out once the broker is back",
        )  # fmt: skip

    async def _failed(self, error: Exception, retry_s: float) -> None:
        self._log.error("events_relay_failed", error=error_line(error), retry_s=retry_s)

    async def _publish_forever(self, mqtt: aiomqtt.Client) -> None:
        while True:
            self._wakeup.clear()
            batch = await self.store.pending_events(self.batch_size)
            if not batch:
                self.idle.set()
            if batch:
                await self._publish(mqtt, batch)
                await self.store.mark_events_sent([event.id for event in batch], self.clock())
                self.published += len(batch)
                continue  # there may be more behind this batch
            await self._prune_if_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), POLL_S)

    async def _publish(self, mqtt: aiomqtt.Client, batch: list[PendingEvent]) -> None:
        """Publish a batch and wait for every PUBACK. The calls start in outbox order, and one connection
        keeps that order on the wire, so each terminal's events arrive in the order they were committed."""
        prefix = self.settings.topic_prefix

        async def publish_all() -> None:
            # Each task's first step hands its message to paho, and tasks start in the order they were
            # created: the calls, and so the messages on the wire, keep outbox order.
            in_flight: set[asyncio.Future[None]] = set()
            try:
                for event in batch:
                    if len(in_flight) >= PUBLISH_WINDOW:
                        finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        for task in finished:
                            task.result()  # the first failure says it all: the connection is gone
                    topic = event_topic(prefix, event.tid, event.kind)
                    publish = mqtt.publish(topic, event.payload, qos=QOS, timeout=PUBLISH_TIMEOUT_S)
                    in_flight.add(asyncio.ensure_future(publish))
                for task in asyncio.as_completed(in_flight):
                    await task
            finally:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

        # A PUBACK lost with its connection never comes; without watching the connection, the relay would sit
        # out the publish timeout before reconnecting. aiomqtt's own message iterator waits on the same future.
        lost = mqtt._disconnected  # aiomqtt offers no public "connection lost" signal
        publishing = asyncio.ensure_future(publish_all())
        done, _ = await asyncio.wait((publishing, lost), return_when=asyncio.FIRST_COMPLETED)
        if publishing not in done:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
            cause = lost.exception() if not lost.cancelled() else None
            raise aiomqtt.MqttError("connection to the broker lost while publishing") from cause
        await publishing

    async def _prune_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_prune < self.prune_every_s:
            return
        self._last_prune = now
        pruned = await self.store.prune_events(self.clock() - self.keep_sent)
        if pruned:
            self._log.info("events_pruned", rows=pruned)

    async def _pending_count(self) -> int | None:
        try:
            return await self.store.count_pending_events()
        except StoreError:
            return None
