"""How settlement totals and batch-upload records travel in each settlement style. Pure parsing and formatting.

cup: F48 carries 62 digits of totals (domestic, then foreign: debit amount n12, debit count n3, credit amount
n12, credit count n3, result n1) and upload records (n2 count, then card type n2 + STAN n6 + PAN n20 +
amount n12 each); the end of an upload carries an n4 count. iso87: F74 credits count, F76 debits count,
F86 credits amount, F88 debits amount; one 0320 per transaction (F2, F4, F11); F3 96xxxx after an upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iso_host.ledger.model import BatchTotals, Totals
from iso_host.wire import Dialect, Message

CUP_SECTION_DIGITS: Final = 31  # n12 + n3 + n12 + n3 + n1
CUP_COUNT_MODULUS: Final = 1_000  # counts are n3: the host compares what the field can carry
CUP_RECORD_DIGITS: Final = 40  # n2 + n6 + n20 + n12
RESULT_BALANCED, RESULT_OUT_OF_BALANCE = "1", "2"
AFTER_UPLOAD_PREFIX: Final = "96"  # iso87 F3 of the 0500 that follows a batch upload


class BatchFieldError(ValueError):
    """Totals or records that do not parse; the request gets FORMAT_ERROR."""


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One transaction as the terminal uploads it. Holds the clear PAN: admission masks it at once."""

    stan: str
    pan: str
    amount_minor: int
    foreign_card: bool


def _digits(text: str | None, length: int, what: str) -> str:
    if text is None or len(text) < length or not text[:length].isdigit():
        raise BatchFieldError(f"{what} must start with {length} digits")
    return text[:length]


def _cup_section(digits: str) -> Totals:
    return Totals(debit_minor=int(digits[0:12]), debit_count=int(digits[12:15]),
                  credit_minor=int(digits[15:27]), credit_count=int(digits[27:30]))  # fmt: skip


def read_totals(message: Message, dialect: Dialect) -> BatchTotals:
    """The totals a terminal reports in its 0500 (iso87 has no domestic/foreign split: all count as domestic).

    Raises:
        BatchFieldError: the totals fields are missing or not numeric.
    """
    if dialect.settlement == "cup":
        digits = _digits(message.fields.get("48"), 2 * CUP_SECTION_DIGITS, "field 48 (settlement totals)")
        return BatchTotals(_cup_section(digits[:CUP_SECTION_DIGITS]), _cup_section(digits[CUP_SECTION_DIGITS:]))
    values = {}
    for field_id in ("74", "76", "86", "88"):
        text = message.fields.get(field_id)
        if text is None or not text.isdigit():
            raise BatchFieldError(f"field {field_id} (settlement totals) is missing or not numeric")
        values[field_id] = int(text, 10)
    return BatchTotals(Totals(debit_count=values["76"], debit_minor=values["88"], credit_count=values["74"],
                              credit_minor=values["86"]))  # fmt: skip


def _cup_comparable(totals: Totals) -> Totals:
    return Totals(totals.debit_count % CUP_COUNT_MODULUS, totals.debit_minor,
                  totals.credit_count % CUP_COUNT_MODULUS, totals.credit_minor)  # fmt: skip


def _cup_section_digits(totals: Totals, balanced: bool) -> str:
    t = _cup_comparable(totals)
    result = RESULT_BALANCED if balanced else RESULT_OUT_OF_BALANCE
    return f"{t.debit_minor:012d}{t.debit_count:03d}{t.credit_minor:012d}{t.credit_count:03d}{result}"


def compare(host: BatchTotals, terminal: BatchTotals, dialect: Dialect) -> tuple[bool, dict[str, str]]:
    """Whether the totals agree, and the reply's totals fields (the host's own totals, and CUP's result digits)."""
    if dialect.settlement == "cup":
        domestic_ok = _cup_comparable(host.domestic) == _cup_comparable(terminal.domestic)
        foreign_ok = _cup_comparable(host.foreign) == _cup_comparable(terminal.foreign)
        digits = _cup_section_digits(host.domestic, domestic_ok) + _cup_section_digits(host.foreign, foreign_ok)
        return domestic_ok and foreign_ok, {"48": digits}
    overall = host.overall
    fields = {"74": f"{overall.credit_count:010d}", "76": f"{overall.debit_count:010d}",
              "86": f"{overall.credit_minor:016d}", "88": f"{overall.debit_minor:016d}"}  # fmt: skip
    return overall == terminal.overall, fields


def terminal_totals_field(totals: BatchTotals, dialect: Dialect) -> dict[str, str]:
    """What a terminal sends in its 0500 for these totals (the client's side of ``read_totals``)."""
    if dialect.settlement == "cup":
        sections = (_cup_comparable(t) for t in (totals.domestic, totals.foreign))
        return {"48": "".join(f"{t.debit_minor:012d}{t.debit_count:03d}{t.credit_minor:012d}{t.credit_count:03d}0"
                              for t in sections)}  # fmt: skip
    t = totals.overall
    return {"74": f"{t.credit_count:010d}", "76": f"{t.debit_count:010d}", "86": f"{t.credit_minor:016d}",
            "88": f"{t.debit_minor:016d}"}  # fmt: skip


def read_upload(message: Message, dialect: Dialect, pan: str | None) -> list[UploadRecord]:
    """The records of one batch-upload message (iso87: this message's F11, F4 and card ``pan``).

    Raises:
        BatchFieldError: a record that does not parse.
    """
    if dialect.settlement != "cup":
        if pan is None:
            raise BatchFieldError("a batch upload record needs the card (field 2 or 35)")
        amount = _digits(message.fields.get("4"), 12, "field 4 (amount)")
        stan = _digits(message.fields.get("11"), 6, "field 11 (STAN)")
        return [UploadRecord(stan, pan, int(amount, 10), foreign_card=not pan.startswith("62"))]
    raw = message.fields.get("48") or ""
    count = int(_digits(raw, 2, "field 48 (record count)"), 10)
    body = raw[2:]
    if len(body) < count * CUP_RECORD_DIGITS or not body[: count * CUP_RECORD_DIGITS].isdigit():
        raise BatchFieldError(f"field 48 announces {count} records of {CUP_RECORD_DIGITS} digits")
    records = []
    for index in range(count):
        record = body[index * CUP_RECORD_DIGITS : (index + 1) * CUP_RECORD_DIGITS]
        pan = record[8:28].lstrip("0")
        records.append(UploadRecord(record[2:8], pan, int(record[28:40], 10), foreign_card=record[:2] == "01"))
    return records


def upload_records_field(records: list[UploadRecord]) -> str:
    """CUP F48 for up to 8 records (the client's side of ``read_upload``)."""
    assert len(records) <= 8, "F48 holds 322 digits: 8 records"
    body = "".join(f"{'01' if r.foreign_card else '00'}{r.stan}{r.pan:0>20}{r.amount_minor:012d}" for r in records)
    return f"{len(records):02d}{body}"


def is_after_upload(message: Message, dialect: Dialect) -> bool:
    """iso87: the 0500 with F3 96xxxx closes a batch after its upload."""
    return dialect.settlement == "iso87" and (message.fields.get("3") or "").startswith(AFTER_UPLOAD_PREFIX)
