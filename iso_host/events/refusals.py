"""Refusals that write no ledger row are counted, not each written to the outbox: one aggregate event per interval.

Pure: the host passes the host clock's time and its monotonic timer in. Without this, every frame from anyone who can
reach the port became one outbox row (40,000 sales from an unknown terminal: 40,000 pending events and a 21 MB ledger
in 10 s while the broker was down). Now:

- **Unattributable** requests (the terminal or merchant is not configured, the frame did not decode, the message
  could not be classified) are only counted, per (reason, TID as sent, MTI).
- **Other refusals with no ledger row of their own** (a bad MAC, a disabled terminal, a missing field, a duplicate)
  keep their own decision event, up to ``individual_per_interval`` in each interval across all terminals; past that
  they are counted too.
- ``drain`` turns the counts into one ``refusals`` event (at most ``max_keys`` rows, the rest summed in ``others``),
  which the host's flush task commits once per interval when there is anything to tell.

So the outbox gains at most ``individual_per_interval + 1`` events per interval from refused traffic, whatever its rate.
``totals`` counts every refused request by reason since the host started (memory only).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from iso_host.vocab import Reason

INTERVAL_S: Final = 10.0  # one aggregate event at most this often
INDIVIDUAL_PER_INTERVAL: Final = 100  # refusals of configured terminals that still get their own event, per interval
MAX_KEYS: Final = 64  # (reason, tid, mti) rows one aggregate event lists; the rest are summed in ``others``
MAX_TID_CHARS: Final = 16  # a TID as sent is cut here (field 41 is 8 characters in every dialect)
UNATTRIBUTED: Final = frozenset({Reason.UNKNOWN_TERMINAL, Reason.UNKNOWN_MERCHANT})

Key = tuple[str, str | None, str | None]  # reason, tid, mti


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """What one aggregate event tells (``record.refusals_event``): rows by count, most first."""

    since: datetime  # the host clock's time of the first refusal counted, and of the last
    until: datetime
    rows: tuple[tuple[Key, int], ...]
    others: int  # refusals counted whose key did not fit in the rows

    @property
    def count(self) -> int:
        return sum(count for _, count in self.rows) + self.others


@dataclass(slots=True)
class RefusalTally:
    """The counts since the last aggregate event, the individual-event budget, and the totals since start."""

    interval_s: float = INTERVAL_S
    individual_per_interval: int = INDIVIDUAL_PER_INTERVAL
    max_keys: int = MAX_KEYS
    totals: Counter[str] = field(default_factory=Counter)  # reason -> refused requests since start (never reset)
    _counts: Counter[Key] = field(default_factory=Counter)
    _others: int = 0  # counted requests whose key did not fit in ``max_keys``
    _since: datetime | None = None
    _until: datetime | None = None
    _budget_from: float | None = None
    _budget_used: int = 0

    @property
    def pending(self) -> int:
        """Requests counted and not yet in an aggregate event."""
        return sum(self._counts.values()) + self._others

    def counted_instead(
        self, reason: Reason, tid: str | None, mti: str | None, *, attributed: bool, now: datetime, monotonic: float
    ) -> bool:
        """Whether this refusal is counted here instead of getting its own event (``attributed``: the request came
        from a configured terminal and was classified)."""
        if attributed and reason not in UNATTRIBUTED and self._take_budget(monotonic):
            return False
        self.count(reason, tid, mti, now=now)
        return True

    def count(self, reason: Reason, tid: str | None, mti: str | None, *, now: datetime) -> None:
        self.totals[reason.value] += 1
        key = (reason.value, tid[:MAX_TID_CHARS] if tid is not None else None, mti)
        if key in self._counts or len(self._counts) < self.max_keys:
            self._counts[key] += 1
        else:
            self._others += 1
        self._since = self._since or now
        self._until = now

    def _take_budget(self, monotonic: float) -> bool:
        if self._budget_from is None or monotonic - self._budget_from >= self.interval_s:
            self._budget_from, self._budget_used = monotonic, 0
        if self._budget_used >= self.individual_per_interval:
            return False
        self._budget_used += 1
        return True

    def drain(self) -> RefusalSummary | None:
        """Everything counted since the last drain (None when nothing was), and start afresh."""
        if not self.pending:
            return None
        assert self._since is not None
        assert self._until is not None
        rows = tuple(sorted(self._counts.items(), key=lambda item: (-item[1], item[0][0], str(item[0][1:]))))
        summary = RefusalSummary(self._since, self._until, rows, self._others)
        self._counts.clear()
        self._others, self._since, self._until = 0, None, None
        return summary
