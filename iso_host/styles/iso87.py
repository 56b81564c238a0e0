"""The iso87 family: ISO 8583:1987 as generic hosts speak it.

Sign-on: one key block of TPK and TAK (16 bytes each) under the TMK, each with a check value. Settlement:
F74 credits count, F76 debits count, F86 credits amount, F88 debits amount (no domestic/foreign split: all
count as domestic). Batch upload: one 0320 per transaction (F2, F4, F11); the 0500 with F3 96xxxx closes the
batch after it. No operator field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from iso_host.ledger.model import BatchTotals, Totals
from iso_host.security import CupWorkingKeys, build_iso87_key_block, parse_iso87_key_block
from iso_host.styles.base import BatchFieldError, Builder, Family, UploadRecord, UploadStep, one_transaction
from iso_host.wire import Message

AFTER_UPLOAD_PREFIX: Final = "96"  # F3 of the 0500 that follows a batch upload


class Iso87(Family):
    name = "iso87"
    settle_after_upload = AFTER_UPLOAD_PREFIX + "0000"

    def issue_keys(self, tmk: bytes, fresh: CupWorkingKeys, layout: str | None) -> tuple[CupWorkingKeys, bytes]:
        keys = CupWorkingKeys(fresh.tpk, fresh.tak)
        return keys, build_iso87_key_block(tmk, keys.tpk, keys.tak)

    def accept_keys(self, tmk: bytes, layout: str | None, block: bytes) -> CupWorkingKeys:
        return parse_iso87_key_block(tmk, block)

    def read_totals(self, message: Message) -> BatchTotals:
        values = {}
        for field_id in ("74", "76", "86", "88"):
            text = message.fields.get(field_id)
            if text is None or not text.isdigit():
                raise BatchFieldError(f"field {field_id} (settlement totals) is missing or not numeric")
            values[field_id] = int(text, 10)
        return BatchTotals(Totals(debit_count=values["76"], debit_minor=values["88"], credit_count=values["74"],
                                  credit_minor=values["86"]))  # fmt: skip

    def compare(self, host: BatchTotals, terminal: BatchTotals) -> tuple[bool, dict[str, str]]:
        return host.overall == terminal.overall, self.totals_fields(host)

    def totals_fields(self, totals: BatchTotals) -> dict[str, str]:
        t = totals.overall
        return {"74": f"{t.credit_count:010d}", "76": f"{t.debit_count:010d}", "86": f"{t.credit_minor:016d}",
                "88": f"{t.debit_minor:016d}"}  # fmt: skip

    def is_after_upload(self, message: Message) -> bool:
        return (message.fields.get("3") or "").startswith(AFTER_UPLOAD_PREFIX)

    def read_upload(self, message: Message, pan: str | None) -> list[UploadRecord]:
        return one_transaction(message, pan)

    def upload_steps(self, build: Builder, records: list[UploadRecord], now: datetime) -> list[UploadStep]:
        return [
            UploadStep(build("batch_upload", now, original_stan=int(r.stan), pan=r.pan, amount=r.amount_minor),
                       f"the upload of STAN {r.stan}")
            for r in records
        ]  # fmt: skip


ISO87: Final = Iso87()
