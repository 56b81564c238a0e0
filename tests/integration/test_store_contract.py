"""The ledger store contract, run against both backends (SQLite file, PostgreSQL database), plus what only
a shared PostgreSQL database can show: several host processes handing out RRNs and racing on one sale."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from databases import fresh_postgres_database, opened, with_database
from waiting import until

from iso_host.errors import BatchSettledError, ConflictError, DuplicateError, StoreError
from iso_host.ledger import (
    Card,
    RecordTransaction,
    SaveSession,
    Store,
    TerminalRecord,
    TransactionFilter,
    TransactionRecord,
    open_store,
)
from iso_host.ledger.model import (
    AdvanceBatch,
    BatchTotals,
    ChangeStatus,
    ExpectBatchTotals,
    ExpectRefusedVoids,
    ExpectVoidsSince,
    OriginalQuery,
    RecordRefund,
    SettleBatch,
    Totals,
)
from iso_host.ledger.postgres import PostgresStore
from iso_host.ledger.postgres_schema import postgres_statement
from iso_host.ledger.schema import MIGRATIONS
from iso_host.ledger.sqlite import SqliteStore
from iso_host.vocab import Kind, Reason, Status

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TID, MID = "TERM0001", "MERCHANT0000001"


def record(
    rrn: str, stan: str = "000001", *, kind: Kind = Kind.SALE, status: Status = Status.APPROVED,
    amount_minor: int = 100, batch_number: int = 1, tid: str = TID, mid: str = MID,
    original_rrn: str | None = None, at: datetime = NOW,
) -> TransactionRecord:  # fmt: skip
    approved = status is not Status.DECLINED
    return TransactionRecord(
        kind=kind, tid=tid, mid=mid, batch_number=batch_number, stan=stan, rrn=rrn,
        auth_code="123456" if approved else "", amount_minor=amount_minor, currency="840",
        card=Card("476173******0010", "ab" * 32), status=status, response_code="00" if approved else "13",
        reason=Reason.APPROVED if approved else Reason.AMOUNT_MISMATCH,
        mti="0400" if kind is Kind.REVERSAL else "0200", processing_code="020000" if kind is Kind.VOID else "000000",
        created_at=at, original_rrn=original_rrn,
    )  # fmt: skip


def sale(rrn: str, stan: str = "000001", amount_minor: int = 100, **fields: Any) -> RecordTransaction:
    return RecordTransaction(record(rrn, stan, amount_minor=amount_minor, **fields))


def void(rrn: str, stan: str, original_rrn: str, status: Status = Status.APPROVED, **fields: Any) -> RecordTransaction:
    return RecordTransaction(record(rrn, stan, kind=Kind.VOID, status=status, original_rrn=original_rrn, **fields))


def reversal(rrn: str, stan: str, original_rrn: str, status: Status = Status.APPROVED) -> RecordTransaction:
    return RecordTransaction(record(rrn, stan, kind=Kind.REVERSAL, status=status, original_rrn=original_rrn))


def execute_sql(url: str, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement straight on the ledger database (``?`` placeholders on both backends)."""
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = connection.execute(sql, parameters).fetchall()
            connection.commit()
            return rows
        finally:
            connection.close()
    with psycopg.connect(url, autocommit=True) as pg:
        cursor = pg.execute(sql.replace("?", "%s"), parameters)
        return cursor.fetchall() if cursor.description else []


async def rrns_of(store: Store) -> list[str]:
    return [r.rrn for r in await store.transactions(TransactionFilter())]


def commits_of(store: Store) -> int:
    assert isinstance(store, SqliteStore | PostgresStore)
    return store.commits


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


