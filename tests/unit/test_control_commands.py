"""Live-control commands, pure: every command, every error path, and fuzzed payloads that never raise."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iso_host.clock import HostClock
from iso_host.config_cards import SCENARIO_KEYS
from iso_host.control.apply import apply_reply
from iso_host.control.commands import (
    COMMANDS,
    INVALID_REQUEST_ID,
    MAX_PAYLOAD_BYTES,
    READ_ONLY,
    REQUEST_ID,
    ControlReply,
    execute,
    failure_reply,
)
from iso_host.control.controls import Controls
from iso_host.core.scenarios import Scenario, ScenarioBook
from iso_host.core.terminals import NO_KEYS, TerminalState, WorkingKeys
from iso_host.core.test_cards import CardBook, Hold, TestCard
from iso_host.errors import ConfigError, StoreError
from iso_host.ledger.model import LedgerCommand, SaveSession

MACHINE_NOW = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
TID, OTHER_TID, MID = "TERM0001", "TERM0002", "MERCHANT0000001"
PAN = "4761739001010010"
DIGIT_RUN = re.compile(r"[0-9]{12,}")


def hashed(pan: str) -> str:
    return f"hash-of-{len(pan)}-digits-{pan[-2:]}"


def make_controls(reload_cards: Callable[[], int] | None = None, cards: CardBook | None = None) -> Controls:
    terminals = {tid: TerminalState(tid, MID) for tid in (TID, OTHER_TID)}
    return Controls(ScenarioBook(), terminals, HostClock(lambda: MACHINE_NOW), hashed, reload_cards, cards=cards)


def run(controls: Controls, command: str, request_id: str | None = "req-1", **arguments: Any) -> ControlReply:
    document = arguments if request_id is None else {"request_id": request_id, **arguments}
    return execute(controls, command, json.dumps(document).encode())


def ok(reply: ControlReply) -> dict[str, Any]:
    assert reply.payload["ok"] is True, reply.payload
    result = reply.payload["result"]
    assert isinstance(result, dict)
    return result


def error(reply: ControlReply) -> str:
    assert reply.payload["ok"] is False, reply.payload
    assert not reply.events, "a failed command changes nothing, so it has no event"
    text = reply.payload["error"]
    assert isinstance(text, str)
    assert "\n" not in text, "an error is one line"
    return text


def event_payload(reply: ControlReply) -> dict[str, Any]:
    (event,) = reply.events
    payload = json.loads(event.payload)
    assert isinstance(payload, dict)
    assert payload["kind"] == "control"
    assert event.kind == "control"
    return payload


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*strings_in(key), *strings_in(item))]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def assert_no_pan(reply: ControlReply) -> None:
    """No string in the reply (but the caller's own request_id) or its events (but their ids) holds a run of 12+
    digits."""
    shown = {key: value for key, value in reply.payload.items() if key != "request_id"}
    for text in strings_in(shown):
        assert not DIGIT_RUN.search(text), text
    for event in reply.events:
        # event_id is a random UUID: its last group is 12 hex digits, all decimal about once in 280 events
        ids = ("request_id", "event_id")
        payload = {key: value for key, value in json.loads(event.payload).items() if key not in ids}
        for text in strings_in(payload):
            assert not DIGIT_RUN.search(text), text


BAD_PAYLOADS = [
    pytest.param(b"", INVALID_REQUEST_ID, "payload: not JSON: Expecting value at byte 0", id="empty"),
    pytest.param(b"hello", INVALID_REQUEST_ID, "payload: not JSON: Expecting value at byte 0", id="not-json"),
    pytest.param('{"é": 1,}'.encode(), INVALID_REQUEST_ID,
                 "payload: not JSON: Expecting property name enclosed in double quotes at byte 9",
                 id="byte-offset-counts-utf8"),
    pytest.param(b"\xff\xfe", INVALID_REQUEST_ID, "payload: not UTF-8 text (byte 0)", id="not-utf8"),
    pytest.param(b"[1, 2]", INVALID_REQUEST_ID, "payload: must be a JSON object, got list", id="array"),
    pytest.param(b'"req-1"', INVALID_REQUEST_ID, "payload: must be a JSON object, got str", id="string"),
    pytest.param(b"[" * 10_000 + b"]" * 10_000, INVALID_REQUEST_ID, "payload: not JSON this host accepts: "
                 "nested too deeply", id="nested-too-deeply"),
    pytest.param(b'{"n": ' + b"9" * 5_000 + b"}", INVALID_REQUEST_ID, "payload: not JSON this host accepts",
                 id="integer-too-long"),
    pytest.param(b" " * (MAX_PAYLOAD_BYTES + 1), INVALID_REQUEST_ID,
                 f"payload: {MAX_PAYLOAD_BYTES + 1} bytes is over the limit of {MAX_PAYLOAD_BYTES}", id="too-big"),
    pytest.param(b"{}", INVALID_REQUEST_ID, "request_id: required", id="no-request-id"),
    pytest.param(b'{"request_id": ""}', INVALID_REQUEST_ID, "request_id: must be 1 to 64 characters",
                 id="empty-id"),
    pytest.param(b'{"request_id": 7}', INVALID_REQUEST_ID, "request_id: must be 1 to 64 characters of A-Z a-z "
                 "0-9 _ . -, got 7", id="id-not-text"),
    pytest.param(b'{"request_id": "a/b"}', INVALID_REQUEST_ID, "request_id: must be", id="id-with-slash"),
    pytest.param(b'{"request_id": "+"}', INVALID_REQUEST_ID, "request_id: must be", id="id-wildcard"),
    pytest.param(json.dumps({"request_id": "x" * 65}).encode(), INVALID_REQUEST_ID, "request_id: must be",
                 id="id-too-long"),
    pytest.param(b'{"request_id": "r1", "bogus": 1}', "r1",
                 "bogus: unknown argument (expected one of request_id, tid)", id="unknown-argument"),
]  # fmt: skip


class TestRequest:
    @pytest.mark.parametrize(("payload", "request_id", "message"), BAD_PAYLOADS)
    def test_bad_request_is_an_error_reply(self, payload: bytes, request_id: str, message: str) -> None:
        """A request that cannot be read is answered with an error naming what is wrong, never an exception."""
        reply = execute(make_controls(), "disable-terminal", payload)
        assert error(reply).startswith(message)
        assert reply.request_id == request_id
        assert reply.payload["request_id"] == request_id
        assert reply.payload["command"] == "disable-terminal"

    def test_unknown_command_lists_the_known_ones(self) -> None:
        """A command the host does not know is named, with the ones it does."""
        reply = run(make_controls(), "frobnicate")
        assert error(reply) == f"command: unknown command 'frobnicate' (expected one of {', '.join(sorted(COMMANDS))})"
        assert reply.request_id == "req-1"

    def test_unknown_command_echo_is_bounded_and_masked(self) -> None:
        """A long or card-like command name is cut short and masked in the reply."""
        reply = run(make_controls(), PAN + "x" * 500)
        assert_no_pan(reply)
        assert len(reply.payload["command"]) <= 60
        assert len(error(reply)) < 400

    def test_failure_reply_finds_the_request_id(self) -> None:
        """The edge's failure reply goes to the request's id when it has a usable one, else to "invalid"."""
        good = failure_reply("list-scenarios", b'{"request_id": "r-9"}', "internal error")
        assert (good.request_id, good.payload) == ("r-9", {"request_id": "r-9", "command": "list-scenarios",
                                                           "ok": False, "error": "internal error"})  # fmt: skip
        assert failure_reply("list-scenarios", b"nope", "internal error").request_id == INVALID_REQUEST_ID


BAD_SCENARIOS = [
    pytest.param({"respond": "5"}, "scenario.respond: must be a 2-character response code, got '5'", id="respond"),
    pytest.param({"name": "x"}, "scenario: needs an action: one of respond", id="no-action"),
    pytest.param({"respond": "05", "colour": "red"}, "scenario.colour: unknown key (expected one of", id="key"),
    pytest.param({"respond": "05", "pan": PAN + "x"}, "scenario.pan: must be digits", id="pan-not-digits"),
    pytest.param({"respond": "05", "amount": "lots"}, "scenario.amount: must be an amount such as 100.00, "
                 "got 'lots'", id="amount"),
    pytest.param({"respond": "05", "times": 0}, "scenario.times: must be a whole number 1..1000000000, got 0",
                 id="times-zero"),
    pytest.param({"delay_ms": -1}, "scenario.delay_ms: must be a whole number 0..600000, got -1", id="delay"),
    pytest.param({"close": "yes"}, "scenario.close: must be true or false, got 'yes'", id="close"),
    pytest.param({"respond": "05", "tid": "NOPE0001"}, "scenario.tid: terminal 'NOPE0001' is not configured",
                 id="tid-unknown"),
    pytest.param("respond 05", "scenario: must be a table", id="not-a-table"),
    pytest.param(None, "scenario: must be a table", id="missing"),
]  # fmt: skip


class TestAddScenario:
    def test_adds_and_lists_it(self) -> None:
        """The scenario is active at once, as the reply says; its change is one control event."""
        controls = make_controls()
        reply = run(controls, "add-scenario", scenario={"name": "13.13", "respond": "05", "amount": 13.13})
        result = ok(reply)
        assert result == {"active": 1, "added": {
            "name": "13.13", "tid": None, "kind": None, "mti": None, "amount_minor": 1313, "amount_cents": None,
            "respond": "05", "delay_ms": 0, "no_reply": False, "close": False, "bad_mac": False,
            "issuer_scripts": None, "times": None, "remaining": None, "card": False}}  # fmt: skip
        ((scenario, remaining),) = controls.scenarios.active()
        assert (scenario.respond, scenario.amount_minor, remaining) == ("05", 1313, None)
        event = event_payload(reply)
        assert (event["command"], event["request_id"], event["detail"], event["tid"]) == (
            "add-scenario", "req-1", result, None)  # fmt: skip

    def test_event_names_the_scenarios_terminal(self) -> None:
        """A scenario for one terminal is that terminal's event."""
        reply = run(make_controls(), "add-scenario", scenario={"tid": TID, "no_reply": True, "times": 2})
        assert ok(reply)["added"]["remaining"] == 2
        assert reply.events[0].tid == TID
        assert event_payload(reply)["tid"] == TID

    def test_pan_is_matched_by_hash_and_never_shown(self) -> None:
        """A scenario's PAN becomes its keyed hash; neither the reply nor the event carries it."""
        controls = make_controls()
        reply = run(controls, "add-scenario", scenario={"pan": PAN, "respond": "51", "name": f"card {PAN}"})
        assert ok(reply)["added"]["card"] is True
        assert PAN not in json.dumps(reply.payload)
        assert PAN not in reply.events[0].payload
        assert_no_pan(reply)
        ((scenario, _),) = controls.scenarios.active()
        assert scenario.pan_hash == hashed(PAN)
        fired = controls.scenarios.fire(tid=TID, mti="0200", kind="sale", amount_minor=1, pan_hash=hashed(PAN))
        assert fired is scenario
        assert controls.scenarios.fire(tid=TID, mti="0200", kind="sale", amount_minor=1, pan_hash="other") is None

    @pytest.mark.parametrize(("scenario", "message"), BAD_SCENARIOS)
    def test_bad_scenario_names_the_field(self, scenario: Any, message: str) -> None:
        """A scenario the config file would refuse is refused with the same message, under the key "scenario"."""
        controls = make_controls()
        arguments = {} if scenario is None else {"scenario": scenario}
        assert error(run(controls, "add-scenario", **arguments)).startswith(message)
        assert controls.scenarios.active() == []

    def test_every_problem_is_on_one_line(self) -> None:
        """Several problems in one table are all reported, on one line."""
        message = error(run(make_controls(), "add-scenario", scenario={"respond": "5", "delay_ms": "x"}))
        assert "scenario.respond:" in message
        assert "scenario.delay_ms:" in message


class TestListAndClearScenarios:
    def test_list_shows_remaining_and_changes_nothing(self) -> None:
        """Listing shows how often each scenario may still fire, and makes no event."""
        controls = make_controls()
        controls.scenarios.add(Scenario(name="once", respond="05", times=2, pan_hash="h"))
        controls.scenarios.fire(tid=TID, mti="0200", kind="sale", amount_minor=1, pan_hash="h")
        reply = run(controls, "list-scenarios")
        (listed,) = ok(reply)["scenarios"]
        assert (listed["name"], listed["times"], listed["remaining"], listed["card"]) == ("once", 2, 1, True)
        assert reply.events == ()

    def test_list_empty(self) -> None:
        """No scenario: an empty list."""
        assert ok(run(make_controls(), "list-scenarios")) == {"scenarios": []}

    def test_clear_says_how_many(self) -> None:
        """Clearing removes every scenario and says how many there were."""
        controls = make_controls()
        for code in ("05", "51"):
            controls.scenarios.add(Scenario(respond=code))
        reply = run(controls, "clear-scenarios")
        assert ok(reply) == {"cleared": 2}
        assert controls.scenarios.active() == []
        assert event_payload(reply)["detail"] == {"cleared": 2}
        assert ok(run(controls, "clear-scenarios")) == {"cleared": 0}


class TestTerminals:
    def test_disable_then_enable(self) -> None:
        """A terminal is switched off and on again; each change is that terminal's event."""
        controls = make_controls()
        off = run(controls, "disable-terminal", tid=TID)
        assert ok(off) == {"tid": TID, "enabled": False}
        assert controls.terminals[TID].enabled is False
        assert controls.terminals[OTHER_TID].enabled is True
        assert (off.events[0].tid, event_payload(off)["command"]) == (TID, "disable-terminal")
        on = run(controls, "enable-terminal", tid=TID)
        assert ok(on) == {"tid": TID, "enabled": True}
        assert controls.terminals[TID].enabled is True

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            pytest.param({}, "tid: required (a configured terminal's id (field 41))", id="missing"),
            pytest.param({"tid": 1}, "tid: must be a configured terminal's id (field 41), got 1", id="number"),
            pytest.param({"tid": ""}, "tid: must be a configured terminal's id (field 41), got ''", id="empty"),
            pytest.param({"tid": "NOPE0001"}, "tid: terminal 'NOPE0001' is not configured", id="unknown"),
        ],
    )
    @pytest.mark.parametrize("command", ["enable-terminal", "disable-terminal"])
    def test_bad_tid(self, command: str, arguments: dict[str, Any], message: str) -> None:
        """The terminal must be one the host was configured with."""
        controls = make_controls()
        assert error(run(controls, command, **arguments)) == message
        assert all(terminal.enabled for terminal in controls.terminals.values())


