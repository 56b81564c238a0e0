"""The store interface every ledger backend implements (``open.py`` picks one by URL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final, Protocol

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

# How long one request may wait on the ledger in all ([ledger] deadline_s). Terminals give up on a reply after
# 30-60 s and reverse; the host answers SYSTEM_ERROR (96) well before that, and never approves late.
DEFAULT_LEDGER_DEADLINE_S: Final = 5.0


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
