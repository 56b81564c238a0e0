"""The pieces of `iso-host decode` and the debug log that the command tests do not reach one by one."""

from __future__ import annotations

from typing import Final

import pytest
from structlog.testing import capture_logs

from iso_host.cli.decode import Frame, decode_frame, has_length_header
from iso_host.console.debug_log import DebugLog, Observers, with_debug_log
from iso_host.core.outcome import Exchange
from iso_host.errors import WireError
from iso_host.vocab import Reason
from iso_host.wire import Envelope, Message, encode, load_dialect

PAN: Final = "4761739001010010"
SALE: Final = Message("0200", {"2": PAN, "3": "000000", "4": "000000001234", "11": "000007", "41": "TERM0001",
                               "42": "MERCHANT0000001"})  # fmt: skip


@pytest.mark.parametrize("name", ["iso87binary", "iso87ascii", "iso87bcd", "cup"])
def test_the_length_header_is_detected_only_when_it_announces_the_rest(name: str) -> None:
    dialect = load_dialect(name)
    body = encode(SALE if name != "cup" else Message("0800", {"11": "000001", "41": "TERM0001"}), Envelope(
        b"\x60\x00\x03\x00\x00" if dialect.tpdu else b"", b"\x00" * dialect.header_bytes), dialect)  # fmt: skip
    framed = dialect.length_header.write(len(body)) + body
    assert has_length_header(framed, dialect)
    assert not has_length_header(body, dialect)
    assert not has_length_header(framed + b"\x00", dialect)
    assert decode_frame(Frame(framed, True, 1), dialect).ok
    assert decode_frame(Frame(body, False, 1), dialect).ok


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def exchange(self, exchange: Exchange, latency_s: float) -> None:
        self.calls.append(("exchange", exchange))

    def rejected(self, error: WireError) -> None:
        self.calls.append(("rejected", error))

    def committed(self, seconds: float) -> None:
        self.calls.append(("committed", seconds))


def approved_sale() -> Exchange:
    response = Message("0210", {**SALE.fields, "39": "00"})
    return Exchange.of(load_dialect("iso87binary"), SALE, response, reason=Reason.APPROVED, response_code="00",
                       kind="sale", mac="absent")


def test_observers_hand_every_call_to_each_in_order() -> None:
    first, second = Recording(), Recording()
    both = Observers((first, second))
    error = WireError("short", field="4", offset=33)
    sale = approved_sale()
    both.exchange(sale, 0.001)
    both.rejected(error)
    both.committed(0.002)
    assert first.calls == second.calls == [("exchange", sale), ("rejected", error), ("committed", 0.002)]


def test_with_debug_log_adds_it_beside_an_observer_or_alone() -> None:
    dialect = load_dialect("iso87binary")
    monitor = Recording()
    alone = with_debug_log(None, dialect)
    assert isinstance(alone, DebugLog)
    beside = with_debug_log(monitor, dialect)
    assert isinstance(beside, Observers)
    assert beside.observers[0] is monitor
    assert isinstance(beside.observers[1], DebugLog)


def test_the_debug_log_line_shows_both_messages_masked() -> None:
    with capture_logs() as logs:
        DebugLog(load_dialect("iso87binary")).exchange(approved_sale(), 0.0042)
    (line,) = logs
    assert (line["event"], line["log_level"], line["kind"], line["reason"]) == ("request_fields", "debug", "sale",
                                                                                "APPROVED")  # fmt: skip
    assert (line["response_code"], line["meaning"], line["latency_ms"]) == ("00", "Approved", 4.2)
    assert line["request"][0]["value"] == "476173******0010"
    assert line["response"][-3]["id"] == "39"
    assert PAN not in repr(line)
