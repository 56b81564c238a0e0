"""Issuer scripts by scenario, as tables: what ``script71`` / ``script72`` may hold (one line naming the key for
anything else), how the host wraps and appends them to the reply's field 55, the dialect's room for them, the scenario
that carries them (config file and live control), and the terminal reading them back. Pure: no socket, no ledger.

The script is an EMV Book 3 style one: identifier 9F18 11223344, then two command APDUs: APPLICATION BLOCK
(84 1E 00 00, Lc 04, a 4-byte MAC) and PUT DATA (04 DA 9F 58, Lc 05: data 01 then the MAC).
"""

from __future__ import annotations

import json
from typing import Final

import pytest
from core_tables import DIALECTS
from hypothesis import given
from hypothesis import strategies as st
from test_control_commands import make_controls, run

from iso_host.app import check_for_dialect
from iso_host.config import parse_config
from iso_host.core.flows import Decision
from iso_host.core.issuer_scripts import (
    TAG_91_MAX_BYTES,
    ScriptError,
    chip_field_bytes,
    overflow,
    script_commands,
    with_issuer_scripts,
    wrapped,
)
from iso_host.core.scenarios import Scenario, ScenarioBook
from iso_host.errors import ConfigError
from iso_host.security import TlvItem, build_tlv
from iso_host.terminal.chip import ChipError, IssuerScript, issuer_authentication, issuer_scripts
from iso_host.vocab import Reason
from iso_host.wire import Message

BLOCK: Final = "841E000004" "A1B2C3D4"  # APPLICATION BLOCK with its 4-byte MAC
PUT_DATA: Final = "04DA9F5805" "01" "A1B2C3D4"  # PUT DATA 9F58 = 01 (lower consecutive offline limit), MAC
SCRIPT: Final = "9F1804" "11223344" "8609" + BLOCK + "860A" + PUT_DATA  # 30 bytes: id, then two commands
TAG_91: Final = "910A" "28993816AFAE4AEB" "3030"


@pytest.mark.parametrize("template", ["71", "72"])
@pytest.mark.parametrize(
    "contents",
    [SCRIPT, "8609" + BLOCK, "8604" "84180000", "8609" + BLOCK + "860A" + PUT_DATA],
    ids=["id-and-two", "one-command", "shortest-command", "two-commands"],
)
def test_a_script_is_wrapped_in_its_template(template: str, contents: str) -> None:
    """The contents as given, checked, then wrapped by the host: tag, length, contents."""
    data = script_commands(template, contents)
    assert data == bytes.fromhex(contents)
    assert wrapped({template: data}) == bytes.fromhex(template) + bytes([len(data)]) + data


def test_71_comes_before_72() -> None:
    assert wrapped({"72": b"\x86\x04\x84\x18\x00\x00", "71": b"\x86\x04\x84\x16\x00\x00"}).hex().upper() == (
        "7106" "860484160000" "7206" "860484180000"
    )


BAD_SCRIPTS = [
    pytest.param("", "must be hex: an optional 9F18 then 86 commands, got ''", id="empty"),
    pytest.param(7, "must be hex: an optional 9F18 then 86 commands, got 7", id="number"),
    pytest.param("86 04", "character 2 is not a hex digit", id="space"),
    pytest.param("86048418000", "11 hex digits are not whole bytes", id="odd"),
    pytest.param("8609841E", "not EMV TLV: tag 86 at byte 1: length 9 runs past the end of the data (2 byte(s) left)",
                 id="short"),
    pytest.param("9F180411223344", "holds no script command (tag 86)", id="no-command"),
    pytest.param("8603841E00", "tag 86 at byte 0: a command APDU has at least 4 bytes (CLA INS P1 P2)",
                 id="short-apdu"),
    pytest.param("8604841E0000" "9F180411223344", "tag 9F18 at byte 6: the script identifier comes first, once",
                 id="id-late"),
    pytest.param("9F1802" "1122" "8604841E0000", "tag 9F18 at byte 0: must be 4 bytes, got 2", id="id-short"),
    pytest.param("9F2701" "80", "tag 9F27 at byte 0: a script holds 9F18 and 86 only", id="other-tag"),
    pytest.param("7206" "8604841E0000", "tag 72 at byte 0: give the template's contents (9F18, 86 ...); the host"
                 " wraps them in 72", id="whole-template"),
]  # fmt: skip


