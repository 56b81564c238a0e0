"""What a dialect family decides, as one interface: the parts of a conversation that differ between the iso87
and cup families and that no field spec can express (key blocks, the operator, settlement totals, batch
uploads, and how a trace hides card data inside a field). Pure: messages in, values or messages out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from iso_host.cards import is_foreign_pan
from iso_host.ledger.model import BatchTotals
from iso_host.security import CupWorkingKeys
from iso_host.wire import Dialect, Message

# A terminal's template builder (TerminalClient.build): kind, time and template values -> a request.
Builder = Callable[..., Message]


class BatchFieldError(ValueError):
    """Totals or records that do not parse; the request gets FORMAT_ERROR."""


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One transaction as the terminal uploads it. Holds the clear PAN: admission masks it at once."""

    stan: str
    pan: str
    amount_minor: int
    foreign_card: bool
    chip_data: str = ""  # the terminal's side: a chip transaction's field 55, hex; uploaded in a message of its own


@dataclass(frozen=True, slots=True)
class UploadStep:
    """One batch-upload request a terminal sends, and how to name it when the host refuses it."""

    message: Message
    refused: str


def leading_digits(text: str | None, length: int, what: str) -> str:
    """The first ``length`` characters of ``text``, which must be digits."""
    if text is None or len(text) < length or not text[:length].isdigit():
        raise BatchFieldError(f"{what} must start with {length} digits")
    return text[:length]


def one_transaction(message: Message, pan: str | None) -> list[UploadRecord]:
    """The one transaction a batch-upload message carries in its own fields: the card (``pan``, from F2 or track 2),
    F4 and F11 (the original's STAN), as iso87 uploads every transaction and CUP its chip ones (60.3 203/205).

    Raises:
        BatchFieldError: no card, or F4 or F11 missing or not numeric.
    """
    if pan is None:
        raise BatchFieldError("a batch upload record needs the card (field 2 or 35)")
    amount = leading_digits(message.fields.get("4"), 12, "field 4 (amount)")
    stan = leading_digits(message.fields.get("11"), 6, "field 11 (STAN)")
    return [UploadRecord(stan, pan, int(amount, 10), foreign_card=is_foreign_pan(pan))]


class Family(ABC):
    """One dialect family. Subclasses implement the abstract methods and override what their family does
    differently; the defaults of the others are none."""

    name: ClassVar[str]
    # The processing code of the settlement that closes a batch after its upload; None: a message of its own does.
    settle_after_upload: ClassVar[str | None] = None
    # Where a download kind's request names what it asks for, and where the answer carries it.
    download_field: ClassVar[str] = "62"
    # The lengths (bytes) of the TAKs a sign-on may issue (any layout): what a terminal's MAC algorithm must take.
    signon_tak_bytes: ClassVar[tuple[int, ...]] = (16,)

    # The host's side.
    def operator(self, message: Message) -> str | None:
        """The operator (cashier) a request names, where the family carries one."""
        return None

    def key_layout(self, message: Message, dialect: Dialect) -> str | None:
        """Which key-block layout a sign-on asks for, where the family lets the terminal choose."""
        return None

    @abstractmethod
    def issue_keys(self, tmk: bytes, fresh: CupWorkingKeys, layout: str | None) -> tuple[CupWorkingKeys, bytes] | None:
        """The keys to issue (cut from ``fresh`` to the layout's lengths) and the key block carrying them under the
        TMK; None for a layout the family does not know."""

    @abstractmethod
    def read_totals(self, message: Message) -> BatchTotals:
        """The totals a terminal reports in its settlement request.

        Raises:
            BatchFieldError: the totals fields are missing or not numeric.
        """

    @abstractmethod
    def compare(self, host: BatchTotals, terminal: BatchTotals) -> tuple[bool, dict[str, str]]:
        """Whether the totals agree, and the reply's totals fields."""

    def is_after_upload(self, message: Message) -> bool:
        """Whether this settlement request closes a batch after its upload."""
        return False

    @abstractmethod
    def read_upload(self, message: Message, pan: str | None) -> list[UploadRecord]:
        """The records of one batch-upload request (``pan``: the request's own card, where records carry none).

        Raises:
            BatchFieldError: a record that does not parse.
        """

    def redact(self, fields: Mapping[str, str], kind: str | None) -> dict[str, str]:
        """``fields`` with card data inside family-specific fields masked (the standard card fields are the
        trace's own business)."""
        return dict(fields)

    # The terminal's side.
    @abstractmethod
    def accept_keys(self, tmk: bytes, layout: str | None, block: bytes) -> CupWorkingKeys:
        """Unwrap a sign-on response's key block and check its check values.

        Raises:
            SecurityError: a check value that does not match (a wrong TMK), or a malformed block.
        """

    @abstractmethod
    def totals_fields(self, totals: BatchTotals) -> dict[str, str]:
        """What a terminal sends in its settlement request for these totals (the other side of ``read_totals``)."""

    def balanced(self, response: Message) -> bool:
        """Whether an approved settlement response says the totals agreed."""
        return True

    def reversal_values(self, original_kind: str) -> dict[str, Any]:
        """Template values a reversal needs about what it reverses."""
        return {}

    @abstractmethod
    def upload_steps(self, build: Builder, records: list[UploadRecord], now: datetime) -> list[UploadStep]:
        """The batch-upload requests a terminal sends for its records, in order. Where ``settle_after_upload`` is
        None the last of them ends the upload; otherwise a settlement with that processing code does."""

    def balanced_upload_steps(self, build: Builder, records: list[UploadRecord], now: datetime) -> list[UploadStep]:
        """What a terminal still uploads after its totals agreed (CUP: its chip transactions), in order; the last
        of them ends that upload."""
        return []
