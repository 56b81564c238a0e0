"""The PostgreSQL ledger: the same ``Store`` contract as the SQLite one, shared by several host processes.

Rule: the database decides every race. Writes are jobs on a bounded queue; writer tasks take whatever has
queued and run it in ONE transaction: first all at once (one pipeline, runs of inserts merged into one
statement), and only if something fails, replayed job by job under savepoints so the failing job fails
alone. Each caller is resolved only after COMMIT (``synchronous_commit`` stays on). Conditions such as
"still APPROVED" live in the UPDATE's WHERE clause, so of two hosts racing exactly one wins. RRNs come
from a database sequence in blocks. The event loop never blocks: psycopg's async API throughout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from iso_host.errors import StoreError
from iso_host.ledger.deadlines import Deadlines, expired, timeout_error, within
from iso_host.ledger.model import (
    BatchView,
    LedgerCommand,
    Original,
    OriginalQuery,
    PendingEvent,
    TerminalRecord,
    TransactionFilter,
    TransactionRecord,
)
from iso_host.ledger.pan_key import DEFAULT_PAN_KEY, PanKeySource
from iso_host.ledger.postgres_schema import prepare, scalar
from iso_host.ledger.postgres_steps import (
    COMMITTED_GROUP,
    MARK_COMMIT,
    CommitOutcomeUnknown,
    Step,
    command_error,
    describe,
    first_line,
    lock_step,
    run_step,
    step,
    step_error,
    steps,
)
from iso_host.ledger.sql import (
    BATCH_ITEMS,
    BATCH_STATUS,
    BATCH_TOTALS,
    BATCH_UPLOADED,
    COUNT_PENDING_EVENTS,
    COUNT_VOIDS,
    MAX_GROUP_JOBS,
    MAX_QUEUED_JOBS,
    PENDING_EVENTS,
    PRUNE_EVENTS,
    REGISTER_TERMINAL,
    RRN_DIGITS,
    SELECT_TERMINAL,
    batch_view_from_rows,
    mark_events_sent,
    original_from_row,
    original_select,
    pending_event_from_row,
    record_from_row,
    terminal_from_row,
    transactions_select,
    utc_text,
)
from iso_host.urls import redacted_url

WRITER_COUNT: Final = 2  # one group executes while the other waits for its WAL flush
POOL_MIN_SIZE: Final = 2
POOL_MAX_SIZE: Final = 8  # the writers hold at most WRITER_COUNT; the rest serve reads
POOL_OPEN_TIMEOUT_S: Final = 10.0
CONNECT_TIMEOUT_S: Final = 5  # libpq's connect_timeout (whole seconds): an unreachable server fails, never hangs
WRITER_CONNECTION_WAIT_S: Final = 5.0  # a writer's wait for a pooled connection while the server is away
GROUP_TIMEOUT_S: Final = 60.0  # a group the server does not finish by then is abandoned (a hung server)
OUTCOME_CHECK_TIMEOUT_S: Final = 10.0  # after a cut-off COMMIT: how long to try to learn whether it committed
RRN_BLOCK_COUNT: Final = 100  # RRNs fetched per round trip to the sequence

Connection = psycopg.AsyncConnection[Any]
Row = dict[str, Any]


def _connect_reason(error: psycopg.Error) -> str:
    """libpq's reason a connection failed ("Connection refused", 'database "x" does not exist')."""
    if error.sqlstate is not None:
        return describe(error)
    return first_line(error).rpartition("failed: ")[2].removeprefix("FATAL:").strip()


@dataclass(slots=True)
class _Job:
    commands: tuple[LedgerCommand, ...]
    future: asyncio.Future[None]
    deadline: float | None = None  # time.monotonic(): past it the job is neither run nor committed
    error: StoreError | None = None


def _resolve(job: _Job) -> None:
    if job.future.done():  # the caller gave up (cancelled); the commit stands regardless
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(None)


