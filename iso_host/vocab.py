"""The words every layer shares, defined once: transaction kinds, reasons, statuses and MAC algorithm names.

Dialect files classify messages into ``Kind`` names and map each ``Reason`` to a field 39 code; the ledger stores
kinds, reasons and statuses by these names.
"""

from __future__ import annotations

import enum
from typing import Final


class Reason(enum.StrEnum):
    """Why a request got the answer it got; each dialect maps these to field 39 codes."""

    APPROVED = "APPROVED"
    FORMAT_ERROR = "FORMAT_ERROR"
    UNKNOWN_TERMINAL = "UNKNOWN_TERMINAL"
    UNKNOWN_MERCHANT = "UNKNOWN_MERCHANT"
    TERMINAL_DISABLED = "TERMINAL_DISABLED"  # switched off through live control
    NOT_SIGNED_ON = "NOT_SIGNED_ON"
    MAC_FAILED = "MAC_FAILED"
    PIN_INCORRECT = "PIN_INCORRECT"
    PIN_TRIES_EXCEEDED = "PIN_TRIES_EXCEEDED"  # the card took [rules] pin_tries wrong PINs: blocked until reload-cards
    DUPLICATE = "DUPLICATE"  # the ledger holds its (terminal, batch, STAN), or its MAC'd bytes came within the window
    KSN_REPLAYED = "KSN_REPLAYED"  # a DUKPT request whose KSN counter is not above the terminal's highest seen
    SIGNON_LIMITED = "SIGNON_LIMITED"  # more sign-ons than [security] signons_per_minute
    ORIGINAL_NOT_FOUND = "ORIGINAL_NOT_FOUND"
    ALREADY_CANCELLED = "ALREADY_CANCELLED"
    NOT_VOIDABLE = "NOT_VOIDABLE"
    BATCH_CLOSED = "BATCH_CLOSED"
    VOID_WINDOW_EXPIRED = "VOID_WINDOW_EXPIRED"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    CARD_MISMATCH = "CARD_MISMATCH"
    OPERATOR_NOT_PERMITTED = "OPERATOR_NOT_PERMITTED"
    VOID_LIMIT_EXCEEDED = "VOID_LIMIT_EXCEEDED"
    OUT_OF_BALANCE = "OUT_OF_BALANCE"
    BATCH_OUT_OF_SYNC = "BATCH_OUT_OF_SYNC"
    INVALID_AMOUNT = "INVALID_AMOUNT"  # a zero amount where the rules want money to move
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    EXPIRED_CARD = "EXPIRED_CARD"
    LOST_CARD = "LOST_CARD"
    STOLEN_CARD = "STOLEN_CARD"
    EXCEEDS_LIMIT = "EXCEEDS_LIMIT"
    CRYPTOGRAM_FAILED = "CRYPTOGRAM_FAILED"  # the chip's ARQC (F55 tag 9F26) does not verify under the card's IMK
    CRYPTOGRAM_REPLAYED = "CRYPTOGRAM_REPLAYED"  # it verifies, but its ATC (9F36) is not above the card's highest seen
    CHIP_PAN_MISMATCH = "CHIP_PAN_MISMATCH"  # F55 tag 5A (the application PAN) is not the PAN of F2 / track 2
    FORCED_DECLINE = "FORCED_DECLINE"  # a scenario chose the response code
    INVALID_TRANSACTION = "INVALID_TRANSACTION"
    SYSTEM_ERROR = "SYSTEM_ERROR"


class Kind(enum.StrEnum):
    """Transaction kinds; dialect files classify messages into these names."""

    SALE = "sale"
    ECHO = "echo"
    SIGNON = "signon"
    SIGNOFF = "signoff"
    VOID = "void"
    REVERSAL = "reversal"
    REFUND = "refund"
    SETTLEMENT = "settlement"
    BATCH_UPLOAD = "batch_upload"
    UPLOAD_END = "upload_end"
    BALANCE = "balance"
    # Generic flows a dialect gives kinds of its own (core/flows/generic.py): events and logs name such a request
    # by the dialect's kind name, not by these.
    ANSWER = "answer"
    DOWNLOAD_STATUS = "download_status"
    DOWNLOAD = "download"
    DOWNLOAD_END = "download_end"
    PARAMETERS = "parameters"  # terminal parameters from a parameter file (CUP 0800 60.3=360)
    PREAUTH = "preauth"  # CUP 0100 60.1=10: approves an amount and holds it on the card
    PREAUTH_VOID = "preauth_void"  # CUP 0100 60.1=11: cancels an open pre-auth, releasing its hold
    COMPLETION = "completion"  # CUP 0200 60.1=20 (0220 60.1=24 offline): takes a pre-auth's money, a debit
    COMPLETION_VOID = "completion_void"  # CUP 0200 60.1=21: cancels an unsettled completion, a credit
    ADJUST = "adjust"  # CUP 0220 60.1=32: corrects an offline sale's amount in the open batch (the newest one counts)
    TIP = "tip"  # CUP 0220 60.1=34: adds a tip to a sale of the open batch, once, within [rules] tip_limit_percent


class Status(enum.StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    VOIDED = "VOIDED"
    REVERSED = "REVERSED"
    REFUNDED = "REFUNDED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"


MAC_ALGORITHMS: Final = ("aes-cmac", "cup-ecb", "x9.19", "x9.9")  # the names configs and dialects may use
# The double-length TDES MAC: for DUKPT MAC keys, and for a static TAK whose dialect names no algorithm.
DEFAULT_MAC_ALGORITHM: Final = "x9.19"
# Dialect families (iso_host/styles/): what a dialect's spec names as its ``family``.
DIALECT_FAMILIES: Final = ("iso87", "cup")
