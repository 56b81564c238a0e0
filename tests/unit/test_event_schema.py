"""docs/events.schema.json describes every payload record.py builds, and refuses what must never go out."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from iso_host.cards import mask_pan
from iso_host.control.commands import COMMANDS as CONTROL_COMMANDS
from iso_host.events.record import SCHEMA, control_event, decision_event
from iso_host.ledger.model import Card
from iso_host.vocab import Kind, Reason
from iso_host.wire import builtin_dialect_names, load_dialect

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "events.schema.json"
DOCUMENT: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(DOCUMENT, format_checker=Draft202012Validator.FORMAT_CHECKER)
NOW = datetime(2025, 1, 1, 12, 30, tzinfo=UTC)
PAN = "4761739001010010"
DECISION_KINDS = (
    "sale", "void", "reversal", "refund", "signon", "signoff", "settlement", "batch_upload", "upload_end",
)  # fmt: skip
COMMANDS = tuple(CONTROL_COMMANDS)
SALE_FIELDS = {"2": PAN, "3": "000000", "4": "000000001234", "11": "000123", "41": "TERM0001",
               "42": "MERCHANT0000001", "49": "840"}  # fmt: skip


def payload_of(event: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(event.payload)
    return decoded


def errors_of(payload: dict[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(payload)]


def leaf_errors(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(property, message) of each innermost error, looking inside oneOf's alternatives."""
    found: list[tuple[str, str]] = []
    pending = list(VALIDATOR.iter_errors(payload))
    while pending:
        error = pending.pop()
        if error.context:
            pending.extend(error.context)
        else:
            found.append(("/".join(str(part) for part in error.absolute_path), error.message))
    return found


def sale(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "now": NOW, "kind": "sale", "mti": "0200", "fields": SALE_FIELDS, "reason": Reason.APPROVED,
        "response_code": "00", "latency_s": 0.0042, "batch_number": 1, "rrn": "000000000001",
    }  # fmt: skip
    arguments.update(overrides)
    return payload_of(decision_event(**arguments))


class TestTheSchemaItself:
    """The schema is valid draft 2020-12 and lists what the code can produce."""

    def test_is_a_valid_draft_2020_12_schema(self) -> None:
        """The document passes the metaschema."""
        Draft202012Validator.check_schema(DOCUMENT)

    def test_reasons_are_the_ledgers(self) -> None:
        """Every Reason is allowed, and nothing else."""
        listed = DOCUMENT["$defs"]["decision_event"]["properties"]["reason"]["enum"]
        assert sorted(listed) == sorted(reason.value for reason in Reason)

    def test_commands_are_the_listeners(self) -> None:
        """Every command live control carries out is allowed, and nothing else."""
        listed = DOCUMENT["$defs"]["control_event"]["properties"]["command"]["enum"]
        assert sorted(listed) == sorted(CONTROL_COMMANDS)

    def test_decision_kinds_are_the_hosts_and_the_dialects(self) -> None:
        """Every kind the host publishes, the dialects' own kind names and unclassified match the schema."""
        pattern = re.compile(DOCUMENT["$defs"]["decision_event"]["properties"]["kind"]["pattern"])
        dialect_kinds = {rule.kind for name in builtin_dialect_names() for rule in load_dialect(name).kinds}
        for kind in (*(k.value for k in Kind), *dialect_kinds, "unclassified"):
            assert pattern.fullmatch(kind), kind

    def test_schema_version_is_record_pys(self) -> None:
        """The schema constant is the one record.py stamps on every event."""
        assert DOCUMENT["$defs"]["schema"]["const"] == SCHEMA


class TestDecisionEvents:
    """Payloads from decision_event validate, approved or declined, full or sparse."""

    @pytest.mark.parametrize("kind", [*DECISION_KINDS, None])
    def test_every_kind(self, kind: str | None) -> None:
        """Each kind validates; no kind at all is 'unclassified'."""
        payload = sale(kind=kind)
        assert payload["kind"] == (kind or "unclassified")
        assert errors_of(payload) == []

    def test_approved_sale_from_an_admitted_card(self) -> None:
        """The admitted card's masked PAN goes out, never field 2."""
        payload = sale(card=Card(mask_pan(PAN), "hash"), amount_minor=1234, scenario="slow")
        assert errors_of(payload) == []
        assert payload["masked_pan"] == "476173******0010"
        assert payload["approved"] is True
        assert PAN not in json.dumps(payload)

    @pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.APPROVED])
    def test_every_decline(self, reason: Reason) -> None:
        """A declined request validates with approved false."""
        payload = sale(reason=reason, response_code="05")
        assert payload["approved"] is False
        assert errors_of(payload) == []

    def test_unclassified_request_with_nothing_in_it(self) -> None:
        """A request refused before classification, lacking every optional field, validates with nulls."""
        payload = sale(kind=None, mti="0900", fields={}, reason=Reason.INVALID_TRANSACTION, response_code="12",
                       batch_number=None, rrn=None)  # fmt: skip
        assert errors_of(payload) == []
        nulls = ("tid", "mid", "stan", "rrn", "batch", "amount_minor", "currency", "masked_pan", "scenario")
        assert all(payload[name] is None for name in nulls)

    def test_field_2_that_is_no_pan_is_not_shown(self) -> None:
        """A field 2 too short to be a PAN is left out rather than masked badly."""
        payload = sale(fields={**SALE_FIELDS, "2": "12345678"})
        assert payload["masked_pan"] is None
        assert errors_of(payload) == []