class TestDurabilityAndGroupCommit:
    async def test_applied_rows_survive_reopen(self, ledger_url: str) -> None:
        """What apply() returned for is stored: a new store on the same ledger reads it, key and RRNs go on."""
        store = await opened(ledger_url)
        rrn = await store.next_rrn()
        await store.apply([sale(rrn)])
        key = store.pan_hash_key
        await store.close()
        reopened = await opened(ledger_url)
        try:
            records = await reopened.transactions(TransactionFilter())
            assert records == [sale(rrn).transaction]
            assert len(key) == 32
            assert reopened.pan_hash_key == key, "the PAN hash key must persist, or card matching breaks"
            assert await reopened.next_rrn() > rrn, "RRNs continue after a restart"
        finally:
            await reopened.close()

    async def test_rrns_continue_above_rows_already_in_the_ledger(self, ledger_url: str) -> None:
        """A ledger holding RRNs the store never handed out (an import) makes the next RRN larger still."""
        store = await opened(ledger_url)
        await store.apply([sale("000000500000")])
        await store.close()
        reopened = await opened(ledger_url)
        try:
            rrn = await reopened.next_rrn()
            assert rrn > "000000500000"
            assert len(rrn) == 12
            assert rrn.isdigit()
        finally:
            await reopened.close()

    async def test_concurrent_writes_share_commits(self, store: Store) -> None:
        """Requests that arrive together are committed in fewer transactions than requests."""
        rrns = [await store.next_rrn() for _ in range(300)]
        await asyncio.gather(*(store.apply([sale(rrn, stan=f"{i:06d}")]) for i, rrn in enumerate(rrns)))
        assert len(await store.transactions(TransactionFilter())) == 300
        assert commits_of(store) < 300

    async def test_group_commit_off_commits_each_write(self, ledger_url: str) -> None:
        """With group commit off, every write is its own transaction."""
        store = await opened(ledger_url, group_commit=False)
        try:
            rrns = [await store.next_rrn() for _ in range(20)]
            await asyncio.gather(*(store.apply([sale(rrn, stan=f"{i:06d}")]) for i, rrn in enumerate(rrns)))
            assert commits_of(store) == 20
            assert len(await store.transactions(TransactionFilter())) == 20
        finally:
            await store.close()

    async def test_a_failing_write_fails_alone(self, store: Store) -> None:
        """Writes grouped with a failing one (duplicate RRN, stale condition) still commit."""
        await store.apply([sale("000000000001")])
        results = await asyncio.gather(
            store.apply([sale("000000000002", stan="000002")]),
            store.apply([sale("000000000001", stan="000003")]),  # duplicate RRN
            store.apply([ChangeStatus("000000000001", Status.VOIDED, Status.APPROVED, NOW)]),  # stale
            store.apply([sale("000000000004", stan="000004")]),
            return_exceptions=True,
        )
        assert results[0] is None
        assert type(results[1]) is StoreError
        assert "000000000001" not in str(results[1]), "error messages never carry the row's values"
        assert type(results[2]) is ConflictError
        assert results[3] is None
        assert await rrns_of(store) == ["000000000001", "000000000002", "000000000004"]

    async def test_commands_keep_their_order_when_grouped(self, store: Store) -> None:
        """Jobs committed together still run each command after the ones before it (an insert, then its update)."""
        await store.apply([sale("000000000001", stan="000001")])
        await asyncio.gather(
            store.apply([void("000000000002", "000002", "000000000001"),
                         ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW)]),
            store.apply([sale("000000000003", stan="000003"),
                         ChangeStatus("000000000003", Status.APPROVED, Status.REVERSED, NOW)]),
            store.apply([sale("000000000004", stan="000004")]),
            store.apply([sale("000000000005", stan="000005", amount_minor=500),
                         RecordRefund("000000000005", 0, 500, Status.REFUNDED, NOW)]),
        )  # fmt: skip
        records = await store.transactions(TransactionFilter())
        assert {r.rrn: r.status for r in records} == {
            "000000000001": Status.VOIDED, "000000000002": Status.APPROVED, "000000000003": Status.REVERSED,
            "000000000004": Status.APPROVED, "000000000005": Status.REFUNDED,
        }  # fmt: skip
        assert records[-1].refunded_minor == 500

    async def test_multi_command_write_is_atomic(self, store: Store) -> None:
        """If one command of a request fails, none of that request's commands are kept."""
        await store.apply([sale("000000000001")])
        with pytest.raises(StoreError):
            await store.apply([
                sale("000000000002", stan="000002"),
                ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW),
                sale("000000000001", stan="000003"),
            ])  # fmt: skip
        assert await rrns_of(store) == ["000000000001"]
        original = await store.find_original(OriginalQuery(TID, MID, rrn="000000000001"))
        assert original is not None
        assert original.record.status is Status.APPROVED

    async def test_apply_after_close_is_a_store_error(self, ledger_url: str) -> None:
        """Writing to a closed ledger is refused with StoreError, not left waiting."""
        store = await opened(ledger_url)
        await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.apply([sale("000000000001")])


