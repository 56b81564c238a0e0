"""The decoded message: an MTI and field values as pyiso8583 gives them (strings, BCD/binary as hex)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from iso_host.cards import displayed

TPDU_BYTES: Final = 5


@dataclass(slots=True, repr=False)
class Message:
    """One ISO 8583 message. Field ids are strings ``"2"``..``"128"``; sub-fields read with ``get("60.1")``.

    ``repr`` (and so tracebacks, assertion messages and log lines that show a message) masks the PAN and leaves out
    track data, the PIN block, chip data, key blocks and MACs (``cards.displayed``).
    """

    mti: str
    fields: dict[str, str] = field(default_factory=dict)
    # Odd-length BCD fields the terminal padded with another nibble than the dialect's (field id → pad, "F"):
    # read that way, and a reply echoes them alike.
    pads: dict[str, str] = field(default_factory=dict)

    def get(self, field_id: str) -> str | None:
        return self.fields.get(field_id)

    def __contains__(self, field_id: object) -> bool:
        return field_id in self.fields

    def __repr__(self) -> str:
        shown = {field_id: displayed(field_id, value) for field_id, value in self.fields.items()}
        return f"Message(mti={self.mti!r}, fields={shown!r}, pads={self.pads!r})"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What sits between the length header and the MTI: the TPDU and a fixed dialect header."""

    tpdu: bytes = b""
    header: bytes = b""

    def reply(self) -> Envelope:
        """The envelope of a reply: TPDU destination and source swapped (``60 DDDD SSSS``)."""
        if not self.tpdu:
            return self
        assert len(self.tpdu) == TPDU_BYTES
        return Envelope(self.tpdu[:1] + self.tpdu[3:5] + self.tpdu[1:3], self.header)

    def __bytes__(self) -> bytes:
        return self.tpdu + self.header


def reply_mti(mti: str) -> str:
    """The response MTI of a request: 0200 → 0210, 0400 → 0410, 0820 → 0830."""
    assert len(mti) == 4, mti
    assert mti.isdigit(), mti
    function = int(mti[2])
    return f"{mti[:2]}{function + 1 if function % 2 == 0 else function}{mti[3]}"
