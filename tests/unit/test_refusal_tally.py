"""The refusal tally (events/refusals.py): what is counted instead of written, the individual-event budget, the bound
on one aggregate event's rows, and the aggregate event against docs/events.schema.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema

from iso_host.events.record import EventSink
from iso_host.events.refusals import RefusalTally
from iso_host.vocab import Reason

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "events.schema.json").read_text(encoding="utf-8"))


def test_unattributed_refusals_are_always_counted() -> None:
    tally = RefusalTally()
    for reason, attributed in ((Reason.UNKNOWN_TERMINAL, True), (Reason.UNKNOWN_MERCHANT, True),
                               (Reason.FORMAT_ERROR, False), (Reason.INVALID_TRANSACTION, False)):  # fmt: skip
        assert tally.counted_instead(reason, "NOPE0001", "0200", attributed=attributed, now=NOW, monotonic=0.0)
    assert tally.pending == 4
    assert tally.totals == {"UNKNOWN_TERMINAL": 1, "UNKNOWN_MERCHANT": 1, "FORMAT_ERROR": 1, "INVALID_TRANSACTION": 1}


def test_a_configured_terminal_keeps_its_events_up_to_the_budget_per_interval() -> None:
    tally = RefusalTally(interval_s=10.0, individual_per_interval=3)
    own = [tally.counted_instead(Reason.MAC_FAILED, "TERM0001", "0200", attributed=True, now=NOW, monotonic=m)
           for m in (0.0, 1.0, 2.0, 3.0, 9.9, 10.0)]  # fmt: skip
    assert own == [False, False, False, True, True, False], "three events, two counted, then a new interval"
    assert tally.pending == 2
    assert tally.totals["MAC_FAILED"] == 2, "totals count what was counted instead of written"


def test_one_aggregate_lists_at_most_max_keys_rows_and_sums_the_rest() -> None:
    tally = RefusalTally(max_keys=4)
    for n in range(1_000):
        tally.count(Reason.UNKNOWN_TERMINAL, f"T{n % 10:07d}", "0200", now=NOW + timedelta(seconds=n))
    sink = EventSink(refusals=tally)
    event = sink.drain_refusals(NOW + timedelta(hours=1))
    assert event is not None
    payload = json.loads(event.payload)
    jsonschema.validate(payload, SCHEMA)
    assert (event.tid, event.kind, payload["kind"]) == (None, "refusals", "refusals")
    assert payload["count"] == 1_000
    assert len(payload["refusals"]) == 4
    assert sum(row["count"] for row in payload["refusals"]) + payload["others"] == 1_000
    assert payload["since"] == NOW.isoformat()
    assert payload["until"] == (NOW + timedelta(seconds=999)).isoformat()
    assert len(event.payload) < 1_000
    assert sink.drain_refusals(NOW) is None, "drained: nothing until the next refusal"


def test_a_tid_as_sent_is_cut_short() -> None:
    tally = RefusalTally()
    tally.count(Reason.FORMAT_ERROR, "X" * 500, None, now=NOW)
    summary = tally.drain()
    assert summary is not None
    assert summary.rows == ((("FORMAT_ERROR", "X" * 16, None), 1),)