class TestSchema:
    async def test_schema_is_at_the_newest_version(self, ledger_url: str) -> None:
        """A new ledger is migrated to the newest schema version."""
        store = await opened(ledger_url)
        await store.close()
        if ledger_url.startswith("sqlite"):
            assert execute_sql(ledger_url, "PRAGMA user_version") == [(len(MIGRATIONS),)]
        else:
            assert execute_sql(ledger_url, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]

    async def test_newer_schema_is_refused(self, ledger_url: str) -> None:
        """A ledger written by a newer iso-host is not touched."""
        if ledger_url.startswith("sqlite"):
            execute_sql(ledger_url, "PRAGMA user_version = 999")
        else:
            execute_sql(ledger_url, "CREATE TABLE schema_version (version INTEGER NOT NULL)")
            execute_sql(ledger_url, "INSERT INTO schema_version VALUES (999)")
        store = open_store(ledger_url)
        with pytest.raises(StoreError, match="newer"):
            await store.open()
        await store.close()

    def test_migrations_are_adapted_only_where_postgresql_differs(self) -> None:
        """The SQLite rowid columns become identity columns; every other statement is kept as written."""
        statements = [s for script in MIGRATIONS for s in script if isinstance(s, str)]  # PerDatabase: both spelled
        changed = [s for s in statements if postgres_statement(s) != s]
        assert [s.split(" (")[0] for s in changed] == ["CREATE TABLE transactions", "CREATE TABLE outbox"]
        for statement in changed:
            assert "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in postgres_statement(statement)
            assert "INTEGER PRIMARY KEY" not in postgres_statement(statement)


