"""Who may hold a connection, and the log lines a flood must not multiply.

``ConnectionGate`` counts every connection from its accept to its close, a TLS handshake included, in total
and per peer (``limits.peer_key``). ``ThrottledLog`` writes at most one line per kind and interval, with a count,
for events a peer can cause as fast as it can connect. ``AcceptErrors`` takes asyncio's report of an accept that
failed for want of file descriptors (EMFILE and its kin: asyncio retries the accept a second later) and makes it
one such line instead of a traceback on stderr. ``fit_open_file_limit`` makes room for ``max_connections`` at start.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from iso_host.errors import ConfigError
from iso_host.limits import Limits, fit_open_files, peer_key

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ThrottledLog:
    """At most one line per (event, why) and ``every_s``: the first at once, the rest counted and flushed later.

    Each line carries ``count``, the events it stands for (itself included) since the previous line of its kind,
    and the fields of the latest of them. ``flush`` writes what is still counted (the server calls it on stop).
    """

    def __init__(self, log: Any, every_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        assert every_s > 0
        self.log = log
        self.every_s = every_s
        self._clock = clock
        self._next_at: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], tuple[int, str, dict[str, Any]]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def note(self, event: str, why: str, *, level: str = "warning", **fields: Any) -> None:
        key = (event, why)
        count = self._pending.pop(key, (0, level, {}))[0] + 1
        now = self._clock()
        if now >= self._next_at.get(key, now):
            self._emit(key, count, level, fields)
            return
        self._pending[key] = (count, level, fields)
        if key not in self._timers:
            delay = self._next_at[key] - now
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._flush_one, key)

    def flush(self) -> None:
        for key in list(self._pending):
            self._flush_one(key)

    def _flush_one(self, key: tuple[str, str]) -> None:
        if key in self._pending:
            count, level, fields = self._pending.pop(key)
            self._emit(key, count, level, fields)

    def _emit(self, key: tuple[str, str], count: int, level: str, fields: dict[str, Any]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._next_at[key] = self._clock() + self.every_s
        event, why = key
        getattr(self.log, level)(event, why=why, count=count, every_s=self.every_s, **fields)


class ConnectionGate:
    """Admits a connection when the host is under ``max_connections`` and its peer under its share."""

    def __init__(self, limits: Limits) -> None:
        self.max_connections = limits.max_connections
        self.per_peer = min(limits.max_connections_per_peer, limits.max_connections)
        self.count = 0
        self._peers: Counter[str] = Counter()

    def enter(self, address: str) -> str | None:
        """Take a slot for a connection from ``address``; None, or why it is refused (a limit's name)."""
        key = peer_key(address)
        if self.count >= self.max_connections:
            return "max_connections"
        if self._peers[key] >= self.per_peer:
            return "max_connections_per_peer"
        self.count += 1
        self._peers[key] += 1
        return None

    def leave(self, address: str) -> None:
        key = peer_key(address)
        assert self._peers[key] > 0, "leave without enter"
        self.count -= 1
        self._peers[key] -= 1
        if not self._peers[key]:
            del self._peers[key]

    def peer_count(self, address: str) -> int:
        return self._peers[peer_key(address)]


class AcceptErrors:
    """A loop exception handler: accepts that failed for want of descriptors become throttled lines.

    Anything else goes to the handler that was there before (or asyncio's default). ``uninstall`` puts that one
    back, unless another handler has been installed on top since.
    """

    def __init__(self, throttled: ThrottledLog, open_file_limit: Callable[[], int | None]) -> None:
        self.throttled = throttled
        self.open_file_limit = open_file_limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._previous = loop, loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def uninstall(self) -> None:
        loop = self._loop
        if loop is not None and getattr(loop.get_exception_handler(), "__self__", None) is self:
            loop.set_exception_handler(self._previous)
        self._loop = None

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in OUT_OF_RESOURCES and "accept" in context.get("message", ""):
            self.throttled.note("accept_failed", errno.errorcode.get(error.errno or 0, "?"),
                                open_file_limit=self.open_file_limit(), retry_s=1.0)  # fmt: skip
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


def fit_open_file_limit(limits: Limits, log: Any) -> Limits:
    """Make room for ``max_connections`` in the open-file limit: raise the soft limit up to the hard one (an info
    line), or, when the hard limit is too low, serve with fewer connections (one warning line).

    Raises:
        ConfigError: the limit leaves room for too few connections to be worth starting (one line).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        plan = fit_open_files(limits, soft, hard, unlimited=resource.RLIM_INFINITY)
        if plan.soft is not None:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (plan.soft, hard))
            except (ValueError, OSError):  # not allowed after all: serve within the soft limit
                plan = fit_open_files(limits, soft, soft)
            else:
                log.info("open_files_raised", soft_from=soft, soft_to=plan.soft, hard=hard)
    except ValueError as error:
        raise ConfigError(f"limits.max_connections: {error}") from None
    if plan.lowered_from is not None:
        log.warning("max_connections_lowered", configured=plan.lowered_from,
                    max_connections=plan.limits.max_connections,
                    open_file_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0], needed=plan.needed,
                    hint=f"raise the open-file limit to {plan.needed}: ulimit -n {plan.needed}, or LimitNOFILE= under"
                         " systemd")  # fmt: skip
    return plan.limits