class TestClock:
    def test_set_with_offset(self) -> None:
        """An ISO time with an offset becomes the host's time; the reply gives it and the offset."""
        controls = make_controls()
        reply = run(controls, "set-clock", time="2026-11-27T09:00:00+08:00")
        result = ok(reply)
        assert datetime.fromisoformat(result["now"]) == datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
        assert result["offset_s"] == (datetime(2026, 11, 27, 1, 0, tzinfo=UTC) - MACHINE_NOW).total_seconds()
        assert controls.clock() == datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
        assert event_payload(reply)["detail"] == result

    def test_set_z_and_back_to_now(self) -> None:
        """A "Z" time is accepted, and "now" goes back to the machine's time."""
        controls = make_controls()
        ok(run(controls, "set-clock", time="2030-01-01T00:00:00Z"))
        assert controls.clock().year == 2030
        assert ok(run(controls, "set-clock", time="now")) == {"now": MACHINE_NOW.isoformat(), "offset_s": 0.0}
        assert controls.clock() == MACHINE_NOW

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            pytest.param("2026-11-27T09:00:00", "time: needs a UTC offset (such as +08:00 or Z), got "
                         "'2026-11-27T09:00:00'", id="naive"),
            pytest.param("tomorrow", "time: must be an ISO 8601 time with a UTC offset", id="words"),
            pytest.param(20261127, "time: must be an ISO 8601 time with a UTC offset", id="number"),
            pytest.param("0001-01-01T00:00:00+08:00", "time: must be within 100 years of the machine's time",
                         id="year-1"),
            pytest.param("9999-12-31T23:59:59-12:00", "time: must be within 100 years", id="year-9999"),
            pytest.param(None, "time: must be an ISO 8601", id="null"),
        ],
    )  # fmt: skip
    def test_set_refuses(self, value: Any, message: str) -> None:
        """A time the host cannot take is refused, and the clock stays where it was."""
        controls = make_controls()
        assert error(run(controls, "set-clock", time=value)).startswith(message)
        assert controls.clock.offset == timedelta(0)

    def test_set_needs_a_time(self) -> None:
        """set-clock without a time says what it wants."""
        assert error(run(make_controls(), "set-clock")).startswith("time: required (an ISO 8601 time")

    @pytest.mark.parametrize("seconds", [86_400, -3_600, 0.5, 0])
    def test_advance(self, seconds: float) -> None:
        """The clock moves by the seconds given, either way."""
        controls = make_controls()
        result = ok(run(controls, "advance-clock", seconds=seconds))
        assert result == {"now": (MACHINE_NOW + timedelta(seconds=seconds)).isoformat(), "offset_s": float(seconds)}
        assert controls.clock() == MACHINE_NOW + timedelta(seconds=seconds)

    def test_advances_add_up(self) -> None:
        """Two advances add up; a set then an advance moves from the set time."""
        controls = make_controls()
        ok(run(controls, "advance-clock", seconds=3_600))
        assert ok(run(controls, "advance-clock", seconds=3_600))["offset_s"] == 7_200.0
        ok(run(controls, "set-clock", time="2027-01-01T00:00:00+00:00"))
        ok(run(controls, "advance-clock", seconds=60))
        assert controls.clock() == datetime(2027, 1, 1, 0, 1, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("payload", "message"),
        [
            pytest.param(b'{"request_id": "r", "seconds": "60"}', "seconds: must be a finite number of seconds, "
                         "got '60'", id="string"),
            pytest.param(b'{"request_id": "r", "seconds": true}', "seconds: must be a finite number", id="bool"),
            pytest.param(b'{"request_id": "r", "seconds": NaN}', "seconds: must be a finite number", id="nan"),
            pytest.param(b'{"request_id": "r", "seconds": -Infinity}', "seconds: must be a finite number", id="inf"),
            pytest.param(b'{"request_id": "r", "seconds": 1e300}', "seconds: must be at most 3155760000 (100 years)",
                         id="huge"),
            pytest.param(b'{"request_id": "r"}', "seconds: required", id="missing"),
        ],
    )  # fmt: skip
    def test_advance_refuses(self, payload: bytes, message: str) -> None:
        """A non-number, a non-finite number and a jump past 100 years are refused; the clock stays."""
        controls = make_controls()
        assert error(execute(controls, "advance-clock", payload)).startswith(message)
        assert controls.clock.offset == timedelta(0)

    def test_advances_cannot_add_up_past_the_bound(self) -> None:
        """Each advance within bounds, but together past 100 years: the last one is refused."""
        controls = make_controls()
        ok(run(controls, "advance-clock", seconds=3_000_000_000))
        assert error(run(controls, "advance-clock", seconds=3_000_000_000)) == (
            "seconds: would put the host's time more than 100 years from the machine's")  # fmt: skip
        assert controls.clock.offset == timedelta(seconds=3_000_000_000)


