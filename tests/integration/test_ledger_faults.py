"""Database faults over real TCP: issue 11's defects 6-10.

PostgreSQL sits behind ``faults.FaultProxy`` (hang, refuse, withhold a COMMIT's answer) or has its backends
terminated; SQLite lives on a small tmpfs that fills up. In every case: no 00 without a commit, 96 within the
ledger deadline, echo keeps answering, and the host recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from databases import fresh_postgres_database, opened, store_url
from faults import FaultProxy, fault_proxy
from hosting import TEST_PAN, RunningHost, local_now, running_host

from iso_host.ledger import TransactionFilter
from iso_host.ledger.model import BatchDifference, BatchItem, Difference, RecordDifferences, RecordUpload
from iso_host.ledger.reports import verify
from iso_host.ledger.sqlite_jobs import _insert_rows_sql
from iso_host.terminal.client import TerminalClient
from iso_host.vocab import Status
from iso_host.wire import Message

DEADLINE_S = 1.0
RECOVERY_S = 30.0  # how long a test waits for the host to serve again once the database is back


async def sale(client: TerminalClient, amount: int = 100) -> Message:
    return await client.request(client.build("sale", local_now(), amount=amount, pan=TEST_PAN), timeout_s=30)


async def echo(client: TerminalClient) -> str:
    return (await client.request(client.build("echo", local_now()), timeout_s=30)).fields["39"]


def approved_rrns(url: str) -> set[str]:  # PostgreSQL
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT rrn FROM transactions WHERE status = 'APPROVED'").fetchall()
    return {str(row[0]) for row in rows}


def approved_stans(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT stan FROM transactions WHERE status = 'APPROVED'").fetchall()
    return {str(row[0]) for row in rows}


async def same_terminal(host: RunningHost, first: TerminalClient) -> TerminalClient:
    """Another connection of ``first``'s terminal, sharing its STAN counter (so no STAN repeats in a batch)."""
    client = host.client()
    client.state = first.state
    await client.connect(*host.address)
    return client


async def serves_again(client: TerminalClient) -> float:
    """Seconds until a sale is approved again (one attempt at a time, a new one as soon as one fails)."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_S:
        if (await sale(client)).fields["39"] == "00":
            return time.monotonic() - started
    raise AssertionError(f"no approval within {RECOVERY_S} s of the database coming back")


@asynccontextmanager
async def proxied_host(tmp_path: Path) -> AsyncIterator[tuple[RunningHost, FaultProxy, str, TerminalClient]]:
    """A host whose PostgreSQL ledger is reached through a fault proxy; yields the direct URL for checks."""
    with fresh_postgres_database() as url:
        async with (
            fault_proxy(url) as (proxy, proxied_url),
            running_host(tmp_path, "iso87binary", ledger_url=proxied_url, ledger_deadline_s=DEADLINE_S) as host,
            await host.connected_client() as client,
        ):
            assert (await sale(client)).fields["39"] == "00"  # warm: pool open, an RRN block fetched
            yield host, proxy, url, client


class TestCommitCutOff:
    """Defect 6: a COMMIT that reached PostgreSQL but whose answer never came back."""

    async def test_a_committed_sale_is_answered_as_committed(self, tmp_path: Path) -> None:
        async with proxied_host(tmp_path) as (_host, proxy, url, client):
            proxy.cut_next_commit()
            response = await sale(client, 4_242)
            assert proxy.commits_cut == 1, "the fault fired"
            assert response.fields["39"] == "00", "the sale committed: the terminal is told so"
            assert response.fields["37"] in approved_rrns(url)

    async def test_terminated_backends_answers_match_the_ledger(self, tmp_path: Path) -> None:
        """One connection, so each STAN names one sale: every 00 is in the ledger, every 96 is not."""
        with fresh_postgres_database() as url:
            async with (
                running_host(tmp_path, "iso87binary", ledger_url=url) as host,
                await host.connected_client() as client,
            ):
                codes: dict[str, str] = {}
                for index in range(150):
                    if index % 25 == 10:
                        terminate_backends(url)
                    request = client.build("sale", local_now(), amount=100 + index, pan=TEST_PAN)
                    codes[request.fields["11"]] = (await client.request(request, timeout_s=30)).fields["39"]
                approved = approved_stans(url)
                assert set(codes.values()) <= {"00", "96"}
                assert {stan for stan, code in codes.items() if code == "00"} <= approved, "a 00 without a row"
                assert not {stan for stan, code in codes.items() if code == "96"} & approved, "a 96 for a row"
                assert verify(url) == []


def terminate_backends(url: str) -> None:
    """What a DBA's pg_terminate_backend (or a crashed backend) does to every connection of the host."""
    database = url.rpartition("/")[2]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


