"""Live-control commands: one request's bytes in, one reply and the events of its change out.

Pure: no asyncio, no broker, no file. Every bad input is an error reply whose text names the field
(``scenario.respond: must be ...``); nothing here raises for what a client sends. No PAN leaves: a scenario's
``pan`` becomes its keyed hash at once, and every run of 12 or more digits in a reply or an event is masked.
The only value echoed as sent is ``request_id`` (it names the reply topic, and its alphabet is checked).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from iso_host.cards import mask_pan
from iso_host.clock import HostClock
from iso_host.config_cards import card_entry, scenario_from_table
from iso_host.config_checks import Problems
from iso_host.control.controls import Controls
from iso_host.control.signing import SIGNED_FIELDS
from iso_host.core.issuer_scripts import overflow
from iso_host.core.scenarios import Scenario
from iso_host.core.terminals import NO_KEYS, TerminalState
from iso_host.core.test_cards import CardBook
from iso_host.errors import ConfigError
from iso_host.events.record import control_event
from iso_host.ledger.model import RecordEvent, SaveSession
from iso_host.money import format_amount
from iso_host.security import build_tlv, parse_tlv

INVALID_REQUEST_ID: Final = "invalid"  # the reply topic's last level when the request named no usable id
MAX_PAYLOAD_BYTES: Final = 65_536  # a scenario table is a few hundred bytes; this bounds every parse below
MAX_SHOWN_CHARS: Final = 60  # a bad value echoed in an error is cut here (a reply stays one short line)
MAX_CLOCK_SHIFT: Final = timedelta(days=36_525)  # 100 years either way: any test; far from datetime's limits
REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # one MQTT topic level, no wildcards, no slashes
_DIGIT_RUN: Final = re.compile(r"[0-9]{12,}")  # 12 digits is the shortest PAN (cards.PAN_MIN_DIGITS)


@dataclass(frozen=True, slots=True)
class ControlReply:
    """The reply, for ``<prefix>/control/replies/<request_id>``, and the events of the change it made."""

    request_id: str
    payload: dict[str, Any]
    events: tuple[RecordEvent, ...]  # empty for list-scenarios and for every failed command
    ledger: tuple[SaveSession, ...] = ()  # a change the ledger keeps (reset-keying, sign-off-terminal), with the events

    def __post_init__(self) -> None:
        assert REQUEST_ID.fullmatch(self.request_id), "the reply topic is one topic level"
        assert self.payload["ok"] or not self.events, "a failed command changes nothing"


class _Refused(Exception):
    """A bad request; the text is the reply's ``error``: ``<field>: <problem>``."""