class TestControlEvents:
    """Payloads from control_event validate."""

    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command(self, command: str) -> None:
        """Each command's event validates, with and without a terminal."""
        for tid in ("TERM0001", None):
            event = control_event(now=NOW, command=command, request_id="r-1", detail={"tid": tid}, tid=tid)
            assert errors_of(payload_of(event)) == []

    def test_nested_detail(self) -> None:
        """The detail is any object: a whole scenario, for example."""
        detail = {"scenario": {"name": "decline", "respond": "05", "times": 1}, "active": 3}
        event = control_event(now=NOW, command="add-scenario", request_id="a.b_c-9", detail=detail)
        assert errors_of(payload_of(event)) == []


class TestRefusals:
    """The schema refuses what would be a bug or a leak."""

    def test_clear_pan(self) -> None:
        """A clear PAN in masked_pan is refused."""
        payload = {**sale(), "masked_pan": PAN}
        assert [message for path, message in leaf_errors(payload) if path == "masked_pan"] != []
        assert errors_of({**payload, "masked_pan": mask_pan(PAN)}) == []

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            pytest.param("masked_pan", "4761739001******", id="pan-first-12"),
            pytest.param("masked_pan", "47617390******0010", id="pan-8-shown-first"),
            pytest.param("event_id", "not-a-uuid", id="event-id"),
            pytest.param("time", "2025-01-01T12:30:00+01:00", id="time-not-utc"),
            pytest.param("stan", "12345", id="stan-5-digits"),
            pytest.param("response_code", "0", id="rc-1-char"),
            pytest.param("reason", "MAYBE", id="reason-unknown"),
            pytest.param("approved", False, id="approved-contradicts-reason"),
            pytest.param("amount_minor", -1, id="amount-negative"),
            pytest.param("pan", PAN, id="extra-property"),
        ],
    )
    def test_bad_decision_field(self, name: str, value: Any) -> None:
        """A wrong value in one field makes the whole event invalid."""
        assert errors_of({**sale(), name: value}) != []

    def test_control_event_with_decision_fields(self) -> None:
        """A control event cannot carry decision fields (oneOf picks by kind)."""
        event = payload_of(control_event(now=NOW, command="set-clock", request_id="r", detail={}))
        assert errors_of({**event, "response_code": "00"}) != []

    def test_control_event_with_a_bad_request_id(self) -> None:
        """A request id outside 1..64 of [A-Za-z0-9_.-] is refused."""
        event = payload_of(control_event(now=NOW, command="set-clock", request_id="r", detail={}))
        assert errors_of({**event, "request_id": "has space"}) != []
        assert errors_of({**event, "request_id": "x" * 65}) != []


ZONES = [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]
moments = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.sampled_from(ZONES))


@st.composite
def request_fields(draw: st.DrawFn) -> dict[str, str]:
    """Request fields as the host sees them once decoded: each present or not."""
    candidates = {
        "2": draw(st.text(alphabet="0123456789", min_size=12, max_size=19)),
        "4": draw(st.text(alphabet="0123456789", min_size=12, max_size=12)),
        "11": draw(st.text(alphabet="0123456789", min_size=6, max_size=6)),
        "41": draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=8)),
        "42": draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ", min_size=15, max_size=15)),
        "49": draw(st.sampled_from(["840", "156", "978"])),
    }
    return {name: value for name, value in candidates.items() if draw(st.booleans())}


@settings(max_examples=300, deadline=None)
@given(
    now=moments,
    kind=st.one_of(st.none(), st.sampled_from(DECISION_KINDS)),
    mti=st.text(alphabet="0123456789", min_size=4, max_size=4),
    fields=request_fields(),
    reason=st.sampled_from(list(Reason)),
    response_code=st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2),
    latency_s=st.floats(min_value=0, max_value=600, allow_nan=False),
    card_pan=st.one_of(st.none(), st.text(alphabet="0123456789", min_size=12, max_size=19)),
    amount_minor=st.one_of(st.none(), st.integers(min_value=0, max_value=999_999_999_999)),
    batch_number=st.one_of(st.none(), st.integers(min_value=0, max_value=999_999)),
    rrn=st.one_of(st.none(), st.text(alphabet="0123456789", min_size=12, max_size=12)),
    scenario=st.one_of(st.none(), st.text(max_size=40)),
)
def test_any_decision_event_validates(
    now: datetime, kind: str | None, mti: str, fields: dict[str, str], reason: Reason, response_code: str,
    latency_s: float, card_pan: str | None, amount_minor: int | None, batch_number: int | None, rrn: str | None,
    scenario: str | None,
) -> None:  # fmt: skip
    """Whatever the request held and however it was answered, the event validates and shows no clear PAN."""
    card = Card(mask_pan(card_pan), "hash") if card_pan else None
    event = decision_event(
        now=now, kind=kind, mti=mti, fields=fields, reason=reason, response_code=response_code, latency_s=latency_s,
        card=card, amount_minor=amount_minor, batch_number=batch_number, rrn=rrn, scenario=scenario,
    )  # fmt: skip
    payload = payload_of(event)
    assert errors_of(payload) == []
    assert payload["approved"] is (reason is Reason.APPROVED)
    shown_pan = card_pan if card_pan else fields.get("2")
    assert payload["masked_pan"] == (mask_pan(shown_pan) if shown_pan else None)


@settings(max_examples=100, deadline=None)
@given(
    now=moments,
    command=st.sampled_from(COMMANDS),
    request_id=st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=64),
    detail=st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.booleans(), st.integers(), st.text())),
    tid=st.one_of(st.none(), st.text(alphabet="ABC0123456789", min_size=1, max_size=8)),
)
def test_any_control_event_validates(
    now: datetime, command: str, request_id: str, detail: dict[str, Any], tid: str | None
) -> None:
    """Whatever the command changed, its event validates."""
    event = control_event(now=now, command=command, request_id=request_id, detail=detail, tid=tid)
    assert errors_of(payload_of(event)) == []