class TestReloadCards:
    def test_without_config(self) -> None:
        """A host started without --config has no cards file to reload."""
        assert error(run(make_controls(), "reload-cards")) == (
            "reload-cards: the host was started without --config; there is no [[cards]] file to reload")  # fmt: skip

    def test_reload_says_how_many(self) -> None:
        """The reload's count is the result, and the reload is an event."""
        calls: list[int] = []

        def reload() -> int:
            calls.append(1)
            return 3

        reply = run(make_controls(reload), "reload-cards")
        assert ok(reply) == {"cards": 3}
        assert calls == [1]
        assert event_payload(reply)["detail"] == {"cards": 3}

    def test_config_error_becomes_the_error(self) -> None:
        """A config problem (one line or several) is the reply's error, on one line, card numbers masked."""

        def reload() -> int:
            raise ConfigError(f"lab.toml: cards[0].pan: must be 12 to 19 digits\nlab.toml: cards[1].status: {PAN}")

        reply = run(make_controls(reload), "reload-cards")
        assert error(reply) == (
            "lab.toml: cards[0].pan: must be 12 to 19 digits; lab.toml: cards[1].status: 476173******0010")  # fmt: skip

    def test_takes_no_arguments(self) -> None:
        """reload-cards takes only the request id."""
        assert error(run(make_controls(lambda: 1), "reload-cards", path="/etc/passwd")) == (
            "path: unknown argument (expected one of request_id)")  # fmt: skip


