"""Committing the aggregate event of counted refusals (``refusals.py``): once per interval, and once at shutdown.

Beside the relay, not inside it: the relay runs only while the broker is reachable, and the counts must reach the
outbox (bounded, one event per interval) while it is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from iso_host.errors import StoreError
from iso_host.events.record import EventSink
from iso_host.ledger.model import RecordEvent
from iso_host.ledger.store import Store
from iso_host.log import get_logger
from iso_host.mqtt.client import error_line


async def flush_refusals(sink: EventSink, store: Store, clock: Callable[[], datetime]) -> RecordEvent | None:
    """Commit one event for the refusals counted since the last (and wake the relay); None when there were none.

    Raises:
        StoreError: the commit failed; those counts are gone from the event stream (``totals`` keeps them).
    """
    event = sink.drain_refusals(clock())
    if event is not None:
        await store.apply((event,))
        sink.notify()
    return event


async def flush_refusals_forever(sink: EventSink, store: Store, clock: Callable[[], datetime]) -> None:
    """Every ``sink.refusals.interval_s``, commit what was counted; until cancelled. A failed commit is one line."""
    log = get_logger(component="events")
    while True:
        await asyncio.sleep(sink.refusals.interval_s)
        try:
            await flush_refusals(sink, store, clock)
        except StoreError as error:
            log.warning("refusals_not_recorded", error=error_line(error), totals=dict(sink.refusals.totals))
