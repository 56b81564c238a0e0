"""Live control over a real Mosquitto, steering a real host that terminals reach over TCP with ISO 8583 bytes.

Each test has a topic prefix of its own, so tests sharing the broker never see each other's commands,
replies or events. Commands go out with aiomqtt, as any QA tool would send them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from brokers import private_broker
from controlling import Commander, controlled, ok, valid_event
from hosting import TEST_PAN, TID, RunningHost, local_now
from structlog.testing import capture_logs
from waiting import until

from iso_host.clock import HostClock
from iso_host.control import listener as listener_module
from iso_host.control.commands import INVALID_REQUEST_ID
from iso_host.control.controls import Controls
from iso_host.control.listener import INTERNAL_ERROR, ControlListener
from iso_host.core.scenarios import ScenarioBook
from iso_host.core.terminals import TerminalState
from iso_host.core.test_cards import TestCard
from iso_host.mqtt.topics import BrokerSettings
from iso_host.vocab import Reason, Status

OTHER_PAN = "5413330089010012"


async def test_added_scenario_declines_the_next_matching_sale(tmp_path: Path) -> None:
    """A scenario sent over MQTT forces 05 on 13.13 sales from the next request on; other sales stay 00."""
    async with controlled(tmp_path) as c, await c.host.connected_client() as client:
        assert (await c.sale(client, 1_313))["39"] == "00", "no scenario yet"
        reply = await c.commander.send("add-scenario", {"scenario": {"name": "QA-1", "respond": "05", "amount": 13.13}})
        added = ok(reply, "add-scenario")
        assert (added["active"], added["added"]["amount_minor"], added["added"]["respond"]) == (1, 1313, "05")
        assert (await c.sale(client, 1_313))["39"] == "05"
        assert (await c.sale(client, 1_314))["39"] == "00"
        assert (await c.sale(client, 1_313, pan=OTHER_PAN))["39"] == "05", "every card: the scenario names none"
        listed = ok(await c.commander.send("list-scenarios"), "list-scenarios")["scenarios"]
        assert [(s["name"], s["remaining"], s["card"]) for s in listed] == [("QA-1", None, False)]
        event = await c.commander.next_on(f"{c.prefix}/events/host/control")
        rows = await c.host.records()
    valid_event(event)
    assert (event["command"], event["request_id"], event["detail"]) == ("add-scenario", reply["request_id"], added)
    assert c.notified == [1], "the relay was woken once, for the one change"
    assert [(r.amount_minor, r.response_code, r.reason) for r in rows] == [
        (1_313, "00", Reason.APPROVED),
        (1_313, "05", Reason.FORCED_DECLINE),
        (1_314, "00", Reason.APPROVED),
        (1_313, "05", Reason.FORCED_DECLINE),
    ]


async def test_advancing_the_clock_two_days_closes_the_void_window(tmp_path: Path) -> None:
    """Two days on the host's clock later, a sale of "today" can no longer be voided: VOID_WINDOW_EXPIRED."""
    async with controlled(tmp_path) as c, await c.host.connected_client() as client:
        # Noon, local time: the same-day void below cannot straddle a midnight however late the test runs.
        noon = local_now().replace(hour=12, minute=0, second=0, microsecond=0)
        set_result = ok(await c.commander.send("set-clock", {"time": noon.isoformat()}), "set-clock")
        assert abs(datetime.fromisoformat(set_result["now"]) - noon) < timedelta(seconds=5)
        first = await c.sale(client, 1_000)
        second = await c.sale(client, 2_000)
        void = client.build("void", c.clock(), amount=1_000, pan=TEST_PAN, rrn=first["37"])
        assert (await client.request(void)).fields["39"] == "00", "same business day: voidable"
        advanced = ok(await c.commander.send("advance-clock", {"seconds": 2 * 86_400}), "advance-clock")
        assert advanced["offset_s"] == pytest.approx(set_result["offset_s"] + 2 * 86_400)
        late = datetime.fromisoformat(advanced["now"])
        assert late - noon >= timedelta(days=2)
        void = client.build("void", c.clock(), amount=2_000, pan=TEST_PAN, rrn=second["37"])
        code = (await client.request(void)).fields["39"]
        rows = await c.host.records()
        assert ok(await c.commander.send("set-clock", {"time": "now"}), "set-clock")["offset_s"] == 0.0
    assert code == c.host.dialect.response_code(Reason.VOID_WINDOW_EXPIRED.value) == "12"
    refused = rows[-1]
    assert (refused.reason, refused.response_code) == (Reason.VOID_WINDOW_EXPIRED, "12")
    assert refused.created_at - rows[1].created_at >= timedelta(days=2), "the ledger wrote the host's time"
    assert [r.status for r in rows[:2]] == [Status.VOIDED, Status.APPROVED]


