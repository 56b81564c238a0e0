"""A terminal's state file (issue 17): keyed by TID, dialect, host and port; an older shared file left alone; what a
file must hold; the pending reversal it keeps (its PAN sealed); the status it shows."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from iso_host.terminal.client import ClientError, ClientState, TerminalClient
from iso_host.terminal.reversal import describe, keep, record, reversible_kind
from iso_host.terminal.state_files import default_state_path, document_problem, legacy_note, legacy_state_path
from iso_host.terminal.status import status_json, status_lines
from iso_host.wire import load_dialect

TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "4761739001010010"
WHEN = datetime(2026, 3, 10, 9, 30)


@pytest.mark.parametrize(
    ("host", "dialect", "name"),
    [
        pytest.param("127.0.0.1", "iso87binary", "terminal-TERM0001-iso87binary-127.0.0.1_8583.json", id="ipv4"),
        pytest.param("::1", "cup", "terminal-TERM0001-cup-__1_8583.json", id="ipv6"),
        pytest.param("host.example", "my/dialect", "terminal-TERM0001-my_dialect-host.example_8583.json", id="slash"),
    ],
)
def test_the_default_path_is_keyed(tmp_path: Path, host: str, dialect: str, name: str) -> None:
    assert default_state_path(tmp_path, "TERM0001", dialect, host, 8583) == tmp_path / ".iso-host" / name


def test_an_older_shared_file_gets_one_note(tmp_path: Path) -> None:
    keyed = default_state_path(tmp_path, "TERM0001", "cup", "127.0.0.1", 8583)
    assert legacy_note(tmp_path, "TERM0001", keyed) is None  # no old file
    legacy = legacy_state_path(tmp_path, "TERM0001")
    legacy.parent.mkdir()
    legacy.write_text("{}")
    note = legacy_note(tmp_path, "TERM0001", keyed)
    assert note is not None
    assert f"--state {legacy}" in note
    assert str(keyed) in note
    keyed.write_text("{}")
    assert legacy_note(tmp_path, "TERM0001", keyed) is None  # once the keyed file exists


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        pytest.param({}, None, id="empty"),
        pytest.param({"stan": 41, "batch": 2, "items": [], "tid": "TERM0001"}, None, id="good"),
        pytest.param({"stan": "x"}, "'stan' must be a whole number from 0 to 999999, got 'x'", id="stan-text"),
        pytest.param({"stan": True}, "'stan' must be a whole number", id="stan-bool"),
        pytest.param({"stan": 1_000_000}, "'stan' must be a whole number", id="stan-big"),
        pytest.param({"batch": 0}, "'batch' must be a whole number from 1", id="batch-zero"),
        pytest.param({"atc": 70_000}, "'atc'", id="atc"),
        pytest.param({"tak_under_tmk": "xyz"}, "'tak_under_tmk' must be hex or null", id="key"),
        pytest.param({"tid": 5}, "'tid' must be text", id="tid"),
        pytest.param({"pin": "1234"}, "unknown key 'pin'", id="unknown"),
        pytest.param({"items": {}}, "'items' must be a list", id="items-object"),
        pytest.param({"items": [{"kind": "sale", "stan": "000001", "status": "approved"}]}, "items[0]: no 'amount'",
                     id="item-no-amount"),
        pytest.param({"items": [{"kind": "sale", "stan": "000001", "status": "approved", "amount": "1"}]},
                     "items[0]: 'amount' must be a whole number", id="item-amount-text"),
        pytest.param({"pending_reversals": [7]}, "pending_reversals[0]: not a JSON object", id="pending"),
        pytest.param([], "not a JSON object", id="list"),
    ],
)
def test_what_a_state_file_must_hold(document: Any, problem: str | None) -> None:
    found = document_problem(document)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_a_bad_file_is_a_client_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"stan": "x"}))
    with pytest.raises(ClientError, match=r"--state\) .*t\.json: 'stan' must be .*iso-host terminal reset"):
        ClientState.load(path, TMK)


def test_a_file_under_a_file_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    with pytest.raises(ClientError, match="cannot write the terminal state file"):
        ClientState().save(tmp_path / "plain" / "t.json")


@pytest.mark.parametrize(
    ("dialect", "template", "values", "kind", "repeated"),
    [
        pytest.param("iso87binary", "sale", {"amount": 1298}, "sale", {}, id="iso87-sale"),
        pytest.param("iso87binary", "refund", {"amount": 500, "rrn": "000000000001"}, "refund", {}, id="iso87-refund"),
        pytest.param("cup", "sale", {"amount": 1298}, "sale",
                     {"original_processing_code": "000000", "original_type": "22"}, id="cup-sale"),
        pytest.param("cup", "refund", {"amount": 500, "rrn": "000000000001", "original_date": "0310"}, "refund",
                     {"original_processing_code": "200000", "original_type": "25"}, id="cup-refund"),
        pytest.param("cup", "preauth", {"amount": 10_000}, "preauth",
                     {"original_processing_code": "030000", "original_type": "10"}, id="cup-preauth"),
    ],
)
def test_an_unanswered_request_is_recorded_to_reverse(dialect: str, template: str, values: dict[str, Any], kind: str,
                                                      repeated: dict[str, str]) -> None:  # fmt: skip
    """What the reversal needs: the kind, STAN, amount, card, batch, and what the dialect's reversal repeats."""
    spoken = load_dialect(dialect)
    message = TerminalClient(spoken, "TERM0001", "MERCHANT0000001").build(template, WHEN, pan=PAN, **values)
    assert reversible_kind(spoken, message) == kind
    item = record(spoken, message, kind, batch=3)
    assert (item["kind"], item["stan"], item["amount"], item["pan"], item["batch"]) == (
        kind, "000001", values["amount"], PAN, 3)  # fmt: skip
    assert item["values"] == repeated
    assert describe(item) == f"{kind} STAN 000001 ({values['amount'] // 100}.{values['amount'] % 100:02d})"