class TestConditions:
    async def test_duplicate_stan_is_refused_but_a_reversal_may_repeat_it(self, store: Store) -> None:
        """(TID, MID, batch, STAN) is unique among financial rows; a reversal carries its original's STAN."""
        await store.apply([sale("000000000001", stan="000007")])
        with pytest.raises(DuplicateError, match="STAN 000007"):
            await store.apply([sale("000000000002", stan="000007")])
        await store.apply([reversal("000000000003", "000007", "000000000001")])
        await store.apply([sale("000000000004", stan="000007", batch_number=2)])  # another batch
        assert await rrns_of(store) == ["000000000001", "000000000003", "000000000004"]

    async def test_a_second_approved_reversal_conflicts(self, store: Store) -> None:
        """At most one approved reversal takes effect per original; a declined one may follow."""
        await store.apply([sale("000000000001")])
        await store.apply([reversal("000000000002", "000001", "000000000001")])
        with pytest.raises(ConflictError, match="already reversed") as caught:
            await store.apply([reversal("000000000003", "000001", "000000000001")])
        assert not isinstance(caught.value, DuplicateError)
        await store.apply([reversal("000000000004", "000001", "000000000001", Status.DECLINED)])

    async def test_change_status_with_a_stale_expectation_conflicts(self, store: Store) -> None:
        """A status change whose expected status no longer holds changes nothing."""
        await store.apply([sale("000000000001")])
        with pytest.raises(ConflictError, match="no longer REVERSED"):
            await store.apply([ChangeStatus("000000000001", Status.REVERSED, Status.APPROVED, NOW)])
        [row] = await store.transactions(TransactionFilter())
        assert row.status is Status.APPROVED
        await store.apply([ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW)])
        with pytest.raises(ConflictError):
            await store.apply([ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW)])
        assert [r.status for r in await store.transactions(TransactionFilter())] == [Status.VOIDED]

    async def test_refund_with_a_stale_amount_conflicts(self, store: Store) -> None:
        """A refund computed from an out-of-date refunded amount is refused; the first one stands."""
        await store.apply([sale("000000000001", amount_minor=1_000)])
        await store.apply([RecordRefund("000000000001", 0, 400, Status.PARTIALLY_REFUNDED, NOW)])
        with pytest.raises(ConflictError, match="refunded"):
            await store.apply([RecordRefund("000000000001", 0, 300, Status.PARTIALLY_REFUNDED, NOW)])
        [row] = await store.transactions(TransactionFilter())
        assert (row.refunded_minor, row.status) == (400, Status.PARTIALLY_REFUNDED)

    async def test_a_settled_batch_takes_no_row_and_no_status_change(self, store: Store) -> None:
        """The database refuses a row into, and a void or reversal in, a settled batch (a refund keeps count)."""
        await store.register_terminal(TID, MID)
        await store.apply([sale("000000000001", amount_minor=1_000)])
        await store.apply([SettleBatch(TID, MID, 1, "balanced", True, "{}", "{}", NOW), AdvanceBatch(TID, MID, 2)])
        with pytest.raises(BatchSettledError):
            await store.apply([sale("000000000002", stan="000002")])
        with pytest.raises(BatchSettledError):
            await store.apply([ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW)])
        await store.apply([RecordRefund("000000000001", 0, 400, Status.PARTIALLY_REFUNDED, NOW)])
        await store.apply([sale("000000000003", stan="000003", batch_number=2)])
        assert [(r.rrn, r.status) for r in await store.transactions(TransactionFilter())] == [
            ("000000000001", Status.PARTIALLY_REFUNDED),
            ("000000000003", Status.APPROVED),
        ]

    @pytest.mark.parametrize("which", ["refused voids", "voids since", "batch totals"])
    async def test_a_precondition_that_no_longer_holds_conflicts(self, store: Store, which: str) -> None:
        """A decision made from a count or totals that moved since its view is refused whole."""
        await store.register_terminal(TID, MID)
        await store.apply([sale("000000000001", amount_minor=1_000)])
        refused = void("000000000002", "000002", "000000000001", status=Status.DECLINED)
        expectation = {
            "refused voids": ExpectRefusedVoids("000000000001", 0),
            "voids since": ExpectVoidsSince(TID, MID, NOW - timedelta(hours=1), 0),
            "batch totals": ExpectBatchTotals(TID, MID, 1, BatchTotals(foreign=Totals(1, 1_000))),
        }[which]
        await store.apply([expectation, sale("000000000009", stan="000009", amount_minor=5)])  # holds: commits
        await store.apply([refused, void("000000000003", "000003", "000000000001")])  # the ledger moves on
        with pytest.raises(ConflictError):
            await store.apply([expectation, sale("000000000004", stan="000004")])
        assert "000000000004" not in await rrns_of(store)