@pytest.mark.parametrize(("contents", "problem"), BAD_SCRIPTS)
def test_a_bad_script_is_one_line_naming_what_is_wrong(contents: object, problem: str) -> None:
    with pytest.raises(ScriptError) as caught:
        script_commands("72", contents)
    assert str(caught.value) == problem


@given(st.binary(max_size=64))
def test_any_bytes_are_a_script_or_a_script_error(data: bytes) -> None:
    """Whatever the hex, the check answers with the bytes or with ScriptError, never another exception."""
    try:
        checked: bytes | str = script_commands("71", data.hex())
    except ScriptError as error:
        checked = str(error)
    assert checked == data or (isinstance(checked, str) and "\n" not in checked)


COMMANDS: Final = st.lists(st.binary(min_size=4, max_size=40), min_size=1, max_size=4)


SCRIPT_IDS: Final = st.none() | st.binary(min_size=4, max_size=4)


@given(script_id=SCRIPT_IDS, commands=COMMANDS, template=st.sampled_from(["71", "72"]))
def test_scripts_go_out_and_come_back(script_id: bytes | None, commands: list[bytes], template: str) -> None:
    """What a scenario gives, appended after tag 91 by the host, is what the terminal reads back, tag 91 intact."""
    items = ([TlvItem("9F18", script_id)] if script_id is not None else []) + [TlvItem("86", c) for c in commands]
    contents = script_commands(template, build_tlv(items).hex())
    decision = with_issuer_scripts(Decision(Reason.APPROVED, {"55": TAG_91}), wrapped({template: contents}))
    reply = Message("0210", decision.fields)
    assert issuer_authentication(reply) == bytes.fromhex(TAG_91)[2:]
    assert issuer_scripts(reply) == (IssuerScript(template, script_id, tuple(commands)),)


def test_scripts_without_tag_91_stand_alone() -> None:
    """A reply without an ARPC (a card without an IMK, a forced decline) carries the scripts alone."""
    scripts = wrapped({"72": bytes.fromhex(SCRIPT)})
    decision = with_issuer_scripts(Decision(Reason.FORCED_DECLINE, {"12": "120000"}), scripts)
    assert decision.fields == {"12": "120000", "55": scripts.hex().upper()}
    assert with_issuer_scripts(decision, b"") is decision


def test_the_terminal_describes_each_script() -> None:
    reply = Message("0210", {"55": TAG_91 + wrapped({"72": bytes.fromhex(SCRIPT)}).hex().upper()})
    (script,) = issuer_scripts(reply)
    assert script.describe() == f"issuer script 72 id 11223344: {BLOCK}, {PUT_DATA}"
    with pytest.raises(ChipError, match="issuer script 71 holds tag 9F27"):
        issuer_scripts(Message("0210", {"55": "7103" "9F2700"}))


# ------------------------------------------------------------------------------------- room in field 55


@pytest.mark.parametrize(
    ("dialect_name", "capacity"),
    [("cup", 255), ("iso87binary", 255), ("iso87ascii", 255), ("iso87bcd", 999)],
)
def test_the_dialects_field_55_holds(dialect_name: str, capacity: int) -> None:
    """cup LLLVAR b..255, iso87binary b..255, iso87ascii 510 hex digits, iso87bcd b..999."""
    dialect = DIALECTS[dialect_name]
    assert chip_field_bytes(dialect) == capacity
    fits = capacity - TAG_91_MAX_BYTES
    assert overflow(bytes(fits), dialect) is None
    assert overflow(bytes(fits + 1), dialect) == (
        f"issuer scripts of {fits + 1} bytes after tag 91 (up to 18) overflow field 55 of dialect {dialect_name}"
        f" ({capacity} bytes)"
    )


