"""Live control in tests: a QA tool that sends commands and waits for replies, and a host steered by a listener
built from the host's own objects (optionally taking signed commands only)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
from brokers import shared_broker_url
from hosting import TEST_PAN, RunningHost, local_now, running_host

from iso_host.cards import pan_hash
from iso_host.clock import HostClock
from iso_host.control.controls import Controls
from iso_host.control.listener import ControlListener, Signing
from iso_host.core.test_cards import TestCard
from iso_host.errors import StoreError
from iso_host.mqtt.topics import BrokerSettings, broker_address, control_topic, reply_topic
from iso_host.terminal.client import TerminalClient

SCHEMA_PATH = Path(__file__).parents[2] / "docs" / "events.schema.json"
REPLY_TIMEOUT_S = 10.0


def broker_settings(url: str) -> BrokerSettings:
    token = secrets.token_hex(4)
    return BrokerSettings(url=url, topic_prefix=f"iso-host-test-{token}", client_id=f"iso-host-test-{token}")


class Commander:
    """A QA tool: publishes a command, waits for its reply; keeps whatever else arrives (events) for later."""

    def __init__(self, mqtt: aiomqtt.Client, prefix: str) -> None:
        self.mqtt = mqtt
        self.prefix = prefix
        self.other: list[tuple[str, dict[str, Any]]] = []  # (topic, payload) of messages that were not the reply

    async def send(
        self, command: str, arguments: dict[str, Any] | None = None, *, raw: bytes | None = None,
        reply_to: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Send ``arguments`` (with a fresh request_id) or ``raw`` bytes; the reply comes to ``reply_to``'s topic."""
        request_id = reply_to or f"req-{secrets.token_hex(4)}"
        payload = raw if raw is not None else json.dumps({"request_id": request_id, **(arguments or {})}).encode()
        topic = reply_topic(self.prefix, request_id)
        await self.mqtt.subscribe(topic, qos=1)  # before the command goes out, so the reply cannot be missed
        try:
            await self.mqtt.publish(control_topic(self.prefix, command), payload, qos=1)
            return await self.next_on(topic)
        finally:
            await self.mqtt.unsubscribe(topic)

    async def next_on(self, topic_filter: str) -> dict[str, Any]:
        """The first message kept earlier, or arriving now, on a topic that ``topic_filter`` matches."""
        for index, (topic, payload) in enumerate(self.other):
            if aiomqtt.Topic(topic).matches(topic_filter):
                del self.other[index]
                return payload
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            async for message in self.mqtt.messages:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if message.topic.matches(topic_filter):
                    return payload  # type: ignore[no-any-return]
                self.other.append((message.topic.value, payload))
        raise AssertionError("unreachable: the message iterator ended")


@dataclass
class Controlled:
    host: RunningHost
    clock: HostClock
    listener: ControlListener
    commander: Commander
    prefix: str
    notified: list[int] = field(default_factory=list)

    async def sale(self, client: TerminalClient, amount: int, pan: str = TEST_PAN) -> dict[str, str]:
        return (await client.request(client.build("sale", self.clock(), amount=amount, pan=pan))).fields


class FailingStore:
    """A store whose commits fail as a full disk's would (the listener only commits)."""

    async def apply(self, _commands: Any) -> None:
        raise StoreError("database or disk is full")


@asynccontextmanager
async def controlled(
    tmp_path: Path, *, reload_cards: Callable[[RunningHost], Callable[[], int]] | None = None,
    failing_store: bool = False, test_cards: dict[str, TestCard] | None = None, signing: Signing | None = None,
) -> AsyncIterator[Controlled]:  # fmt: skip
    """A host with events on, a control listener built from the host's own objects (taking signed commands only,
    with ``signing``), and a commander."""
    settings = broker_settings(shared_broker_url())
    clock = HostClock(local_now)
    async with running_host(tmp_path, "iso87binary", clock=clock, events=settings, test_cards=test_cards) as running:
        host = running.host
        assert running.relay is not None
        relay = running.relay
        controls = Controls(
            scenarios=host.scenarios, terminals=host.terminals, clock=clock,
            pan_hash=lambda pan: pan_hash(pan, running.store.pan_hash_key),
            reload_cards=reload_cards(running) if reload_cards else None,
        )  # fmt: skip
        notified: list[int] = []

        def notify() -> None:
            notified.append(1)
            relay.wake()

        store: Any = FailingStore() if failing_store else running.store
        listener = ControlListener(controls, store, settings, notify, signing)
        task = asyncio.create_task(listener.run())
        try:
            await asyncio.wait_for(listener.ready.wait(), 10)
            address = broker_address(settings.url)
            async with aiomqtt.Client(address.host, address.port, identifier=f"{settings.client_id}-qa") as mqtt:
                await mqtt.subscribe(f"{settings.topic_prefix}/events/+/control", qos=1)
                commander = Commander(mqtt, settings.topic_prefix)
                yield Controlled(running, clock, listener, commander, settings.topic_prefix, notified)
            assert not task.done(), "the listener outlived everything the test sent it"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def valid_event(event: dict[str, Any]) -> None:
    jsonschema.validate(event, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def ok(reply: dict[str, Any], command: str) -> dict[str, Any]:
    assert reply["ok"] is True, reply
    assert reply["command"] == command
    result = reply["result"]
    assert isinstance(result, dict)
    return result