class TestReads:
    async def test_find_original_by_rrn_stan_and_batch(self, store: Store) -> None:
        """An original is found by RRN, by STAN (newest first) or by STAN within a batch."""
        first, second = sale("000000000001", stan="000009"), sale("000000000002", stan="000009", batch_number=2)
        await store.apply([first])
        await store.apply([second])
        by_rrn = await store.find_original(OriginalQuery(TID, MID, rrn="000000000001"))
        assert by_rrn is not None
        assert by_rrn.record == first.transaction
        by_stan = await store.find_original(OriginalQuery(TID, MID, stan="000009"))
        assert by_stan is not None
        assert by_stan.record == second.transaction, "the newest one"
        in_batch = await store.find_original(OriginalQuery(TID, MID, stan="000009", batch_number=1))
        assert in_batch is not None
        assert in_batch.record.rrn == "000000000001"
        assert await store.find_original(OriginalQuery(TID, MID, stan="000010")) is None

    async def test_find_original_never_crosses_terminals(self, store: Store) -> None:
        """A terminal never learns of another terminal's or merchant's transactions."""
        await store.apply([sale("000000000001")])
        assert await store.find_original(OriginalQuery("TERM0002", MID, rrn="000000000001")) is None
        assert await store.find_original(OriginalQuery(TID, "MERCHANT0000002", rrn="000000000001")) is None
        assert await store.find_original(OriginalQuery("TERM0002", MID, stan="000001")) is None

    async def test_find_original_tells_what_the_rules_need(self, ledger_url: str, store: Store) -> None:
        """Reversal rows are skipped; refused voids, an effective reversal and a settled batch are reported."""
        await store.apply([sale("000000000001", stan="000005")])
        found = await store.find_original(OriginalQuery(TID, MID, stan="000005"))
        assert found is not None
        assert (found.refused_void_attempts, found.effective_reversal, found.batch_settled) == (0, False, False)
        await store.apply([void("000000000002", "000006", "000000000001", Status.DECLINED)])
        await store.apply([void("000000000003", "000007", "000000000001", Status.DECLINED)])
        await store.apply([reversal("000000000004", "000005", "000000000001")])
        execute_sql(
            ledger_url, "INSERT INTO batches (tid, mid, batch_number, status, opened_at) VALUES (?, ?, ?, ?, ?)",
            (TID, MID, 1, "settled", NOW.isoformat()),
        )  # fmt: skip
        found = await store.find_original(OriginalQuery(TID, MID, stan="000005"))
        assert found is not None
        assert found.record.rrn == "000000000001", "the reversal row with the same STAN is not an original"
        assert (found.refused_void_attempts, found.effective_reversal, found.batch_settled) == (2, True, True)

    async def test_count_voids_since(self, store: Store) -> None:
        """Only this terminal's approved voids since the given time count."""
        await store.apply([sale("000000000001")])
        await store.apply([void("000000000002", "000002", "000000000001", at=NOW - timedelta(hours=2))])
        await store.apply([void("000000000003", "000003", "000000000001", at=NOW + timedelta(hours=1))])
        await store.apply([void("000000000004", "000004", "000000000001", Status.DECLINED)])
        await store.apply([void("000000000005", "000005", "000000000001", tid="TERM0002")])
        assert await store.count_voids(TID, MID, NOW) == 1
        assert await store.count_voids(TID, MID, NOW - timedelta(hours=3)) == 2
        in_shanghai = NOW.astimezone(timezone(timedelta(hours=8)))
        assert await store.count_voids(TID, MID, in_shanghai) == 1, "any zone, the same moment"
        assert await store.count_voids(TID, "MERCHANT0000002", NOW - timedelta(days=1)) == 0

    async def test_terminal_registration_and_session_round_trip(self, store: Store) -> None:
        """A terminal starts in batch 1 signed off; a saved session (wrapped keys as bytes) is read back."""
        assert await store.register_terminal(TID, MID) == TerminalRecord(batch_number=1)
        keys = (bytes.fromhex("11" * 16), bytes.fromhex("22" * 16), bytes.fromhex("33" * 16))
        await store.apply([SaveSession(TID, MID, True, 3, "01", *keys, at=NOW)])
        assert await store.register_terminal(TID, MID) == TerminalRecord(3, True, "01", *keys)
        await store.apply([SaveSession(TID, MID, False, 3, None, None, None, None, at=NOW)])
        assert await store.register_terminal(TID, MID) == TerminalRecord(batch_number=3)
        assert await store.register_terminal("TERM0002", MID) == TerminalRecord(batch_number=1)

    async def test_keyed_survives_a_signoff_until_reset(self, store: Store) -> None:
        """Keyed (MACs mandatory) is set by a sign-on, kept by a sign-off (keyed None) and cleared only when a
        session says so (an operator's reset); it is read back after the store is opened again."""
        await store.register_terminal(TID, MID)
        key = bytes.fromhex("11" * 16)
        await store.apply([SaveSession(TID, MID, True, 1, None, key, key, None, at=NOW, keyed=True)])
        await store.apply([SaveSession(TID, MID, False, 1, None, None, None, None, at=NOW)])
        assert await store.register_terminal(TID, MID) == TerminalRecord(batch_number=1, keyed=True)
        await store.apply([SaveSession(TID, MID, False, 1, None, None, None, None, at=NOW, keyed=False)])
        assert await store.register_terminal(TID, MID) == TerminalRecord(batch_number=1)

    async def test_session_of_an_unknown_terminal_is_a_store_error(self, store: Store) -> None:
        """A session is saved only for a registered terminal."""
        with pytest.raises(StoreError, match="not registered") as caught:
            await store.apply([SaveSession("TERM0009", MID, False, 1, None, None, None, None, at=NOW)])
        assert not isinstance(caught.value, ConflictError)

    async def test_transactions_filter_in_recorded_order(self, store: Store) -> None:
        """transactions() filters by terminal, batch and status, oldest first, up to a limit."""
        await store.apply([sale("000000000003", stan="000001")])
        await store.apply([sale("000000000001", stan="000002", batch_number=2)])
        await store.apply([sale("000000000002", stan="000003", tid="TERM0002")])
        await store.apply([ChangeStatus("000000000001", Status.APPROVED, Status.VOIDED, NOW)])
        assert await rrns_of(store) == ["000000000003", "000000000001", "000000000002"]
        assert [r.rrn for r in await store.transactions(TransactionFilter(tid=TID))] == [
            "000000000003", "000000000001",
        ]  # fmt: skip
        assert [r.rrn for r in await store.transactions(TransactionFilter(batch_number=2))] == ["000000000001"]
        assert [r.rrn for r in await store.transactions(TransactionFilter(status=Status.VOIDED))] == ["000000000001"]
        assert [r.rrn for r in await store.transactions(TransactionFilter(limit=1))] == ["000000000003"]