class PostgresStore:
    """A PostgreSQL ledger; any number of host processes may share one database."""

    def __init__(self, url: str, *, group_commit: bool = True, pan_key: PanKeySource | None = DEFAULT_PAN_KEY) -> None:
        self.url = url
        self._pan_key_source = pan_key  # None: opened without the key (reading, listing)
        self.max_group_jobs = MAX_GROUP_JOBS if group_commit else 1
        self.commits = 0  # how many database transactions the writers committed (for benchmarks)
        self._name = redacted_url(url)
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=MAX_QUEUED_JOBS)  # None: stop
        self._writers: list[asyncio.Task[None]] = []
        self._stopped = False
        self._pan_hash_key = b""
        self._rrns: collections.deque[int] = collections.deque()
        self._rrn_lock = asyncio.Lock()
        self._writer_prefix = f"{os.getpid()}-{secrets.token_hex(6)}"  # unique per process start
        self._group_numbers = itertools.count(1)
        self._deadlines = Deadlines()

    @property
    def pan_hash_key(self) -> bytes:
        assert self._pan_hash_key, "store not open, or opened without its PAN key"
        return self._pan_hash_key

    async def open(self) -> None:
        """Migrate the database, open the connection pool and start the writers.

        Raises:
            StoreError: the server cannot be reached, the database is missing or its schema is newer.
        """
        try:
            # One plain connection first: libpq's reason for a failure surfaces now, not as a pool timeout.
            async with await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as connection:
                self._pan_hash_key = await prepare(connection, self._pan_key_source, self._name)
        except psycopg.Error as error:
            raise StoreError(f"ledger {self._name}: {_connect_reason(error)}") from None
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.url, open=False, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE,
            # No automatic prepared statements: a Parse skipped inside a pipeline that a failing job aborted is
            # still taken for prepared by psycopg ('prepared statement "_pg3_5" does not exist' on the next
            # use). The few statement texts cost no measurable throughput unprepared (32 connections: 805/s
            # prepared, 797/s not).
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, "prepare_threshold": None},
            name="ledger",
            check=AsyncConnectionPool.check_connection,
        )  # fmt: skip
        try:
            await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)
        except psycopg.Error as error:
            await pool.close()
            raise StoreError(f"ledger {self._name}: {_connect_reason(error)}") from None
        self._pool, self._stopped = pool, False
        self._writers = [
            asyncio.create_task(self._writer(f"{self._writer_prefix}-{i}"), name=f"ledger-writer-{i}")
            for i in range(WRITER_COUNT)
        ]

    async def close(self) -> None:
        """Finish the queued writes, stop the writers, then close the pool."""
        if self._writers:
            writers, self._writers = self._writers, []
            for _ in writers:
                await self._jobs.put(None)
            await asyncio.gather(*writers)
            while not self._jobs.empty():  # queued behind the stop markers: answered, never left waiting
                job = self._jobs.get_nowait()
                if job is not None:
                    job.error = StoreError(f"ledger {self._name} is closing")
                    _resolve(job)
            self._stopped = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def apply(self, commands: Sequence[LedgerCommand], *, deadline: float | None = None) -> None:
        """Commit the commands atomically, or nothing of them (see ``Store.apply``)."""
        if not self._writers:
            raise StoreError(f"ledger {self._name} is closed")
        job = _Job(tuple(commands), asyncio.get_running_loop().create_future(), deadline)
        try:
            self._jobs.put_nowait(job)
        except asyncio.QueueFull:  # MAX_QUEUED_JOBS are queued: wait for room (back-pressure), within the deadline
            await within(deadline, self._jobs.put(job))
        if self._stopped:  # the queue had no room until after close() had drained it
            raise StoreError(f"ledger {self._name} is closing")
        # Past the deadline a writer skips the job if it has not begun it, and rolls it back if it has (but in
        # the COMMIT itself): the caller answers SYSTEM_ERROR knowing its commands will not land.
        self._deadlines.watch(deadline, job.future)
        await job.future

    async def batch_view(
        self, tid: str, mid: str, batch_number: int, *, with_totals: bool = True, with_items: bool = False,
        deadline: float | None = None,
    ) -> BatchView:  # fmt: skip
        """A batch's state; its host totals and its items when asked (see ``Store.batch_view``)."""
        key = (tid, mid, batch_number)
        status = await self._query((BATCH_STATUS, key), deadline=deadline)
        totals = await self._query((BATCH_TOTALS, key), deadline=deadline) if with_totals else []
        items = await self._query((BATCH_ITEMS, key), deadline=deadline) if with_items else []
        uploaded = await self._query((BATCH_UPLOADED, key), deadline=deadline) if with_items else []
        return batch_view_from_rows(key, status, totals, items, uploaded)

    async def next_rrn(self, *, deadline: float | None = None) -> str:
        """The next RRN of this process's block; a block comes from ``rrn_sequence`` in one round trip."""
        async with self._rrn_lock:
            if not self._rrns:
                rows = await self._query(
                    ("SELECT nextval('rrn_sequence') AS n FROM generate_series(1, %s)", (RRN_BLOCK_COUNT,)),
                    deadline=deadline,
                )
                self._rrns.extend(sorted(row["n"] for row in rows))
            value = self._rrns.popleft()
        assert 0 < value < 10**RRN_DIGITS
        return f"{value:0{RRN_DIGITS}d}"

    async def find_original(self, query: OriginalQuery, *, deadline: float | None = None) -> Original | None:
        """The newest non-reversal transaction the query names, within its terminal and merchant."""
        rows = await self._query(original_select(query), deadline=deadline)
        return original_from_row(rows[0]) if rows else None

    async def count_voids(self, tid: str, mid: str, since: datetime, *, deadline: float | None = None) -> int:
        """Approved voids of this terminal since ``since`` (the start of the business day)."""
        rows = await self._query((COUNT_VOIDS, (tid, mid, utc_text(since))), deadline=deadline)
        return int(rows[0]["n"])

    async def register_terminal(self, tid: str, mid: str) -> TerminalRecord:
        """Make the terminal known; returns its open batch and its last session."""
        rows = await self._query(
            (REGISTER_TERMINAL, (tid, mid, datetime.now(UTC).isoformat())), (SELECT_TERMINAL, (tid, mid))
        )
        return terminal_from_row(rows[0])

    async def transactions(self, where: TransactionFilter) -> list[TransactionRecord]:
        """Transactions in the order they were recorded, filtered and limited."""
        rows = await self._query(transactions_select(where))
        return [record_from_row(row) for row in rows]

    async def pending_events(self, limit: int) -> list[PendingEvent]:
        """The oldest outbox rows not yet acknowledged by the broker, in commit order."""
        return [pending_event_from_row(row) for row in await self._query((PENDING_EVENTS, (limit,)))]

    async def mark_events_sent(self, ids: Sequence[int], at: datetime) -> None:
        """Record that the broker acknowledged these outbox rows."""
        await self._query(*mark_events_sent(ids, at))

    async def prune_events(self, sent_before: datetime) -> int:
        """Delete outbox rows acknowledged before ``sent_before``; returns how many."""
        counted = f"WITH pruned AS ({PRUNE_EVENTS} RETURNING 1) SELECT COUNT(*) AS n FROM pruned"  # noqa: S608
        rows = await self._query((counted, (utc_text(sent_before),)))
        return int(rows[0]["n"])

    async def count_pending_events(self) -> int:
        """How many outbox rows wait for the broker."""
        rows = await self._query((COUNT_PENDING_EVENTS, ()))
        return int(rows[0]["n"])

    async def _query(self, *statements: tuple[str, tuple[object, ...]], deadline: float | None = None) -> list[Row]:
        """Run statements one after the other on a pooled connection (autocommit); the last one's rows."""
        return await within(deadline, self._query_now(statements))

    async def _query_now(self, statements: tuple[tuple[str, tuple[object, ...]], ...]) -> list[Row]:
        if self._pool is None:
            raise StoreError(f"ledger {self._name} is closed")
        try:
            async with self._pool.connection() as connection, connection.cursor(row_factory=dict_row) as cursor:
                for sql, parameters in statements:
                    await cursor.execute(sql, parameters)
                return await cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as error:
            raise StoreError(f"ledger {self._name}: {describe(error)}") from None

    async def _writer(self, writer_id: str) -> None:
        # A writer's loop: it ends when it takes one of the stop markers close() queues, one per writer.
        stopping = False
        while not stopping:
            first = await self._jobs.get()
            if first is None:
                break
            group = [first]
            while len(group) < self.max_group_jobs and not self._jobs.empty():
                job = self._jobs.get_nowait()
                if job is None:
                    stopping = True
                    break
                group.append(job)
            live = []
            for job in group:
                if expired(job.deadline) or job.future.done():  # its caller has answered already: run nothing
                    job.error = timeout_error()
                    _resolve(job)
                else:
                    live.append(job)
            if live:
                await self._commit_group(writer_id, live)

    async def _commit_group(self, writer_id: str, group: list[_Job]) -> None:
        """Commit a group in one transaction, then answer every job in it."""
        assert self._pool is not None
        group_number = next(self._group_numbers)
        mark = (writer_id, group_number, utc_text(datetime.now(UTC)))
        try:
            async with asyncio.timeout(GROUP_TIMEOUT_S):
                async with self._pool.connection(timeout=WRITER_CONNECTION_WAIT_S) as connection:
                    if not await self._run_fast(connection, group, mark):
                        await self._run_isolated(connection, group, mark)
            self.commits += 1
        except CommitOutcomeUnknown as cut_off:
            await self._settle_unknown_outcome(group, writer_id, group_number, cut_off)
        except TimeoutError:
            for job in group:
                job.error = StoreError(f"ledger commit failed: the server did not finish within {GROUP_TIMEOUT_S:g} s")
        except Exception as error:  # the database failed (or a bug): every job of the group is told
            for job in group:
                job.error = StoreError(f"ledger commit failed: {describe(error)}")
        for job in group:
            _resolve(job)

    async def _settle_unknown_outcome(
        self, group: list[_Job], writer_id: str, group_number: int, cut_off: CommitOutcomeUnknown
    ) -> None:
        """A COMMIT whose answer was lost: read this writer's commit mark to learn whether the group landed.

        Its jobs keep the outcome they had inside the transaction when it did (an approval is answered as one);
        when it did not, or nobody can tell, they fail, so that no approval is sent for a row that is not there.
        """
        committed: bool | None = None
        with contextlib.suppress(TimeoutError):  # the server stayed away: then nobody can tell
            async with asyncio.timeout(OUTCOME_CHECK_TIMEOUT_S):
                committed = await self._committed(writer_id, group_number)
        if committed:
            self.commits += 1
            return
        why = "it did not commit" if committed is False else "its outcome could not be learnt"
        for job in group:
            job.error = StoreError(f"ledger commit failed: {cut_off}; {why}")

    async def _committed(self, writer_id: str, group_number: int) -> bool:
        """Whether this writer's group ``group_number`` committed, asked on fresh connections until one answers."""
        for attempt in itertools.count():  # bounded by the caller's timeout
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as connection:
                    found = await scalar(connection, COMMITTED_GROUP, (writer_id,))
                    return found is not None and int(found) >= group_number
            except psycopg.Error:
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))  # the server is coming back: ask again soon
        raise AssertionError("unreachable")

    async def _commit(self, connection: Connection) -> None:
        """COMMIT; a connection that breaks meanwhile leaves the outcome unknown (the caller finds it out)."""
        try:
            await connection.execute("COMMIT")
        except psycopg.Error as error:
            if connection.closed or connection.broken:
                raise CommitOutcomeUnknown(describe(error)) from None
            raise

    async def _run_fast(self, connection: Connection, group: list[_Job], mark: tuple[object, ...]) -> bool:
        """Send the whole group in one pipeline, inserts batched, and commit; False (rolled back) if any failed."""
        commands = [c for job in group for c in job.commands]
        checks: list[tuple[Step, psycopg.AsyncCursor[Any]]] = []
        try:
            async with connection.pipeline():
                await connection.execute("BEGIN")
                lock = lock_step(commands)
                if lock is not None:
                    await run_step(connection, lock)
                for one in steps(commands):
                    checks.append((one, await run_step(connection, one)))
                await connection.execute(MARK_COMMIT, mark)
        except Exception:  # replayed job by job, where the failure is told to its own job
            await connection.execute("ROLLBACK")
            return False
        for one, cursor in checks:
            if await step_error(one, cursor) is not None:
                await connection.execute("ROLLBACK")
                return False
        if any(expired(job.deadline) for job in group):  # replayed without the late jobs
            await connection.execute("ROLLBACK")
            return False
        await self._commit(connection)
        return True

    async def _run_isolated(self, connection: Connection, group: list[_Job], mark: tuple[object, ...]) -> None:
        """Run each job under its own savepoint, so that a failing job rolls back alone; then commit."""
        await connection.execute("BEGIN")
        lock = lock_step([c for job in group for c in job.commands])
        if lock is not None:
            await run_step(connection, lock)
        for job in group:
            if expired(job.deadline):
                job.error = timeout_error()
                continue
            await connection.execute("SAVEPOINT job")
            job.error = None
            for command in job.commands:
                one = step(command)
                try:
                    cursor = await run_step(connection, one)
                    job.error = await step_error(one, cursor)
                except Exception as error:  # whatever a command raises, its job fails alone
                    job.error = command_error(command, error)
                if job.error is not None:
                    break
            await connection.execute("ROLLBACK TO SAVEPOINT job" if job.error else "RELEASE SAVEPOINT job")
        await connection.execute(MARK_COMMIT, mark)
        await self._commit(connection)
