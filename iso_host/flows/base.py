"""What every flow takes and returns. A flow is a pure function: (request, context) → Decision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from iso_host.ledger.model import Card, Kind, LedgerCommand, Reason
from iso_host.terminals import WorkingKeys
from iso_host.wire import Dialect, Message

MAX_COMMANDS_PER_DECISION = 8


@dataclass(frozen=True, slots=True)
class Request:
    """A classified, validated request from a known terminal. Holds no clear card data."""

    kind: Kind
    message: Message
    tid: str
    mid: str
    batch_number: int
    stan: str
    amount_minor: int | None
    currency: str
    card: Card | None
    operator: str | None = None  # where the dialect carries one (CUP F63)


@dataclass(frozen=True, slots=True)
class Context:
    """What the host hands a flow besides the request: the time, fresh references and fresh keys."""

    now: datetime
    rrn: str | None
    dialect: Dialect
    tmk: bytes | None = field(default=None, repr=False)  # sign-on only: the terminal's master key
    fresh_keys: WorkingKeys | None = None  # sign-on only: random double-length keys to issue

    def __post_init__(self) -> None:
        assert self.now.tzinfo is not None, "flows compute with aware times only"


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """The terminal's new session after sign-on or sign-off."""

    signed_on: bool
    keys: WorkingKeys
    batch_number: int
    operator: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A flow's answer: why, which response fields to set, and what the ledger must record first."""

    reason: Reason
    fields: dict[str, str] = field(default_factory=dict)
    commands: tuple[LedgerCommand, ...] = ()
    session: SessionUpdate | None = None  # applied to the terminal in memory once the commands are committed

    def __post_init__(self) -> None:
        assert len(self.commands) <= MAX_COMMANDS_PER_DECISION
        assert "39" not in self.fields, "field 39 comes from the dialect's reason table"


Flow = Callable[[Request, Context], Decision]
