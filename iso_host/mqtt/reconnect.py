"""Keeping one MQTT connection up: connect, work, and on broker trouble wait and connect again with backoff.

The event relay and the live-control listener both run this loop, so both wait alike (0.5 s doubling to 15 s,
back to 0.5 s once a connection is ready again) and both log one line per outage, not one per retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, NoReturn

import aiomqtt

BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 15.0

Connect = Callable[[], AbstractAsyncContextManager[aiomqtt.Client]]
# Works on one connection until it fails; calls its second argument once the connection is ready for work.
Session = Callable[[aiomqtt.Client, Callable[[], None]], Awaitable[None]]
# Told of a failure: the error and the seconds until the next attempt.
OnError = Callable[[Exception, float], Awaitable[None]]


async def keep_connected(
    connect: Connect, session: Session, *, ready: asyncio.Event, outages: tuple[type[Exception], ...],
    on_outage: OnError, on_other_error: OnError | None = None,
) -> NoReturn:  # fmt: skip
    """Run ``session`` on a fresh connection from ``connect``, again and again, until cancelled.

    ``ready`` is set when the session says its connection is ready and cleared when the connection fails.
    An error of ``outages`` is an outage: ``on_outage`` hears of the first failure of each outage only. Any
    other ``Exception`` goes to ``on_other_error`` every time and is retried the same way; without
    ``on_other_error`` it ends the loop. A session that returns is connected again at once.
    """
    backoff, outage_told = BACKOFF_FIRST_S, False

    def connected() -> None:
        nonlocal backoff, outage_told
        ready.set()
        backoff, outage_told = BACKOFF_FIRST_S, False

    while True:
        try:
            async with connect() as mqtt:
                await session(mqtt, connected)
        except Exception as error:
            if not isinstance(error, outages) and on_other_error is None:
                raise
            ready.clear()
            if not isinstance(error, outages):
                assert on_other_error is not None
                await on_other_error(error, backoff)
            elif not outage_told:  # one line per outage, not one per retry
                await on_outage(error, backoff)
                outage_told = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
