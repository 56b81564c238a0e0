"""What the console shows live: the recent exchanges, each terminal's day, and the anomalies an acquirer would flag.

The pipeline hands every answered request to ``Monitor.exchange`` (``core.pipeline.Observer``). That costs a few
microseconds: the decoded messages are kept as they are (rendered field by field only when someone opens one), and
rows for the live stream are built once per ``FLUSH_S`` for all subscribers together, and only while someone
watches. Everything is in memory and bounded: the last ``KEEP`` exchanges and anomalies.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from iso_host.cards import mask_pan, pan_from_track2
from iso_host.clock import local_now
from iso_host.console.fields import response_meaning
from iso_host.core.outcome import Exchange, Observer
from iso_host.errors import WireError
from iso_host.money import format_amount
from iso_host.vocab import Reason
from iso_host.wire import Dialect, Message

KEEP: Final = 2_000  # exchanges (and anomalies) kept for the console; older ones are only in the ledger
FLUSH_S: Final = 0.2  # live rows leave in batches this far apart: one event per subscriber, not one per sale
SUBSCRIBER_BACKLOG: Final = 50  # batches queued for a slow browser; past it the oldest batch is dropped
# Rows a flush sends at most (500 a second): a table nobody can read faster than that costs the host nothing more
# under load; the rest are counted in a "skipped" event and stay in /api/transactions.
MAX_ROWS_PER_FLUSH: Final = 100
DECLINE_BURST: Final = 5  # declines by one terminal within DECLINE_WINDOW_S: an anomaly
DECLINE_WINDOW_S: Final = 60.0
REFUSED_VOID_STREAK: Final = 3  # refused voids in a row by one terminal: an anomaly
# Answers an acquirer's monitoring flags whenever they happen, with the words the console shows.
FLAGGED: Final[dict[Reason, str]] = {
    Reason.MAC_FAILED: "MAC failure",
    Reason.DUPLICATE: "duplicate request",
    Reason.AMOUNT_MISMATCH: "amount differs from the original's",
    Reason.CARD_MISMATCH: "card differs from the original's",
    Reason.UNKNOWN_TERMINAL: "unknown terminal",
    Reason.KSN_REPLAYED: "DUKPT counter replayed",
    Reason.CRYPTOGRAM_FAILED: "chip cryptogram failed",
    Reason.CRYPTOGRAM_REPLAYED: "chip cryptogram replayed",
}
VOID_KINDS: Final = frozenset({"void", "preauth_void", "completion_void"})
Counting = Observer  # what the monitor passes each exchange on to (console.metrics.Metrics)


# What the monitor keeps of an answer: one tuple of bytes, texts and numbers, which the garbage collector stops
# tracking after its first look (a class instance, or a tuple holding one, it would walk at every collection of its
# generation: with thousands kept that cost several microseconds a sale). Unpacked into a ``Seen`` when read.
Kept = tuple[Any, ...]
_ID, _TIME, _LATENCY, _TID, _KIND, _CODE, _BATCH = 0, 1, 2, 3, 4, 5, 6


def _kept(exchange_id: int, time_s: float, latency_ms: float, exchange: Exchange) -> Kept:
    reason = exchange.reason.value if exchange.reason is not None else None
    return (exchange_id, time_s, latency_ms, exchange.tid, exchange.kind, exchange.response_code, exchange.batch,
            exchange.frame, exchange.reply, exchange.mti, reason, exchange.mac, exchange.detail, exchange.scenario,
            exchange.stan, exchange.partial)  # fmt: skip


class Seen:
    """One kept answer, unpacked to be read."""

    __slots__ = ("exchange", "id", "latency_ms", "time_s")

    def __init__(self, kept: Kept, dialect: Dialect) -> None:
        (self.id, self.time_s, self.latency_ms, tid, kind, code, batch, frame, reply, mti, reason, mac, detail,
         scenario, stan, partial) = kept  # fmt: skip
        self.exchange = Exchange(
            dialect, frame, reply, mti=mti, reason=Reason(reason) if reason is not None else None, response_code=code,
            kind=kind, mac=mac, detail=detail, scenario=scenario, batch=batch, tid=tid, stan=stan, partial=partial,
        )  # fmt: skip

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_s, UTC)


@dataclass(slots=True)
class TerminalDay:
    """A terminal's activity since the host started."""

    requests: int = 0
    approved: int = 0
    declined: int = 0
    last_stan: str | None = None
    last_seen: float | None = None  # seconds since the epoch
    refused_voids: int = 0  # in a row
    declines: deque[float] = field(default_factory=lambda: deque(maxlen=DECLINE_BURST))  # their monotonic times


