"""The transactional outbox, on both ledger backends: an event commits with its ledger change or not at all,
pending events come back in commit order, and sent ones are marked and pruned."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from databases import opened
from test_store_contract import NOW, TID, sale

from iso_host.errors import DuplicateError
from iso_host.events.record import decision_event
from iso_host.ledger import Store
from iso_host.ledger.model import RecordEvent
from iso_host.vocab import Reason


def event(stan: str, tid: str = TID, at: datetime = NOW) -> RecordEvent:
    fields = {"11": stan, "41": tid, "42": "MERCHANT0000001", "4": "000000000100"}
    return decision_event(now=at, kind="sale", mti="0200", fields=fields, reason=Reason.APPROVED,
                          response_code="00", latency_s=0.001)  # fmt: skip


def stans(pending: list[object]) -> list[str]:
    return [json.loads(e.payload)["stan"] for e in pending]  # type: ignore[attr-defined]


async def test_an_event_commits_with_its_ledger_change_or_not_at_all(store: Store) -> None:
    await store.apply([sale("000000000001", "000001"), event("000001")])
    with pytest.raises(DuplicateError):
        await store.apply([sale("000000000002", "000001"), event("000001-dup")])
    pending = await store.pending_events(100)
    assert stans(pending) == ["000001"], "the duplicate's event rolled back with its sale"
    assert pending[0].tid == TID
    assert pending[0].kind == "sale"
    assert await store.count_pending_events() == 1


async def test_pending_events_come_back_in_commit_order_across_a_group(store: Store) -> None:
    """Concurrent requests are committed as one group; each one's event lands, in the order they were queued,
    and a failing request in the middle takes only its own event with it."""
    await store.apply([sale("000000000009", "000009")])
    jobs = [store.apply([sale(f"{i:012d}", f"{i:06d}"), event(f"{i:06d}")]) for i in range(10, 60)]
    jobs.insert(25, store.apply([sale("000000000099", "000009"), event("lost")]))  # a duplicate STAN
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert [type(r) for r in results].count(DuplicateError) == 1
    assert stans(await store.pending_events(1_000)) == [f"{i:06d}" for i in range(10, 60)]
    assert len(await store.pending_events(7)) == 7


async def test_sent_events_are_no_longer_pending_and_are_pruned_after_their_age(store: Store) -> None:
    await store.apply([event(f"{i:06d}") for i in range(1, 6)])
    pending = await store.pending_events(100)
    await store.mark_events_sent([e.id for e in pending[:3]], NOW)
    assert stans(await store.pending_events(100)) == ["000004", "000005"]
    assert await store.prune_events(NOW - timedelta(seconds=1)) == 0, "sent too recently to prune"
    assert await store.prune_events(NOW + timedelta(seconds=1)) == 3
    assert stans(await store.pending_events(100)) == ["000004", "000005"], "pruning never touches pending rows"


async def test_the_outbox_survives_a_restart(ledger_url: str) -> None:
    store = await opened(ledger_url)
    await store.apply([sale("000000000001"), event("000001", at=datetime(2026, 1, 1, tzinfo=UTC))])
    await store.close()
    reopened = await opened(ledger_url)
    try:
        assert stans(await reopened.pending_events(10)) == ["000001"]
    finally:
        await reopened.close()