class TestDeadline:
    """Defect 7: a hung or unreachable PostgreSQL gets 96 within the deadline, never a late 00."""

    async def test_a_hung_database(self, tmp_path: Path) -> None:
        async with proxied_host(tmp_path) as (host, proxy, url, client):
            other = await host.connected_client()
            proxy.hang()
            started = time.monotonic()
            hung = await sale(client, 777)
            waited_s = time.monotonic() - started
            assert hung.fields["39"] == "96"
            assert waited_s < DEADLINE_S + 1.0, f"answered after {waited_s:.2f} s"
            assert await echo(other) == "00", "echo needs no ledger and keeps answering"
            proxy.resume()
            await serves_again(client)
            assert 777 not in {r.amount_minor for r in await host.records() if r.status.value == "APPROVED"}, (
                "the sale answered 96 was not committed late"
            )
            assert verify(url) == []
            await other.close()

    async def test_an_unreachable_database(self, tmp_path: Path) -> None:
        async with proxied_host(tmp_path) as (host, proxy, url, client):
            other = await host.connected_client()
            host.store._rrns.clear()  # type: ignore[attr-defined]  # the next sale needs RRNs from the server
            proxy.refuse()
            started = time.monotonic()
            for _ in range(3):
                assert (await sale(client)).fields["39"] == "96"
            assert time.monotonic() - started < 3 * (DEADLINE_S + 1.0)
            assert await echo(other) == "00"
            proxy.resume()
            recovery_s = await serves_again(client)
            assert recovery_s < 10.0, f"recovered after {recovery_s:.1f} s"
            assert verify(url) == []
            await other.close()

    async def test_an_outage_in_the_middle_of_load(self, tmp_path: Path) -> None:
        """Eight terminals' connections sell while PostgreSQL goes away and comes back: every answer is 00 or
        96, every 00 is a committed row, and selling goes on by itself afterwards."""
        async with proxied_host(tmp_path) as (host, proxy, url, client):
            clients = [client, *[await same_terminal(host, client) for _ in range(7)]]
            answers: list[Message] = []
            done = asyncio.Event()
            changed = asyncio.Event()  # set by a seller after each answer

            async def sell(one: TerminalClient) -> None:
                while not done.is_set():
                    answers.append(await sale(one))
                    changed.set()

            async def until(condition: Callable[[], bool]) -> None:
                while not condition():
                    changed.clear()
                    await changed.wait()

            async def outage() -> None:
                await until(lambda: len(answers) >= 200)  # let the load settle in
                proxy.refuse()
                await until(lambda: sum(1 for a in answers if a.fields["39"] == "96") >= 8)
                proxy.resume()
                await until(lambda: [a.fields["39"] for a in answers[-40:]] == ["00"] * 40)  # serving again
                done.set()

            async with asyncio.timeout(60):
                await asyncio.gather(outage(), *(sell(one) for one in clients))
            for one in clients[1:]:
                await one.close()
            assert {a.fields["39"] for a in answers} == {"00", "96"}
            approved = {a.fields["37"] for a in answers if a.fields["39"] == "00"}
            assert approved <= approved_rrns(url), "a 00 without a committed row"
            assert verify(url) == []


class TestLargeBatches:
    """Defects 8 and 9: a batch with many differences closes, and statement texts stay few."""

    @pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
    async def test_seven_thousand_differences_and_uploads(self, tmp_path: Path, backend: str) -> None:
        count = 7_000  # one multi-row INSERT of 10 columns stopped at 6,553 rows on PostgreSQL
        now = datetime.now(UTC)
        with store_url(backend, tmp_path) as url:
            store = await opened(url)
            try:
                await store.register_terminal("TERM0001", "MERCHANT0000001")
                items = tuple((BatchItem(f"{i:06d}", 100 + i, "476173******0010"), None, True) for i in range(count))
                differences = tuple(
                    BatchDifference(f"{i:06d}", Difference.MISSING_ON_HOST, None, 100 + i) for i in range(count)
                )
                await store.apply([RecordUpload("TERM0001", "MERCHANT0000001", 1, items, now),
                                   RecordDifferences("TERM0001", "MERCHANT0000001", 1, differences, now)])  # fmt: skip
                batch = await store.batch_view("TERM0001", "MERCHANT0000001", 1, with_items=True)
                assert len(batch.uploaded) == count
            finally:
                await store.close()

    async def test_sqlite_insert_texts_stay_few(self, tmp_path: Path) -> None:
        """Groups of every size from 1 to 300 sales are written with at most log2(512) + 1 statement texts."""
        _insert_rows_sql.cache_clear()
        async with running_host(tmp_path, "iso87binary") as host:
            clients = [await host.connected_client() for _ in range(16)]
            for size in range(1, 17):
                await asyncio.gather(*(sale(c) for c in clients[:size]))
            for client in clients:
                await client.close()
        assert _insert_rows_sql.cache_info().currsize <= 2 * 10, "transactions and outbox: 10 lengths each at most"


def _tmpfs_possible() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted afterwards."""
    path.mkdir()
    if not _tmpfs_possible():
        if os.environ.get("CI") == "true":
            pytest.fail("the full-disk test needs root (mount -t tmpfs); CI runs as root")
        pytest.skip("the full-disk test needs root to mount a small tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class TestFullDisk:
    """Defect 10: SQLite on a disk that fills up answers 96, and recovers when a little room comes back."""

    async def test_sales_resume_once_a_little_room_is_freed(self, tmp_path: Path) -> None:
        with small_disk(tmp_path / "disk", "4m") as disk:
            ballast = disk / "ballast"
            ballast.write_bytes(b"\0" * 1_000_000)
            async with (
                running_host(disk, "iso87binary", ledger_url=f"sqlite:///{disk}/ledger.db") as host,
                await host.connected_client() as client,
            ):
                codes: list[str] = []
                while "96" not in codes:  # sell until the disk is full
                    assert len(codes) < 100_000, "the disk never filled"
                    codes.append((await sale(client)).fields["39"])
                rows = await host.store.transactions(TransactionFilter(status=Status.APPROVED, limit=1_000_000))
                approved_when_full = len(rows)
                assert approved_when_full == codes.count("00"), "every 00 is a committed row"
                assert await echo(client) == "00"
                ballast.unlink()  # 1 MB comes back
                await serves_again(client)
                after = [(await sale(client)).fields["39"] for _ in range(600)]
                assert after.count("00") == 600, "the WAL was checkpointed: room for far more than 207 sales"
