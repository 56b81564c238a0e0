"""A terminal's own batch: what it approved, voided, reversed and refunded, and the totals it settles with.

Kept in the client's state file, as a real terminal keeps its batch until settlement. The PAN is kept too:
the batch upload carries it (CUP F48 n20, iso87 F2); the state file is the terminal's own, never a log.
"""

from __future__ import annotations

from typing import Any, Final

from iso_host.ledger.model import BatchTotals, Totals
from iso_host.styles import UploadRecord

APPROVED, VOIDED, REVERSED = "approved", "voided", "reversed"
DEBIT_STATUSES: Final = frozenset({APPROVED, VOIDED})  # a voided sale stays a debit (gross totals)

Item = dict[str, Any]  # {"kind", "stan", "rrn", "amount", "pan", "date", "status", "original_stan"}


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
    raise LookupError(f"no {kind or 'transaction'} with {wanted} in this terminal's batch")


def totals(items: list[Item]) -> BatchTotals:
    """Gross totals: approved and voided sales are debits, approved voids and refunds credits."""
    sections = {False: Totals(), True: Totals()}
    for item in items:
        foreign = not str(item.get("pan", "")).startswith("62")
        amount = int(item["amount"])
        if item["kind"] == "sale" and item["status"] in DEBIT_STATUSES:
            sections[foreign] += Totals(debit_count=1, debit_minor=amount)
        elif item["kind"] in ("void", "refund") and item["status"] == APPROVED:
            sections[foreign] += Totals(credit_count=1, credit_minor=amount)
    return BatchTotals(domestic=sections[False], foreign=sections[True])


def upload_records(items: list[Item]) -> list[UploadRecord]:
    """The debits, as the batch upload sends them."""
    return [
        UploadRecord(item["stan"], item["pan"], int(item["amount"]), not item["pan"].startswith("62"))
        for item in items
        if item["kind"] == "sale" and item["status"] in DEBIT_STATUSES
    ]


def apply_reversal(items: list[Item], target: Item) -> None:
    """The host reversed ``target``: it counts nowhere, and reversing a void gives back its sale."""
    target["status"] = REVERSED
    if target["kind"] == "void":
        find(items, stan=target["original_stan"], kind="sale")["status"] = APPROVED
