"""What the pipeline answers and tells: the ``Outcome`` of one frame, the ``Exchange`` an observer (the console, the
debug log) is handed, and the two protocols around ``Host``: its ``Observer`` and the ``Answerer`` an edge needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from iso_host.errors import WireError
from iso_host.vocab import Reason
from iso_host.wire import Dialect, Envelope, Message, decode, encode


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
    frame: bytes = b""  # the request's bytes, for an observer (never sent between processes)


class Exchange:
    """One answered request, for an observer (the console, metrics, the debug log): its bytes as they came and went,
    and how the answer was reached.

    The messages are kept as bytes and decoded only when asked for (``request``, ``response``): an observer that keeps
    the last thousands of answers then holds a handful of objects each instead of two decoded messages, which the
    garbage collector would otherwise walk again and again (measured: ~15 µs a sale with 2,000 kept). The messages
    carry card data in clear: an observer masks what it shows.
    """

    __slots__ = ("_partial", "batch", "detail", "dialect", "frame", "kind", "mac", "mti", "reason", "reply",
                 "response_code", "scenario", "stan", "tid")  # fmt: skip

    def __init__(
        self, dialect: Dialect, frame: bytes, reply: bytes | None, *, mti: str, reason: Reason | None,
        response_code: str | None, kind: str | None, mac: str, detail: str | None = None,
        scenario: str | None = None, batch: int | None = None, tid: str | None = None, stan: str | None = None,
        partial: Message | None = None,
    ) -> None:  # fmt: skip
        self.dialect = dialect
        self.frame = frame  # the request as it came (envelope included, length header not)
        self.reply = reply  # the answer as it left, before a scenario withheld or spoiled it
        self.mti = mti
        self.reason = reason
        self.response_code = response_code
        self.kind = kind
        self.mac = mac  # "verified", "failed" or "absent"
        self.detail = detail  # why it was refused, in words (admission's or a rule's)
        self.scenario = scenario
        self.batch = batch  # the batch it was decided in, once admission read it
        self.tid = tid
        self.stan = stan
        self._partial = partial  # a request that did not decode: the fields that did

    @classmethod
    def of(cls, dialect: Dialect, request: Message, response: Message | None, **details: Any) -> Exchange:
        """An exchange of messages (encoded here), as a test or a caller holding messages has them."""
        reply = encode(response, Envelope(), dialect) if response is not None else None
        return cls(dialect, encode(request, Envelope(), dialect), reply, mti=request.mti,
                   tid=request.fields.get("41"), stan=request.fields.get("11"), **details)  # fmt: skip

    @property
    def partial(self) -> Message | None:
        """A request that did not decode: the fields that did (None for every other)."""
        return self._partial

    @property
    def request(self) -> Message:
        return self._partial if self._partial is not None else decode(self.frame, self.dialect)[1]

    @property
    def response(self) -> Message | None:
        return decode(self.reply, self.dialect)[1] if self.reply else None


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
