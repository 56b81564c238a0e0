"""`iso-host events tail` and `iso-host control` as separate processes, against the machine's Mosquitto.

Each test has a topic prefix of its own, so tests never see each other's messages. Events are built with
record.py (valid payloads, as the host would publish them) and published here; a control "host" is a small
responder task that answers on the reply topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from brokers import free_port, shared_broker_url
from processes import ISO_HOST

from iso_host.cards import mask_pan
from iso_host.events.record import control_event, decision_event
from iso_host.ledger.model import Card, RecordEvent
from iso_host.mqtt.client import client
from iso_host.mqtt.topics import BrokerSettings, event_topic, reply_topic
from iso_host.vocab import Reason

NOW = datetime(2025, 3, 1, 9, 15, 30, 250_000, tzinfo=UTC)
PAN = "4761739001010010"
START_TIMEOUT_S = 20.0  # the CLI starts a Python process and connects
RUN_TIMEOUT_S = 30.0


@pytest.fixture
def broker_url() -> str:
    return shared_broker_url()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test (or run) uses."""
    return f"iso-host-test/{uuid.uuid4().hex}"


def sale_event(tid: str = "TERM0001", kind: str = "sale", reason: Reason = Reason.APPROVED) -> RecordEvent:
    fields = {"3": "000000", "4": "000000001234", "11": "000042", "41": tid, "42": "MERCHANT0000001", "49": "840"}
    return decision_event(
        now=NOW, kind=kind, mti="0200", fields=fields, reason=reason,
        response_code="00" if reason is Reason.APPROVED else "05", latency_s=0.0123,
        card=Card(mask_pan(PAN), "hash"), batch_number=1, rrn="506009000042",
        scenario="decline" if reason is Reason.FORCED_DECLINE else None,
    )  # fmt: skip


def topic_of(prefix: str, event: RecordEvent) -> str:
    return event_topic(prefix, event.tid, event.kind)


async def publish(url: str, prefix: str, *events: RecordEvent) -> None:
    """Publish events as the relay does: their exact payload text, QoS 1, in order."""
    async with client(BrokerSettings(url=url, topic_prefix=prefix), "test-publisher") as mqtt:
        for event in events:
            await mqtt.publish(topic_of(prefix, event), event.payload, qos=1)


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


