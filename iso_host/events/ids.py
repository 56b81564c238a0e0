"""Event ids: random (version 4) UUIDs. The one place the event layer draws on the OS's randomness."""

from __future__ import annotations

import os
from typing import Final

_ID_POOL_BYTES: Final = 16 * 1_024


class _EventIds:
    """Random (version 4) UUIDs, drawing on the OS's randomness a thousand at a time: one ``os.urandom`` call
    per event cost more than the rest of the event together."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(_ID_POOL_BYTES), 0
        raw = bytearray(self._pool[self._at : self._at + 16])
        self._at += 16
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        text = raw.hex()
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def forget(self) -> None:
        """A forked child must not hand out its parent's ids."""
        self._pool, self._at = b"", 0


_event_ids = _EventIds()
os.register_at_fork(after_in_child=_event_ids.forget)
next_event_id: Final = _event_ids.next
