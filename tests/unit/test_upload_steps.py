"""What a terminal sends to upload its batch, by family: the requests in order, from its records. Pure: the template
builder is replaced by one that notes what it was asked for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from iso_host.styles import FAMILIES, UploadRecord
from iso_host.wire import Message

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
CHIP_DATA = "9F2608112233445566778899"
MAGSTRIPE = [UploadRecord(f"{stan:06d}", "6222021234567890", 100 * stan, False) for stan in range(1, 10)]
CHIP = [UploadRecord("000021", "4761739001010010", 2_100, True, CHIP_DATA)]


def noted(kind: str, now: datetime, **values: Any) -> Message:
    """A stand-in for TerminalClient.build: the request's kind as its MTI and the values as its fields."""
    assert now == NOW
    return Message(kind, {name: str(value) for name, value in values.items()})


def sent(family: str, records: list[UploadRecord], *, balanced: bool = False) -> list[tuple[str, dict[str, str]]]:
    steps_of = FAMILIES[family].balanced_upload_steps if balanced else FAMILIES[family].upload_steps
    return [(step.message.mti, step.message.fields) for step in steps_of(noted, records, NOW)]


CASES = [
    pytest.param("cup", MAGSTRIPE, False, ["batch_upload", "batch_upload", "upload_end"], id="cup-8-records-a-message"),
    pytest.param("cup", MAGSTRIPE[:2] + CHIP, False, ["batch_upload", "ic_upload", "upload_end"],
                 id="cup-chip-in-a-message-of-its-own"),
    pytest.param("cup", CHIP, False, ["ic_upload", "upload_end"], id="cup-chip-only"),
    pytest.param("cup", MAGSTRIPE[:2] + CHIP, True, ["ic_upload", "upload_end"],
                 id="cup-balanced-sends-the-chip-transactions"),
    pytest.param("cup", MAGSTRIPE, True, [], id="cup-balanced-without-chip-sends-nothing"),
    pytest.param("iso87", MAGSTRIPE[:2] + CHIP, False, ["batch_upload"] * 3, id="iso87-one-message-each"),
    pytest.param("iso87", CHIP, True, [], id="iso87-balanced-sends-nothing"),
]  # fmt: skip


@pytest.mark.parametrize(("family", "records", "balanced", "kinds"), CASES)
def test_upload_requests(family: str, records: list[UploadRecord], balanced: bool, kinds: list[str]) -> None:
    assert [kind for kind, _ in sent(family, records, balanced=balanced)] == kinds


def test_cup_chip_upload_carries_the_transaction_and_its_chip_data() -> None:
    """203: the card, the amount, the transaction's STAN and F55; the end counts every transaction uploaded (202), or
    after a balanced settlement the chip ones (207)."""
    (_records, magstripe), (_chip, chip), (_end, end) = sent("cup", MAGSTRIPE[:2] + CHIP)
    assert magstripe["records"].startswith("02")
    assert chip == {"original_stan": "21", "pan": "4761739001010010", "amount": "2100", "chip_data": CHIP_DATA}
    assert end == {"count": "3", "processing_code": "202"}
    *_, (_, balanced_end) = sent("cup", MAGSTRIPE[:2] + CHIP, balanced=True)
    assert balanced_end == {"count": "1", "processing_code": "207"}
