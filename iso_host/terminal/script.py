"""`iso-host terminal run SESSION.toml`: a scripted session, its steps run in order, each checked.

A session file has an optional ``[session]`` (name, dialect, tid, mid) and ``[[steps]]``: an action of the
terminal command with its parameters, ``expect`` (field → check) and ``capture`` (name → field, used by later
steps as ``{name}``). The whole file is checked before anything is sent, every bad key reported as
``FILE: steps[2].expect.39: ...``. The steps run over one connection through the same ``Session`` and actions
as ``iso-host terminal sale|void|...``: the STAN, batch and keys live in the terminal's state file.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import string
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from iso_host.cards import NOT_SHOWN_FIELDS, displayed
from iso_host.errors import ConfigError, IsoHostError
from iso_host.money import parse_amount
from iso_host.security import EMV_SCHEMES
from iso_host.security.emv import ICC_KEY_BYTES
from iso_host.terminal import junit
from iso_host.terminal.client import TerminalClient
from iso_host.terminal.context import Params, Session, open_session
from iso_host.terminal.session import ACTIONS
from iso_host.wire import Dialect, Message, load_dialect

PASSED, FAILED, ERROR = "passed", "failed", "error"
IMK_HEX_DIGITS: Final = 2 * ICC_KEY_BYTES
PSN_DIGITS: Final = 2
MAX_WAIT_MS: Final = 600_000  # a session is a test, not a scheduler
# A sale or pre-auth read from the chip: imk (the card's IMK-AC, as --chip --imk), and its scheme and PSN.
CHIP_PARAMS: Final = ("imk", "emv_scheme", "psn")
ACTION_PARAMS: Final[dict[str, frozenset[str]]] = {
    "signon": frozenset({"operator"}), "signoff": frozenset(), "echo": frozenset(),
    "sale": frozenset({"amount", "pan", "pin", "expiry", *CHIP_PARAMS}), "balance": frozenset({"pan", "pin", "expiry"}),
    "void": frozenset({"stan", "rrn", "operator"}),
    "reversal": frozenset({"stan", "rrn"}), "refund": frozenset({"amount", "stan", "rrn"}), "settle": frozenset(),
    "raw": frozenset({"hex"}), "wait": frozenset({"ms"}),
    "preauth": frozenset({"amount", "pan", "pin", "expiry", *CHIP_PARAMS}),
    "preauth_void": frozenset({"stan", "rrn", "auth_code", "date", "amount", "pan", "operator"}),
    "completion": frozenset({"amount", "stan", "rrn", "auth_code", "date", "pan"}),
    "completion_void": frozenset({"stan", "rrn", "operator"}),
    "adjust": frozenset({"amount", "stan", "rrn"}), "tip": frozenset({"amount", "stan", "rrn"}),
    "send": frozenset({"template", "amount", "pan", "expiry"}), "ic_download": frozenset(),
    "parameter_download": frozenset(),
}  # fmt: skip
REQUIRED_PARAMS: Final = {"sale": ("amount",), "refund": ("amount",), "raw": ("hex",), "wait": ("ms",)}
REQUIRED_PARAMS.update({"preauth": ("amount",), "completion": ("amount",), "send": ("template",)})
REQUIRED_PARAMS.update({"adjust": ("amount",), "tip": ("amount",)})
NEEDS_ORIGINAL: Final = frozenset({"void", "reversal", "refund", "adjust", "tip"})
# The pre-auth family names its original by stan, rrn or (a pre-auth not in this batch) auth_code: one of them.
NEEDS_ORIGINAL_OR_CODE: Final = frozenset({"preauth_void", "completion", "completion_void"})
TERMINAL_ACTION: Final = {"reversal": "reverse"}  # where a step's action and the command's differ
TERMINAL_ACTION.update({"preauth_void": "preauth-void", "completion": "complete", "completion_void": "complete-void",
                        "ic_download": "ic-download", "parameter_download": "parameter-download"})
STEP_KEYS: Final = frozenset({"action", "name", "expect", "capture"})
SESSION_KEYS: Final = ("dialect", "mid", "name", "tid")
CONNECTION: Final = "connection"  # raw steps only: "open" when the host answered, "closed" when it hung up
PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
CAPTURE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FIELD_ID: Final = re.compile(r"(?P<head>[0-9]{1,3})(?:\.(?P<sub>[A-Za-z0-9_]+))?")
CHECK_HELP: Final = 'expected a string, { equals = "00" }, { present = true }, { absent = true } or { regex = "..." }'


@dataclass(frozen=True, slots=True)
class Expectation:
    field: str
    check: str  # equals, present, absent or regex (present = false is read as absent, absent = false as present)
    value: str = ""  # equals: the text (may hold {captures}); regex: the pattern
    pattern: re.Pattern[str] | None = None

    def failure(self, actual: str | None, captures: Mapping[str, str]) -> str | None:
        """What went wrong, with F2 masked and secrets not shown; None when the expectation holds."""
        if self.check in ("present", "absent"):
            holds, wanted = (actual is not None) == (self.check == "present"), self.check
        elif self.pattern is not None:
            holds = actual is not None and self.pattern.search(actual) is not None
            wanted = "[not shown]" if _head(self.field) in NOT_SHOWN_FIELDS else f"to match '{self.value}'"
        else:
            text = substitute(self.value, captures)
            holds, wanted = actual == text, _shown(self.field, text)
        got = "absent" if actual is None else _shown(self.field, actual)
        return None if holds else f"field {self.field}: expected {wanted}, got {got}"


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    action: str
    name: str
    params: Mapping[str, str]  # as written: {captures} are substituted when the step runs
    wait_ms: int
    expect: tuple[Expectation, ...]
    capture: Mapping[str, str]  # capture name -> field id

    @property
    def title(self) -> str:
        return f"steps[{self.index}] {self.action}" + (f" {self.name!r}" if self.name else "")


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    name: str
    dialect: Dialect
    tid: str | None  # None: --tid (and --mid) from the command line
    mid: str | None
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Result:
    step: Step
    outcome: str  # PASSED, FAILED or ERROR
    detail: str  # what the step got, or what went wrong: masked, never a secret
    latency_ms: float

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    def line(self) -> str:
        if self.passed:
            return f"ok   {self.step.title}: {self.detail}, {self.latency_ms:.1f} ms"
        return f"FAIL {self.step.title}: {self.detail}"


def substitute(text: str, captures: Mapping[str, str]) -> str:
    """``{name}`` replaced by the value captured under that name (the file check made sure there is one)."""
    return PLACEHOLDER.sub(lambda match: captures[match.group(1)], text)


def _head(field_id: str) -> str:
    return field_id.partition(".")[0]


def _shown(field_id: str, value: str) -> str:
    shown = displayed(field_id, value)
    return shown if shown == "[not shown]" else repr(shown)


def load_script(path: str, default_dialect: str) -> Script:
    """Read and check a session file (``default_dialect`` unless ``[session]`` names one).

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has bad keys (one line per bad key).
    """
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read session file: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    header = document.get("session", {})
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: session: expected a table ({', '.join(SESSION_KEYS)})")
    for key, value in header.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: session.{key}: expected a non-empty string, got {value!r}")
    try:
        dialect = load_dialect(header.get("dialect", default_dialect))
    except ConfigError as error:
        raise ConfigError(f"{path}: session.dialect: {error}") from None
    checker = _Checker(path, dialect)
    steps = checker.script(document)
    if checker.problems:
        raise ConfigError("\n".join(checker.problems))
    return Script(path, header.get("name", Path(path).stem), dialect, header.get("tid"), header.get("mid"), steps)


class _Checker:
    """Checks a session file's steps, noting every problem as ``FILE: KEY: PROBLEM``."""

    def __init__(self, source: str, dialect: Dialect) -> None:
        self.source, self.dialect = source, dialect
        self.problems: list[str] = []
        self.captured: set[str] = set()  # names captured by the steps checked so far

    def add(self, key: str, problem: str) -> None:
        self.problems.append(f"{self.source}: {key}: {problem}")

    def script(self, document: dict[str, Any]) -> tuple[Step, ...]:
        for key in sorted(set(document) - {"session", "steps"}):
            self.add(key, "unknown key (a session file has [session] and [[steps]])")
        for key in sorted(set(document.get("session", {})) - set(SESSION_KEYS)):
            self.add(f"session.{key}", f"unknown key (expected {', '.join(SESSION_KEYS)})")
        tables = document.get("steps")
        if not isinstance(tables, list) or not tables:
            self.add("steps", "expected at least one [[steps]] table")
            return ()
        return tuple(step for index, table in enumerate(tables) if (step := self.step(index, table)) is not None)

    def step(self, index: int, table: Any) -> Step | None:
        where = f"steps[{index}]"
        action = table.get("action") if isinstance(table, dict) else None
        if not isinstance(table, dict) or action not in ACTION_PARAMS:
            self.add(f"{where}.action", f"expected one of {', '.join(ACTION_PARAMS)}, got {action!r}")
            return None
        allowed = STEP_KEYS | ACTION_PARAMS[action]
        for key in sorted(set(table) - allowed):
            self.add(f"{where}.{key}", f"not a key of a {action} step (expected {', '.join(sorted(allowed))})")
        for key in REQUIRED_PARAMS.get(action, ()):
            if key not in table:
                self.add(f"{where}.{key}", f"a {action} step needs {key}")
        if action in NEEDS_ORIGINAL and ("stan" in table) == ("rrn" in table):
            self.add(f"{where}.stan", f"a {action} step names its original by stan or by rrn (one of them)")
        if action in NEEDS_ORIGINAL_OR_CODE and sum(key in table for key in ("stan", "rrn", "auth_code")) != 1:
            self.add(f"{where}.stan", f"a {action} step names its original by stan, rrn or auth_code (one of them)")
        name = table.get("name", "")
        if not isinstance(name, str):
            self.add(f"{where}.name", f"expected a string, got {name!r}")
        wait_ms = table.get("ms", 0)
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not 0 <= wait_ms <= MAX_WAIT_MS:
            self.add(f"{where}.ms", f"expected milliseconds 0..{MAX_WAIT_MS}, got {wait_ms!r}")
        strings = (ACTION_PARAMS[action] - {"ms"}) & set(table)
        params = {key: self.param(f"{where}.{key}", key, table[key]) for key in sorted(strings)}
        expect, capture = table.get("expect", {}), table.get("capture", {})
        if action == "wait" and (expect or capture):
            self.add(where, "a wait step gets no response to expect or capture anything of")
        expectations = self.expectations(f"{where}.expect", action, expect)
        captures = self.captures(f"{where}.capture", action, capture)
        self.captured.update(captures)  # for the steps after this one
        return Step(index, action, str(name), params, int(wait_ms), expectations, captures)

    def param(self, key: str, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            self.add(key, f"expected a non-empty string, got {'a non-string PIN' if name == 'pin' else repr(value)}")
            return ""
        self.placeholders(key, value)
        if name == "amount" and not PLACEHOLDER.search(value) and not _parses(parse_amount, value):
            self.add(key, f'expected an amount such as "12.34", got {value!r}')
        if name in CHIP_PARAMS:
            self.chip_param(key, name, value)
        if name == "hex" and not PLACEHOLDER.search(value) and not (value.strip() and _parses(bytes.fromhex, value)):
            self.add(key, "expected the whole frame as hex digits (length header included)")
        return value

    def chip_param(self, key: str, name: str, value: str) -> None:
        """A chip card's parameter as --imk, --emv-scheme and --psn take it (the key itself never echoed)."""
        if name == "imk" and not (len(value) == IMK_HEX_DIGITS and all(c in string.hexdigits for c in value)):
            self.add(key, f"expected {IMK_HEX_DIGITS} hex digits (the card's double-length IMK-AC)")
        elif name == "emv_scheme" and value not in EMV_SCHEMES:
            self.add(key, f"expected one of {', '.join(EMV_SCHEMES)}, got {value!r}")
        elif name == "psn" and not (len(value) == PSN_DIGITS and value.isdigit()):
            self.add(key, f"expected the PAN sequence number as {PSN_DIGITS} digits, got {value!r}")

    def placeholders(self, key: str, text: str) -> None:
        for name in PLACEHOLDER.findall(text):
            if name not in self.captured:
                self.add(key, f"{{{name}}} is not captured by an earlier step")

    def field(self, key: str, field_id: Any, action: str) -> bool:
        """Whether ``field_id`` names something a response of this step can have."""
        if field_id in ("mti", CONNECTION):
            if field_id == CONNECTION and action != "raw":
                self.add(key, "only a raw step can expect the connection")
            return field_id == "mti" or action == "raw"
        match = FIELD_ID.fullmatch(field_id) if isinstance(field_id, str) else None
        if match is None or not 2 <= int(match["head"]) <= 128:
            self.add(key, f'expected a field id ("39", "60.3") or "mti", got {field_id!r}')
            return False
        if match["sub"] and match["sub"] not in [name for name, _ in self.dialect.subfields.get(match["head"], ())]:
            self.add(key, f"dialect {self.dialect.name} has no sub-field {field_id}")
            return False
        return True

    def expectations(self, where: str, action: str, table: Any) -> tuple[Expectation, ...]:
        if not isinstance(table, dict):
            self.add(where, 'expected a table such as { "39" = "00" }')
            return ()
        found = [self.expectation(f"{where}.{field_id}", field_id, check) for field_id, check in table.items()
                 if self.field(f"{where}.{field_id}", field_id, action)]  # fmt: skip
        return tuple(expectation for expectation in found if expectation is not None)

    def expectation(self, key: str, field_id: str, check: Any) -> Expectation | None:
        kind, value = next(iter(check.items())) if isinstance(check, dict) and len(check) == 1 else ("equals", check)
        if kind in ("present", "absent") and isinstance(value, bool) and field_id != CONNECTION:
            return Expectation(field_id, "present" if (kind == "present") == value else "absent")
        if kind not in ("equals", "regex") or not isinstance(value, str):
            self.add(key, CHECK_HELP + ("" if field_id != CONNECTION else ' (the connection: "open" or "closed")'))
            return None
        if kind == "regex":
            try:
                return Expectation(field_id, "regex", value, re.compile(value))
            except re.error as error:
                self.add(f"{key}.regex", f"not a regular expression: {error}")
                return None
        if field_id == CONNECTION and value not in ("open", "closed"):
            self.add(key, f'expected "open" or "closed", got {value!r}')
        self.placeholders(key, value)
        return Expectation(field_id, "equals", value)

    def captures(self, where: str, action: str, table: Any) -> dict[str, str]:
        if not isinstance(table, dict):
            self.add(where, 'expected a table such as { sale_rrn = "37" }')
            return {}
        captures: dict[str, str] = {}
        for name, field_id in table.items():
            if not CAPTURE_NAME.fullmatch(name):
                self.add(f"{where}.{name}", "a capture name is letters, digits and _, not starting with a digit")
            elif field_id == CONNECTION:
                self.add(f"{where}.{name}", "the connection cannot be captured")
            elif self.field(f"{where}.{name}", field_id, action):
                captures[name] = field_id
        return captures


def _parses(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except (ConfigError, ValueError):
        return False
    return True


def _actual(field_id: str, response: Message | None, dialect: Dialect) -> str | None:
    if field_id == CONNECTION:
        return "closed" if response is None else "open"
    if response is None:
        return None
    return response.mti if field_id == "mti" else dialect.value_of(response, field_id)


def _host_closed(client: TerminalClient) -> bool:
    """Whether the host has hung up. TerminalClient has no public way to ask yet, so its streams are read."""
    reader: asyncio.StreamReader | None = getattr(client, "_reader", None)
    writer: asyncio.StreamWriter | None = getattr(client, "_writer", None)
    return writer is None or writer.is_closing() or (reader is not None and reader.at_eof())


async def _raw(session: Session, text: str) -> Message | None:
    """Send a whole frame as it is and decode the answer; None when the host closed without answering."""
    try:
        frame = bytes.fromhex(text)
    except ValueError:
        raise ConfigError("hex: not hex digits once the captures are substituted") from None
    client = session.client
    try:
        await client.send_raw(frame)
        reply = await client.receive_frame(session.timeout_s)
    except IsoHostError:
        await asyncio.sleep(0)  # let the event loop see the close
        if _host_closed(client):
            return None
        raise
    return client.decode_response(reply)


async def _exchange(step: Step, session: Session, captures: Mapping[str, str]) -> Message | None:
    """Run one step: the response, or None after a wait or when the host hung up on a raw frame."""
    if step.action == "wait":
        await asyncio.sleep(step.wait_ms / 1000)
        return None
    values = {key: substitute(text, captures) for key, text in step.params.items()}
    if step.action == "raw":
        return await _raw(session, values["hex"])
    if (stan := values.get("stan")) is not None and stan.isdigit():
        values["stan"] = stan.zfill(6)
    return await ACTIONS[TERMINAL_ACTION.get(step.action, step.action)](session, Params(**values))


def _verdict(step: Step, response: Message | None, dialect: Dialect, captures: dict[str, str]) -> tuple[str, str]:
    """(outcome, detail) of a step that got ``response``; on success its captures are kept."""
    expect = step.expect
    if step.action == "raw" and all(e.field != CONNECTION for e in expect):
        expect = (Expectation(CONNECTION, "equals", "open"), *expect)  # a hang-up is only fine when expected
    for expectation in expect:
        if (failure := expectation.failure(_actual(expectation.field, response, dialect), captures)) is not None:
            return FAILED, failure
    for name, field_id in step.capture.items():
        if (value := _actual(field_id, response, dialect)) is None:
            return FAILED, f"field {field_id}: absent, so nothing to capture as {name}"
        captures[name] = value
    if response is None:
        return PASSED, "waited" if step.action == "wait" else "connection closed by the host"
    code = response.fields.get("39")
    return PASSED, f"{response.mti} response code {code}" if code else f"{response.mti} without field 39"


async def run_step(step: Step, session: Session, captures: dict[str, str]) -> Result:
    started = time.perf_counter()
    try:
        if step.action != "wait":
            await asyncio.sleep(0)  # let the event loop see a hang-up since the last step
            if _host_closed(session.client):
                await session.connect()
        started = time.perf_counter()
        response = await _exchange(step, session, captures)
    except IsoHostError as error:  # ClientError, ConfigError (no such original), WireError (a bad parameter)
        return Result(step, ERROR, f"error: {error}", (time.perf_counter() - started) * 1000)
    latency_ms = (time.perf_counter() - started) * 1000
    outcome, detail = _verdict(step, response, session.dialect, captures)
    return Result(step, outcome, detail, latency_ms)


def junit_cases(script: Script, results: Sequence[Result]) -> list[junit.Case]:
    """One testcase per step: a failure or an error on the failed one, skipped for the ones after it."""
    by_index = {result.step.index: result for result in results}
    cases = []
    for step in script.steps:
        result = by_index.get(step.index)
        if result is None:
            cases.append(junit.Case(script.name, step.title, junit.SKIPPED, message="not run: an earlier step failed"))
            continue
        outcome = junit.PASSED if result.passed else (junit.FAILURE if result.outcome == FAILED else junit.ERROR)
        cases.append(junit.Case(script.name, step.title, outcome, result.latency_ms / 1000,
                                kind="" if result.passed else result.outcome,
                                message="" if result.passed else result.detail))  # fmt: skip
    return cases


def write_junit(path: Path, script: Script, results: Sequence[Result]) -> None:
    """``--junit``: the layout ``replay --junit`` writes too (``terminal/junit.py``)."""
    junit.write_junit(path, script.name, junit_cases(script, results))


async def run_session(args: argparse.Namespace) -> bool:
    """``iso-host terminal run``: whether every step passed (it stops at the first that does not)."""
    script = load_script(args.session, args.dialect)
    tid, mid = script.tid or args.tid, script.mid or args.mid
    session = open_session(args, script.dialect, tid, mid)
    print(f"session {script.name!r}: {len(script.steps)} steps, terminal {tid} ({script.dialect.name}) to {args.to}")
    await session.connect()
    captures: dict[str, str] = {}
    results: list[Result] = []
    try:
        for step in script.steps:  # in order, until one fails
            results.append(result := await run_step(step, session, captures))
            print(result.line(), file=sys.stdout if result.passed else sys.stderr, flush=True)
            if not result.passed:
                break
    finally:
        await session.client.close()
        session.state.save(session.state_path)
    if args.junit:
        write_junit(Path(args.junit), script, results)
    return len(results) == len(script.steps) and all(result.passed for result in results)
