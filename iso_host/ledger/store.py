"""The store interface every ledger backend implements, and ``open_store`` to pick one by URL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from iso_host.errors import ConfigError
from iso_host.ledger.model import LedgerCommand, Status, TerminalRecord, TransactionRecord


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

    async def apply(self, commands: Sequence[LedgerCommand]) -> None:
        """Commit the commands atomically; raises ``StoreError`` and leaves nothing behind on failure."""

    def next_rrn(self) -> str:
        """A retrieval reference number never handed out before by this ledger."""

    async def register_terminal(self, tid: str, mid: str) -> TerminalRecord:
        """Make the terminal known; returns its open batch and its last session."""

    async def transactions(self, where: TransactionFilter) -> list[TransactionRecord]: ...


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
        raise ConfigError("ledger.url: the PostgreSQL ledger is not available yet; use sqlite:///FILE")
    raise ConfigError(f"ledger.url: expected sqlite:///FILE, got {url!r}")
