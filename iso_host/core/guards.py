"""Replay and abuse guards (issue 14): a MAC'd request seen before, a DUKPT counter that did not move forward,
sign-ons faster than a terminal needs them. Pure: the caller passes the monotonic time in seconds.

All three live in this process's memory. A restart forgets them: a frame captured before the restart can be
replayed once after it, unless the batch's own duplicate check (terminal, batch, STAN) still refuses it; a DUKPT
counter is then trusted again from the next request whose MAC verifies.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Final

DEFAULT_REPLAY_WINDOW_S: Final = 86_400.0  # a day: longer than any batch stays open
DEFAULT_REPLAY_MAX_ENTRIES: Final = 1_000_000  # about 100 MB at most; past it the oldest are forgotten first
DEFAULT_SIGNONS_PER_MINUTE: Final = 60  # a terminal signs on once a day or after a restart; room for test tools (fuzz)
SIGNON_PERIOD_S: Final = 60.0
REPLAY_DIGEST_BYTES: Final = 16
KSN_COUNTER_BITS: Final = 21  # ANSI X9.24-1: the KSN's last 21 bits count transactions
KSN_COUNTER_MASK: Final = (1 << KSN_COUNTER_BITS) - 1


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """``[security]``: the replay window (0 turns it off), its memory bound, and sign-ons per terminal per minute
    (None: unlimited)."""

    replay_window_s: float = DEFAULT_REPLAY_WINDOW_S
    replay_max_entries: int = DEFAULT_REPLAY_MAX_ENTRIES
    signons_per_minute: int | None = DEFAULT_SIGNONS_PER_MINUTE


def replay_key(tid: str, body: bytes) -> bytes:
    """What identifies a MAC'd request: its terminal and a digest of the bytes its MAC covers (the MAC included)."""
    return hashlib.sha256(tid.encode("utf-8", errors="replace") + b"\x00" + body).digest()[:REPLAY_DIGEST_BYTES]


class ReplayGuard:
    """Remembers MAC'd requests for ``window_s`` seconds, at most ``max_entries`` of them (the oldest go first)."""

    def __init__(self, window_s: float, max_entries: int) -> None:
        assert window_s >= 0, "0 turns the window off"
        assert max_entries > 0, "a guard remembers something"
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: dict[bytes, float] = {}  # insertion order is time order: the oldest entry comes first
        self.evicted = 0  # entries forgotten before their window ended, for want of room

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, key: bytes, now: float) -> bool:
        """False when ``key`` was admitted within the window; else remember it (from ``now``) and return True."""
        if self.window_s == 0:
            return True
        self._expire(now)
        if key in self._seen:
            return False
        self._seen[key] = now
        if len(self._seen) > self.max_entries:
            del self._seen[next(iter(self._seen))]
            self.evicted += 1
        return True

    def forget(self, key: bytes) -> None:
        """Take back an admission whose request changed nothing (the ledger failed): its retry is no replay."""
        self._seen.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen))
            if self._seen[oldest] + self.window_s > now:
                return
            del self._seen[oldest]


def ksn_parts(ksn: bytes) -> tuple[bytes, int]:
    """A DUKPT KSN's identity (key set id and device id, the counter's bits cleared) and its transaction counter."""
    number = int.from_bytes(ksn, "big")
    return (number & ~KSN_COUNTER_MASK).to_bytes(len(ksn), "big"), number & KSN_COUNTER_MASK


class KsnCounters:
    """The highest DUKPT transaction counter seen per terminal and KSN identity; a counter must go up."""

    def __init__(self) -> None:
        self._highest: dict[tuple[str, bytes], int] = {}

    def advance(self, tid: str, ksn: bytes) -> int | None:
        """Take the KSN's counter as the newest; when it is not above the highest seen, return that highest and
        change nothing."""
        identity, counter = ksn_parts(ksn)
        highest = self._highest.get((tid, identity))
        if highest is not None and counter <= highest:
            return highest
        self._highest[tid, identity] = counter
        return None


class SignonLimiter:
    """At most ``per_minute`` sign-ons per terminal in any 60 seconds; refused attempts do not count."""

    def __init__(self, per_minute: int | None) -> None:
        assert per_minute is None or per_minute > 0
        self.per_minute = per_minute
        self._times: dict[str, deque[float]] = {}
        self._refusing: set[str] = set()  # terminals refused since their last admitted sign-on (logged once)

    def admit(self, tid: str, now: float) -> tuple[bool, bool]:
        """Whether this sign-on may go ahead, and whether it is the first refused since the terminal's last admitted
        one (the edge logs that one)."""
        if self.per_minute is None:
            return True, False
        times = self._times.setdefault(tid, deque())
        while times and times[0] + SIGNON_PERIOD_S <= now:
            times.popleft()
        if len(times) >= self.per_minute:
            first = tid not in self._refusing
            self._refusing.add(tid)
            return False, first
        times.append(now)
        self._refusing.discard(tid)
        return True, False
