"""A terminal's own batch: what it approved, voided, reversed and refunded, and the totals it settles with.

Pre-auths are kept too (the completion and the pre-auth void name them), but count in no totals: completions are
debits and completion voids credits, as for sales and their voids.

Kept in the client's state file, as a real terminal keeps its batch until settlement. The PAN is kept too:
the batch upload carries it (CUP F48 n20, iso87 F2); the state file is the terminal's own, never a log.
"""

from __future__ import annotations

from typing import Any, Final

from iso_host.cards import is_foreign_pan
from iso_host.ledger.model import BatchTotals, Totals
from iso_host.styles import UploadRecord

APPROVED, VOIDED, REVERSED = "approved", "voided", "reversed"
LAST: Final = "last"  # an action's --stan naming the newest of its kind still approved (``newest_open``)
COMPLETED: Final = "completed"  # a pre-auth its completion closed
DEBIT_STATUSES: Final = frozenset({APPROVED, VOIDED})  # a voided sale stays a debit (gross totals)
DEBIT_KINDS: Final = frozenset({"sale", "completion"})
CREDIT_KINDS: Final = frozenset({"void", "refund", "completion_void"})
PREAUTH_KINDS: Final = frozenset({"preauth", "preauth_void", "completion", "completion_void"})  # F25 06 (CUP)
VOIDED_KIND: Final = {"void": "sale", "preauth_void": "preauth", "completion_void": "completion"}  # what each voids

# {"kind", "stan", "rrn", "amount", "pan", "date", "status", "original_stan", "icc" (a chip sale's field 55, hex),
#  "tip" (a sale's tip, CUP 60.1=34: its amount includes it, as an adjust's new amount does)}
Item = dict[str, Any]


def find(items: list[Item], *, stan: str | None = None, rrn: str | None = None, kind: str | None = None) -> Item:
    """The newest item with this STAN or RRN (and kind).

    Raises:
        LookupError: the batch has no such item.
    """
    for item in reversed(items):
        matches = (stan is None or item["stan"] == stan) and (rrn is None or item["rrn"] == rrn)
        if matches and (kind is None or item["kind"] == kind):
            return item
    wanted = f"STAN {stan}" if stan else f"RRN {rrn}"
    raise LookupError(f"no {kind or 'transaction'} with {wanted} in this terminal's batch (iso-host terminal status"
                      " lists the batch)")  # fmt: skip


def newest_open(items: list[Item], kind: str | None = None) -> Item:
    """The newest item of ``kind`` (any kind but a reversal's) still approved: what ``--last`` names. A voided sale
    is passed over, so after ``void --last`` a ``refund --last`` names the sale before it.

    Raises:
        LookupError: the batch has none.
    """
    for item in reversed(items):
        if item["status"] == APPROVED and (item["kind"] == kind if kind else item["kind"] != "reversal"):
            return item
    raise LookupError(f"no approved {kind or 'transaction'} in this terminal's batch (iso-host terminal status lists"
                      " the batch)")  # fmt: skip


def totals(items: list[Item]) -> BatchTotals:
    """Gross totals: approved and voided sales and completions are debits, approved voids, completion voids and
    refunds credits."""
    sections = {False: Totals(), True: Totals()}
    for item in items:
        pan = str(item.get("pan", ""))
        foreign = is_foreign_pan(pan)
        amount = int(item["amount"])
        if item["kind"] in DEBIT_KINDS and item["status"] in DEBIT_STATUSES:
            sections[foreign] += Totals(debit_count=1, debit_minor=amount)
        elif item["kind"] in CREDIT_KINDS and item["status"] == APPROVED:
            sections[foreign] += Totals(credit_count=1, credit_minor=amount)
    return BatchTotals(domestic=sections[False], foreign=sections[True])


def upload_records(items: list[Item]) -> list[UploadRecord]:
    """The debits, as the batch upload sends them."""
    return [
        UploadRecord(item["stan"], item["pan"], int(item["amount"]), is_foreign_pan(item["pan"]), item.get("icc", ""))
        for item in items
        if item["kind"] in DEBIT_KINDS and item["status"] in DEBIT_STATUSES
    ]


def apply_reversal(items: list[Item], target: Item) -> None:
    """The host reversed ``target``: it counts nowhere; reversing a void gives back what it voided, reversing a
    completion reopens its pre-auth, reversing a completion void closes the pre-auth again. A pre-auth of an earlier
    batch is no longer in this one: nothing to mark."""
    target["status"] = REVERSED
    kind = target["kind"]
    if kind == "void":
        find(items, stan=target["original_stan"], kind="sale")["status"] = APPROVED
        return
    voided = _named(items, target, VOIDED_KIND.get(kind))
    if voided is not None:
        voided["status"] = APPROVED
    if kind == "completion":
        _mark(_named(items, target, "preauth"), APPROVED)
    if kind == "completion_void" and voided is not None:
        _mark(_named(items, voided, "preauth"), COMPLETED)


def reopen(items: list[Item], completion: Item) -> None:
    """The completion was voided: its pre-auth, if this batch holds it, is open again."""
    _mark(_named(items, completion, "preauth"), APPROVED)


def _named(items: list[Item], item: Item, kind: str | None) -> Item | None:
    """The item of ``kind`` that ``item`` names by its original STAN, if this batch still holds it."""
    stan = item.get("original_stan")
    if kind is None or not stan:
        return None
    try:
        return find(items, stan=stan, kind=kind)
    except LookupError:
        return None


def _mark(item: Item | None, status: str) -> None:
    if item is not None:
        item["status"] = status