def scenarios(*names: str) -> Controls:
    """Controls with one scenario per name, in that order (each answers 05, twice)."""
    controls = make_controls()
    for name in names:
        controls.scenarios.add(Scenario(name=name, respond="05", times=2, tid=TID if name == "mine" else None))
    return controls


def names_of(controls: Controls) -> list[str]:
    return [scenario.name for scenario, _ in controls.scenarios.active()]


BAD_PLACES = [
    pytest.param({}, "index: required (a scenario's place in list-scenarios' list, from 0), or name", id="neither"),
    pytest.param({"index": 0, "name": "a"}, "index, name: give one of them, not both", id="both"),
    pytest.param({"index": -1}, "index: must be a scenario's place in list-scenarios' list, from 0, got -1",
                 id="negative"),
    pytest.param({"index": True}, "index: must be a scenario's place in list-scenarios' list, from 0, got True",
                 id="bool"),
    pytest.param({"index": "1"}, "index: must be a scenario's place in list-scenarios' list, from 0, got '1'",
                 id="text"),
    pytest.param({"index": 1.0}, "index: must be a scenario's place in list-scenarios' list, from 0, got 1.0",
                 id="float"),
    pytest.param({"index": 2}, "index: no scenario at 2 (list-scenarios has 0 to 1)", id="past-the-end"),
    pytest.param({"name": "c"}, "name: no scenario is named 'c'", id="unknown-name"),
    pytest.param({"name": ""}, "name: must be a scenario's name, got ''", id="empty-name"),
    pytest.param({"name": 7}, "name: must be a scenario's name, got 7", id="name-not-text"),
    pytest.param({"name": "a", "tid": TID}, "tid: unknown argument (expected one of index, name, request_id)",
                 id="unknown-argument"),
]  # fmt: skip