def long_script(commands: int) -> str:
    """Script contents of ``commands`` PUT DATA commands of 100 bytes each (102 with tag and length); three are 306
    bytes, 310 in their template (72 82 01 32)."""
    return ("8664" + "04DA9F5864" + "00" * 95) * commands


# ------------------------------------------------------------------------------------- the scenario


def test_a_script_scenario_fires_only_on_a_chip_request() -> None:
    """A scenario with scripts matches requests with field 55 only, so its ``times`` are not spent on others."""
    book = ScenarioBook([Scenario(issuer_scripts=b"\x72\x00", times=1)])
    asked = {"tid": "TERM0001", "mti": "0200", "kind": "sale", "amount_minor": 100, "pan_hash": None}
    assert book.fire(**asked) is None
    assert book.fire(**asked, chip=True) is not None
    assert book.fire(**asked, chip=True) is None, "fired its one time"
    assert ScenarioBook([Scenario(respond="05")]).fire(**asked) is not None, "other scenarios as before"


def config(script72: str, dialect: str = "cup") -> dict[str, object]:
    return {"server": {"dialect": dialect},
            "scenarios": [{"name": "block", "kind": "sale", "script72": script72}]}  # fmt: skip


def test_the_config_file_gives_a_scenario_its_scripts() -> None:
    (parsed,) = parse_config(config(SCRIPT), "host.toml").scenarios
    assert parsed.scenario.issuer_scripts == wrapped({"72": bytes.fromhex(SCRIPT)})
    assert parsed.scenario.respond is None


def test_a_bad_script_in_the_config_file_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config("86 04"), "host.toml")
    assert str(caught.value) == "host.toml: scenarios[0].script72: character 2 is not a hex digit"


def test_scripts_that_overflow_the_dialects_field_55_are_refused_naming_the_scenario() -> None:
    """Three 102-byte commands (306 bytes, 310 in template 72) fit iso87bcd's field 55 but not cup's."""
    check_for_dialect(parse_config(config(long_script(3), "iso87bcd"), "host.toml"), DIALECTS["iso87bcd"])
    cup = parse_config(config(long_script(3)), "host.toml")
    with pytest.raises(ConfigError) as caught:
        check_for_dialect(cup, DIALECTS["cup"])
    assert str(caught.value) == (
        "scenarios[0] (block): issuer scripts of 310 bytes after tag 91 (up to 18) overflow field 55 of dialect cup"
        " (255 bytes)"
    )


def reply(controls: object, scenario: dict[str, object]) -> dict[str, object]:
    answer = run(controls, "add-scenario", scenario=scenario)  # type: ignore[arg-type]
    return json.loads(json.dumps(answer.payload))  # type: ignore[no-any-return]


def test_live_control_adds_a_script_scenario() -> None:
    """add-scenario takes script71 / script72 as the config file does, and lists the wrapped templates."""
    controls = make_controls()
    controls.dialect = DIALECTS["cup"]
    answer = reply(controls, {"name": "block", "script72": SCRIPT})
    assert answer["ok"] is True
    assert answer["result"]["added"]["issuer_scripts"] == {"72": 32}, "the template and its size: 72 1E + 30 bytes"
    ((scenario, _),) = controls.scenarios.active()
    assert scenario.issuer_scripts == wrapped({"72": bytes.fromhex(SCRIPT)})


@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        pytest.param({"script71": "8604841E00"}, "scenario.script71: not EMV TLV: tag 86 at byte 1: length 4 runs"
                     " past the end of the data (3 byte(s) left)", id="bad-tlv"),
        pytest.param({"script72": long_script(3)}, "scenario.script71/script72: issuer scripts of 310 bytes after"
                     " tag 91 (up to 18) overflow field 55 of dialect cup (255 bytes)", id="overflow"),
    ],
)  # fmt: skip
def test_live_control_refuses_a_bad_script_in_one_line(scenario: dict[str, object], error: str) -> None:
    controls = make_controls()
    controls.dialect = DIALECTS["cup"]
    answer = reply(controls, scenario)
    assert (answer["ok"], answer["error"]) == (False, error)
    assert not controls.scenarios.active()
