"""The SQLite ledger's reads run on read-only connections beside the writer (``ledger/sqlite_readers.py``).

A read held open (a big batch's view) does not stop a commit; a read waits for the writes submitted before it,
so it never sees less than it would have seen queued behind them on the writer; and a decision taken from a
snapshot one commit behind is refused by its precondition (``ConflictError``: the pipeline decides again),
never committed as a wrong answer. Events and deadlines order the threads here, never sleeps.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from iso_host.errors import ConflictError, StoreError, StoreTimeout
from iso_host.ledger import Card, RecordTransaction, TransactionRecord
from iso_host.ledger.model import (
    BatchTotals,
    ChangeStatus,
    ExpectBatchTotals,
    OriginalQuery,
    SettleBatch,
    Totals,
)
from iso_host.ledger.sql import BATCH_TOTALS, batch_totals_from_rows, qmark
from iso_host.ledger.sqlite import SqliteStore
from iso_host.ledger.sqlite_readers import READER_COUNT
from iso_host.vocab import Kind, Reason, Status

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TID, MID = "TERM0001", "MERCHANT0000001"
WAIT_S = 10.0  # how long a thread waits for the test's signal before the test fails (never reached when it passes)


def sale(rrn: str, amount_minor: int = 100) -> RecordTransaction:
    return RecordTransaction(TransactionRecord(
        kind=Kind.SALE, tid=TID, mid=MID, batch_number=1, stan=rrn[-6:], rrn=rrn, auth_code="123456",
        amount_minor=amount_minor, currency="840", card=Card("476173******0010", "ab" * 32), status=Status.APPROVED,
        response_code="00", reason=Reason.APPROVED, mti="0200", processing_code="000000", created_at=NOW,
    ))  # fmt: skip


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "ledger.db"))
    await opened.open()
    await opened.register_terminal(TID, MID)
    try:
        yield opened
    finally:
        await opened.close()


class HeldRead:
    """A read on a reader that takes its snapshot (the batch's totals), then holds it until released."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, connection: sqlite3.Connection) -> BatchTotals:
        totals = batch_totals_from_rows(connection.execute(qmark(BATCH_TOTALS), (TID, MID, 1)).fetchall())
        self.entered.set()
        assert self.release.wait(WAIT_S), "the test never released the read"
        return totals


async def held_read(store: SqliteStore) -> tuple[HeldRead, asyncio.Task[BatchTotals]]:
    held = HeldRead()
    task = asyncio.create_task(store._read(held))
    assert await asyncio.to_thread(held.entered.wait, WAIT_S)
    return held, task


async def test_a_held_read_does_not_block_a_commit(store: SqliteStore) -> None:
    """While a reader holds a read transaction open (a big batch's view), a sale commits, within its deadline,
    and another read sees it; the held read then answers from its snapshot, one commit behind."""
    await store.apply([sale("000000000001")])
    held, task = await held_read(store)
    try:
        await store.apply([sale("000000000002")], deadline=soon())  # StoreTimeout here would mean it waited
        assert not task.done()
        fresh = await store.batch_view(TID, MID, 1, deadline=soon())  # the other reader
        assert fresh.host_totals.overall == Totals(debit_count=2, debit_minor=200)
    finally:
        held.release.set()
    assert (await task).overall == Totals(debit_count=1, debit_minor=100)


async def test_a_settlement_from_a_stale_view_is_refused_and_decided_again(store: SqliteStore) -> None:
    """A settlement compared totals from a snapshot that missed a sale: its ExpectBatchTotals fails in the commit
    (ConflictError, and the pipeline decides again), the batch stays open; decided from a fresh view it closes."""
    await store.apply([sale("000000000001")])
    held, task = await held_read(store)
    await store.apply([sale("000000000002")], deadline=soon())
    held.release.set()
    stale = await task

    def settle(totals: BatchTotals) -> list[ExpectBatchTotals | SettleBatch]:
        return [ExpectBatchTotals(TID, MID, 1, totals), SettleBatch(TID, MID, 1, "balanced", True, "{}", "{}", NOW)]

    with pytest.raises(ConflictError, match="changed while it was settled"):
        await store.apply(settle(stale), deadline=soon())
    assert (await store.batch_view(TID, MID, 1)).status == "open"
    fresh = (await store.batch_view(TID, MID, 1)).host_totals
    assert fresh.overall.debit_count == 2
    await store.apply(settle(fresh), deadline=soon())
    assert (await store.batch_view(TID, MID, 1)).status == "settled"


async def test_a_void_from_a_stale_original_is_refused(store: SqliteStore) -> None:
    """An original read before another request voided it still shows APPROVED; the second void's conditional
    update changes no row (ConflictError), and the fresh read shows it VOIDED."""
    await store.apply([sale("000000000001")])
    stale = await store.find_original(OriginalQuery(TID, MID, rrn="000000000001"), deadline=soon())
    assert stale is not None
    assert stale.record.status is Status.APPROVED
    await store.apply([ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW)])
    with pytest.raises(ConflictError, match="no longer APPROVED"):
        await store.apply([ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW)], deadline=soon())
    fresh = await store.find_original(OriginalQuery(TID, MID, rrn="000000000001"), deadline=soon())
    assert fresh is not None
    assert fresh.record.status is Status.VOIDED


