"""The cup family: China UnionPay POS (../shared/CUP.md).

Sign-on: 60.3 chooses the key-block layout (001, 003, 004: which keys are single-length, and whether a TDK
comes too). The operator is F63's first three characters. F48 carries 62 digits of settlement totals
(domestic, then foreign: debit amount n12, debit count n3, credit amount n12, credit count n3, result n1)
and the magstripe batch-upload records (n2 count, then card type n2 + STAN n6 + PAN n20 + amount n12 each); a
chip transaction is uploaded in a 0320 of its own with field 55 (60.3 = 203); the end of an upload is a 0320 with
60.3 = 202 and an n4 count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from iso_host.cards import mask_pan_digits
from iso_host.ledger.model import BatchTotals, Totals
from iso_host.security import CupWorkingKeys, build_cup_key_block, parse_cup_key_block
from iso_host.styles.base import BatchFieldError, Builder, Family, UploadRecord, UploadStep, leading_digits
from iso_host.wire import Dialect, Message

SECTION_DIGITS: Final = 31  # n12 + n3 + n12 + n3 + n1
COUNT_MODULUS: Final = 1_000  # counts are n3: the host compares what the field can carry
RECORD_DIGITS: Final = 40  # n2 + n6 + n20 + n12
RECORDS_PER_UPLOAD: Final = 8  # F48 holds 322 digits
RESULT_BALANCED, RESULT_OUT_OF_BALANCE = "1", "2"
OPERATOR_FIELD, OPERATOR_CHARS = "63", 3
UPLOAD_END_CODE: Final = "202"  # 60.3 of the 0320 that ends an upload
BALANCED_UPLOAD_END_CODE: Final = "207"  # ... that ends the chip upload after a balanced settlement
# A reversal repeats its original's F3 and 60.1 (CUP.md "Message identification"), by the original's kind.
REVERSED_AS: Final = {
    "sale": ("000000", "22"), "void": ("200000", "23"), "preauth": ("030000", "10"), "preauth_void": ("200000", "11"),
    "completion": ("000000", "20"), "completion_void": ("200000", "21"),
}  # fmt: skip
# 60.3 layouts: the byte lengths of TPK, TAK and TDK (None: no TDK). The TAK is single-length in all three.
KEY_LENGTHS: Final = {"001": (8, 8, None), "003": (16, 8, None), "004": (16, 8, 16)}
_DIGIT: Final = re.compile(r"\d")


def _section(digits: str) -> Totals:
    return Totals(debit_minor=int(digits[0:12]), debit_count=int(digits[12:15]),
                  credit_minor=int(digits[15:27]), credit_count=int(digits[27:30]))  # fmt: skip


def _comparable(totals: Totals) -> Totals:
    return Totals(totals.debit_count % COUNT_MODULUS, totals.debit_minor,
                  totals.credit_count % COUNT_MODULUS, totals.credit_minor)  # fmt: skip


def _section_digits(totals: Totals, result: str) -> str:
    t = _comparable(totals)
    return f"{t.debit_minor:012d}{t.debit_count:03d}{t.credit_minor:012d}{t.credit_count:03d}{result}"


def upload_records_field(records: list[UploadRecord]) -> str:
    """F48 for up to 8 records (the terminal's side of ``read_upload``)."""
    assert len(records) <= RECORDS_PER_UPLOAD, "F48 holds 322 digits: 8 records"
    body = "".join(f"{'01' if r.foreign_card else '00'}{r.stan}{r.pan:0>20}{r.amount_minor:012d}" for r in records)
    return f"{len(records):02d}{body}"


def _mask_upload_records(value: str) -> str:
    """Keep 6/4 of each record's PAN; digits that do not parse as records are zeroed."""
    count, records = value[:2], value[2:]
    if not count.isdigit() or len(records) < int(count) * RECORD_DIGITS:
        return _DIGIT.sub("0", value)
    masked = [count]
    for index in range(int(count)):
        record = records[index * RECORD_DIGITS : (index + 1) * RECORD_DIGITS]
        padded = record[8:28]
        pan = padded.lstrip("0")
        masked.append(record[:8] + "0" * (len(padded) - len(pan)) + mask_pan_digits(pan) + record[28:])
    masked.append(_DIGIT.sub("0", records[int(count) * RECORD_DIGITS :]))
    return "".join(masked)


class Cup(Family):
    name = "cup"
    signon_tak_bytes = tuple(sorted({tak_bytes for _, tak_bytes, _ in KEY_LENGTHS.values()}))

    def operator(self, message: Message) -> str | None:
        raw = message.fields.get(OPERATOR_FIELD)
        return raw.strip()[:OPERATOR_CHARS] or None if raw else None

    def key_layout(self, message: Message, dialect: Dialect) -> str | None:
        return dialect.value_of(message, "60.3") or ""

    def issue_keys(
        self, tmk: bytes, fresh: CupWorkingKeys, layout: str | None
    ) -> tuple[CupWorkingKeys, bytes] | None:
        if layout not in KEY_LENGTHS:
            return None
        tpk_bytes, tak_bytes, tdk_bytes = KEY_LENGTHS[layout]
        tdk = fresh.tdk[:tdk_bytes] if tdk_bytes and fresh.tdk else None
        keys = CupWorkingKeys(fresh.tpk[:tpk_bytes], fresh.tak[:tak_bytes], tdk)
        return keys, build_cup_key_block(tmk, layout, keys.tpk, keys.tak, keys.tdk)

    def accept_keys(self, tmk: bytes, layout: str | None, block: bytes) -> CupWorkingKeys:
        return parse_cup_key_block(tmk, layout or "", block)

    def read_totals(self, message: Message) -> BatchTotals:
        digits = leading_digits(message.fields.get("48"), 2 * SECTION_DIGITS, "field 48 (settlement totals)")
        return BatchTotals(_section(digits[:SECTION_DIGITS]), _section(digits[SECTION_DIGITS:]))

    def compare(self, host: BatchTotals, terminal: BatchTotals) -> tuple[bool, dict[str, str]]:
        domestic_ok = _comparable(host.domestic) == _comparable(terminal.domestic)
        foreign_ok = _comparable(host.foreign) == _comparable(terminal.foreign)
        results = (RESULT_BALANCED if ok else RESULT_OUT_OF_BALANCE for ok in (domestic_ok, foreign_ok))
        digits = "".join(_section_digits(t, r) for t, r in zip((host.domestic, host.foreign), results, strict=True))
        return domestic_ok and foreign_ok, {"48": digits}

    def totals_fields(self, totals: BatchTotals) -> dict[str, str]:
        return {"48": "".join(_section_digits(t, "0") for t in (totals.domestic, totals.foreign))}

    def read_upload(self, message: Message, pan: str | None) -> list[UploadRecord]:
        raw = message.fields.get("48") or ""
        count = int(leading_digits(raw, 2, "field 48 (record count)"), 10)
        body = raw[2:]
        if len(body) < count * RECORD_DIGITS or not body[: count * RECORD_DIGITS].isdigit():
            raise BatchFieldError(f"field 48 announces {count} records of {RECORD_DIGITS} digits")
        records = []
        for index in range(count):
            record = body[index * RECORD_DIGITS : (index + 1) * RECORD_DIGITS]
            records.append(UploadRecord(record[2:8], record[8:28].lstrip("0"), int(record[28:40], 10),
                                        foreign_card=record[:2] == "01"))  # fmt: skip
        return records

    def redact(self, fields: Mapping[str, str], kind: str | None) -> dict[str, str]:
        redacted = dict(fields)
        if kind == "batch_upload" and "48" in redacted:
            redacted["48"] = _mask_upload_records(redacted["48"])
        return redacted

    def balanced(self, response: Message) -> bool:
        digits = response.fields.get("48", "")
        results = digits[SECTION_DIGITS - 1 : SECTION_DIGITS] + digits[2 * SECTION_DIGITS - 1 : 2 * SECTION_DIGITS]
        return results == RESULT_BALANCED * 2

    def reversal_values(self, original_kind: str) -> dict[str, Any]:
        processing_code, message_type = REVERSED_AS.get(original_kind, REVERSED_AS["sale"])
        return {"original_processing_code": processing_code, "original_type": message_type}

    def upload_steps(self, build: Builder, records: list[UploadRecord], now: datetime) -> list[UploadStep]:
        """Magstripe records 8 to an F48 (60.3 = 201), then each chip transaction in a 0320 of its own with its
        field 55 (203), then the end of the upload (202) counting them all."""
        magstripe = [record for record in records if not record.chip_data]
        starts = range(0, len(magstripe), RECORDS_PER_UPLOAD)
        chunks = (magstripe[start : start + RECORDS_PER_UPLOAD] for start in starts)
        steps = [UploadStep(build("batch_upload", now, records=upload_records_field(chunk)), "a batch upload message")
                 for chunk in chunks]  # fmt: skip
        end = build("upload_end", now, count=len(records), processing_code=UPLOAD_END_CODE)
        return [*steps, *_chip_uploads(build, records, now), UploadStep(end, "the end of the upload")]

    def balanced_upload_steps(self, build: Builder, records: list[UploadRecord], now: datetime) -> list[UploadStep]:
        """After a balanced settlement the chip transactions still go up (203, their final cryptograms), ended by a
        0320 with 60.3 = 207; a batch without chip transactions sends nothing."""
        chip = _chip_uploads(build, records, now)
        if not chip:
            return []
        end = build("upload_end", now, count=len(chip), processing_code=BALANCED_UPLOAD_END_CODE)
        return [*chip, UploadStep(end, "the end of the chip upload")]


def _chip_uploads(build: Builder, records: list[UploadRecord], now: datetime) -> list[UploadStep]:
    """Each chip transaction in a 0320 of its own: the card, F4, F11 its STAN and F55 (60.3 = 203)."""
    return [
        UploadStep(build("ic_upload", now, original_stan=int(r.stan), pan=r.pan, amount=r.amount_minor,
                         chip_data=r.chip_data), f"the chip upload of STAN {r.stan}")
        for r in records if r.chip_data
    ]  # fmt: skip


CUP: Final = Cup()
