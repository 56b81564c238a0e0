"""What a request names: its original, found by the dialect's lookups, and the original's lineage.

The lookups come from admission (``Request.original_queries``, tried in order); a lookup that names a day (CUP
61.3) is turned into that local day's times here, where the host's clock and rules are known. The lineage is what
the original names in turn, for kinds whose cancelling reaches past their original (``KindSpec.linked``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Final

from iso_host.core.flows import KINDS, Request
from iso_host.core.rules import RuleSettings
from iso_host.ledger.model import Original, OriginalQuery
from iso_host.ledger.store import Store

MAX_LINEAGE: Final = 2  # a completion void's completion, then its pre-auth


def dated(query: OriginalQuery, now: datetime, rules: RuleSettings) -> OriginalQuery | None:
    """The query with the day it names as times; None when it names a day no calendar has (it finds nothing)."""
    if query.date_mmdd is None:
        return query
    day = named_day(query.date_mmdd, now, rules)
    if day is None:
        return None
    return replace(query, created_from=day[0], created_before=day[1])


async def find_named(
    store: Store, request: Request, now: datetime, rules: RuleSettings, *, deadline: float
) -> tuple[Original | None, tuple[Original, ...]]:
    """The original the request names (the first lookup that finds one) and its lineage."""
    original = None
    for query in request.original_queries:
        lookup = dated(query, now, rules)
        if lookup is None:
            continue
        original = await store.find_original(lookup, deadline=deadline)
        if original is not None:
            break
    lineage: list[Original] = []
    current = original
    while current is not None and len(lineage) < MAX_LINEAGE:
        record = current.record
        spec = KINDS.get(record.kind)
        if spec is None or not spec.linked or record.original_rrn is None:
            break
        named = OriginalQuery(record.tid, record.mid, rrn=record.original_rrn)
        current = await store.find_original(named, deadline=deadline)
        if current is not None:
            lineage.append(current)
    return original, tuple(lineage)


def named_day(mmdd: str, now: datetime, settings: RuleSettings) -> tuple[datetime, datetime] | None:
    """The local day a terminal names by month and day (CUP 61.3), as [start, end): the latest such date no later
    than tomorrow (a terminal's clock may run ahead). None for a date no calendar has (1399, 0230).

    Local is the rules' time zone, else the host clock's: the zone the host's replies give their F13 date in.
    """
    if len(mmdd) != len("MMDD") or not mmdd.isdigit():
        return None
    zone = settings.timezone or now.tzinfo
    latest = now.astimezone(zone).date() + timedelta(days=1)
    for year in range(latest.year, latest.year - 8, -1):  # 8 years hold a 29 February
        try:
            day = date(year, int(mmdd[:2]), int(mmdd[2:]))
        except ValueError:
            continue
        if day <= latest:
            return datetime.combine(day, time(0, 0), zone), datetime.combine(day + timedelta(days=1), time(0, 0), zone)
    return None
