"""``serve --log-level debug``: every answered request logged with its request and response field by field.

``DebugLog`` is a pipeline ``Observer`` (``core.pipeline``) that logs one ``request_fields`` line per answer: MTI,
kind, reason, response code and its meaning, and both messages as ``console.fields.describe`` shows them (the same
rows as ``iso-host decode --json`` and the console's inspector: the PAN masked, tracks, PIN blocks and keys left
out). ``Observers`` hands each call to several observers, so the console's monitor and the debug log both get
every exchange. ``with_debug_log`` is how the composition root attaches it, at debug level only: at any other level
nothing of this module is on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from iso_host.console.fields import described, response_meaning
from iso_host.core.outcome import Exchange, Observer
from iso_host.errors import WireError
from iso_host.log import get_logger
from iso_host.wire import Dialect

EVENT: Final = "request_fields"


class Observers:
    """Several observers as one: each call goes to every one of them, in order."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def exchange(self, exchange: Exchange, latency_s: float) -> None:
        for observer in self.observers:
            observer.exchange(exchange, latency_s)

    def rejected(self, error: WireError) -> None:
        for observer in self.observers:
            observer.rejected(error)

    def committed(self, seconds: float) -> None:
        for observer in self.observers:
            observer.committed(seconds)


class DebugLog:
    """Logs each answer's request and response, described and masked, at debug level."""

    def __init__(self, dialect: Dialect, logger: Any = None) -> None:
        self.dialect = dialect
        self.log = logger if logger is not None else get_logger()

    def exchange(self, exchange: Exchange, latency_s: float) -> None:
        request, response = exchange.request, exchange.response
        self.log.debug(
            EVENT, tid=exchange.tid, stan=exchange.stan, mti=exchange.mti,
            response_mti=response.mti if response is not None else None, kind=exchange.kind,
            reason=exchange.reason.value if exchange.reason is not None else None,
            response_code=exchange.response_code, meaning=response_meaning(exchange.response_code, self.dialect),
            mac=exchange.mac, detail=exchange.detail, latency_ms=round(latency_s * 1000, 3),
            request=described(request, self.dialect),
            response=described(response, self.dialect) if response is not None else None,
        )  # fmt: skip

    def rejected(self, error: WireError) -> None:
        """Nothing: the edge's ``frame_rejected`` line already says which field, at which byte."""

    def committed(self, seconds: float) -> None:
        """Nothing: commit times are the metrics' business."""


def with_debug_log(observer: Observer | None, dialect: Dialect) -> Observer:
    """The host's observer (the console's monitor, or none) with a ``DebugLog`` beside it."""
    debug_log = DebugLog(dialect)
    return debug_log if observer is None else Observers((observer, debug_log))