class Running:
    """An `iso-host` process; ``finish`` waits for it to exit by itself."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.subscribed = ""  # the 'subscribed to' line, once seen

    async def finish(self) -> Finished:
        try:
            stdout, stderr = await asyncio.wait_for(self.process.communicate(), RUN_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.communicate()
            raise AssertionError(f"iso-host did not exit within {RUN_TIMEOUT_S} s") from None
        assert self.process.returncode is not None
        return Finished(self.process.returncode, stdout.decode(), stderr.decode())


@contextlib.asynccontextmanager
async def iso_host(*args: str, wait_for_subscription: bool = False) -> AsyncIterator[Running]:
    """Start ``iso-host ARGS``; with ``wait_for_subscription``, return once it printed 'subscribed to'."""
    process = await asyncio.create_subprocess_exec(
        *ISO_HOST, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    running = Running(process)
    try:
        if wait_for_subscription:
            assert process.stderr is not None
            first = (await asyncio.wait_for(process.stderr.readline(), START_TIMEOUT_S)).decode()
            assert first.startswith("subscribed to "), f"unexpected first stderr line {first!r}"
            running.subscribed = first.rstrip("\n")
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def run(*args: str) -> Finished:
    async with iso_host(*args) as running:
        return await running.finish()


def tail_args(url: str, prefix: str, *args: str) -> tuple[str, ...]:
    return ("events", "tail", "--mqtt-url", url, "--topic-prefix", prefix, "--timeout", "20", *args)


class TestTail:
    """`events tail` prints what is published, once per event, filtered as asked."""

    async def test_table(self, broker_url: str, prefix: str) -> None:
        """Decision and control events show as one table line each, after one header."""
        events = (
            sale_event(),
            sale_event(reason=Reason.FORCED_DECLINE),
            control_event(now=NOW, command="disable-terminal", request_id="r-1", detail={"tid": "TERM0001"},
                          tid="TERM0001"),
        )  # fmt: skip
        async with iso_host(*tail_args(broker_url, prefix, "--count", "3"), wait_for_subscription=True) as tail:
            await publish(broker_url, prefix, *events)
            done = await tail.finish()
        assert done.code == 0, done.stderr
        header, approved, declined, control = done.lines
        assert header.split() == ["TIME", "(UTC)", "KIND", "TID", "STAN", "RRN", "AMOUNT", "CUR", "PAN", "RC",
                                  "REASON", "LATENCY_MS"]  # fmt: skip
        assert approved.split() == ["2025-03-01", "09:15:30.250", "sale", "TERM0001", "000042", "506009000042",
                                    "12.34", "840", "476173******0010", "00", "APPROVED", "12.3"]  # fmt: skip
        assert declined.split()[-3:] == ["05", "FORCED_DECLINE", "12.3"]
        assert control.split() == ["2025-03-01", "09:15:30.250", "control", "TERM0001", "disable-terminal",
                                   '{"tid":"TERM0001"}']  # fmt: skip
        assert PAN not in done.stdout

    async def test_json_prints_the_payload_exactly(self, broker_url: str, prefix: str) -> None:
        """With --json each line is the published payload, byte for byte, and there is no header."""
        events = (sale_event(), control_event(now=NOW, command="set-clock", request_id="r", detail={"time": "now"}))
        args = tail_args(broker_url, prefix, "--count", "2", "--json")
        async with iso_host(*args, wait_for_subscription=True) as tail:
            await publish(broker_url, prefix, *events)
            done = await tail.finish()
        assert done.code == 0, done.stderr
        assert done.lines == [event.payload for event in events]

    async def test_deduplicates_by_event_id(self, broker_url: str, prefix: str) -> None:
        """A re-delivered event (same event_id) is shown once and counted once."""
        first, second = sale_event(), sale_event(tid="TERM0002")
        args = tail_args(broker_url, prefix, "--count", "2", "--json")
        async with iso_host(*args, wait_for_subscription=True) as tail:
            await publish(broker_url, prefix, first, first, second)
            done = await tail.finish()
        assert done.code == 0, done.stderr
        assert done.lines == [first.payload, second.payload]

    async def test_filters_by_tid_and_kind(self, broker_url: str, prefix: str) -> None:
        """--tid and --kind subscribe to that terminal's events of that kind only."""
        wanted = sale_event(tid="TERM0002", kind="void")
        others = (sale_event(), sale_event(tid="TERM0002"), sale_event(kind="void"))
        args = tail_args(broker_url, prefix, "--tid", "TERM0002", "--kind", "void", "--count", "1", "--json")
        async with iso_host(*args, wait_for_subscription=True) as tail:
            await publish(broker_url, prefix, *others, wanted)
            done = await tail.finish()
        assert done.code == 0, done.stderr
        assert done.lines == [wanted.payload]
        assert tail.subscribed == f"subscribed to {prefix}/events/TERM0002/void"

    async def test_takes_the_broker_from_a_config_file(self, broker_url: str, prefix: str, tmp_path: Path) -> None:
        """--config reads [events] mqtt_url and topic_prefix."""
        config = tmp_path / "iso-host.toml"
        config.write_text(f'[events]\nmqtt_url = "{broker_url}"\ntopic_prefix = "{prefix}"\n', encoding="utf-8")
        event = sale_event()
        args = ("events", "tail", "--config", str(config), "--count", "1", "--json", "--timeout", "20")
        async with iso_host(*args, wait_for_subscription=True) as tail:
            await publish(broker_url, prefix, event)
            done = await tail.finish()
        assert done.code == 0, done.stderr
        assert done.lines == [event.payload]


