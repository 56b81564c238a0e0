"""The host's clock: the machine's time plus an offset that live control may set or advance.

QA rolls the business day without waiting for it: every rule (void window, business-day cut-off) and every
ledger timestamp reads this clock, so moving it moves them all. ``HostClock`` is pure: the source of real time
is injected, and ``local_now`` is the one the host and the terminal use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo


class _LocalZone:
    """The machine's zone (its UTC offset and name) as of one minute of real time.

    ``datetime.now().astimezone()`` asks the C library for the local zone at every call (~2 µs, twice a sale); the
    offset only ever changes on a whole minute (a DST change, a new ``TZ``), so it is read again each new minute.
    """

    __slots__ = ("minute", "zone")

    def __init__(self) -> None:
        self.minute = -1
        self.zone: tzinfo | None = None


_LOCAL = _LocalZone()


def local_now() -> datetime:
    """The machine's time, aware, in its local zone: the real-time source of the host's and the terminal's clocks."""
    seconds = time.time()
    minute = int(seconds // 60)
    if minute != _LOCAL.minute:
        _LOCAL.zone, _LOCAL.minute = datetime.fromtimestamp(seconds).astimezone().tzinfo, minute
    return datetime.fromtimestamp(seconds, _LOCAL.zone)


class HostClock:
    """Callable like the plain clock it wraps: ``clock()`` is the host's "now" (an aware datetime)."""

    def __init__(self, source: Callable[[], datetime]) -> None:
        self._source = source
        self._offset = timedelta(0)

    def __call__(self) -> datetime:
        return self._source() + self._offset

    @property
    def offset(self) -> timedelta:
        """How far the host's time is from the machine's."""
        return self._offset

    def set(self, moment: datetime) -> None:
        """Make ``moment`` the host's time from now on (it keeps running from there)."""
        assert moment.tzinfo is not None, "the host clock is set to aware times only"
        self._offset = moment - self._source()

    def advance(self, delta: timedelta) -> None:
        """Move the host's time by ``delta`` (negative goes back)."""
        self._offset += delta

    def reset(self) -> None:
        """Back to the machine's time."""
        self._offset = timedelta(0)
