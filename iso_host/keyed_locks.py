"""One asyncio lock per key, made on first use and dropped when nobody holds or waits for it.

The host serialises the decisions of one terminal that depend on its ledger state (voids, reversals, refunds,
settlement): they then decide one after another on fresh views instead of all losing the same race and trying
again. The database still enforces every rule (several hosts share a PostgreSQL ledger); this only spares
the retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}  # key -> (lock, holders and waiters)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
