"""Waiting in tests: for a condition, under a deadline, never for a fixed time.

House rule: never prove that something happened, or did not, with a sleep. A test waits for an event (an
``asyncio.Event`` the code under test or a fake sets), or polls a condition with ``until`` (in a coroutine) or
``until_blocking`` (in plain code and threads) until it holds; past the deadline both fail with ``what``, so
a slow machine only makes a test slower, and a broken one fails with a sentence instead of a wrong answer.
To show that something did *not* happen, wait for a later event that would have come after it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_INTERVAL_S = 0.01  # short enough to add nothing noticeable to a test, long enough not to spin a core
DEFAULT_TIMEOUT_S = 10.0  # generous: a deadline exists to fail a broken test, not to measure a fast one

assert 0 < POLL_INTERVAL_S < DEFAULT_TIMEOUT_S


async def until(
    condition: Callable[[], bool | Awaitable[bool]], *, what: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Return as soon as ``condition()`` holds (it may be a coroutine function); poll it every few ms.

    Raises:
        AssertionError: ``what`` (the condition in words) still did not hold after ``timeout_s``.
    """
    assert timeout_s > 0, f"timeout_s must be > 0, got {timeout_s!r}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        remaining_s = deadline - loop.time()
        if remaining_s <= 0:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(min(POLL_INTERVAL_S, remaining_s))  # one poll interval, never past the deadline


def until_blocking(condition: Callable[[], bool], *, what: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """``until`` for plain (non-async) code: blocks the calling thread while it polls.

    Raises:
        AssertionError: ``what`` still did not hold after ``timeout_s``.
    """
    assert timeout_s > 0, f"timeout_s must be > 0, got {timeout_s!r}"
    deadline = time.monotonic() + timeout_s
    while not condition():
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(min(POLL_INTERVAL_S, remaining_s))  # one poll interval, never past the deadline
