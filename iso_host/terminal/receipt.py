"""The slip a POS prints after a sale, void, refund or settlement (``iso-host terminal ... --receipt``): plain text,
40 columns, as a receipt printer takes it. Pure: ``render`` of a ``Slip``.

The card is masked (first 6, last 4) as slips print it; nothing else of the card is ever on one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from iso_host.ledger.model import BatchTotals
from iso_host.money import format_amount

WIDTH: Final = 40
# ISO 4217 numeric to alphabetic, for the currencies the dialects and test labs use; others print as their number.
CURRENCIES: Final = {
    "036": "AUD", "124": "CAD", "156": "CNY", "344": "HKD", "356": "INR", "392": "JPY", "702": "SGD",
    "756": "CHF", "826": "GBP", "840": "USD", "978": "EUR",
}  # fmt: skip
TITLES: Final = {"sale": "SALE", "void": "VOID", "refund": "REFUND", "settle": "SETTLEMENT"}


@dataclass(frozen=True, slots=True)
class Original:
    """What a void cancels: its STAN, RRN and amount."""

    stan: str
    rrn: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Slip:
    """Everything a slip shows. ``totals`` only for a settlement, ``original`` only for a void or refund."""

    action: str  # sale | void | refund | settle
    tid: str
    mid: str
    when: datetime
    currency: str  # ISO 4217 numeric, F49
    approved: bool
    code: str  # F39
    meaning: str
    merchant: str | None = None
    card: str | None = None  # masked
    amount_minor: int | None = None
    rrn: str | None = None
    approval_code: str | None = None
    batch: int | None = None
    stan: str | None = None
    original: Original | None = None
    totals: BatchTotals | None = None


def _pair(left: str, right: str, width: int = WIDTH) -> str:
    """``left`` and ``right`` on one line, right-aligned; on two when they do not fit."""
    gap = width - len(left) - len(right)
    return f"{left}{' ' * gap}{right}" if gap >= 1 else f"{left}\n{right.rjust(width)}"


def _money(minor: int, currency: str) -> str:
    return f"{CURRENCIES.get(currency, currency)} {format_amount(minor)}"


def _totals_lines(totals: BatchTotals, currency: str) -> list[str]:
    numbers = totals.overall
    return [_pair(f"DEBITS  {numbers.debit_count:>4}", _money(numbers.debit_minor, currency)),
            _pair(f"CREDITS {numbers.credit_count:>4}", _money(numbers.credit_minor, currency)),
            _pair("NET", _money(numbers.debit_minor - numbers.credit_minor, currency))]  # fmt: skip


def render(slip: Slip) -> list[str]:
    """The slip's lines, none wider than 40 columns."""
    rule = "-" * WIDTH
    lines = [(slip.merchant or "MERCHANT").upper()[:WIDTH].center(WIDTH).rstrip()]
    lines += [_pair("MID", slip.mid), _pair("TID", slip.tid),
              _pair(slip.when.strftime("%Y-%m-%d"), slip.when.strftime("%H:%M:%S")), rule,
              TITLES.get(slip.action, slip.action.upper()).center(WIDTH).rstrip()]  # fmt: skip
    if slip.card:
        lines.append(_pair("CARD", slip.card))
    if slip.batch is not None:
        lines.append(_pair("BATCH", f"{slip.batch:06d}"))
    if slip.stan:
        lines.append(_pair("STAN", slip.stan))
    if slip.rrn:
        lines.append(_pair("RRN", slip.rrn))
    if slip.approval_code:
        lines.append(_pair("APPR CODE", slip.approval_code))
    if slip.original is not None:
        cancels = "VOID OF" if slip.action == "void" else "REFUND OF"
        lines += [_pair(cancels, f"STAN {slip.original.stan}"), _pair("  RRN", slip.original.rrn or "-"),
                  _pair("  AMOUNT", _money(slip.original.amount_minor, slip.currency))]  # fmt: skip
    if slip.totals is not None:
        lines += [rule, *_totals_lines(slip.totals, slip.currency)]
    if slip.amount_minor is not None:
        sign = "-" if slip.action in ("void", "refund") else ""
        lines += [rule, _pair("TOTAL", sign + _money(slip.amount_minor, slip.currency))]
    lines.append(rule)
    verdict = "APPROVED" if slip.approved else f"DECLINED {slip.code}"
    lines.append(verdict.center(WIDTH).rstrip())
    if not slip.approved:
        lines.append(slip.meaning[:WIDTH].center(WIDTH).rstrip())
    return [part for line in lines for part in line.split("\n")]