class TestRemoveScenario:
    @pytest.mark.parametrize(("arguments", "index"), [({"index": 0}, 0), ({"index": 1}, 1), ({"name": "b"}, 1)])
    def test_removes_by_place_or_name(self, arguments: dict[str, Any], index: int) -> None:
        """The scenario at the place (or with the name) goes; the others keep their order."""
        controls = scenarios("a", "b")
        controls.scenarios.fire(tid=TID, mti="0200", kind="sale", amount_minor=1, pan_hash=None)
        reply = run(controls, "remove-scenario", **arguments)
        result = ok(reply)
        assert (result["index"], result["active"], result["removed"]["name"]) == (index, 1, "ab"[index])
        assert result["removed"]["remaining"] == (1 if index == 0 else 2), "the times it had left"
        assert names_of(controls) == ["b" if index == 0 else "a"]
        assert event_payload(reply)["detail"] == result

    def test_the_event_names_the_scenarios_terminal(self) -> None:
        reply = run(scenarios("a", "mine"), "remove-scenario", name="mine")
        assert reply.events[0].tid == TID

    @pytest.mark.parametrize(("arguments", "message"), BAD_PLACES)
    def test_refused_names_the_field(self, arguments: dict[str, Any], message: str) -> None:
        """A place or name that holds no scenario is refused, naming the argument; nothing is removed."""
        controls = scenarios("a", "b")
        assert error(run(controls, "remove-scenario", **arguments)) == message
        assert names_of(controls) == ["a", "b"]

    def test_none_to_remove(self) -> None:
        assert error(run(make_controls(), "remove-scenario", index=0)) == (
            "index: no scenario at 0 (list-scenarios has none: there is no scenario)")  # fmt: skip

    def test_a_shared_name_asks_for_the_index(self) -> None:
        """Two scenarios with one name: the name does not say which, so the index must."""
        controls = scenarios("a", "x", "x")
        assert error(run(controls, "remove-scenario", name="x")) == (
            "name: 2 scenarios are named 'x' (at [1, 2]); give its index")  # fmt: skip
        assert names_of(controls) == ["a", "x", "x"]


