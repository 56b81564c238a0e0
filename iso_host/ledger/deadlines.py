"""Request deadlines for the ledger stores: one monotonic deadline per request bounds every wait on the database.

A request reads ``time.monotonic()`` once when its frame arrives and adds ``[ledger] deadline_s``; each store call
made for it waits at most until then. A job still queued when its deadline passes is never run, and a group
about to commit drops the jobs whose deadline has passed, so a request answered SYSTEM_ERROR for being late
is, but for the COMMIT itself, never committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from iso_host.errors import StoreTimeout

_T = TypeVar("_T")


def expired(deadline: float | None) -> bool:
    """Whether ``deadline`` (``time.monotonic()`` seconds, or None for none) has passed."""
    return deadline is not None and time.monotonic() >= deadline


def timeout_error(deadline_s: float | None = None) -> StoreTimeout:
    within_text = f" within {deadline_s:g} s" if deadline_s is not None else " before the request's deadline"
    return StoreTimeout(f"ledger did not answer{within_text}")


async def within(deadline: float | None, awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` until ``deadline`` at the latest.

    Raises:
        StoreTimeout: the deadline passed first (the awaitable is cancelled).
    """
    if deadline is None:
        return await awaitable
    remaining_s = deadline - time.monotonic()
    try:
        async with asyncio.timeout(max(remaining_s, 0.0)):
            return await awaitable
    except TimeoutError:
        raise timeout_error() from None
