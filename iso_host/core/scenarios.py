"""Scenarios: a QA engineer's "when this request comes, do that" — force a code, stall, stay silent, hang up.

A scenario matches on any of tid, PAN (by keyed hash), kind, MTI, amount and the amount's cents, and acts:
``respond`` forces a response code (recorded in the ledger as a decline), ``delay_ms`` stalls the reply,
``no_reply`` decides and commits but never answers, ``close`` decides, commits and hangs up, ``bad_mac``
answers with a MAC that does not verify, ``script71`` / ``script72`` add issuer scripts to a chip reply's field 55
(``issuer_scripts.py``; such a scenario matches only requests that carry field 55). ``times`` limits how often it
fires. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

ACTIONS: Final = ("respond", "delay_ms", "no_reply", "close", "bad_mac", "script71", "script72")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = ""
    # what to match (None: anything)
    tid: str | None = None
    pan_hash: str | None = field(default=None, repr=False)
    kind: str | None = None
    mti: str | None = None
    amount_minor: int | None = None
    amount_cents: int | None = None
    # what to do
    respond: str | None = None
    delay_ms: int = 0
    no_reply: bool = False
    close: bool = False
    bad_mac: bool = False
    issuer_scripts: bytes = b""  # templates 71 and 72 for a chip reply's field 55, built from script71 / script72
    times: int | None = None  # None: every time

    def __post_init__(self) -> None:
        assert self.respond is None or len(self.respond) == 2, self.respond
        assert self.amount_cents is None or 0 <= self.amount_cents <= 99

    def matches(self, *, tid: str, mti: str, kind: str, amount_minor: int | None, pan_hash: str | None,
                chip: bool = False) -> bool:  # fmt: skip
        """Whether the request matches; ``chip``: it carries field 55 (a scenario with issuer scripts needs it)."""
        if self.issuer_scripts and not chip:
            return False
        checks = (
            (self.tid, tid), (self.mti, mti), (self.kind, kind), (self.amount_minor, amount_minor),
            (self.pan_hash, pan_hash),
        )  # fmt: skip
        if any(wanted is not None and wanted != actual for wanted, actual in checks):
            return False
        return self.amount_cents is None or (amount_minor is not None and amount_minor % 100 == self.amount_cents)


@dataclass(slots=True)
class _Entry:
    scenario: Scenario
    remaining: int | None  # None: unlimited


class ScenarioBook:
    """The active scenarios in order; the first that matches fires and uses up one of its ``times``."""

    def __init__(self, scenarios: Iterable[Scenario] = ()) -> None:
        self._entries = [_Entry(scenario, scenario.times) for scenario in scenarios]

    def add(self, scenario: Scenario) -> None:
        self._entries.append(_Entry(scenario, scenario.times))

    def remove(self, index: int) -> tuple[Scenario, int | None]:
        """Take out the scenario at ``index`` (its place in ``active``); it comes back with the times it had left."""
        assert 0 <= index < len(self._entries), index
        entry = self._entries.pop(index)
        return entry.scenario, entry.remaining

    def replace(self, index: int, scenario: Scenario) -> tuple[Scenario, int | None]:
        """Put ``scenario`` in the place of the one at ``index``, with all its ``times`` (the old one's count goes);
        the old one comes back with the times it had left."""
        assert 0 <= index < len(self._entries), index
        old = self._entries[index]
        self._entries[index] = _Entry(scenario, scenario.times)
        return old.scenario, old.remaining

    def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        return count

    def active(self) -> list[tuple[Scenario, int | None]]:
        """Each scenario with the number of times it may still fire (None: unlimited)."""
        return [(entry.scenario, entry.remaining) for entry in self._entries]

    def fire(self, *, tid: str, mti: str, kind: str, amount_minor: int | None, pan_hash: str | None,
             chip: bool = False) -> Scenario | None:  # fmt: skip
        """The first matching scenario that may still fire, using up one of its times; None when none matches."""
        for entry in self._entries:
            if entry.remaining == 0:
                continue
            if entry.scenario.matches(tid=tid, mti=mti, kind=kind, amount_minor=amount_minor, pan_hash=pan_hash,
                                      chip=chip):  # fmt: skip
                if entry.remaining is not None:
                    entry.remaining -= 1
                return entry.scenario
        return None