class TestTailExitCodes:
    """--count and --timeout decide how `events tail` ends."""

    async def test_nothing_within_the_timeout(self, broker_url: str, prefix: str) -> None:
        """No event within --timeout: exit 1 and say so."""
        done = await run("events", "tail", "--mqtt-url", broker_url, "--topic-prefix", prefix, "--timeout", "1")
        assert done.code == 1
        assert done.stderr.splitlines()[-1] == f"iso-host: events: no events within 1 s on {prefix}/events/+/+"

    async def test_fewer_than_count(self, broker_url: str, prefix: str) -> None:
        """Fewer than --count events within --timeout: exit 1, with the events that came printed."""
        args = ("events", "tail", "--mqtt-url", broker_url, "--topic-prefix", prefix, "--count", "3", "--timeout", "2")
        async with iso_host(*args, wait_for_subscription=True) as tail:
            await publish(broker_url, prefix, sale_event())
            done = await tail.finish()
        assert done.code == 1
        assert len(done.lines) == 2  # the header and the one event
        assert "1 of 3 events within 2 s" in done.stderr

    async def test_timeout_without_count_after_events(self, broker_url: str, prefix: str) -> None:
        """Without --count, --timeout ends the tail; having seen an event, it exits 0."""
        args = ("events", "tail", "--mqtt-url", broker_url, "--topic-prefix", prefix, "--timeout", "2", "--json")
        async with iso_host(*args, wait_for_subscription=True) as tail:
            event = sale_event()
            await publish(broker_url, prefix, event)
            done = await tail.finish()
        assert done.code == 0, done.stderr
        assert done.lines == [event.payload]


@contextlib.asynccontextmanager
async def responder(url: str, prefix: str) -> AsyncIterator[list[dict[str, Any]]]:
    """A stand-in host: answers every command; disable-terminal of NOPE fails. Yields the payloads it got."""
    received: list[dict[str, Any]] = []
    async with client(BrokerSettings(url=url, topic_prefix=prefix), "test-responder") as mqtt:
        await mqtt.subscribe(f"{prefix}/control/+", qos=1)

        async def answer() -> None:
            async for message in mqtt.messages:
                command = message.topic.value.rsplit("/", 1)[1]
                assert isinstance(message.payload, bytes)
                payload = json.loads(message.payload)
                received.append(payload)
                request_id = payload["request_id"]
                if command == "disable-terminal" and payload.get("tid") == "NOPE":
                    reply = {"request_id": request_id, "command": command, "ok": False,
                             "error": "tid: unknown terminal 'NOPE'"}  # fmt: skip
                else:
                    reply = {"request_id": request_id, "command": command, "ok": True, "result": {"got": payload}}
                await mqtt.publish(reply_topic(prefix, request_id), json.dumps(reply), qos=1)

        task = asyncio.create_task(answer())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def control_args(url: str, prefix: str, *args: str) -> tuple[str, ...]:
    return ("control", *args, "--mqtt-url", url, "--topic-prefix", prefix)