@dataclass(frozen=True, slots=True)
class _Done:
    result: dict[str, Any]
    tid: str | None = None  # the terminal the change concerns, for the event's topic
    changed: bool = True  # False: nothing changed, so no event
    ledger: tuple[SaveSession, ...] = ()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _masked(value: Any) -> Any:
    """``value`` with every run of 12+ digits in its strings masked as a PAN is (first 6, last 4)."""
    if isinstance(value, str):
        return _DIGIT_RUN.sub(lambda match: mask_pan(match.group()), value)
    if isinstance(value, dict):
        return {_masked(key): _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


def _one_line(text: str) -> str:
    return "; ".join(line for line in text.splitlines() if line) or text


# ---------------------------------------------------------------------------------------------- the request


def _arguments(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _Refused(f"payload: {len(payload)} bytes is over the limit of {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise _Refused(f"payload: not UTF-8 text (byte {error.start})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        at = len(text[: error.pos].encode("utf-8"))
        raise _Refused(f"payload: not JSON: {error.msg} at byte {at}") from None
    except RecursionError:
        raise _Refused("payload: not JSON this host accepts: nested too deeply") from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise _Refused(f"payload: not JSON this host accepts: {error}") from None
    if not isinstance(document, dict):
        raise _Refused(f"payload: must be a JSON object, got {type(document).__name__}")
    return document


def _request_id(arguments: Mapping[str, Any]) -> str:
    if "request_id" not in arguments:
        raise _Refused("request_id: required (1 to 64 characters of A-Z a-z 0-9 _ . -)")
    value = arguments["request_id"]
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):
        raise _Refused(f"request_id: must be 1 to 64 characters of A-Z a-z 0-9 _ . -, got {_shown(value)}")
    return value


def _text(arguments: Mapping[str, Any], name: str, what: str) -> str:
    if name not in arguments:
        raise _Refused(f"{name}: required ({what})")
    value = arguments[name]
    if not isinstance(value, str) or not value:
        raise _Refused(f"{name}: must be {what}, got {_shown(value)}")
    return value


# ---------------------------------------------------------------------------------------------- scenarios


def _listed(scenario: Scenario, remaining: int | None) -> dict[str, Any]:
    """A scenario as replies show it: what it matches (the card only as yes/no) and what it does."""
    return {
        "name": scenario.name, "tid": scenario.tid, "kind": scenario.kind, "mti": scenario.mti,
        "amount_minor": scenario.amount_minor, "amount_cents": scenario.amount_cents, "respond": scenario.respond,
        "delay_ms": scenario.delay_ms, "no_reply": scenario.no_reply, "close": scenario.close,
        "bad_mac": scenario.bad_mac, "issuer_scripts": _scripts_listed(scenario.issuer_scripts),
        "times": scenario.times, "remaining": remaining, "card": scenario.pan_hash is not None,
    }  # fmt: skip


def _scripts_listed(scripts: bytes) -> dict[str, int] | None:
    """A scenario's issuer scripts as replies show them: each template (71, 72) with its size in bytes. Not the
    bytes: replies mask every run of 12 digits or more, which hex commands are full of."""
    if not scripts:
        return None
    return {item.tag: len(build_tlv([item])) for item in parse_tlv(scripts)}


def _scenario(controls: Controls, arguments: Mapping[str, Any]) -> Scenario:
    """The ``scenario`` argument as a scenario, validated as the config file's ``[[scenarios]]`` are, its PAN hashed."""
    try:
        parsed = scenario_from_table(arguments.get("scenario"), "scenario")
    except ConfigError as error:
        raise _Refused(_one_line(str(error))) from None
    scenario = parsed.scenario
    if scenario.tid is not None and scenario.tid not in controls.terminals:
        raise _Refused(f"scenario.tid: terminal {_shown(scenario.tid)} is not configured (it would never match)")
    too_long = overflow(scenario.issuer_scripts, controls.dialect) if controls.dialect is not None else None
    if too_long is not None:
        raise _Refused(f"scenario.script71/script72: {too_long}")
    if parsed.pan is not None:
        scenario = replace(scenario, pan_hash=controls.pan_hash(parsed.pan))
    return scenario


def _add_scenario(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    scenario = _scenario(controls, arguments)
    controls.scenarios.add(scenario)
    active = controls.scenarios.active()
    assert active[-1][0] is scenario, "a scenario is added last"
    return _Done({"added": _listed(*active[-1]), "active": len(active)}, tid=scenario.tid)


def _index(controls: Controls, arguments: Mapping[str, Any]) -> int:
    """The ``index`` argument: a place in list-scenarios' list, from 0, that holds a scenario now."""
    what = "a scenario's place in list-scenarios' list, from 0"
    if "index" not in arguments:
        raise _Refused(f"index: required ({what})")
    index = arguments["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise _Refused(f"index: must be {what}, got {_shown(index)}")
    count = len(controls.scenarios.active())
    if index >= count:
        held = f"0 to {count - 1}" if count else "none: there is no scenario"
        raise _Refused(f"index: no scenario at {index} (list-scenarios has {held})")
    return index


def _index_or_name(controls: Controls, arguments: Mapping[str, Any]) -> int:
    """The scenario ``index`` names, or the one scenario called ``name``: one of them, not both."""
    if "name" not in arguments:
        if "index" not in arguments:
            raise _Refused("index: required (a scenario's place in list-scenarios' list, from 0), or name")
        return _index(controls, arguments)
    if "index" in arguments:
        raise _Refused("index, name: give one of them, not both")
    name = _text(arguments, "name", "a scenario's name")
    places = [place for place, (scenario, _) in enumerate(controls.scenarios.active()) if scenario.name == name]
    if not places:
        raise _Refused(f"name: no scenario is named {_shown(name)}")
    if len(places) > 1:
        raise _Refused(f"name: {len(places)} scenarios are named {_shown(name)} (at {places}); give its index")
    return places[0]


def _remove_scenario(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    index = _index_or_name(controls, arguments)
    removed = controls.scenarios.remove(index)
    active = len(controls.scenarios.active())
    return _Done({"removed": _listed(*removed), "index": index, "active": active}, tid=removed[0].tid)


def _replace_scenario(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    """The scenario at ``index`` becomes ``scenario``, in the same place; its count of times starts again."""
    index = _index(controls, arguments)
    scenario = _scenario(controls, arguments)
    replaced = controls.scenarios.replace(index, scenario)
    active = controls.scenarios.active()
    assert active[index][0] is scenario, "a scenario is replaced in its place"
    result = {"replaced": _listed(*replaced), "scenario": _listed(*active[index]), "index": index,
              "active": len(active)}  # fmt: skip
    return _Done(result, tid=scenario.tid if scenario.tid is not None else replaced[0].tid)


def _list_scenarios(controls: Controls, _arguments: Mapping[str, Any]) -> _Done:
    listed = [_listed(scenario, remaining) for scenario, remaining in controls.scenarios.active()]
    return _Done({"scenarios": listed}, changed=False)


def _clear_scenarios(controls: Controls, _arguments: Mapping[str, Any]) -> _Done:
    cleared = controls.scenarios.clear()
    assert not controls.scenarios.active()
    return _Done({"cleared": cleared})


# ---------------------------------------------------------------------------------------------- terminals


def _switch_terminal(controls: Controls, arguments: Mapping[str, Any], *, enabled: bool) -> _Done:
    terminal = _terminal(controls, arguments)
    terminal.enabled = enabled
    return _Done({"tid": terminal.tid, "enabled": terminal.enabled}, tid=terminal.tid)


def _enable_terminal(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    return _switch_terminal(controls, arguments, enabled=True)


def _disable_terminal(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    return _switch_terminal(controls, arguments, enabled=False)


def _terminal(controls: Controls, arguments: Mapping[str, Any]) -> TerminalState:
    tid = _text(arguments, "tid", "a configured terminal's id (field 41)")
    terminal = controls.terminals.get(tid)
    if terminal is None:
        raise _Refused(f"tid: terminal {_shown(tid)} is not configured")
    return terminal


def _sign_off_terminal(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    """The operator's sign-off, as a terminal's own sign-off does it: its session ends (keys forgotten, next request
    needs a sign-on where the dialect asks for one) but a keyed terminal stays keyed, its MACs still mandatory. In
    memory now, in the ledger with the event, so that a restart does not restore the session."""
    terminal = _terminal(controls, arguments)
    was_signed_on = terminal.signed_on
    terminal.signed_on, terminal.session_keys, terminal.operator = False, NO_KEYS, None
    session = SaveSession(terminal.tid, terminal.mid, False, terminal.batch_number, None, None, None, None,
                          at=controls.clock())  # fmt: skip
    result = {"tid": terminal.tid, "signed_on": False, "was_signed_on": was_signed_on, "keyed": terminal.keyed}
    return _Done(result, tid=terminal.tid, ledger=(session,))


def _reset_keying(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    """The operator's reset of a keyed terminal: its session ends (keys forgotten) and its MACs are optional again
    under the dialect's "when-keyed" policy until it next signs on. In memory now, in the ledger with the event."""
    terminal = _terminal(controls, arguments)
    tid = terminal.tid
    terminal.signed_on, terminal.session_keys, terminal.operator, terminal.keyed = False, NO_KEYS, None, False
    session = SaveSession(tid, terminal.mid, False, terminal.batch_number, None, None, None, None,
                          at=controls.clock(), keyed=False)  # fmt: skip
    return _Done({"tid": tid, "keyed": False, "signed_on": False}, tid=tid, ledger=(session,))


# ---------------------------------------------------------------------------------------------- the clock


def _clock_result(clock: HostClock) -> dict[str, Any]:
    return {"now": clock().isoformat(), "offset_s": clock.offset.total_seconds()}


def _set_clock(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    what = 'an ISO 8601 time with a UTC offset, such as "2026-11-27T09:00:00+08:00", or "now"'
    raw = _text(arguments, "time", what)
    clock = controls.clock
    if raw == "now":
        clock.reset()
        return _Done(_clock_result(clock))
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise _Refused(f"time: must be {what}, got {_shown(raw)}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _Refused(f"time: needs a UTC offset (such as +08:00 or Z), got {_shown(raw)}")
    try:
        offset = moment - (clock() - clock.offset)
    except OverflowError:
        offset = MAX_CLOCK_SHIFT * 2
    if abs(offset) > MAX_CLOCK_SHIFT:
        raise _Refused(f"time: must be within 100 years of the machine's time, got {_shown(raw)}")
    clock.set(moment)
    return _Done(_clock_result(clock))


def _advance_clock(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    if "seconds" not in arguments:
        raise _Refused("seconds: required (a number of seconds; negative goes back)")
    raw = arguments["seconds"]
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _Refused(f"seconds: must be a finite number of seconds, got {_shown(raw)}")
    limit_s = MAX_CLOCK_SHIFT.total_seconds()
    if abs(raw) > limit_s:
        raise _Refused(f"seconds: must be at most {limit_s:.0f} (100 years) either way, got {_shown(raw)}")
    delta = timedelta(seconds=raw)
    if abs(controls.clock.offset + delta) > MAX_CLOCK_SHIFT:
        raise _Refused("seconds: would put the host's time more than 100 years from the machine's")
    controls.clock.advance(delta)
    return _Done(_clock_result(controls.clock))


# ---------------------------------------------------------------------------------------------- cards


def _reload_cards(controls: Controls, _arguments: Mapping[str, Any]) -> _Done:
    if controls.reload_cards is None:
        raise _Refused("reload-cards: the host was started without --config; there is no [[cards]] file to reload")
    try:
        count = controls.reload_cards()
    except ConfigError as error:
        raise _Refused(_one_line(str(error))) from None
    assert count >= 0
    return _Done({"cards": count})


def _optional_amount(minor: int | None) -> str | None:
    return format_amount(minor) if minor is not None else None


def _card_book(controls: Controls, command: str) -> CardBook:
    if controls.cards is None:
        raise _Refused(f"{command}: this host's live control was not given its test cards")
    return controls.cards


def _add_card(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    """A test card from a table like ``[[cards]]``, checked as the config file's are; a card of the same PAN is
    replaced (its balance starts again). Only its masked PAN comes back."""
    cards = _card_book(controls, "add-card")
    table = arguments.get("card")
    if not isinstance(table, dict):
        raise _Refused("card: required (a table like [[cards]]: pan, balance, limit, status, expiry, pin, imk)")
    problems = Problems("card")
    entry = card_entry(problems, 0, table)
    if problems.lines or entry is None:
        first = problems.lines[0] if problems.lines else "card: not a card"
        raise _Refused(first.removeprefix("card: ").replace("cards[0]", "card", 1))
    replaced = cards.put(entry.pan, entry.test_card())
    return _Done({"card": mask_pan(entry.pan), "replaced": replaced, "cards": len(cards)})


def _remove_card(controls: Controls, arguments: Mapping[str, Any]) -> _Done:
    """The card at ``index`` of list-cards' list."""
    cards = _card_book(controls, "remove-card")
    index = arguments.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise _Refused(f"index: must be the card's position in list-cards' list, got {_shown(index)}")
    removed = cards.remove_at(index)
    if removed is None:
        raise _Refused(f"index: no card at {index} (there are {len(cards)})")
    return _Done({"removed": removed, "cards": len(cards)})


def _list_cards(controls: Controls, _arguments: Mapping[str, Any]) -> _Done:
    """The test cards as the console's cards view shows them: the masked PAN, never the clear one, nor the PIN or
    the IMK (only whether there is one); amounts as text, ``None`` for unlimited."""
    cards = _card_book(controls, "list-cards")
    now = controls.clock()
    listed = [
        {"pan": masked, "status": card.status, "expiry": card.expiry, "balance": _optional_amount(card.balance_minor),
         "available": _optional_amount(card.available_minor(now)), "limit": _optional_amount(card.limit_minor),
         "has_pin": card.pin is not None, "has_imk": card.imk is not None,
         "emv_scheme": card.emv_scheme if card.imk is not None else None}
        for masked, card in cards.listing()
    ]  # fmt: skip
    return _Done({"cards": listed}, changed=False)


# ---------------------------------------------------------------------------------------------- dispatch


@dataclass(frozen=True, slots=True)
class _Command:
    run: Callable[[Controls, Mapping[str, Any]], _Done]
    arguments: frozenset[str]  # besides request_id


COMMANDS: Final[Mapping[str, _Command]] = {
    "add-scenario": _Command(_add_scenario, frozenset({"scenario"})),
    "list-scenarios": _Command(_list_scenarios, frozenset()),
    "remove-scenario": _Command(_remove_scenario, frozenset({"index", "name"})),
    "replace-scenario": _Command(_replace_scenario, frozenset({"index", "scenario"})),
    "clear-scenarios": _Command(_clear_scenarios, frozenset()),
    "enable-terminal": _Command(_enable_terminal, frozenset({"tid"})),
    "disable-terminal": _Command(_disable_terminal, frozenset({"tid"})),
    "sign-off-terminal": _Command(_sign_off_terminal, frozenset({"tid"})),
    "reset-keying": _Command(_reset_keying, frozenset({"tid"})),
    "set-clock": _Command(_set_clock, frozenset({"time"})),
    "advance-clock": _Command(_advance_clock, frozenset({"seconds"})),
    "reload-cards": _Command(_reload_cards, frozenset()),
    "list-cards": _Command(_list_cards, frozenset()),
    "add-card": _Command(_add_card, frozenset({"card"})),
    "remove-card": _Command(_remove_card, frozenset({"index"})),
}
READ_ONLY: Final = frozenset({"list-scenarios", "list-cards"})  # the commands that change nothing (no event)


def _command(command: str, arguments: Mapping[str, Any]) -> _Command:
    spec = COMMANDS.get(command)
    if spec is None:
        known = ", ".join(sorted(COMMANDS))
        raise _Refused(f"command: unknown command {_shown(command)} (expected one of {known})")
    allowed = spec.arguments | {"request_id"} | SIGNED_FIELDS  # ts and nonce: checked by the signature (signing.py)
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed - SIGNED_FIELDS))
        raise _Refused("; ".join(f"{name}: unknown argument (expected one of {expected})" for name in unknown))
    return spec


def _reply(command: str, request_id: str, body: dict[str, Any], events: tuple[RecordEvent, ...] = ()) -> ControlReply:
    payload = {"request_id": request_id, "command": _masked(command[:MAX_SHOWN_CHARS])}
    payload |= _masked(body)
    return ControlReply(request_id, payload, events)


def failed(reply: ControlReply, error: str) -> ControlReply:
    """The ``ok: false`` reply for ``error`` instead of ``reply`` (its change could not be recorded): same id, same
    command, no events."""
    return _reply(reply.payload["command"], reply.request_id, {"ok": False, "error": error})


def failure_reply(command: str, payload: bytes, error: str) -> ControlReply:
    """An ``ok: false`` reply for ``error``, to the request's id when it carries a usable one (for the edge)."""
    try:
        request_id = _request_id(_arguments(payload))
    except _Refused:
        request_id = INVALID_REQUEST_ID
    return _reply(command, request_id, {"ok": False, "error": error})


def execute(controls: Controls, command: str, payload: bytes) -> ControlReply:
    """Carry out one control request (``command`` is the topic's last level, ``payload`` the message's bytes).

    Never raises for a bad request: it gets an ``ok: false`` reply whose ``error`` names the field. A change
    made comes back as one control event, for the caller to commit to the outbox.
    """
    request_id = INVALID_REQUEST_ID
    try:
        arguments = _arguments(payload)
        request_id = _request_id(arguments)
        spec = _command(command, arguments)
        done = spec.run(controls, arguments)
    except _Refused as refused:
        return _reply(command, request_id, {"ok": False, "error": str(refused)})
    result = _masked(done.result)
    events: tuple[RecordEvent, ...] = ()
    if done.changed:
        now = controls.clock()
        events = (control_event(now=now, command=command, request_id=request_id, detail=result, tid=done.tid),)
    reply = _reply(command, request_id, {"ok": True, "result": result}, events)
    return replace(reply, ledger=done.ledger) if done.ledger else reply