async def test_malformed_commands_get_errors_and_sales_go_on(tmp_path: Path) -> None:
    """Not JSON, no request_id, a bad field, an unknown command: each gets an error naming the field."""
    async with controlled(tmp_path) as c, await c.host.connected_client() as client:
        send = c.commander.send
        not_json = await send("add-scenario", raw=b"respond 05 please", reply_to=INVALID_REQUEST_ID)
        no_id = await send("disable-terminal", raw=json.dumps({"tid": TID}).encode(), reply_to=INVALID_REQUEST_ID)
        bad_field = await send("add-scenario", {"scenario": {"respond": "5"}})
        unknown_tid = await send("disable-terminal", {"tid": "NOPE0001"})
        unknown = await send("frobnicate", {})
        answers = [await c.sale(client, 1_000 + n) for n in range(3)]
        assert c.listener.handled == 5
    assert not_json == {"request_id": INVALID_REQUEST_ID, "command": "add-scenario", "ok": False,
                        "error": "payload: not JSON: Expecting value at byte 0"}  # fmt: skip
    assert no_id["error"] == "request_id: required (1 to 64 characters of A-Z a-z 0-9 _ . -)"
    assert bad_field["ok"] is False
    assert bad_field["error"] == "scenario.respond: must be a 2-character response code, got '5'"
    assert unknown_tid["error"] == "tid: terminal 'NOPE0001' is not configured"
    assert unknown["error"].startswith("command: unknown command 'frobnicate' (expected one of add-card, add-scenario,")
    assert [a["39"] for a in answers] == ["00", "00", "00"]
    assert c.host.host.terminals[TID].enabled, "a refused command changed nothing"
    assert c.notified == []


async def test_disabled_terminal_is_refused_until_enabled(tmp_path: Path) -> None:
    """disable-terminal makes the next sale 58 (TERMINAL_DISABLED); enable-terminal brings back 00."""
    async with controlled(tmp_path) as c, await c.host.connected_client() as client:
        async with await c.host.connected_client("TERM0002") as neighbour:
            off = ok(await c.commander.send("disable-terminal", {"tid": TID}), "disable-terminal")
            refused = await c.sale(client, 500)
            assert (await c.sale(neighbour, 500))["39"] == "00", "only that terminal is off"
            on = ok(await c.commander.send("enable-terminal", {"tid": TID}), "enable-terminal")
            served = await c.sale(client, 500)
        events = [await c.commander.next_on(f"{c.prefix}/events/{TID}/control") for _ in range(2)]
    assert (off, on) == ({"tid": TID, "enabled": False}, {"tid": TID, "enabled": True})
    assert refused["39"] == c.host.dialect.response_code(Reason.TERMINAL_DISABLED.value) == "58"
    assert served["39"] == "00"
    for event in events:
        valid_event(event)
    assert [(e["command"], e["tid"], e["detail"]["enabled"]) for e in events] == [
        ("disable-terminal", TID, False),
        ("enable-terminal", TID, True),
    ]