class TestReplaceScenario:
    def test_replaces_in_place_with_its_times_afresh(self) -> None:
        """The new scenario takes the old one's place; the old one's count of times goes with it."""
        controls = scenarios("a", "b", "c")
        controls.scenarios.fire(tid=TID, mti="0200", kind="sale", amount_minor=1, pan_hash=None)
        reply = run(controls, "replace-scenario", index=0,
                    scenario={"name": "new", "respond": "51", "times": 5, "tid": OTHER_TID})  # fmt: skip
        result = ok(reply)
        assert (result["index"], result["active"]) == (0, 3)
        assert (result["replaced"]["name"], result["replaced"]["remaining"]) == ("a", 1)
        assert (result["scenario"]["name"], result["scenario"]["respond"], result["scenario"]["remaining"]) == (
            "new", "51", 5)  # fmt: skip
        assert names_of(controls) == ["new", "b", "c"]
        assert reply.events[0].tid == OTHER_TID
        assert event_payload(reply)["detail"] == result

    def test_a_pan_is_hashed_and_never_shown(self) -> None:
        controls = scenarios("a")
        reply = run(controls, "replace-scenario", index=0, scenario={"pan": PAN, "respond": "05"})
        assert ok(reply)["scenario"]["card"] is True
        assert controls.scenarios.active()[0][0].pan_hash == hashed(PAN)
        assert_no_pan(reply)

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            pytest.param({"scenario": {"respond": "05"}}, "index: required (a scenario's place in list-scenarios' "
                         "list, from 0)", id="no-index"),
            pytest.param({"index": 3, "scenario": {"respond": "05"}}, "index: no scenario at 3 (list-scenarios has 0 "
                         "to 1)", id="past-the-end"),
            pytest.param({"index": "0", "scenario": {"respond": "05"}}, "index: must be a scenario's place in "
                         "list-scenarios' list, from 0, got '0'", id="index-text"),
            pytest.param({"index": 0}, "scenario: must be a table", id="no-scenario"),
            pytest.param({"index": 0, "scenario": {"respond": "5"}}, "scenario.respond: must be a 2-character "
                         "response code, got '5'", id="bad-respond"),
            pytest.param({"index": 0, "scenario": {"respond": "05", "tid": "NOPE0001"}}, "scenario.tid: terminal "
                         "'NOPE0001' is not configured (it would never match)", id="unknown-tid"),
            pytest.param({"index": 0, "name": "a", "scenario": {"respond": "05"}}, "name: unknown argument (expected "
                         "one of index, request_id, scenario)", id="by-name"),
        ],
    )  # fmt: skip
    def test_refused_names_the_field(self, arguments: dict[str, Any], message: str) -> None:
        """A bad place or a scenario add-scenario would refuse is refused the same way; nothing changes."""
        controls = scenarios("a", "b")
        assert error(run(controls, "replace-scenario", **arguments)) == message
        assert [(scenario.name, scenario.respond) for scenario, _ in controls.scenarios.active()] == [
            ("a", "05"), ("b", "05")]  # fmt: skip


class TestSignOffTerminal:
    def test_ends_the_session_and_keeps_it_keyed(self) -> None:
        """As the terminal's own sign-off: keys forgotten, not signed on, keyed still; the ledger keeps it."""
        controls = make_controls()
        terminal = controls.terminals[TID]
        terminal.signed_on, terminal.keyed, terminal.operator = True, True, "01"
        terminal.session_keys = WorkingKeys(tpk=b"\x01" * 16, tak=b"\x02" * 16)
        reply = run(controls, "sign-off-terminal", tid=TID)
        assert ok(reply) == {"tid": TID, "signed_on": False, "was_signed_on": True, "keyed": True}
        assert (terminal.signed_on, terminal.session_keys, terminal.operator, terminal.keyed) == (
            False, NO_KEYS, None, True)  # fmt: skip
        (session,) = reply.ledger
        assert session == SaveSession(TID, MID, False, terminal.batch_number, None, None, None, None,
                                      at=MACHINE_NOW, keyed=None)  # fmt: skip
        assert (reply.events[0].tid, event_payload(reply)["command"]) == (TID, "sign-off-terminal")
        assert controls.terminals[OTHER_TID].signed_on is False

    def test_a_terminal_not_signed_on_says_so(self) -> None:
        """Signing off a terminal that is not signed on changes nothing in memory, and says it was not."""
        reply = run(make_controls(), "sign-off-terminal", tid=OTHER_TID)
        assert ok(reply) == {"tid": OTHER_TID, "signed_on": False, "was_signed_on": False, "keyed": False}

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            pytest.param({}, "tid: required (a configured terminal's id (field 41))", id="missing"),
            pytest.param({"tid": 1}, "tid: must be a configured terminal's id (field 41), got 1", id="number"),
            pytest.param({"tid": "NOPE0001"}, "tid: terminal 'NOPE0001' is not configured", id="unknown"),
            pytest.param({"tid": TID, "keyed": False}, "keyed: unknown argument (expected one of request_id, tid)",
                         id="extra"),
        ],
    )  # fmt: skip
    def test_bad_tid(self, arguments: dict[str, Any], message: str) -> None:
        controls = make_controls()
        controls.terminals[TID].signed_on = True
        reply = run(controls, "sign-off-terminal", **arguments)
        assert error(reply) == message
        assert reply.ledger == ()
        assert controls.terminals[TID].signed_on is True


