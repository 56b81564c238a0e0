"""``iso-host terminal status``: what a terminal's state file holds, for people and as JSON. Pure.

Keys appear only as their check values, card numbers only masked (the state is read without opening its sealed
PANs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iso_host.cards import mask_pan
from iso_host.money import format_amount
from iso_host.security import key_check_value
from iso_host.terminal import batch as book
from iso_host.terminal.client import ClientState
from iso_host.terminal.sealed_pans import MASKED
from iso_host.terminal.state_files import MAX_STAN


def next_stan(state: ClientState) -> str:
    return f"{state.stan % MAX_STAN + 1:06d}"


def check_values(state: ClientState, tmk: bytes) -> dict[str, str] | None:
    """The working keys' check values (6 hex digits each), unwrapped under ``tmk``; None before sign-on."""
    try:
        keys = state.keys(tmk)
    except ValueError:
        return None
    if keys is None:
        return None
    return {"TPK": key_check_value(keys[0]).hex().upper(), "TAK": key_check_value(keys[1]).hex().upper()}


def _card(item: book.Item) -> str:
    pan = str(item.get(MASKED) or item.get("pan") or "")
    return mask_pan(pan) if pan and "*" not in pan else pan


def item_json(item: book.Item) -> dict[str, Any]:
    return {"kind": item["kind"], "stan": item["stan"], "rrn": item.get("rrn") or None,
            "amount": format_amount(int(item["amount"])), "card": _card(item) or None, "status": item["status"],
            "original_stan": item.get("original_stan")}  # fmt: skip


def item_line(item: book.Item) -> str:
    """``sale        STAN 000001  RRN 000000000001     12.34  476173******0010  approved``."""
    rrn = f"RRN {item['rrn']}" if item.get("rrn") else ""
    names = f"  names STAN {item['original_stan']}" if item.get("original_stan") else ""
    return (f"  {item['kind']:<15} STAN {item['stan']:<6}  {rrn:<16} {format_amount(int(item['amount'])):>12}"
            f"  {_card(item):<19}  {item['status']}{names}").rstrip()  # fmt: skip


def status_json(path: Path, state: ClientState | None, tmk: bytes) -> dict[str, Any]:
    if state is None:
        return {"state_file": str(path), "exists": False}
    totals = book.totals(state.items).overall
    return {
        "state_file": str(path), "exists": True, "host": state.host or None, "dialect": state.dialect or None,
        "tid": state.tid or None, "next_stan": next_stan(state), "batch": state.batch,
        "signed_on": state.tak_under_tmk is not None, "check_values": check_values(state, tmk),
        "totals": {"debit_count": totals.debit_count, "debit_amount": format_amount(totals.debit_minor),
                   "credit_count": totals.credit_count, "credit_amount": format_amount(totals.credit_minor)},
        "transactions": [item_json(item) for item in state.items],
        "pending_reversals": [item_json(item) for item in state.pending_reversals],
    }  # fmt: skip


def status_lines(path: Path, state: ClientState | None, tmk: bytes) -> list[str]:
    if state is None:
        return [f"state file   {path} (none yet: this terminal has sent nothing to this host)"]
    totals = book.totals(state.items).overall
    checks = check_values(state, tmk)
    signed_on = "no" if checks is None else "yes, " + ", ".join(f"{name} KCV {value}" for name, value in checks.items())
    lines = [
        f"state file   {path}", f"host         {state.host or '(not recorded)'}",
        f"dialect      {state.dialect or '(not recorded)'}", f"TID          {state.tid or '(not recorded)'}",
        f"next STAN    {next_stan(state)}",
        f"batch        {state.batch:06d}: {len(state.items)} transactions; debits {totals.debit_count}"
        f" {format_amount(totals.debit_minor)}, credits {totals.credit_count} {format_amount(totals.credit_minor)}",
        f"signed on    {signed_on}",
    ]  # fmt: skip
    lines += [item_line(item) for item in state.items]
    if state.pending_reversals:
        lines.append(f"pending reversals ({len(state.pending_reversals)}: sent before the next request)")
        lines += [item_line(item) for item in state.pending_reversals]
    else:
        lines.append("pending reversals: none")
    return lines
