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
    TransactionRecord,
)
from iso_host.ledger.store import Store, TransactionFilter, open_store

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