IMK = bytes(range(16))
OTHER_PAN = "6212345678901234567"


def card_book() -> CardBook:
    """Two test cards: one with a balance, a limit, a PIN, an IMK and a running hold; one with nothing set."""
    chip = TestCard(status="active", expiry="2812", balance_minor=5_000, limit_minor=2_000, pin="1234", imk=IMK)
    book = CardBook([(PAN, chip), (OTHER_PAN, TestCard(status="lost"))], hashed)
    book.apply_holds([Hold("000000000001", hashed(PAN), 1_250, MACHINE_NOW + timedelta(days=1))], MACHINE_NOW)
    return book


class TestListCards:
    def test_lists_masked_and_without_secrets(self) -> None:
        """Each card in configuration order, masked; amounts as text; the PIN and the IMK only as yes/no."""
        reply = run(make_controls(cards=card_book()), "list-cards")
        assert ok(reply) == {"cards": [
            {"pan": "476173******0010", "status": "active", "expiry": "2812", "balance": "50.00",
             "available": "37.50", "limit": "20.00", "has_pin": True, "has_imk": True, "emv_scheme": "emv-csk"},
            {"pan": "621234*********4567", "status": "lost", "expiry": None, "balance": None, "available": None,
             "limit": None, "has_pin": False, "has_imk": False, "emv_scheme": None},
        ]}  # fmt: skip
        text = json.dumps(reply.payload)
        for secret in (PAN, OTHER_PAN, IMK.hex(), '"1234"'):
            assert secret not in text.lower()
        assert reply.events == (), "a listing changes nothing"
        assert_no_pan(reply)

    def test_without_the_card_book(self) -> None:
        assert error(run(make_controls(), "list-cards")) == (
            "list-cards: this host's live control was not given its test cards")  # fmt: skip

    def test_takes_no_arguments(self) -> None:
        assert error(run(make_controls(cards=card_book()), "list-cards", tid=TID)) == (
            "tid: unknown argument (expected one of request_id)")  # fmt: skip


class TestAddAndRemoveCards:
    def test_a_card_is_added_then_replaced_then_removed(self) -> None:
        book = card_book()
        added = run(make_controls(cards=book), "add-card", card={"pan": "4000000000000002", "balance": "1.00"})
        assert ok(added) == {"card": "400000******0002", "replaced": False, "cards": 3}
        assert added.events, "a change is an event"
        assert_no_pan(added)
        card = book.card("4000000000000002")
        assert card is not None
        assert card.balance_minor == 100
        replaced = run(make_controls(cards=book), "add-card", card={"pan": PAN, "status": "stolen"})
        assert ok(replaced) == {"card": "476173******0010", "replaced": True, "cards": 3}
        stolen = book.card(PAN)
        assert stolen is not None
        assert stolen.status == "stolen"
        assert ok(run(make_controls(cards=book), "remove-card", index=0)) == {"removed": "476173******0010", "cards": 2}
        assert book.card(PAN) is None

    @pytest.mark.parametrize(
        ("command", "arguments", "message"),
        [
            ("add-card", {"card": "4000000000000002"}, "card: required (a table like [[cards]]"),
            ("add-card", {"card": {"pan": "12"}}, "card.pan: must be 12 to 19 digits"),
            ("add-card", {"card": {"pan": "4000000000000002", "balance": "lots"}}, "card.balance: "),
            ("add-card", {"card": {"pan": "4000000000000002", "colour": "red"}}, "card.colour: unknown key"),
            ("remove-card", {"index": 7}, "index: no card at 7 (there are 2)"),
            ("remove-card", {"index": "0"}, "index: must be the card's position in list-cards' list"),
        ],
    )  # fmt: skip
    def test_bad_cards_change_nothing(self, command: str, arguments: dict[str, Any], message: str) -> None:
        book = card_book()
        assert error(run(make_controls(cards=book), command, **arguments)).startswith(message)
        assert len(book) == 2


class RecordingStore:
    """What apply_reply asks of a store: ``apply``, here recorded, or failing as a full disk does."""

    def __init__(self, *, fails: bool = False) -> None:
        self.applied: list[tuple[LedgerCommand, ...]] = []
        self.fails = fails

    async def apply(self, commands: tuple[LedgerCommand, ...]) -> None:
        if self.fails:
            raise StoreError("database or disk is full")
        self.applied.append(commands)


