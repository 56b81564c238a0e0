"""A sign-on session the ledger remembers, restored at start: its working keys unwrapped under the configured TMK and
each checked against the check value stored beside it (schema v8).

Unwrapping under another TMK than the one that wrapped (the configured TMK changed, or the row was damaged) gives
keys, not an error: without the check the host would MAC and decrypt PINs with garbage and answer MAC failures
forever. A session that does not check is dropped instead: the terminal must sign on again, and is told so
(NOT_SIGNED_ON where the dialect requires sign-on; a MAC failure, "sign on first", where it does not). Pure.
"""

from __future__ import annotations

import hmac

from iso_host.core.terminals import NO_KEYS, WorkingKeys
from iso_host.ledger.model import TerminalRecord
from iso_host.security import SecurityError, key_check_value, unwrap_key


def restore_session(tmk: bytes | None, record: TerminalRecord) -> tuple[WorkingKeys, str | None]:
    """The session's clear keys, or ``NO_KEYS`` and why the session is dropped (None: there is nothing to drop, or it
    checked). The reason names the key, never its value."""
    if not record.signed_on:
        return NO_KEYS, None
    if tmk is None:
        return NO_KEYS, "the terminal has no TMK configured to unwrap its keys"
    keys: list[bytes | None] = []
    for name, wrapped, check in (
        ("TPK", record.tpk_under_tmk, record.tpk_kcv),
        ("TAK", record.tak_under_tmk, record.tak_kcv),
        ("TDK", record.tdk_under_tmk, record.tdk_kcv),
    ):
        if wrapped is None:
            keys.append(None)
            continue
        if check is None:
            return NO_KEYS, f"its {name} has no check value (a session stored before ledger schema v8)"
        try:
            key = unwrap_key(tmk, wrapped)
        except SecurityError:
            return NO_KEYS, f"its {name} does not unwrap under the configured TMK"
        if not hmac.compare_digest(key_check_value(key, len(check)), check):
            return NO_KEYS, f"its {name}'s check value does not match under the configured TMK (was the TMK changed?)"
        keys.append(key)
    return WorkingKeys(*keys), None