class TestControl:
    """`iso-host control` publishes a command and reports the host's reply."""

    async def test_nobody_answers(self, broker_url: str, prefix: str) -> None:
        """No reply within --timeout: exit 2 with one line naming the reply topic and the likely cause."""
        done = await run(*control_args(broker_url, prefix, "enable-terminal", "tid=TERM0001", "--timeout", "1"))
        assert done.code == 2
        [line] = done.stderr.splitlines()
        topic = re.escape(f"{prefix}/control/replies/")
        hint = re.escape("; is [control] enabled = true and the host running?")
        assert re.fullmatch(
            rf"iso-host: control: no reply from the host within 1 s on {topic}cli-[0-9a-f]{{32}}{hint}", line
        )
        assert done.stdout == ""

    async def test_ok_prints_the_result(self, broker_url: str, prefix: str) -> None:
        """An ok reply: exit 0, 'ok' and the result; the payload nests dotted keys and parses JSON values."""
        pairs = ("scenario.name=decline", "scenario.respond=05", "scenario.times:=2", "scenario.no_reply:=false",
                 "scenario.amount:=12.34", "scenario.tid=TERM0001")  # fmt: skip
        async with responder(broker_url, prefix) as received:
            done = await run(*control_args(broker_url, prefix, "add-scenario", *pairs))
        assert done.code == 0, done.stderr
        [payload] = received
        assert re.fullmatch(r"cli-[0-9a-f]{32}", payload["request_id"])
        assert payload["scenario"] == {"name": "decline", "respond": "05", "times": 2, "no_reply": False,
                                       "amount": 12.34, "tid": "TERM0001"}  # fmt: skip
        assert done.lines[0] == "ok"
        assert json.loads("\n".join(done.lines[1:])) == {"got": payload}

    async def test_error_reply(self, broker_url: str, prefix: str) -> None:
        """An error reply: exit 1 and 'error: <error>'."""
        async with responder(broker_url, prefix):
            done = await run(*control_args(broker_url, prefix, "disable-terminal", "tid=NOPE"))
        assert done.code == 1
        assert done.stderr.splitlines() == ["error: tid: unknown terminal 'NOPE'"]

    async def test_json_prints_the_reply_as_received(self, broker_url: str, prefix: str) -> None:
        """--json prints the raw reply; --json-payload starts the payload, pairs go on top, its request_id stays."""
        payload = '{"request_id": "mine-1", "seconds": 5}'
        async with responder(broker_url, prefix) as received:
            arguments = ("advance-clock", "seconds:=90", "--json-payload", payload, "--json")
            done = await run(*control_args(broker_url, prefix, *arguments))
        assert done.code == 0, done.stderr
        assert received == [{"request_id": "mine-1", "seconds": 90}]
        expected = {"request_id": "mine-1", "command": "advance-clock", "ok": True, "result": {"got": received[0]}}
        assert done.lines == [json.dumps(expected)]


class TestErrors:
    """Errors are one line on stderr and exit 2."""

    @pytest.mark.parametrize("command", ["events", "control"])
    async def test_unreachable_broker(self, command: str) -> None:
        """A closed port: 'cannot reach' with the broker's address and the reason."""
        url = f"mqtt://127.0.0.1:{free_port()}"
        args = ("events", "tail") if command == "events" else ("control", "list-scenarios")
        done = await run(*args, "--mqtt-url", url)
        assert done.code == 2
        assert done.stderr.splitlines() == [f"iso-host: {command}: cannot reach {url}: Connection refused"]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            pytest.param(
                ("control", "set-clock", "now"), "'now': expected KEY=TEXT or KEY:=JSON", id="pair-without-equals"
            ),
            pytest.param(
                ("control", "add-scenario", "a=1", "a.b=2"), "'a.b=2': a is already a value", id="value-then-object"
            ),
            pytest.param(
                ("control", "list-scenarios", "request_id=has space"), "request_id: must be 1..64", id="bad-request-id"
            ),
            pytest.param(
                ("control", "list-scenarios", "--json-payload", "[1]"),
                "--json-payload: must be a JSON object",
                id="payload-not-object",
            ),
            pytest.param(("events", "tail", "--tid", "a/b"), "--tid: must be one topic level", id="tid-with-slash"),
            pytest.param(("events", "tail", "--count", "0"), "--count: must be events >= 1", id="count-zero"),
            pytest.param(("events", "tail", "--mqtt-url", "http://x"), "--mqtt-url: expected mqtt://", id="bad-url"),
            pytest.param(
                ("events", "tail", "--topic-prefix", "a/+"),
                "--topic-prefix: must be topic levels",
                id="prefix-wildcard",
            ),
        ],
    )
    async def test_bad_arguments(self, args: tuple[str, ...], message: str) -> None:
        """A bad argument is named before any broker is contacted."""
        done = await run(*args)
        assert done.code == 2
        [line] = done.stderr.splitlines()
        assert line.startswith(f"iso-host: {message}"), line

    async def test_config_with_events_off(self, tmp_path: Path) -> None:
        """A config file without [events] mqtt_url names the file and the way out."""
        config = tmp_path / "iso-host.toml"
        config.write_text("[server]\nport = 8583\n", encoding="utf-8")
        done = await run("events", "tail", "--config", str(config))
        assert done.code == 2
        assert done.stderr.splitlines() == [f"iso-host: {config}: events are off (no [events] mqtt_url); "
                                            "use --mqtt-url instead"]  # fmt: skip
