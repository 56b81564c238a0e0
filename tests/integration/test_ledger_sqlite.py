"""The SQLite store on a real file: durability, group commit, isolation of a failing write, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from iso_host.errors import ConfigError, StoreError
from iso_host.ledger import (
    Card,
    Kind,
    Reason,
    RecordTransaction,
    Status,
    TransactionFilter,
    TransactionRecord,
    open_store,
)
from iso_host.ledger.schema import MIGRATIONS
from iso_host.ledger.sqlite import SqliteStore

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def sale(rrn: str, stan: str | None = None, amount_minor: int = 100) -> RecordTransaction:
    stan = stan or rrn[-6:]
    return RecordTransaction(
        TransactionRecord(
            kind=Kind.SALE, tid="TERM0001", mid="MERCHANT0000001", batch_number=1, stan=stan, rrn=rrn,
            auth_code="123456", amount_minor=amount_minor, currency="840",
            card=Card("476173******0010", "ab" * 32), status=Status.APPROVED, response_code="00",
            reason=Reason.APPROVED, mti="0200", processing_code="000000", created_at=NOW,
        )
    )  # fmt: skip


class TestSqliteStore:
    async def test_applied_rows_survive_reopen(self, tmp_path: Path) -> None:
        """What apply() returned for is on disk: a new store on the same file reads it back."""
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        rrn = await store.next_rrn()
        await store.apply([sale(rrn)])
        key = store.pan_hash_key
        await store.close()
        reopened = SqliteStore(str(tmp_path / "l.db"))
        await reopened.open()
        try:
            records = await reopened.transactions(TransactionFilter())
            assert [r.rrn for r in records] == [rrn]
            assert records[0].card == Card("476173******0010", "ab" * 32)
            assert reopened.pan_hash_key == key, "the PAN hash key must persist, or card matching breaks"
            assert await reopened.next_rrn() > rrn, "RRNs continue after a restart"
        finally:
            await reopened.close()

    async def test_concurrent_writes_share_commits(self, tmp_path: Path) -> None:
        """Requests that arrive together are committed in fewer transactions than requests."""
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        try:
            rrns = [await store.next_rrn() for _ in range(300)]
            await asyncio.gather(*(store.apply([sale(rrn, stan=f"{i:06d}")]) for i, rrn in enumerate(rrns)))
            assert len(await store.transactions(TransactionFilter())) == 300
            assert store.commits < 300
        finally:
            await store.close()

    async def test_group_commit_off_commits_each_write(self, tmp_path: Path) -> None:
        """With group commit off, every write is its own transaction."""
        store = SqliteStore(str(tmp_path / "l.db"), group_commit=False)
        await store.open()
        try:
            rrns = [await store.next_rrn() for _ in range(20)]
            await asyncio.gather(*(store.apply([sale(rrn, stan=f"{i:06d}")]) for i, rrn in enumerate(rrns)))
            assert store.commits == 20
        finally:
            await store.close()

    async def test_a_failing_write_fails_alone(self, tmp_path: Path) -> None:
        """A write that violates a constraint fails with StoreError; writes grouped with it still commit."""
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        try:
            await store.apply([sale("000000000001")])
            results = await asyncio.gather(
                store.apply([sale("000000000002")]),
                store.apply([sale("000000000001", stan="000009")]),  # duplicate RRN
                store.apply([sale("000000000003")]),
                return_exceptions=True,
            )
            assert results[0] is None
            assert isinstance(results[1], StoreError)
            assert results[2] is None
            rrns = [r.rrn for r in await store.transactions(TransactionFilter())]
            assert rrns == ["000000000001", "000000000002", "000000000003"]
        finally:
            await store.close()

    async def test_multi_command_write_is_atomic(self, tmp_path: Path) -> None:
        """If one command of a request fails, none of that request's commands are kept."""
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        try:
            await store.apply([sale("000000000001")])
            with pytest.raises(StoreError):
                await store.apply([sale("000000000002"), sale("000000000001", stan="000009")])
            rrns = [r.rrn for r in await store.transactions(TransactionFilter())]
            assert rrns == ["000000000001"]
        finally:
            await store.close()

    async def test_schema_is_migrated_and_durable_settings_are_on(self, tmp_path: Path) -> None:
        """A new ledger is at the newest schema version, in WAL mode."""
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        await store.close()
        connection = sqlite3.connect(tmp_path / "l.db")
        try:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            connection.close()

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A ledger written by a newer iso-host is not touched."""
        connection = sqlite3.connect(tmp_path / "l.db")
        connection.execute("PRAGMA user_version = 999")
        connection.close()
        store = SqliteStore(str(tmp_path / "l.db"))
        with pytest.raises(StoreError, match="newer"):
            await store.open()
        await store.close()

    async def test_unwritable_location_is_a_store_error(self, tmp_path: Path) -> None:
        """A ledger path that cannot be created gives one StoreError naming the path."""
        blocker = tmp_path / "file"
        blocker.write_text("")
        store = SqliteStore(str(blocker / "l.db"))
        with pytest.raises(StoreError, match=r"l\.db"):
            await store.open()


class TestOpenStore:
    @pytest.mark.parametrize("url", ["mysql://x", "sqlite:///", "sqlite:relative.db"])
    def test_unsupported_urls(self, url: str) -> None:
        """Ledger URLs the host cannot use are configuration errors naming ledger.url."""
        with pytest.raises(ConfigError, match=r"ledger\.url"):
            open_store(url)


class TestWriterResilience:
    async def test_a_job_that_raises_anything_fails_alone(self, tmp_path: Path) -> None:
        """A bug in one job (not a database error) fails that job; the writer keeps serving the next."""
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        try:

            def broken(_connection: sqlite3.Connection) -> None:
                raise TypeError("a bug in a job")

            with pytest.raises(StoreError, match="TypeError"):
                await store._submit(broken)
            await store.apply([sale(await store.next_rrn())])
            assert len(await store.transactions(TransactionFilter())) == 1
        finally:
            await store.close()

    async def test_apply_after_close_is_a_store_error(self, tmp_path: Path) -> None:
        """Writing to a closed ledger is refused with StoreError, not left waiting."""
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.apply([sale("000000000001")])