@dataclass(frozen=True, slots=True)
class Anomaly:
    id: int
    time: datetime
    tid: str | None
    kind: str
    text: str
    transactions: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "time": _iso(self.time), "tid": self.tid, "kind": self.kind, "text": self.text,
                "transactions": list(self.transactions)}  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Monitor:
    """Keeps what the console shows; ``subscribe`` for the live stream."""

    def __init__(self, dialect: Dialect, *, now: Callable[[], float] = time.time,
                 monotonic: Callable[[], float]) -> None:  # fmt: skip
        self.dialect = dialect
        self._now = now
        self._monotonic = monotonic
        self.seen: deque[Kept] = deque(maxlen=KEEP)
        self.anomalies: deque[Anomaly] = deque(maxlen=KEEP)
        self.terminals: dict[str, TerminalDay] = {}
        self.rejected_frames: int = 0
        self._ids = itertools.count(1)
        self._anomaly_ids = itertools.count(1)
        self._subscribers: set[asyncio.Queue[tuple[str, Any]]] = set()
        self._pending: list[Kept] = []
        self._flush: asyncio.TimerHandle | None = None
        self.metrics: Counting | None = None  # Prometheus counters, when /metrics is served

    # --- fed by the pipeline (core.pipeline.Observer) -------------------------------------------------------------

    def exchange(self, exchange: Exchange, latency_s: float) -> None:
        kept = _kept(next(self._ids), self._now(), round(latency_s * 1000, 3), exchange)
        self.seen.append(kept)
        if self.metrics is not None:
            self.metrics.exchange(exchange, latency_s)
        tid = exchange.tid
        if tid is not None:
            self._count(tid, kept[_ID], kept[_TIME], exchange)
        if self._subscribers:
            self._pending.append(kept)
            if self._flush is None:
                self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._send_pending)

    def committed(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.committed(seconds)

    def rejected(self, error: WireError) -> None:
        self.rejected_frames += 1
        if self.metrics is not None:
            self.metrics.rejected(error)

    # --- the terminal's day and the anomalies --------------------------------------------------------------------

    def _count(self, tid: str, exchange_id: int, time_s: float, exchange: Exchange) -> None:
        day = self.terminals.setdefault(tid, TerminalDay())
        reason = exchange.reason
        day.requests += 1
        day.last_seen = time_s
        day.last_stan = exchange.stan or day.last_stan
        if reason is Reason.APPROVED:
            day.approved += 1
        elif reason is not None:
            day.declined += 1
            day.declines.append(self._monotonic())
        flagged = FLAGGED.get(reason) if reason is not None else None
        if flagged is not None:
            self._flag(tid, reason.name.lower() if reason else "", f"{flagged} ({exchange.kind or exchange.mti})",
                       (exchange_id,))  # fmt: skip
        if exchange.kind in VOID_KINDS:
            day.refused_voids = 0 if reason is Reason.APPROVED else day.refused_voids + 1
            if day.refused_voids == REFUSED_VOID_STREAK:
                self._flag(tid, "refused_voids", f"{REFUSED_VOID_STREAK} refused voids in a row", self._last_ids(tid))
        if exchange.kind == "reversal" and exchange.detail and ("unknown" in exchange.detail
                                                                or "not found" in exchange.detail):  # fmt: skip
            self._flag(tid, "unknown_original", "reversal of an unknown original", (exchange_id,))
        if exchange.kind == "settlement" and reason is Reason.OUT_OF_BALANCE:
            self._flag(tid, "out_of_balance", "batch out of balance at settlement", (exchange_id,))
        declines = day.declines
        if (reason is not Reason.APPROVED and len(declines) == DECLINE_BURST
                and declines[-1] - declines[0] <= DECLINE_WINDOW_S):  # fmt: skip
            self._flag(tid, "decline_burst", f"{DECLINE_BURST} declines within {DECLINE_WINDOW_S:g} s",
                       self._last_ids(tid))  # fmt: skip
            declines.clear()

    def _last_ids(self, tid: str, count: int = 5) -> tuple[int, ...]:
        found = [kept[_ID] for kept in reversed(self.seen) if kept[_TID] == tid][:count]
        return tuple(reversed(found))

    def _flag(self, tid: str | None, kind: str, text: str, transactions: tuple[int, ...]) -> None:
        anomaly = Anomaly(next(self._anomaly_ids), datetime.fromtimestamp(self._now(), UTC), tid, kind, text,
                          transactions)  # fmt: skip
        self.anomalies.append(anomaly)
        for queue in self._subscribers:
            _offer(queue, ("anomaly", anomaly.as_json()))

    # --- what the API reads ---------------------------------------------------------------------------------------

    def row(self, seen: Seen) -> dict[str, Any]:
        """The summary the live table shows (masked PAN, amount as text, the code's meaning), built when asked for
        and not kept: what the monitor keeps of an answer stays a few objects (see ``core.outcome.Exchange``)."""
        exchange = seen.exchange
        request, response = exchange.request, exchange.response  # decoded now, not kept
        fields = request.fields
        amount = fields.get("4")
        code = exchange.response_code
        return {
            "id": seen.id, "time": _iso(seen.time), "local_time": _local_hms(seen.time),
            "tid": exchange.tid, "kind": exchange.kind, "mti": exchange.mti,
            "amount": format_amount(int(amount)) if amount and amount.isdigit() else None,
            "currency": fields.get("49"), "pan": _masked_card(request), "code": code,
            "meaning": _meaning(exchange.reason) or response_meaning(code, self.dialect), "reason": exchange.reason,
            "latency_ms": seen.latency_ms, "stan": exchange.stan,
            "rrn": (response.fields.get("37") if response else None) or fields.get("37"),
            "batch": None if exchange.batch is None else f"{exchange.batch:06d}",
        }  # fmt: skip

    def find(self, exchange_id: int) -> Seen | None:
        for kept in reversed(self.seen):
            if kept[_ID] == exchange_id:
                return Seen(kept, self.dialect)
            if kept[_ID] < exchange_id:
                return None
        return None

    def rows(self, *, tid: str | None = None, kind: str | None = None, code: str | None = None,
             batch: str | None = None, limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
        """Newest first, filtered."""
        found: list[dict[str, Any]] = []
        for kept in reversed(self.seen):
            wanted = ((tid is None or kept[_TID] == tid) and (kind is None or kept[_KIND] == kind)
                      and (code is None or kept[_CODE] == code))  # fmt: skip
            if wanted and (batch is None or _same_batch(kept[_BATCH], batch)):
                found.append(self.row(Seen(kept, self.dialect)))  # decoded only for the rows that are shown
                if len(found) >= limit:
                    break
        return found

    # --- the live stream ------------------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[tuple[str, Any]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        self._subscribers.discard(queue)
        if not self._subscribers:
            self._pending.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _send_pending(self) -> None:
        self._flush = None
        pending = self._pending
        skipped = max(0, len(pending) - MAX_ROWS_PER_FLUSH)
        batch = [self.row(Seen(kept, self.dialect)) for kept in pending[skipped:]]
        pending.clear()
        for queue in self._subscribers:
            if skipped:
                _offer(queue, ("skipped", {"rows": skipped}))
            if batch:
                _offer(queue, ("transactions", batch))


def _local_hms(moment: datetime) -> str:
    local = moment + _utc_offset()
    return f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"


def _utc_offset() -> timedelta:
    offset = local_now().utcoffset()
    return offset if offset is not None else timedelta()


def _meaning(reason: Reason | None) -> str | None:
    """The answer in words when the host knows why (a code such as 12 stands for several reasons)."""
    if reason is None or reason is Reason.FORCED_DECLINE:  # a scenario's code: the code's own meaning says more
        return None
    return reason.value.replace("_", " ").capitalize()


def _same_batch(batch: int | None, wanted: str) -> bool:
    return batch is not None and wanted.isdigit() and batch == int(wanted)


def _offer(queue: asyncio.Queue[tuple[str, Any]], item: tuple[str, Any]) -> None:
    """Queue for a subscriber; a browser that reads nothing loses its oldest batch, never blocks the host."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def _masked_card(message: Message) -> str | None:
    pan = message.fields.get("2")
    if pan is None and "35" in message.fields:
        pan = pan_from_track2(message.fields["35"])
    return mask_pan(pan) if pan else None