async def test_reloaded_cards_answer_from_the_next_request(tmp_path: Path) -> None:
    """reload-cards swaps the host's one card book in place: a card reported lost is declined at once."""

    def reloader(running: RunningHost) -> Callable[[], int]:
        def reload() -> int:  # what `iso-host serve --config` does with the file's [[cards]]
            running.host.cards.replace([(TEST_PAN, TestCard(status="lost")), (OTHER_PAN, TestCard())])
            return len(running.host.cards)

        return reload

    cards = {OTHER_PAN: TestCard(balance_minor=10_000)}
    async with (
        controlled(tmp_path, reload_cards=reloader, test_cards=cards) as c,
        await c.host.connected_client() as client,
    ):
        assert (await c.sale(client, 100))["39"] == "00"
        assert ok(await c.commander.send("reload-cards", {}), "reload-cards") == {"cards": 2}
        assert (await c.sale(client, 100))["39"] == "41", "lost, from the reloaded book"


async def test_a_bug_in_one_command_costs_only_that_command(tmp_path: Path) -> None:
    """A command that raises is answered "internal error", logged on one line, and the listener goes on."""

    def broken(_running: RunningHost) -> Callable[[], int]:
        def reload() -> int:
            raise RuntimeError("reload bug")

        return reload

    with capture_logs() as logs:
        async with controlled(tmp_path, reload_cards=broken) as c:
            failed = await c.commander.send("reload-cards", {})
            after = await c.commander.send("list-scenarios", {})
    assert (failed["ok"], failed["error"]) == (False, INTERNAL_ERROR)
    assert failed["request_id"].startswith("req-"), "the reply still goes to the request's own topic"
    assert ok(after, "list-scenarios") == {"scenarios": []}
    (line,) = [entry for entry in logs if entry["event"] == "control_failed"]
    assert line["error"] == "RuntimeError: reload bug"


async def test_a_ledger_failure_is_reported_and_the_change_stays(tmp_path: Path) -> None:
    """If the change's event cannot be committed, the reply says so; the change itself is in force."""
    async with controlled(tmp_path, failing_store=True) as c, await c.host.connected_client() as client:
        reply = await c.commander.send("disable-terminal", {"tid": TID})
        refused = await c.sale(client, 500)
    assert reply["ok"] is False
    assert reply["error"] == (
        "ledger: StoreError: database or disk is full (the change is in force, but its event was not recorded)"
    )
    assert refused["39"] == "58"
    assert c.notified == []


async def test_listener_comes_back_after_a_broker_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker stops and starts again: the listener logs one warning, resubscribes and answers."""
    terminals = {TID: TerminalState(TID, "MERCHANT0000001")}
    clock = HostClock(local_now)
    controls = Controls(ScenarioBook(), terminals, clock, str, None)

    class NoStore:
        async def apply(self, _commands: Any) -> None:
            return None

    real_client = listener_module.client
    refused = [0]  # connection attempts that failed before the listener got a connection

    @asynccontextmanager
    async def counted_client(*args: Any, **kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
        connected = False
        try:
            async with real_client(*args, **kwargs) as mqtt:
                connected = True
                yield mqtt
        except (aiomqtt.MqttError, OSError):
            if not connected:
                refused[0] += 1
            raise

    monkeypatch.setattr(listener_module, "client", counted_client)
    with private_broker(tmp_path / "mosquitto") as broker, capture_logs() as logs:
        settings = BrokerSettings(url=broker.url, topic_prefix="iso-host-test", client_id="control-outage")
        listener = ControlListener(controls, NoStore(), settings, lambda: None)  # type: ignore[arg-type]
        task = asyncio.create_task(listener.run())
        try:
            await asyncio.wait_for(listener.ready.wait(), 10)
            broker.stop()
            # Several retries (after 0.5 s, then 1 s, ...) fail while the broker is down.
            await until(lambda: refused[0] >= 2, what="two reconnection attempts fail while the broker is down")
            assert not listener.ready.is_set()
            broker.start()
            await asyncio.wait_for(listener.ready.wait(), 20)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="control-outage-qa") as mqtt:
                reply = await Commander(mqtt, settings.topic_prefix).send("disable-terminal", {"tid": TID})
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert ok(reply, "disable-terminal") == {"tid": TID, "enabled": False}
    assert terminals[TID].enabled is False
    warnings = [entry for entry in logs if entry["event"] == "control_unavailable"]
    assert len(warnings) == 1, "one warning per outage, not one per retry"
    assert [entry["event"] for entry in logs].count("control_listening") == 2
