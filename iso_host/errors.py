"""Exceptions shared across iso-host.

Factored out so that every layer can raise them without import loops. A ``PeerError`` is the
terminal's fault and carries the response code the host would answer with; everything else is
either a configuration problem (caught before the port is bound) or a bug.
"""

from __future__ import annotations


class IsoHostError(Exception):
    """Base class of every error iso-host raises on purpose."""


class ConfigError(IsoHostError):
    """A configuration file, flag or dialect file is wrong; the message names the key."""


class PeerError(IsoHostError):
    """The peer sent something we cannot accept."""


class WireError(PeerError):
    """Bytes that cannot be framed or decoded.

    Attributes:
        reason: what is wrong, without any field content (no PANs in logs).
        field: the ISO 8583 field id (``"t"`` MTI, ``"p"`` bitmap, ``"len"`` length header, ``"2"``..).
        offset: byte offset from the first byte after the length header.
    """

    def __init__(self, reason: str, *, field: str, offset: int) -> None:
        super().__init__(f"field {field} at byte {offset}: {reason}")
        self.reason = reason
        self.field = field
        self.offset = offset


class FrameTooLarge(WireError):
    """A length header announced more than ``max_frame_bytes``."""


class StoreError(IsoHostError):
    """The ledger database failed; the request gets SYSTEM_ERROR and nothing is half-written."""


class ConflictError(StoreError):
    """A command's condition no longer held at commit (another request got there first); decide again."""


class DuplicateError(ConflictError):
    """A financial request with this terminal, merchant, batch and STAN is already in the ledger."""


class BatchSettledError(ConflictError):
    """A write named a batch that has settled (the database refuses it); decide again with the batch's state."""


class StoreTimeout(StoreError):
    """The ledger did not answer within the request's deadline; the request gets SYSTEM_ERROR, never a late 00."""
