"""DESIGN.md's ledger invariants as queries, and the read-side SQL the operator's commands share.

Pure: a ``Reader`` (one read-only snapshot, opened by ``ledger/reports.py``) comes in, violations go out.
Each check is one statement that returns only the offending rows, at most ``MAX_VIOLATIONS_PER_INVARIANT``,
so a clean ledger of any size costs a few table scans and no Python per row.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from iso_host.ledger.model import BatchTotals
from iso_host.ledger.sql import BATCH_TOTALS, CLOSING_KINDS, Row, batch_totals_from_rows
from iso_host.ledger.totals_json import optional_totals_from_json

BatchKey = tuple[str, str, int]  # (tid, mid, batch_number)

MAX_VIOLATIONS_PER_INVARIANT: Final = 1_000  # a ledger broken everywhere still gets an answer one can read
BATCH_KEYS: Final = (  # every batch a transaction or a settlement names
    "SELECT tid, mid, batch_number FROM (SELECT tid, mid, batch_number FROM transactions"
    " UNION SELECT tid, mid, batch_number FROM batches) AS k"
)
# The settlement's own totals (ledger/sql.py), grouped by batch instead of computed for one: one pass over the
# table for a whole report, where BATCH_TOTALS run once per batch would scan the table once per batch. Any
# condition BATCH_TOTALS adds after the batch's key (such as one that lets it use an index) is kept.
_ONE_BATCH: Final = " WHERE tid = %s AND mid = %s AND batch_number = %s"
_SELECT_LIST, _KEY, _AFTER_KEY = BATCH_TOTALS.partition(_ONE_BATCH)
assert _KEY, "ledger/sql.py BATCH_TOTALS no longer selects one batch by its key"
assert _SELECT_LIST.startswith("SELECT "), "ledger/sql.py BATCH_TOTALS changed shape"
assert _AFTER_KEY.endswith(" GROUP BY 1"), "ledger/sql.py BATCH_TOTALS changed shape"
_TOTALS_BY_BATCH: Final = "SELECT tid, mid, batch_number, " + _SELECT_LIST.removeprefix("SELECT ")
_TOTALS_CONDITION: Final = _AFTER_KEY.removesuffix(" GROUP BY 1").removeprefix(" AND ")
assert "%s" not in _TOTALS_BY_BATCH + _TOTALS_CONDITION, "the totals take no parameters besides the batch key"


class Reader(Protocol):
    """One read-only snapshot of a ledger. Statements use ``%s`` placeholders on both databases."""

    name: str  # the ledger URL as messages may show it (no password)

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]: ...

    def chunks(self, sql: str, parameters: Sequence[object], size: int) -> Generator[list[Row]]: ...

    def schema_version(self) -> int: ...


def batch_key(row: Row) -> BatchKey:
    return str(row["tid"]), str(row["mid"]), int(row["batch_number"])


def key_text(key: BatchKey) -> str:
    """A batch as messages name it: ``TERM0001 MERCHANT0000001 batch 3``."""
    return f"{key[0]} {key[1]} batch {key[2]}"


def totals_by_batch(reader: Reader, where: str, parameters: Sequence[object]) -> dict[BatchKey, BatchTotals]:
    """The host totals of every batch ``where`` selects (`` WHERE ...`` on transactions, or ""), summed now."""
    assert not where or where.startswith(" WHERE ")
    conditions = [condition for condition in (where.removeprefix(" WHERE "), _TOTALS_CONDITION) if condition]
    sql = _TOTALS_BY_BATCH + (" WHERE " + " AND ".join(conditions) if conditions else "") + " GROUP BY 1, 2, 3, 4"
    grouped: dict[BatchKey, list[Row]] = defaultdict(list)
    for row in reader.rows(sql, parameters):
        grouped[batch_key(row)].append(row)
    assert all(len(rows) <= 2 for rows in grouped.values()), "a domestic and a foreign row per batch at most"
    return {key: batch_totals_from_rows(rows) for key, rows in grouped.items()}


class Invariant(enum.StrEnum):
    """The invariants ``iso-host ledger verify`` checks, by the names it prints."""

    CANCELLED_AT_MOST_ONCE = "cancelled-at-most-once"  # (a) one approved void or reversal per original
    STATUS_MATCHES_LINKS = "status-matches-links"  # (b) VOIDED/REVERSED exactly when one such row names it
    REFUNDS_ADD_UP = "refunds-add-up"  # (c) refunded_minor and the refund statuses follow the approved refunds
    SETTLED_BATCH_UNCHANGED = "settled-batch-unchanged"  # (d) no row of a settled batch changed after it settled
    STORED_TOTALS_MATCH = "stored-totals-match"  # (e) a balanced batch's host_totals = its transactions' sum
    EVERY_00_IS_AN_APPROVAL = "every-00-is-an-approval"  # (f) no DECLINED row was answered 00
    # (g) a pre-auth is closed (by an approved pre-auth void or completion) at most once, and only while APPROVED
    PREAUTH_CLOSED_AT_MOST_ONCE = "preauth-closed-at-most-once"


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: Invariant
    subject: str  # an RRN, or a batch as ``key_text`` names it
    detail: str  # one line, no card data

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"


_CANCELS: Final = (  # per original: how many approved voids (of a sale or a completion) and reversals name it
    "SELECT original_rrn, SUM(CASE WHEN kind IN ('void', 'completion_void') THEN 1 ELSE 0 END) AS voids,"
    " SUM(CASE WHEN kind = 'reversal' THEN 1 ELSE 0 END) AS reversals FROM transactions"
    " WHERE kind IN ('void', 'completion_void', 'reversal') AND status = 'APPROVED' AND original_rrn IS NOT NULL"
    " GROUP BY original_rrn"
)
# A pre-auth's row does not change when a pre-auth void or a completion closes it (its batch may have settled); the
# approved rows naming it are its state. Per closed original: how many close it, and what it is.
_CLOSINGS: Final = (
    "SELECT p.rrn, p.kind, p.status, COUNT(*) AS closings FROM transactions c"  # noqa: S608 - constants only
    f" JOIN transactions p ON p.rrn = c.original_rrn WHERE c.kind IN {CLOSING_KINDS} AND c.status = 'APPROVED'"
    " GROUP BY p.rrn, p.kind, p.status HAVING COUNT(*) > 1 OR p.kind <> 'preauth' OR p.status <> 'APPROVED'"
)
_REFUNDS: Final = (  # per original: the sum of its approved refunds
    "SELECT original_rrn, SUM(amount_minor) AS minor FROM transactions"
    " WHERE kind = 'refund' AND status = 'APPROVED' AND original_rrn IS NOT NULL GROUP BY original_rrn"
)
_LINKS: Final = (  # every row, with what names it
    "SELECT t.id, t.rrn, t.kind, t.status, t.amount_minor, t.refunded_minor,"  # noqa: S608 - constants only
    " COALESCE(c.voids, 0) AS voids, COALESCE(c.reversals, 0) AS reversals, COALESCE(r.minor, 0) AS refunds_minor"
    f" FROM transactions t LEFT JOIN ({_CANCELS}) AS c ON c.original_rrn = t.rrn"
    f" LEFT JOIN ({_REFUNDS}) AS r ON r.original_rrn = t.rrn"
)
_CHANGED_AFTER_SETTLEMENT: Final = (  # times are UTC ISO text (ledger/sql.py utc_text): text order is time order
    "SELECT t.rrn, t.batch_number, t.updated_at, b.settled_at FROM transactions t JOIN batches b ON b.tid = t.tid"
    " AND b.mid = t.mid AND b.batch_number = t.batch_number"
    " WHERE b.status = 'settled' AND t.updated_at > b.settled_at ORDER BY t.id LIMIT %s"
)
_BALANCED: Final = "b.status = 'settled' AND b.result = 'balanced'"
_IN_BALANCED_BATCH: Final = (
    " WHERE EXISTS (SELECT 1 FROM batches b WHERE b.tid = transactions.tid AND b.mid = transactions.mid"  # noqa: S608
    f" AND b.batch_number = transactions.batch_number AND {_BALANCED})"
)
_BALANCED_BATCHES: Final = (
    f"SELECT tid, mid, batch_number, host_totals FROM batches b WHERE {_BALANCED} ORDER BY tid, mid, batch_number"  # noqa: S608
)


def _linked(reader: Reader, condition: str) -> list[Row]:
    sql = f"SELECT * FROM ({_LINKS}) AS l WHERE {condition} ORDER BY id LIMIT %s"  # noqa: S608 - constants only
    return reader.rows(sql, (MAX_VIOLATIONS_PER_INVARIANT,))


def _cancelled_at_most_once(reader: Reader) -> Iterator[Violation]:
    sql = f"SELECT original_rrn, voids, reversals FROM ({_CANCELS}) AS c WHERE voids + reversals > 1"  # noqa: S608
    for row in reader.rows(f"{sql} ORDER BY original_rrn LIMIT %s", (MAX_VIOLATIONS_PER_INVARIANT,)):
        voids, reversals = int(row["voids"]), int(row["reversals"])
        detail = f"cancelled {voids + reversals} times ({voids} approved voids, {reversals} approved reversals)"
        yield Violation(Invariant.CANCELLED_AT_MOST_ONCE, str(row["original_rrn"]), detail)


def _status_matches_links(reader: Reader) -> Iterator[Violation]:
    consistent = (
        "(status = 'VOIDED' AND voids = 1 AND reversals = 0) OR (status = 'REVERSED' AND voids = 0 AND reversals = 1)"
        " OR (status NOT IN ('VOIDED', 'REVERSED') AND voids = 0 AND reversals = 0)"
    )
    for row in _linked(reader, f"NOT ({consistent})"):
        detail = (f"{row['kind']} {row['status']} with {int(row['voids'])} approved void(s)"
                  f" and {int(row['reversals'])} approved reversal(s) naming it")  # fmt: skip
        yield Violation(Invariant.STATUS_MATCHES_LINKS, str(row["rrn"]), detail)


def _refunds_add_up(reader: Reader) -> Iterator[Violation]:
    consistent = (
        "refunded_minor = refunds_minor AND refunded_minor <= amount_minor"
        " AND (refunded_minor > 0 OR status NOT IN ('PARTIALLY_REFUNDED', 'REFUNDED'))"
        " AND (refunded_minor = 0 OR refunded_minor = amount_minor OR status = 'PARTIALLY_REFUNDED')"
        " AND (refunded_minor = 0 OR refunded_minor < amount_minor OR status = 'REFUNDED')"
    )
    for row in _linked(reader, f"NOT ({consistent})"):
        detail = (f"{row['kind']} {row['status']} of {row['amount_minor']} with refunded_minor {row['refunded_minor']},"
                  f" while its approved refunds sum to {int(row['refunds_minor'])}")  # fmt: skip
        yield Violation(Invariant.REFUNDS_ADD_UP, str(row["rrn"]), detail)


def _settled_batch_unchanged(reader: Reader) -> Iterator[Violation]:
    for row in reader.rows(_CHANGED_AFTER_SETTLEMENT, (MAX_VIOLATIONS_PER_INVARIANT,)):
        detail = f"updated {row['updated_at']}, after its batch {row['batch_number']} settled {row['settled_at']}"
        yield Violation(Invariant.SETTLED_BATCH_UNCHANGED, str(row["rrn"]), detail)


def _totals_text(totals: BatchTotals | None) -> str:
    """``domestic debits 3/6000 credits 1/500; foreign ...``: count/amount in minor units."""
    if totals is None:
        return "nothing"
    return "; ".join(
        f"{side} debits {t.debit_count}/{t.debit_minor} credits {t.credit_count}/{t.credit_minor}"
        for side, t in (("domestic", totals.domestic), ("foreign", totals.foreign))
    )


def _totals_difference(stored_text: str | None, summed: BatchTotals) -> str | None:
    """What is wrong with a balanced batch's host_totals, or None."""
    try:
        stored = optional_totals_from_json(stored_text)
    except ValueError as error:
        return f"host_totals unreadable: {error}"
    if stored == summed:
        return None
    return f"host_totals record {_totals_text(stored)}; its transactions sum to {_totals_text(summed)}"


