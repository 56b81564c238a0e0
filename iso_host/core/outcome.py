"""What the pipeline answers and tells: the ``Outcome`` of one frame, the ``Exchange`` an observer (the console, the
debug log) is handed, and the two protocols around ``Host``: its ``Observer`` and the ``Answerer`` an edge needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from iso_host.errors import WireError
from iso_host.vocab import Reason
from iso_host.wire import Dialect, Message


@dataclass(slots=True)
class Outcome:
    """The result of handling one frame."""

    reply: bytes | None
    close: bool = False
    reason: Reason | None = None
    response_code: str | None = None
    mti: str | None = None
    kind: str | None = None
    log: dict[str, object] = field(default_factory=dict)  # safe to log: no card data, no keys
    error: WireError | None = None
    delay_s: float = 0.0  # a scenario stalls the reply this long (the edge waits; the ledger already committed)
    started: float = 0.0  # the host's monotonic reading when the frame came in (for an observer's latency)
    batch: int | None = None  # the batch the request was decided in (an observer's view; the dialect's or the host's)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One answered request, for an observer (the console, metrics): the messages as decoded and built, and how the
    answer was reached. The messages carry card data in clear: an observer masks what it shows."""

    request: Message
    response: Message | None
    reason: Reason | None
    response_code: str | None
    kind: str | None
    mac: str  # "verified", "failed" or "absent"
    detail: str | None  # why it was refused, in words (admission's or a rule's)
    scenario: str | None
    batch: int | None = None  # the batch it was decided in, once admission read it

    @property
    def mti(self) -> str:
        return self.request.mti


class Observer(Protocol):
    """Told of every answer the host builds (``Host.observer``); it must return at once and never raise."""

    def exchange(self, exchange: Exchange, latency_s: float) -> None: ...

    def rejected(self, error: WireError) -> None: ...

    def committed(self, seconds: float) -> None: ...


class Answerer(Protocol):
    """What an edge needs to answer frames: a ``Host``, or a worker's link to the core's (``workers.remote``)."""

    @property
    def dialect(self) -> Dialect: ...

    async def handle(self, frame: bytes, *, peer_subject: str | None = None) -> Outcome: ...
