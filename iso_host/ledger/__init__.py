"""Ledger: the durable record of terminals and transactions, and the store backends behind it."""

from iso_host.ledger.model import (
    Card,
    LedgerCommand,
    RecordTransaction,
    SaveSession,
    TerminalRecord,
    TransactionFilter,
    TransactionRecord,
)
from iso_host.ledger.open import open_store
from iso_host.ledger.store import Store
from iso_host.vocab import Kind, Reason, Status

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
