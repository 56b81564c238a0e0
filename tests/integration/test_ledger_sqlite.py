"""What only the SQLite store does: WAL and synchronous=FULL, its lock file, its writer thread.

The behaviour both stores share is in test_store_contract.py, run against each.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from iso_host.errors import ConfigError, StoreError
from iso_host.ledger import Card, RecordTransaction, TransactionFilter, TransactionRecord, open_store
from iso_host.ledger.schema import MIGRATIONS
from iso_host.ledger.sqlite import SqliteStore
from iso_host.vocab import Kind, Reason, Status

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