async def test_a_read_waits_for_the_writes_submitted_before_it(store: SqliteStore) -> None:
    """A sale queued behind a write the writer is busy with is not committed yet: a lookup made now waits for it
    (here, until its deadline) rather than answer 'no such original'; once the writer moves on, it finds it."""
    busy, release = threading.Event(), threading.Event()

    def occupy(connection: sqlite3.Connection) -> None:
        busy.set()
        assert release.wait(WAIT_S)

    occupied = asyncio.create_task(store._submit(occupy))
    assert await asyncio.to_thread(busy.wait, WAIT_S)
    queued = asyncio.create_task(store.apply([sale("000000000001")]))
    query = OriginalQuery(TID, MID, rrn="000000000001")
    try:
        with pytest.raises(StoreTimeout):
            await store.find_original(query, deadline=soon(0.2))
    finally:
        release.set()
    found = await store.find_original(query, deadline=soon())
    await asyncio.gather(occupied, queued)
    assert found is not None
    assert found.record.rrn == "000000000001"


async def test_reads_are_read_only(store: SqliteStore) -> None:
    """A reader's connection cannot write, whatever a read tries."""
    with pytest.raises(StoreError, match=r"readonly|read-only|attempt to write"):
        await store._read(lambda connection: connection.execute("DELETE FROM transactions"))


async def test_a_read_past_its_deadline_is_interrupted(store: SqliteStore) -> None:
    """Reads that would run for minutes are stopped at their deadline, on every reader: the next read is served
    within its own deadline."""
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n"

    def count(connection: sqlite3.Connection) -> int:
        return int(connection.execute(endless).fetchone()[0])

    results = await asyncio.gather(*(store._read(count, soon(0.2)) for _ in range(READER_COUNT)),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(result, StoreTimeout) for result in results), results
    assert (await store.batch_view(TID, MID, 1, deadline=soon())).status == "open"


def other_terminal_sale(rrn: str) -> RecordTransaction:
    record = sale(rrn).transaction
    return RecordTransaction(replace(record, tid="TERM0002"))


async def test_the_writer_sums_a_batch_again_only_when_the_terminal_wrote_since(store: SqliteStore) -> None:
    """A settlement's ExpectBatchTotals carries its view's snapshot: while nothing of the terminal's has been
    written since, the writer takes the totals as current (no second sum of the batch inside the commit); a sale
    of its own, or a status change (which names no terminal), sends it back to summing, and a stale view is
    refused."""
    await store.register_terminal("TERM0002", MID)
    await store.apply([sale("000000000001")])
    view = await store.batch_view(TID, MID, 1, deadline=soon())
    expect = ExpectBatchTotals(TID, MID, 1, view.host_totals, view.snapshot)
    assert store._order.unchanged(expect)
    await store.apply([other_terminal_sale("000000000002")])
    assert store._order.unchanged(expect)
    await store.apply([ChangeStatus("000000000002", Status.APPROVED, Status.VOIDED, NOW)])
    assert not store._order.unchanged(expect)
    assert store._order.unchanged(ExpectBatchTotals(TID, MID, 1, view.host_totals)) is False  # no snapshot
    fresh = await store.batch_view(TID, MID, 1, deadline=soon())
    await store.apply([sale("000000000003")])
    stale = ExpectBatchTotals(TID, MID, 1, fresh.host_totals, fresh.snapshot)
    assert not store._order.unchanged(stale)
    with pytest.raises(ConflictError):
        await store.apply([stale], deadline=soon())
    current = await store.batch_view(TID, MID, 1, deadline=soon())
    settle = SettleBatch(TID, MID, 1, "balanced", True, "{}", "{}", NOW)
    await store.apply([ExpectBatchTotals(TID, MID, 1, current.host_totals, current.snapshot), settle])
    assert (await store.batch_view(TID, MID, 1)).status == "settled"


async def test_a_read_after_close_is_a_store_error(tmp_path: Path) -> None:
    closed = SqliteStore(str(tmp_path / "ledger.db"))
    await closed.open()
    await closed.close()
    with pytest.raises(StoreError, match="closed"):
        await closed.find_original(OriginalQuery(TID, MID, rrn="000000000001"))
