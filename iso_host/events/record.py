"""Event payloads: one JSON object per answered request or control change, written to the outbox.

Pure: the host builds the event while it decides, and the event is committed with the ledger change it
tells of (``RecordEvent``), so no event exists for a change that did not happen and none is lost for one
that did. docs/events.md and docs/events.schema.json describe the payloads; keep the three in step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from iso_host.cards import is_valid_pan, mask_pan
from iso_host.events.ids import next_event_id
from iso_host.events.refusals import RefusalSummary, RefusalTally
from iso_host.ledger.model import Card, RecordEvent
from iso_host.vocab import Reason

SCHEMA: Final = "iso-host/event/1"
CONTROL_KIND: Final = "control"
UNCLASSIFIED_KIND: Final = "unclassified"  # a request refused before the host could tell what it was
REFUSALS_KIND: Final = "refusals"  # refused requests counted over an interval (refusals.py)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # json.dumps makes one per call


def _json(payload: Mapping[str, Any]) -> str:
    return _ENCODER.encode(payload)


def _digits(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _numeric(value: str | None, length: int) -> str | None:
    """A fixed-length numeric field as sent, or None when the request sent something else (a format error)."""
    return value if value is not None and len(value) == length and value.isdigit() else None


def decision_event(
    *,
    now: datetime,
    kind: str | None,
    mti: str,
    fields: Mapping[str, str],
    reason: Reason,
    response_code: str,
    latency_s: float,
    card: Card | None = None,
    amount_minor: int | None = None,
    batch_number: int | None = None,
    rrn: str | None = None,
    scenario: str | None = None,
) -> RecordEvent:
    """The event of one answered request. ``fields`` are the request's; ``card`` is the admitted card, if any.

    Only a masked PAN leaves: from the admitted card, else from field 2 when it holds a PAN.
    """
    if card is not None:
        masked: str | None = card.masked_pan
    else:
        pan = fields.get("2")
        masked = mask_pan(pan) if pan is not None and is_valid_pan(pan) else None
    tid = fields.get("41")
    event_id = next_event_id()
    kind = kind or UNCLASSIFIED_KIND
    payload = {
        "schema": SCHEMA, "event_id": event_id, "time": now.astimezone(UTC).isoformat(), "kind": kind,
        "tid": tid, "mid": fields.get("42"), "mti": mti, "stan": _numeric(fields.get("11"), 6), "rrn": rrn,
        "batch": batch_number,
        "amount_minor": amount_minor if amount_minor is not None else _digits(fields.get("4")),
        "currency": _numeric(fields.get("49"), 3), "masked_pan": masked, "response_code": response_code,
        "reason": reason.value, "approved": reason is Reason.APPROVED,
        "latency_ms": round(latency_s * 1000, 3), "scenario": scenario,
    }  # fmt: skip
    return RecordEvent(event_id, tid, kind, _json(payload), now)


def control_event(
    *, now: datetime, command: str, request_id: str, detail: Mapping[str, Any], tid: str | None = None
) -> RecordEvent:
    """The event of a change made through live control (a scenario added, a terminal disabled, ...)."""
    event_id = next_event_id()
    payload = {
        "schema": SCHEMA, "event_id": event_id, "time": now.astimezone(UTC).isoformat(), "kind": CONTROL_KIND,
        "tid": tid, "command": command, "request_id": request_id, "detail": dict(detail),
    }  # fmt: skip
    return RecordEvent(event_id, tid, CONTROL_KIND, _json(payload), now)


def refusals_event(*, now: datetime, summary: RefusalSummary) -> RecordEvent:
    """The aggregate event of refused requests counted instead of written one by one (``refusals.py``)."""
    event_id = next_event_id()
    payload = {
        "schema": SCHEMA, "event_id": event_id, "time": now.astimezone(UTC).isoformat(), "kind": REFUSALS_KIND,
        "tid": None, "since": summary.since.astimezone(UTC).isoformat(),
        "until": summary.until.astimezone(UTC).isoformat(), "count": summary.count,
        "refusals": [{"reason": reason, "tid": tid, "mti": mti, "count": count}
                     for (reason, tid, mti), count in summary.rows],
        "others": summary.others,
    }  # fmt: skip
    return RecordEvent(event_id, None, REFUSALS_KIND, _json(payload), now)


class EventSink:
    """The host's switch for events: present only when events are on. ``notify`` wakes the relay after a commit;
    ``refusals`` counts the refused requests that get no event of their own."""

    def __init__(self, notify: Callable[[], None] | None = None, refusals: RefusalTally | None = None) -> None:
        self.notify: Callable[[], None] = notify or (lambda: None)
        self.refusals = refusals if refusals is not None else RefusalTally()

    def drain_refusals(self, now: datetime) -> RecordEvent | None:
        """The aggregate event of the refusals counted since the last one, or None when there were none."""
        summary = self.refusals.drain()
        return refusals_event(now=now, summary=summary) if summary is not None else None
