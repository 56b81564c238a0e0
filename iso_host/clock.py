"""The host's clock: the machine's time plus an offset that live control may set or advance.

QA rolls the business day without waiting for it: every rule (void window, business-day cut-off) and every
ledger timestamp reads this clock, so moving it moves them all. ``HostClock`` is pure: the source of real time
is injected, and ``local_now`` is the one the host and the terminal use.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta


def local_now() -> datetime:
    """The machine's time, aware, in its local zone: the real-time source of the host's and the terminal's clocks."""
    return datetime.now().astimezone()


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
