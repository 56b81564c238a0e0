"""Automatic reversal, as a real terminal does it: a financial request the host never answered may still have been
approved (the reply was lost), so the terminal reverses it (0400, with the dialect's reversal fields; CUP carries
F39 98, "no reply", in its template) at once, and keeps the reversal in its state file until the host answers it:
sent again before the next command's request. ``--no-auto-reversal`` turns it off.

``record`` is pure; ``send_pending`` runs the pending reversals over a session's connection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from iso_host.clock import local_now
from iso_host.money import format_amount
from iso_host.styles import family_of
from iso_host.terminal import batch as book
from iso_host.terminal.client import ClientError, ClientState, MacKeys, NoResponse, TerminalClient, dukpt_keys
from iso_host.wire import Dialect, Message


class Session(Protocol):
    """What sending reversals needs of a terminal's session (``context.Session``, which calls in here)."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def client(self) -> TerminalClient: ...

    @property
    def state(self) -> ClientState: ...

    @property
    def state_path(self) -> Path: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def bdk(self) -> bytes | None: ...

    def mac_keys(self) -> MacKeys | None: ...

# What a terminal reverses when it gets no answer: requests that move money and can be reversed.
REVERSIBLE: Final = frozenset({"sale", "authorisation", "preauth", "completion", "refund", "void", "preauth_void",
                               "completion_void"})  # fmt: skip
PENDING: Final = "pending"


def reversible_kind(dialect: Dialect, message: Message) -> str | None:
    """The kind of ``message`` when a lost answer to it must be reversed, else None."""
    rule = dialect.classify(message)
    return rule.kind if rule is not None and rule.kind in REVERSIBLE else None


def record(dialect: Dialect, message: Message, kind: str, batch: int) -> book.Item:
    """What the state file keeps of an unanswered request to reverse it: its kind, STAN, amount, card, batch, and
    what the dialect's reversal repeats of it (CUP: F3 and 60.1)."""
    values = family_of(dialect).reversal_values(kind)
    if "original_processing_code" in values and "3" in message.fields:
        values["original_processing_code"] = message.fields["3"]
    if "original_type" in values and (message_type := dialect.value_of(message, "60.1")):
        values["original_type"] = message_type
    return {"kind": kind, "stan": message.fields.get("11", ""), "amount": int(message.fields.get("4") or 0),
            "pan": message.fields.get("2", ""), "batch": batch, "status": PENDING, "values": values}  # fmt: skip


def describe(item: book.Item) -> str:
    """``sale STAN 000003 (12.98)``: the request a reversal is for, without its card."""
    return f"{item['kind']} STAN {item['stan']} ({format_amount(int(item['amount']))})"


def reversal_message(session: Session, item: book.Item) -> Message:
    """The 0400 for a pending item, from the dialect's reversal template (a pre-auth family's own in CUP)."""
    preauth_family = item["kind"] in book.PREAUTH_KINDS and "preauth_reversal" in session.dialect.templates
    template = "preauth_reversal" if preauth_family else "reversal"
    values: dict[str, Any] = {"amount": int(item["amount"]), "pan": item.get("pan", ""),
                              "original_stan": int(item["stan"] or 0), "batch": int(item.get("batch", 0)) or None,
                              **item.get("values", {})}  # fmt: skip
    if values["batch"] is None:
        del values["batch"]
    return session.client.build(template, local_now(), **values)


def keep(state: ClientState, item: book.Item) -> None:
    """Remember ``item`` to reverse (once: a request is kept by its STAN)."""
    if all(pending["stan"] != item["stan"] for pending in state.pending_reversals):
        state.pending_reversals.append(item)


async def send_pending(session: Session, say: Callable[[str], None] = print) -> None:
    """Send every pending reversal, oldest first, each until the host answers it (any code: it has then seen it);
    an answered one is forgotten, and the state file saved.

    Raises:
        ClientError: the host did not answer one (it stays pending, and so do the ones after it).
    """
    state = session.state
    while state.pending_reversals:
        item = state.pending_reversals[0]
        message = reversal_message(session, item)
        mac = session.mac_keys()
        if session.bdk is not None and (ksn_field := session.dialect.security.ksn_field) is not None:
            ksn = state.next_ksn()  # a DUKPT terminal MACs its reversal under the next transaction key
            mac = dukpt_keys(session.bdk, ksn)[1]
            message.fields[ksn_field] = ksn.hex().upper()
        try:
            response = await session.client.request(message, timeout_s=session.timeout_s, mac=mac)
        except NoResponse as error:
            raise ClientError(f"the pending reversal of {describe(item)} got no answer either ({error}); it is kept"
                              " and sent again at the next command (iso-host terminal status shows it)") from None
        state.pending_reversals.pop(0)
        state.save(session.state_path)
        say(f"reversal of {describe(item)}: sent (0400), host answered {response.fields.get('39', 'without F39')}")