def _stored_totals_match(reader: Reader) -> Iterator[Violation]:
    summed = totals_by_batch(reader, _IN_BALANCED_BATCH, ())
    found = 0
    for row in reader.rows(_BALANCED_BATCHES):
        key = batch_key(row)
        detail = _totals_difference(row["host_totals"], summed.get(key, BatchTotals()))
        if detail is not None and found < MAX_VIOLATIONS_PER_INVARIANT:
            found += 1
            yield Violation(Invariant.STORED_TOTALS_MATCH, key_text(key), detail)


def _every_00_is_an_approval(reader: Reader) -> Iterator[Violation]:
    sql = "SELECT rrn, kind FROM transactions WHERE response_code = '00' AND status = 'DECLINED' ORDER BY id LIMIT %s"
    for row in reader.rows(sql, (MAX_VIOLATIONS_PER_INVARIANT,)):
        yield Violation(Invariant.EVERY_00_IS_AN_APPROVAL, str(row["rrn"]), f"{row['kind']} DECLINED, answered 00")


def _preauth_closed_at_most_once(reader: Reader) -> Iterator[Violation]:
    for row in reader.rows(f"{_CLOSINGS} ORDER BY p.rrn LIMIT %s", (MAX_VIOLATIONS_PER_INVARIANT,)):
        closings = int(row["closings"])
        detail = f"{row['kind']} {row['status']} closed by {closings} approved pre-auth void(s) or completion(s)"
        yield Violation(Invariant.PREAUTH_CLOSED_AT_MOST_ONCE, str(row["rrn"]), detail)


CHECKS: Final[tuple[Callable[[Reader], Iterator[Violation]], ...]] = (
    _cancelled_at_most_once,
    _status_matches_links,
    _refunds_add_up,
    _settled_batch_unchanged,
    _stored_totals_match,
    _every_00_is_an_approval,
    _preauth_closed_at_most_once,
)
assert len(CHECKS) == len(Invariant), "one check per invariant"