@pytest.mark.parametrize("template", ["echo", "signon", "settlement"])
def test_what_is_not_reversed(template: str) -> None:
    dialect = load_dialect("iso87binary")
    client = TerminalClient(dialect, "TERM0001", "MERCHANT0000001")
    values = {"processing_code": "920000", "debit_count": 0, "debit_amount": 0, "credit_count": 0, "credit_amount": 0}
    assert reversible_kind(dialect, client.build(template, WHEN, **values)) is None


def test_a_pending_reversal_is_kept_once_and_sealed(tmp_path: Path) -> None:
    """The state file keeps the pending reversal's card masked and sealed, like the batch's; status shows it."""
    dialect = load_dialect("iso87binary")
    path = tmp_path / "t.json"
    state = ClientState.load(path, TMK)
    message = TerminalClient(dialect, "TERM0001", "MERCHANT0000001", state).build("sale", WHEN, pan=PAN, amount=1298)
    item = record(dialect, message, "sale", state.batch)
    keep(state, item)
    keep(state, dict(item))
    assert len(state.pending_reversals) == 1
    state.save(path)
    assert PAN not in path.read_text()
    assert ClientState.load(path, TMK).pending_reversals[0]["pan"] == PAN
    shown = ClientState.load(path)  # read without the TMK, as status reads it
    lines = status_lines(path, shown, TMK)
    assert "pending reversals (1: sent before the next request)" in lines
    assert any("STAN 000001" in line and "476173******0010" in line and "pending" in line for line in lines)
    document = status_json(path, shown, TMK)
    assert document["pending_reversals"][0]["card"] == "476173******0010"
    assert document["next_stan"] == "000002"
    assert PAN not in json.dumps(document)


def test_status_without_a_file(tmp_path: Path) -> None:
    assert status_json(tmp_path / "none.json", None, TMK) == {"state_file": str(tmp_path / "none.json"),
                                                             "exists": False}  # fmt: skip
    assert "none yet" in status_lines(tmp_path / "none.json", None, TMK)[0]
