"""Request deadlines for the ledger stores: one monotonic deadline per request bounds every wait on the database.

A request reads ``time.monotonic()`` once when its frame arrives and adds ``[ledger] deadline_s``; each store call
made for it waits at most until then. A job still queued when its deadline passes is never run, and a group
about to commit drops the jobs whose deadline has passed, so a request answered SYSTEM_ERROR for being late
is, but for the COMMIT itself, never committed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from iso_host.errors import StoreTimeout

_T = TypeVar("_T")


def expired(deadline: float | None) -> bool:
    """Whether ``deadline`` (``time.monotonic()`` seconds, or None for none) has passed."""
    return deadline is not None and time.monotonic() >= deadline


def timeout_error(deadline_s: float | None = None) -> StoreTimeout:
    within_text = f" within {deadline_s:g} s" if deadline_s is not None else " before the request's deadline"
    return StoreTimeout(f"ledger did not answer{within_text}")


async def within(deadline: float | None, awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` until ``deadline`` at the latest (reads; a job's answer goes through ``Deadlines``).

    Raises:
        StoreTimeout: the deadline passed first (the awaitable is cancelled).
    """
    if deadline is None:
        return await awaitable
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
            return await awaitable
    except TimeoutError:
        raise timeout_error() from None


class Deadlines:
    """Fails the answers of jobs whose deadline passes, with one timer per event loop, not one per job.

    An ``asyncio.timeout`` per request cost about a tenth of a sale's CPU; here a job costs one heap push, and
    a sweep every ``RESOLUTION_S`` (only while jobs wait) fails the late ones, so an answer is at most that
    late. Every method runs on the futures' own event loop.
    """

    RESOLUTION_S = 0.05

    def __init__(self) -> None:
        self._waiting: dict[asyncio.AbstractEventLoop, list[tuple[float, int, asyncio.Future[Any]]]] = {}
        self._armed: set[asyncio.AbstractEventLoop] = set()
        self._order = itertools.count()  # ties on a deadline never compare futures

    def watch(self, deadline: float | None, future: asyncio.Future[Any]) -> None:
        """Fail ``future`` with ``StoreTimeout`` if it is not done by ``deadline``."""
        if deadline is None:
            return
        loop = future.get_loop()
        heapq.heappush(self._waiting.setdefault(loop, []), (deadline, next(self._order), future))
        if loop not in self._armed:
            self._armed.add(loop)
            loop.call_later(self.RESOLUTION_S, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting = self._waiting.get(loop, [])
        now = time.monotonic()
        while waiting and (waiting[0][2].done() or waiting[0][0] <= now):
            _deadline, _order, future = heapq.heappop(waiting)
            if not future.done():
                future.set_exception(timeout_error())
        if waiting:
            loop.call_later(self.RESOLUTION_S, self._sweep, loop)
        else:
            self._armed.discard(loop)
            self._waiting.pop(loop, None)
