"""The store interface every ledger backend implements, and ``open_store`` to pick one by URL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from iso_host.errors import ConfigError
from iso_host.ledger.model import (
    BatchView,
    LedgerCommand,
    Original,
    OriginalQuery,
    PendingEvent,
    Status,
    TerminalRecord,
    TransactionRecord,
)

# How long one request may wait on the ledger in all ([ledger] deadline_s). Terminals give up on a reply after
# 30-60 s and reverse; the host answers SYSTEM_ERROR (96) well before that, and never approves late.
DEFAULT_LEDGER_DEADLINE_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    tid: str | None = None
    batch_number: int | None = None
    status: Status | None = None
    limit: int = 1_000


class Store(Protocol):
    """A durable ledger. ``apply`` returns only after the commands are committed to disk."""

    @property
    def pan_hash_key(self) -> bytes: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, commands: Sequence[LedgerCommand], *, deadline: float | None = None) -> None:
        """Commit the commands atomically, or nothing of them.

        ``deadline`` (``time.monotonic()`` seconds, as every ``deadline`` here) bounds the wait; a job whose
        deadline passes before its group commits is left out of the commit.

        Raises:
            DuplicateError: a financial row with the same TID, MID, batch and STAN exists.
            BatchSettledError: a row would join, or change in, a settled batch (decide again).
            ConflictError: a condition or precondition no longer held (decide again).
            StoreTimeout: the deadline passed.
            StoreError: the database failed.
        """

    async def next_rrn(self, *, deadline: float | None = None) -> str:
        """A retrieval reference number never handed out before by this ledger (across host processes)."""

    async def find_original(self, query: OriginalQuery, *, deadline: float | None = None) -> Original | None:
        """The newest non-reversal transaction the query names, within its terminal and merchant."""

    async def count_voids(self, tid: str, mid: str, since: datetime, *, deadline: float | None = None) -> int:
        """Approved voids of this terminal since ``since`` (the start of the business day)."""

    async def batch_view(
        self, tid: str, mid: str, batch_number: int, *, with_totals: bool = True, with_items: bool = False,
        deadline: float | None = None,
    ) -> BatchView:  # fmt: skip
        """A batch's state; its host totals when ``with_totals``; its debits and uploaded records when ``with_items``.

        Totals read the whole batch: a batch upload message, which needs only the state, asks for none.
        """

    async def register_terminal(self, tid: str, mid: str) -> TerminalRecord:
        """Make the terminal known; returns its open batch and its last session."""

    async def transactions(self, where: TransactionFilter) -> list[TransactionRecord]: ...

    async def pending_events(self, limit: int) -> list[PendingEvent]:
        """The oldest outbox rows not yet acknowledged by the broker, in commit order."""

    async def mark_events_sent(self, ids: Sequence[int], at: datetime) -> None:
        """Record that the broker acknowledged these outbox rows."""

    async def prune_events(self, sent_before: datetime) -> int:
        """Delete outbox rows acknowledged before ``sent_before``; returns how many."""

    async def count_pending_events(self) -> int:
        """How many outbox rows wait for the broker."""


def open_store(url: str, *, group_commit: bool = True) -> Store:
    """The store for a ledger URL (``sqlite:///path``).

    Raises:
        ConfigError: an unsupported scheme or a malformed URL.
    """
    from iso_host.ledger.sqlite import SqliteStore  # noqa: PLC0415 - only the backend that is used

    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ConfigError(f"ledger.url: sqlite URL needs a file path, got {url!r}")
        return SqliteStore(path, group_commit=group_commit)
    if url.startswith(("postgresql://", "postgres://")):
        from iso_host.ledger.postgres import PostgresStore  # noqa: PLC0415 - only the backend that is used

        return PostgresStore(url, group_commit=group_commit)
    raise ConfigError(f"ledger.url: expected sqlite:///FILE, got {url!r}")
