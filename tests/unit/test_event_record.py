"""Event payloads (pure): what a decision's event carries, and the ids consumers de-duplicate by."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from iso_host.events.ids import _EventIds
from iso_host.events.record import control_event, decision_event
from iso_host.ledger import Card
from iso_host.vocab import Reason

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
PAN = "4761739001010010"


def payload_of(**fields: str) -> dict[str, object]:
    event = decision_event(now=NOW, kind=None, mti="0200", fields=fields, reason=Reason.FORMAT_ERROR,
                           response_code="30", latency_s=0.0002)  # fmt: skip
    return dict(json.loads(event.payload))


def test_ids_are_unique_version_4_uuids_and_a_forked_child_draws_new_ones() -> None:
    ids = _EventIds()
    drawn = [ids.next() for _ in range(5_000)]
    assert len(set(drawn)) == len(drawn)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in drawn)
    ids.forget()
    assert ids.next() not in drawn


def test_a_refused_request_is_unclassified_with_only_what_it_carried() -> None:
    payload = payload_of(**{"2": PAN, "11": "12AB56", "41": "TERM0001", "49": "EUR"})
    assert payload["kind"] == "unclassified"
    assert payload["masked_pan"] == "476173******0010"
    assert (payload["stan"], payload["currency"], payload["rrn"]) == (None, None, None), "garbage is not reported"
    assert payload["approved"] is False
    assert payload["latency_ms"] == 0.2


@given(st.text(alphabet="0123456789=D", min_size=0, max_size=40))
def test_no_clear_card_number_ever_leaves(field_2: str) -> None:
    event = decision_event(now=NOW, kind="sale", mti="0200", fields={"2": field_2, "35": field_2},
                           reason=Reason.APPROVED, response_code="00", latency_s=0.0)  # fmt: skip
    masked = json.loads(event.payload)["masked_pan"]
    assert masked is None or masked.count("*") == len(field_2) - 10
    if len(field_2) >= 12:
        assert field_2 not in event.payload


def test_the_admitted_card_wins_over_field_2() -> None:
    event = decision_event(now=NOW, kind="sale", mti="0200", fields={"41": "TERM0001"}, reason=Reason.APPROVED,
                           response_code="00", latency_s=0.0, card=Card("622202******1234", "ab" * 32),
                           amount_minor=1234, batch_number=7, rrn="000000000042", scenario="slow")  # fmt: skip
    payload = json.loads(event.payload)
    assert (payload["masked_pan"], payload["amount_minor"], payload["batch"]) == ("622202******1234", 1234, 7)
    assert (payload["rrn"], payload["scenario"], event.tid, event.kind) == ("000000000042", "slow", "TERM0001", "sale")


def test_a_control_event_names_the_command_and_who_asked() -> None:
    event = control_event(now=NOW, command="disable-terminal", request_id="qa-7", detail={"enabled": False},
                          tid="TERM0001")  # fmt: skip
    payload = json.loads(event.payload)
    assert (payload["kind"], payload["command"], payload["request_id"]) == ("control", "disable-terminal", "qa-7")
    assert payload["event_id"] == event.event_id
    assert payload["time"] == "2026-11-26T09:30:00+00:00"