class TestSharedPostgres:
    """Several host processes on one database, each with its own store (pool, writers, RRN block)."""

    async def test_rrns_are_unique_across_stores(self, postgres_url: str) -> None:
        """Two stores handing out RRNs at once never hand out the same one."""
        a, b = PostgresStore(postgres_url), PostgresStore(postgres_url)
        await asyncio.gather(a.open(), b.open())  # two hosts migrating one empty database at once
        try:
            assert a.pan_hash_key == b.pan_hash_key
            rrns = await asyncio.gather(*(store.next_rrn() for store in (a, b) for _ in range(500)))
        finally:
            await asyncio.gather(a.close(), b.close())
        assert len(set(rrns)) == 1_000
        assert all(len(rrn) == 12 and rrn.isdigit() for rrn in rrns)
        assert execute_sql(postgres_url, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]

    async def test_racing_cancellations_have_exactly_one_winner(self, postgres_url: str) -> None:
        """A void on one host and a reversal on another, racing on one sale: one commits, one conflicts."""
        a, b = PostgresStore(postgres_url), PostgresStore(postgres_url)
        await asyncio.gather(a.open(), b.open())
        wins = [0, 0]  # reversal, void
        try:
            for i in range(50):
                voider, reverser = (a, b) if i % 2 else (b, a)  # each host plays each part, going first or not
                original, void_rrn, reversal_rrn = await a.next_rrn(), await voider.next_rrn(), await b.next_rrn()
                await a.apply([sale(original, stan=f"1{i:05d}")])
                cancellations = [
                    voider.apply([void(void_rrn, f"2{i:05d}", original),
                                  ChangeStatus(original, Status.APPROVED, Status.VOIDED, NOW)]),
                    reverser.apply([reversal(reversal_rrn, f"1{i:05d}", original),
                                    ChangeStatus(original, Status.APPROVED, Status.REVERSED, NOW)]),
                ]  # fmt: skip
                order = slice(None) if i % 4 < 2 else slice(None, None, -1)
                results = (await asyncio.gather(*cancellations[order], return_exceptions=True))[order]
                assert sorted(type(r).__name__ for r in results) == ["ConflictError", "NoneType"], results
                wins[results[0] is None] += 1
                found = await a.find_original(OriginalQuery(TID, MID, rrn=original))
                assert found is not None
                expected = Status.VOIDED if results[0] is None else Status.REVERSED
                assert found.record.status is expected
                assert found.effective_reversal is (expected is Status.REVERSED)
                sql = "SELECT COUNT(*) FROM transactions WHERE original_rrn = ?"
                children = execute_sql(postgres_url, sql, (original,))
                assert children == [(1,)], "the loser's row was rolled back with its status change"
        finally:
            await asyncio.gather(a.close(), b.close())
        assert sum(wins) == 50

    async def test_a_status_change_waits_for_a_concurrent_one_then_conflicts(self, postgres_url: str) -> None:
        """Under READ COMMITTED the conditional UPDATE waits for the other host's transaction, re-reads the
        row and finds its condition gone: ConflictError, never a lost update."""
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            await store.apply([sale("000000000001")])
            async with (
                await psycopg.AsyncConnection.connect(postgres_url) as other,  # another host, mid-void
                await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as observer,
            ):
                await other.execute("UPDATE transactions SET status = 'VOIDED' WHERE rrn = '000000000001'")
                reversing = asyncio.create_task(
                    store.apply([ChangeStatus("000000000001", Status.APPROVED, Status.REVERSED, NOW)])
                )

                async def blocked_by_other() -> bool:
                    """PostgreSQL itself reports a backend waiting for a lock the other transaction holds."""
                    sql = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
                    row = await (await observer.execute(sql, (other.info.backend_pid,))).fetchone()
                    return row is not None and row[0] > 0

                await until(blocked_by_other, what="the store's UPDATE waits for the other transaction's row lock")
                assert not reversing.done(), "the UPDATE waits on the other transaction's row lock"
                await other.commit()
            with pytest.raises(ConflictError, match="no longer APPROVED"):
                await reversing
            [row] = await store.transactions(TransactionFilter())
            assert row.status is Status.VOIDED
        finally:
            await store.close()


class TestConnectionFailures:
    async def test_unreachable_server_is_a_store_error_naming_the_url(self) -> None:
        """A server that refuses connections gives one StoreError naming the URL, never its password."""
        store = open_store("postgresql://postgres:s3cret@127.0.0.1:1/iso_host")
        with pytest.raises(StoreError) as caught:
            await store.open()
        message = str(caught.value)
        assert message.startswith("ledger postgresql://postgres@127.0.0.1:1/iso_host: ")
        assert "refused" in message.lower()
        assert "s3cret" not in message
        assert "\n" not in message
        await store.close()

    async def test_missing_database_is_a_store_error(self, postgres_url: str) -> None:
        """A database that does not exist is named in one line."""
        url = with_database(postgres_url, "iso_host_no_such_database")
        with pytest.raises(StoreError, match=r"^ledger postgresql://\S+/iso_host_no_such_database: .*does not exist$"):
            await opened(url)
