"""Events over a real Mosquitto: every answer becomes an event, through the outbox, and a broker outage
loses none of them and delays no reply."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest
from brokers import private_broker, shared_broker_url
from databases import store_url
from hosting import TEST_PAN, TID, RunningHost, local_now, running_host
from structlog.testing import capture_logs
from tls_material import make_tls_files
from waiting import DEFAULT_TIMEOUT_S, until

from iso_host.core.terminals import TerminalState
from iso_host.events.flush import flush_refusals
from iso_host.events.relay import Relay, machine_now
from iso_host.mqtt.client import client as mqtt_client
from iso_host.mqtt.topics import BrokerSettings, broker_address
from iso_host.terminal.client import TerminalClient

SCHEMA_PATH = Path(__file__).parents[2] / "docs" / "events.schema.json"


def valid(event: dict[str, Any]) -> None:
    """The event as received, less the topic the collector noted, is valid against docs/events.schema.json."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.validate({k: v for k, v in event.items() if k != "_topic"}, schema)


@contextlib.asynccontextmanager
async def ledger(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    with store_url(backend, tmp_path) as url:
        yield url


def settings(url: str) -> BrokerSettings:
    """A topic prefix of the test's own, so that tests sharing the broker never see each other's events."""
    return BrokerSettings(url=url, topic_prefix=f"iso-host-test-{secrets.token_hex(4)}")


class Collector:
    """Subscribes to every event under a prefix, reconnecting (same persistent session) across broker restarts."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.broker = broker
        self.events: list[dict[str, Any]] = []
        self.subscribed = asyncio.Event()
        self._arrived = asyncio.Condition()

    async def run(self) -> None:
        while True:
            try:
                async with mqtt_client(self.broker, f"collector-{self.broker.topic_prefix}", clean_session=False) as c:
                    await c.subscribe(f"{self.broker.topic_prefix}/events/#", qos=1)
                    self.subscribed.set()
                    async for message in c.messages:
                        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        payload["_topic"] = str(message.topic)
                        async with self._arrived:
                            self.events.append(payload)
                            self._arrived.notify_all()
            except aiomqtt.MqttError:
                # The broker is down (a test stages an outage): reconnect once it takes connections again.
                await until(lambda: accepts_connections(self.broker), timeout_s=60.0, what="the broker is back")

    def distinct(self) -> dict[str, dict[str, Any]]:
        """First copy of each event, by event_id, in arrival order."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events:
            seen.setdefault(event["event_id"], event)
        return seen

    async def wait_for(self, count: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """Once ``count`` distinct events have arrived: every distinct one so far; fails past ``timeout_s``."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.distinct()) >= count), timeout_s)
        return self.distinct()


async def accepts_connections(broker: BrokerSettings) -> bool:
    """The broker's port accepts a TCP connection (closed again at once, before any MQTT is spoken)."""
    address = broker_address(broker.url)
    try:
        _, writer = await asyncio.open_connection(address.host, address.port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@asynccontextmanager
async def collecting(broker: BrokerSettings) -> AsyncIterator[Collector]:
    collector = Collector(broker)
    task = asyncio.create_task(collector.run())
    try:
        await asyncio.wait_for(collector.subscribed.wait(), DEFAULT_TIMEOUT_S)
        yield collector
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def sale(client: TerminalClient, amount: int = 1234) -> dict[str, str]:
    return (await client.request(client.build("sale", local_now(), amount=amount, pan=TEST_PAN))).fields


async def test_a_sale_is_published_valid_and_masked(tmp_path: Path, backend: str) -> None:
    """A sale's event arrives (how soon is the machine's business; the deadline only fails a lost event),
    valid against the schema, with the card masked and the reply's values."""
    broker = settings(shared_broker_url())
    async with (
        collecting(broker) as events,
        ledger(backend, tmp_path) as url,
        running_host(tmp_path, "iso87binary", events=broker, ledger_url=url) as host,
        await host.connected_client() as client,
    ):
        reply = await sale(client)
        (event,) = (await events.wait_for(1)).values()
    valid(event)
    assert event["_topic"] == f"{broker.topic_prefix}/events/{TID}/sale"
    assert event["masked_pan"] == "476173******0010"
    assert TEST_PAN not in json.dumps(event)
    assert (event["rrn"], event["response_code"], event["reason"], event["approved"]) == (
        reply["37"], "00", "APPROVED", True,
    )  # fmt: skip
    assert (event["stan"], event["amount_minor"], event["mti"], event["tid"]) == (reply["11"], 1234, "0200", TID)
    assert event["latency_ms"] > 0


async def test_refusals_and_duplicates_are_events_and_echoes_are_not(tmp_path: Path) -> None:
    broker = settings(shared_broker_url())
    async with collecting(broker) as events, running_host(tmp_path, "iso87binary", events=broker) as host:
        async with await host.connected_client() as client:
            await client.request(client.build("echo", local_now()))
            first = await sale(client)
            client.state.stan -= 1  # the same STAN again: a duplicate
            assert (await sale(client))["39"] == "94"
            async with await host.connected_client("NOPE0001") as stranger:
                assert (await sale(stranger))["39"] == "03"
            assert host.host.events is not None
            await flush_refusals(host.host.events, host.store, host.host.clock)  # what the flush task does every 10 s
            await client.request(client.build("echo", local_now()))
            last = await sale(client)
        # Events arrive in commit order, and each echo was answered before a sale that comes after it: an echo's
        # event, if there were one, would arrive before that sale's, so waiting for the last sale's is enough.
        received = list((await events.wait_for(4)).values())
    assert [(e["kind"], e.get("reason"), e["tid"]) for e in received] == [
        ("sale", "APPROVED", TID), ("sale", "DUPLICATE", TID), ("refusals", None, None), ("sale", "APPROVED", TID),
    ]  # fmt: skip
    assert received[2]["refusals"] == [{"reason": "UNKNOWN_TERMINAL", "tid": "NOPE0001", "mti": "0200", "count": 1}]
    assert received[2]["_topic"].endswith("/events/host/refusals"), "an unknown terminal's sale is only counted"
    assert received[-1]["stan"] == last["11"]
    assert received[1]["stan"] == first["11"]
    for event in received:
        valid(event)


async def test_without_a_broker_url_nothing_is_written_to_the_outbox(tmp_path: Path) -> None:
    async with running_host(tmp_path, "iso87binary") as host, await host.connected_client() as client:
        await sale(client)
        assert await host.store.count_pending_events() == 0


async def drained(host: RunningHost, timeout_s: float = 10.0) -> None:
    """The relay marks events sent once the broker acknowledged them: the outbox empties soon after."""
    assert host.relay is not None
    assert await host.relay.drain(timeout_s), f"{await host.store.count_pending_events()} events still pending"
    assert await host.store.count_pending_events() == 0


OUTAGE_SALES = 500
CONNECTIONS = 10
SALES_BEFORE_OUTAGE = 10  # per connection; as many again after the outage
SALES_PER_OUTAGE_HALF = (OUTAGE_SALES // CONNECTIONS - 2 * SALES_BEFORE_OUTAGE) // 2  # per connection, twice
assert CONNECTIONS * 2 * (SALES_BEFORE_OUTAGE + SALES_PER_OUTAGE_HALF) == OUTAGE_SALES


class Outage:
    """Gates the test opens, in this order: each connection's sales wait at each until it is open."""

    def __init__(self) -> None:
        self.broker_down = asyncio.Event()  # the broker is stopped
        self.relay_lost = asyncio.Event()  # the relay has noticed: it is disconnected, the events wait in the outbox
        self.broker_up = asyncio.Event()  # the broker is started again


async def sales_around_an_outage(host: RunningHost, index: int, answered: list[str], outage: Outage) -> list[str]:
    """One terminal connection's share of the sales: some before the outage, two halves during it (the second
    once the relay has lost the broker), some after."""
    phases = (
        (SALES_BEFORE_OUTAGE, outage.broker_down), (SALES_PER_OUTAGE_HALF, outage.relay_lost),
        (SALES_PER_OUTAGE_HALF, outage.broker_up), (SALES_BEFORE_OUTAGE, None),
    )  # fmt: skip
    stans = []
    async with await host.connected_client() as client:
        client.state.stan = index * 1_000
        for count, gate in phases:
            for _ in range(count):
                reply = await sale(client)
                assert reply["39"] == "00"
                stans.append(reply["11"])
                answered.append(reply["11"])
            if gate is not None:
                await asyncio.wait_for(gate.wait(), 60)
    return stans


async def test_a_broker_outage_loses_no_event_and_delays_no_reply(tmp_path: Path, backend: str) -> None:
    """Stop the broker while 500 sales run, start it again: all 500 events arrive, once each after
    de-duplication, in order per connection, and every sale of the outage is answered while the broker is
    down (the broker starts again only once they all are; a reply that waited for it would never come)."""
    with private_broker(tmp_path / "broker") as mosquitto, store_url(backend, tmp_path) as url:
        broker = settings(mosquitto.url)
        async with (
            collecting(broker) as events,
            running_host(tmp_path, "iso87binary", events=broker, ledger_url=url) as host,
        ):
            assert host.relay is not None
            relay = host.relay
            answered: list[str] = []
            outage = Outage()
            runs = asyncio.gather(*(sales_around_an_outage(host, i + 1, answered, outage) for i in range(CONNECTIONS)))
            try:
                before = CONNECTIONS * SALES_BEFORE_OUTAGE  # and as many after the outage
                half = CONNECTIONS * SALES_PER_OUTAGE_HALF
                await until(lambda: len(answered) >= before, what=f"the first {before} sales are answered")
                await asyncio.to_thread(mosquitto.stop)
                outage.broker_down.set()
                await until(
                    lambda: len(answered) >= before + half, timeout_s=60.0,
                    what=f"the first {half} sales of the outage are answered",
                )  # fmt: skip
                # Their events are pending: trying to publish them, the relay finds the broker gone.
                await until(lambda: not relay.connected.is_set(), timeout_s=30.0, what="the relay lost the broker")
                outage.relay_lost.set()
                await until(
                    lambda: len(answered) >= before + 2 * half, timeout_s=60.0,
                    what=f"the other {half} sales of the outage are answered, with the relay disconnected",
                )  # fmt: skip
                assert len(answered) == before + 2 * half, "the sales after the outage wait for the broker to be up"
                assert not relay.connected.is_set(), "the broker was down for every sale of the outage"
                await asyncio.to_thread(mosquitto.start)
                outage.broker_up.set()
                stans_by_connection = await runs
            finally:
                runs.cancel()  # only matters when the test failed half-way: the sales must not outlive it
            received = await events.wait_for(OUTAGE_SALES, timeout_s=60.0)
            await drained(host)
    assert len(answered) == OUTAGE_SALES
    sale_events = [e for e in received.values() if e["kind"] == "sale"]
    assert len(sale_events) == OUTAGE_SALES
    assert len(events.events) >= OUTAGE_SALES  # duplicates are allowed (at least once); losses are not
    by_stan = {e["stan"]: e for e in sale_events}
    assert len(by_stan) == OUTAGE_SALES, "one event per sale"
    for stans in stans_by_connection:
        arrival = [e["stan"] for e in sale_events if e["stan"] in set(stans)]
        assert arrival == stans, "each terminal connection's events arrive in the order they were committed"


# paho-mqtt leaves the socket of a failed TLS handshake for the garbage collector to close (with a ResourceWarning).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_events_over_tls_and_a_broker_that_cannot_be_trusted(tmp_path: Path) -> None:
    """mqtts:// with the lab's CA delivers; a host that does not trust the broker's certificate keeps answering
    terminals and keeps the events in its outbox."""
    files = make_tls_files(tmp_path)
    with private_broker(tmp_path / "broker", tls=files) as mosquitto:
        trusted = replace(settings(mosquitto.url), ca_file=str(files.ca))
        async with collecting(trusted) as events, running_host(tmp_path, "iso87binary", events=trusted) as host:
            async with await host.connected_client() as client:
                reply = await sale(client)
            (event,) = (await events.wait_for(1)).values()
            assert event["rrn"] == reply["37"]
        untrusting = replace(trusted, ca_file=str(files.stranger_cert))  # not the CA that signed the broker
        with capture_logs() as logs:
            async with running_host(tmp_path / "second", "iso87binary", events=untrusting) as host:
                async with await host.connected_client() as client:
                    assert (await sale(client))["39"] == "00"
                # The relay tried, and failed, to connect: a relay that could publish would never log this.
                await until(
                    lambda: any(entry["event"] == "events_unavailable" for entry in logs),
                    what="the relay reports that it cannot reach the broker",
                )
                assert host.relay is not None
                assert not host.relay.connected.is_set()
                assert await host.store.count_pending_events() == 1
    gc.collect()  # those sockets are closed here, inside this test's warning filter, not during a later test


async def test_a_failing_relay_round_is_retried_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error in the relay (a bug, or the database) costs a retry, never event delivery for good."""
    broker = settings(shared_broker_url())
    async with collecting(broker) as events, running_host(tmp_path, "iso87binary", events=broker) as host:
        real = host.store.pending_events
        failures = iter([RuntimeError("a bug"), None])

        async def flaky(limit: int) -> list[Any]:
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return await real(limit)

        monkeypatch.setattr(host.store, "pending_events", flaky)
        async with await host.connected_client() as client:
            await sale(client)
        (event,) = (await events.wait_for(1)).values()
        assert event["kind"] == "sale"
        assert next(failures, "spent") == "spent", "the relay met the failure and went on"


async def test_a_terminal_id_with_topic_wildcards_cannot_stall_the_stream(tmp_path: Path) -> None:
    """Field 41 is the terminal's to fill: ``/``, ``+`` and ``#`` become ``_`` in the topic, and the events
    after it still flow. (An unknown terminal's requests are only counted: this one is configured, and disabled.)"""
    broker = settings(shared_broker_url())
    odd = TerminalState("A/+#0001", "MERCHANT0000001", enabled=False)
    async with (
        collecting(broker) as events,
        running_host(tmp_path, "iso87binary", events=broker, extra_terminals={odd.tid: odd}) as host,
    ):
        async with await host.connected_client(odd.tid, signon=False) as stranger:
            assert (await sale(stranger))["39"] == "58"
        async with await host.connected_client() as client:
            assert (await sale(client))["39"] == "00"
        refused, approved = (await events.wait_for(2)).values()
    assert refused["_topic"] == f"{broker.topic_prefix}/events/A___0001/sale"
    assert refused["tid"] == "A/+#0001"
    assert approved["reason"] == "APPROVED"


class RelayClock:
    """The relay's clock (an event's sent_at, the prune cut-off), moved by the test: keep_sent_s passes when the
    test says so, not when the machine has waited it out."""

    def __init__(self) -> None:
        self.now = machine_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class PruneRounds:
    """Notes each prune the relay has completed, by the time on its clock when it began (it wraps the store's
    ``prune_events``; the relay reads its clock for the cut-off just before the call)."""

    def __init__(self, host: RunningHost, clock: RelayClock, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = clock
        self.done_at: list[datetime] = []
        real = host.store.prune_events

        async def noted(sent_before: datetime) -> int:
            began_at = clock.now
            pruned = await real(sent_before)
            self.done_at.append(began_at)
            return pruned

        monkeypatch.setattr(host.store, "prune_events", noted)

    async def one_at_the_current_time(self, relay: Relay) -> None:
        """Until a prune that began with the relay's clock where it stands now is done."""
        now = self.clock.now
        relay.wake()  # an idle round prunes; the relay's own poll would start one within a second anyway
        await until(lambda: now in self.done_at, what=f"the relay pruned with its clock at {now}")


KEEP_SENT_S = 3_600.0


async def test_published_events_are_pruned_after_keep_sent_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A published event stays in the outbox for keep_sent_s after it was sent, and is pruned after that."""
    broker = settings(shared_broker_url())
    clock = RelayClock()
    async with (
        collecting(broker) as events,
        running_host(tmp_path, "iso87binary", events=broker, keep_sent_s=KEEP_SENT_S) as host,
        await host.connected_client() as client,
    ):
        relay = host.relay
        assert relay is not None
        relay.clock = clock  # before any event is sent: every sent_at and cut-off is on the test's clock
        relay.prune_every_s = 0.0  # prune on every idle round, so that one is soon to come
        prunes = PruneRounds(host, clock, monkeypatch)
        await sale(client)
        (first,) = await events.wait_for(1)
        await drained(host)  # sent at the clock's start
        clock.advance(KEEP_SENT_S - 1)
        await prunes.one_at_the_current_time(relay)  # keep_sent_s less a second after the first was sent
        assert outbox_event_ids(host) == [first], "a published event stays for keep_sent_s"
        await sale(client)
        second = next(event_id for event_id in await events.wait_for(2) if event_id != first)
        await drained(host)  # sent keep_sent_s - 1 s after the first
        clock.advance(2)  # the first was sent keep_sent_s + 1 s ago, the second 1 s ago
        await prunes.one_at_the_current_time(relay)
        assert outbox_event_ids(host) == [second], "the first event was pruned, the second kept"


def outbox_event_ids(host: RunningHost) -> list[str]:
    with contextlib.closing(sqlite3.connect(host.ledger_path)) as connection:
        return [str(row[0]) for row in connection.execute("SELECT event_id FROM outbox ORDER BY id")]
