"""What ``iso-host terminal`` prints: the response field by field (``console.fields.describe``: names in full,
sub-fields, masked PAN, hidden track and PIN data, key blocks as their check values), what its F39 means, the
original an action named, the slip (``--receipt``) and the one JSON object of ``--json``. Pure but for ``use_colour``,
which asks the stream.

Colour (green approved, red declined) only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, TextIO

from iso_host.cards import mask_pan
from iso_host.console.fields import FieldRow, describe, response_meaning
from iso_host.ledger.model import BatchTotals
from iso_host.money import format_amount
from iso_host.terminal import batch as book
from iso_host.terminal.receipt import Original, Slip
from iso_host.wire import Dialect, Message

NAME_WIDTH: Final = 32  # a longer name is printed whole; its value follows it
GREEN, RED, RESET = "\033[32m", "\033[31m", "\033[0m"
APPROVED_CODE: Final = "00"


def use_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour on a terminal only, unless ``NO_COLOR`` is set to anything or the terminal is dumb."""
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def paint(text: str, approved: bool, colour: bool) -> str:
    return f"{GREEN if approved else RED}{text}{RESET}" if colour else text


def _shown(row: FieldRow) -> str:
    """A row's value with its note (``476173******0010 (masked)``), or the note alone where nothing is shown."""
    if not row.value:
        return row.note or ""
    return f"{row.value} ({row.note})" if row.note else row.value


def _part_lines(parts: tuple[FieldRow, ...], depth: int) -> list[str]:
    lines: list[str] = []
    indent = "  " * depth
    for part in parts:
        lines.append(f"{indent}{part.id:<{12 - len(indent)}} {part.name:<25} {_shown(part)}".rstrip())
        lines += _part_lines(part.parts, depth + 1)
    return lines


def field_lines(message: Message, dialect: Dialect) -> list[str]:
    """The MTI, then each field as ``F39   Response Code   00``, its sub-fields indented under it."""
    lines = [f"{'MTI':<5} {'':<{NAME_WIDTH}} {message.mti}"]
    for row in describe(message, dialect):
        if len(row.name) > NAME_WIDTH:  # the whole name on its line, the value under the others'
            lines += [f"F{row.id:<4} {row.name}", f"{'':<5} {'':<{NAME_WIDTH}} {_shown(row)}".rstrip()]
        else:
            lines.append(f"F{row.id:<4} {row.name:<{NAME_WIDTH}} {_shown(row)}".rstrip())
        lines += _part_lines(row.parts, 1)
    return lines


def verdict(response: Message, dialect: Dialect) -> tuple[str | None, str | None]:
    """F39 and its meaning in the dialect (None, None for a response without F39)."""
    code = response.fields.get("39")
    return code, response_meaning(code, dialect)


def verdict_line(response: Message, dialect: Dialect, colour: bool) -> str | None:
    """``F39 05: Declined by a scenario``, green when approved, red otherwise (with colour)."""
    code, meaning = verdict(response, dialect)
    if code is None:
        return None
    return paint(f"F39 {code}: {meaning}", code == APPROVED_CODE, colour)


def hint(code: str | None, dialect: Dialect, *, signed_on: bool, tid: str, batch: int) -> str | None:
    """What to do about a refusal whose cause the terminal can see (the host's log says the rest)."""
    codes = dialect.response_codes

    def means(*reasons: str) -> bool:
        return code is not None and any(codes.get(reason) == code for reason in reasons)

    if means("NOT_SIGNED_ON", "MAC_FAILED") and not signed_on:
        return "hint: this terminal has no working keys: sign on first (iso-host terminal signon)"
    if means("UNKNOWN_TERMINAL"):
        return f"hint: the host may not know terminal {tid} (--tid; [[terminals]] in the host's config)"
    if means("BATCH_OUT_OF_SYNC"):
        return (f"hint: the host does not hold batch {batch:06d} open for this terminal (another ledger, or a batch"
                " settled already?); iso-host terminal status shows the terminal's side")  # fmt: skip
    return None


def named_line(action: str, item: book.Item) -> str:
    """Which original an action named: ``void names sale STAN 000005 RRN 000000000008, 20.00, card 476173***...``."""
    rrn = f" RRN {item['rrn']}" if item.get("rrn") else ""
    pan = str(item.get("pan") or "")
    card = f", card {mask_pan(pan)}" if pan else ""
    return f"{action} names {item['kind']} STAN {item['stan']}{rrn}, {format_amount(int(item['amount']))}{card}"


def message_json(message: Message | None, dialect: Dialect) -> dict[str, Any] | None:
    """``{"mti": "0210", "fields": {"2": "476173******0010", "60": "...", "60.1": "22", ...}}``, masked as printed."""
    if message is None:
        return None
    fields: dict[str, str] = {}

    def add(rows: tuple[FieldRow, ...]) -> None:
        for row in rows:
            fields[row.id] = row.value or row.note or ""
            add(row.parts)

    add(describe(message, dialect))
    return {"mti": message.mti, "fields": fields}


def result_json(
    action: str, request: Message | None, response: Message, dialect: Dialect, *, state_file: str, notes: list[str],
    named: book.Item | None, mac_verified: bool,
) -> dict[str, Any]:  # fmt: skip
    code, meaning = verdict(response, dialect)
    return {
        "action": action, "request": message_json(request, dialect), "response": message_json(response, dialect),
        "code": code, "meaning": meaning, "approved": code == APPROVED_CODE, "rrn": response.fields.get("37"),
        "approval_code": response.fields.get("38"), "stan": response.fields.get("11"),
        "named": named_line(action, named) if named is not None else None, "mac_verified": mac_verified,
        "notes": notes, "state_file": state_file,
    }  # fmt: skip


def slip_of(
    action: str, request: Message | None, response: Message, dialect: Dialect, *, tid: str, mid: str,
    merchant: str | None, when: datetime, batch: int, named: book.Item | None, totals: BatchTotals | None,
) -> Slip:  # fmt: skip
    """The slip of a sale, void, refund or settlement from its request and response (``receipt.render`` prints it)."""
    code, meaning = verdict(response, dialect)
    fields = request.fields if request is not None else {}
    pan = fields.get("2") or (str(named.get("pan") or "") if named is not None else "")
    amount = fields.get("4")
    original = None
    if named is not None:
        original = Original(str(named["stan"]), str(named.get("rrn") or ""), int(named["amount"]))
    return Slip(
        action, tid, mid, when, fields.get("49") or dialect.default_currency, code == APPROVED_CODE, code or "--",
        meaning or "no response code", merchant=merchant, card=mask_pan(pan) if pan else None,
        amount_minor=int(amount) if amount and amount.isdigit() and action != "settle" else None,
        rrn=response.fields.get("37"), approval_code=response.fields.get("38"), batch=batch,
        stan=response.fields.get("11") or fields.get("11"), original=original,
        totals=totals if action == "settle" else None,
    )  # fmt: skip