class TestApplyReply:
    """The one commit step the MQTT listener and the web console share."""

    async def test_commits_the_session_with_the_event_then_wakes(self) -> None:
        reply = run(make_controls(), "sign-off-terminal", tid=TID)
        store, woken = RecordingStore(), []
        assert await apply_reply(store, reply, lambda: woken.append(1)) is reply
        assert store.applied == [(*reply.ledger, *reply.events)]
        assert woken == [1]

    @pytest.mark.parametrize("command", ["list-scenarios", "frobnicate"])
    async def test_nothing_to_commit(self, command: str) -> None:
        """A listing or a failed command has no event: nothing is committed and the relay is not woken."""
        reply = run(make_controls(), command)
        store = RecordingStore()
        assert await apply_reply(store, reply, None) is reply
        assert store.applied == []

    async def test_a_ledger_failure_is_the_reply(self) -> None:
        """The change is in force but unrecorded: the reply says so, to the same id and command, with no event."""
        reply = run(make_controls(), "disable-terminal", request_id="r-7", tid=TID)
        woken: list[int] = []
        failed = await apply_reply(RecordingStore(fails=True), reply, lambda: woken.append(1))
        assert failed.payload == {"request_id": "r-7", "command": "disable-terminal", "ok": False, "error":
            "ledger: StoreError: database or disk is full (the change is in force, but its event was not recorded)"}
        assert (failed.request_id, failed.events, failed.ledger, woken) == ("r-7", (), (), [])


# ---------------------------------------------------------------------------------------------- fuzzing

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
INTERESTING = st.sampled_from([TID, "NOPE0001", "now", PAN, "05", "5", "2026-11-27T09:00:00+08:00", "", 86_400])
SCENARIO_TABLES = st.dictionaries(
    st.sampled_from(sorted(SCENARIO_KEYS)) | st.text(max_size=8), INTERESTING | JSON_VALUES, max_size=6
)
ARGUMENTS = st.fixed_dictionaries(
    {"request_id": st.from_regex(REQUEST_ID, fullmatch=True) | JSON_VALUES},
    optional={
        "scenario": SCENARIO_TABLES | JSON_VALUES, "tid": INTERESTING | JSON_VALUES,
        "time": INTERESTING | JSON_VALUES | st.datetimes(timezones=st.just(timezone(timedelta(hours=8)))).map(
            datetime.isoformat),
        "seconds": INTERESTING | JSON_VALUES, "extra": JSON_VALUES,
        "index": st.integers(-1, 3) | JSON_VALUES, "name": st.sampled_from(["a", "b", ""]) | JSON_VALUES,
    },
)  # fmt: skip
COMMAND_NAMES = st.sampled_from(sorted(COMMANDS)) | st.text(max_size=20)


def check_reply(reply: ControlReply) -> None:
    """What every reply, good or bad, must be."""
    assert REQUEST_ID.fullmatch(reply.request_id)
    assert reply.payload["request_id"] == reply.request_id
    assert isinstance(reply.payload["ok"], bool)
    assert set(reply.payload) == {"request_id", "command", "ok", "result" if reply.payload["ok"] else "error"}
    json.dumps(reply.payload, allow_nan=False)  # publishable as strict JSON
    if not reply.payload["ok"]:
        assert reply.events == ()
        assert "\n" not in reply.payload["error"]
    assert_no_pan(reply)


def reload_fails() -> int:
    raise ConfigError("lab.toml: cards: must be an array of tables ([[cards]])")


class TestFuzz:
    @settings(max_examples=300, deadline=None)
    @given(command=COMMAND_NAMES, payload=st.binary(max_size=200))
    def test_arbitrary_bytes(self, command: str, payload: bytes) -> None:
        """Any bytes on any command get a reply, never an exception."""
        check_reply(execute(make_controls(), command, payload))

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(command=COMMAND_NAMES, arguments=ARGUMENTS, reload=st.sampled_from([None, lambda: 2, reload_fails]))
    def test_arbitrary_json(self, command: str, arguments: dict[str, Any], reload: Callable[[], int] | None) -> None:
        """Any JSON object on any command gets a well-formed reply; the host's clock stays in range."""
        controls = make_controls(reload, card_book())
        controls.scenarios.add(Scenario(name="a", respond="05"))
        controls.scenarios.add(Scenario(name="b", respond="51"))
        payload = json.dumps(arguments).encode()
        reply = execute(controls, command, payload)
        check_reply(reply)
        assert abs(controls.clock.offset) <= timedelta(days=36_525)
        changes = reply.payload["ok"] and command not in READ_ONLY
        assert len(reply.events) == (1 if changes else 0)
        if reply.payload["ok"] and command == "advance-clock":
            assert math.isfinite(reply.payload["result"]["offset_s"])

    @settings(max_examples=200, deadline=None)
    @given(document=JSON_VALUES)
    def test_arbitrary_json_documents(self, document: Any) -> None:
        """Any JSON document at all, object or not, gets a reply."""
        check_reply(execute(make_controls(), "add-scenario", json.dumps(document).encode()))
