"""Issue 14, item 7: refused traffic cannot grow the outbox without bound, on both ledgers, with the broker down.

The attack: 5,000 sales over TCP from a terminal the host does not know, while the broker is unreachable. Before,
each became one pending outbox row (5,000 rows); now they are counted and committed as one aggregate ``refusals``
event per interval. A configured terminal's bad MACs keep their own events only up to the per-interval budget.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from brokers import free_port
from databases import store_url
from hosting import TID, RunningHost, running_host

from iso_host.events.flush import flush_refusals
from iso_host.events.refusals import INDIVIDUAL_PER_INTERVAL, INTERVAL_S
from iso_host.mqtt.topics import BrokerSettings
from iso_host.terminal.client import MacKeys, TerminalClient
from iso_host.wire import decode

FRAMES = 5_000
AMOUNT = 1_234
PAN = "4761739001010010"


async def flood(host: RunningHost, client: TerminalClient, *, mac: MacKeys | None = None) -> list[bytes]:
    """``FRAMES`` sales on one connection, written while the replies are read (the framing is a 2-byte length)."""
    now = datetime.now(UTC)
    frames = [client.frame(client.build("sale", now, amount=AMOUNT, pan=PAN), mac) for _ in range(FRAMES)]
    reader, writer = await asyncio.open_connection(*host.address)

    async def write() -> None:
        for frame in frames:
            writer.write(frame)
            await writer.drain()

    writing = asyncio.create_task(write())
    replies = []
    try:
        for _ in frames:
            size = int.from_bytes(await reader.readexactly(2), "big")
            replies.append(await reader.readexactly(size))
        await writing
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


def broker_down() -> BrokerSettings:
    """A broker URL on a port nothing listens on: the relay keeps retrying, events wait in the outbox."""
    return BrokerSettings(url=f"mqtt://127.0.0.1:{free_port()}", topic_prefix="iso-host-test-down")


async def outbox(host: RunningHost) -> list[dict[str, object]]:
    """Every pending event's payload, after the host committed what it had counted (as its flush task does)."""
    assert host.host.events is not None
    await flush_refusals(host.host.events, host.store, host.host.clock)
    return [json.loads(event.payload) for event in await host.store.pending_events(FRAMES * 2)]


def intervals(started: float) -> int:
    """How many aggregate events the flush task may have committed since ``started``, besides the final flush."""
    return int((time.monotonic() - started) // INTERVAL_S) + 1


async def test_5000_sales_from_an_unknown_terminal_leave_a_bounded_outbox(tmp_path: Path, backend: str) -> None:
    with store_url(backend, tmp_path) as url:
        async with running_host(tmp_path, "iso87binary", events=broker_down(), ledger_url=url) as host:
            stranger = host.client("NOPE0001")
            started = time.monotonic()
            replies = await flood(host, stranger)
            rows = await outbox(host)
            assert host.host.events is not None
            totals = dict(host.host.events.refusals.totals)
            assert await host.records() == [], "no ledger rows either"
    assert len(replies) == FRAMES
    assert {decode(reply, host.dialect)[1].fields["39"] for reply in replies} == {"03"}, "UNKNOWN_TERMINAL, each"
    assert 1 <= len(rows) <= intervals(started), f"{len(rows)} outbox rows for {FRAMES} refused sales"
    assert {row["kind"] for row in rows} == {"refusals"}
    assert sum(int(row["count"]) for row in rows) == FRAMES  # type: ignore[call-overload]
    assert [r["refusals"] for r in rows][-1] == [  # the last aggregate: one row, this terminal's sales
        {"reason": "UNKNOWN_TERMINAL", "tid": "NOPE0001", "mti": "0200", "count": rows[-1]["count"]}
    ]
    assert totals == {"UNKNOWN_TERMINAL": FRAMES}


async def test_5000_bad_macs_from_a_configured_terminal_keep_only_the_budget_of_events(
    tmp_path: Path, backend: str
) -> None:
    with store_url(backend, tmp_path) as url:
        async with running_host(tmp_path, "iso87binary", events=broker_down(), ledger_url=url) as host:
            client = await host.connected_client()  # signed on: its sales must carry the session's MAC
            await client.close()
            wrong = MacKeys("x9.19", b"\x11" * 16, b"\x11" * 16)
            started = time.monotonic()
            replies = await flood(host, client, mac=wrong)
            rows = await outbox(host)
    own = [row for row in rows if row["kind"] == "sale"]
    aggregates = [row for row in rows if row["kind"] == "refusals"]
    assert {decode(reply, host.dialect)[1].fields["39"] for reply in replies} == {"63"}, "MAC_FAILED, each"
    assert all(row["reason"] == "MAC_FAILED" and row["tid"] == TID for row in own)
    assert 1 <= len(own) <= INDIVIDUAL_PER_INTERVAL * intervals(started)
    assert 1 <= len(aggregates) <= intervals(started)
    assert len(own) + sum(int(row["count"]) for row in aggregates) == FRAMES  # type: ignore[call-overload]
