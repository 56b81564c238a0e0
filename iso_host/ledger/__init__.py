"""Ledger: the durable record of terminals and transactions, and the store backends behind it."""

from iso_host.ledger.model import (
    Card,
    Kind,
    LedgerCommand,
    Reason,
    RecordTransaction,
    SaveSession,
    Status,
    TerminalRecord,
    TransactionFilter,
    TransactionRecord,
)
from iso_host.ledger.open import open_store
from iso_host.ledger.store import Store

__all__ = [
    "Card",
    "Kind",
    "LedgerCommand",
    "Reason",
    "RecordTransaction",
    "SaveSession",
    "Status",
    "Store",
    "TerminalRecord",
    "TransactionFilter",
    "TransactionRecord",
    "open_store",
]
