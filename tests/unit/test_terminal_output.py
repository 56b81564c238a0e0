"""What `iso-host terminal` prints (issue 17), from messages built as the terminal builds them: whole field names,
sub-fields, masked cards, key blocks as check values, F39 explained, colour only where asked, the slip."""

from __future__ import annotations

import io
from datetime import datetime

import pytest

from iso_host.cli.terminal_output import (
    field_lines,
    hint,
    message_json,
    named_line,
    paint,
    slip_of,
    use_colour,
    verdict_line,
)
from iso_host.ledger.model import BatchTotals, Totals
from iso_host.terminal.client import TerminalClient
from iso_host.terminal.receipt import WIDTH, Original, Slip, render
from iso_host.wire import Message, load_dialect

PAN = "4761739001010010"
MASKED = "476173******0010"
WHEN = datetime(2026, 3, 10, 9, 30, 5)
CUP = load_dialect("cup")
ISO87 = load_dialect("iso87binary")


def cup_sale() -> Message:
    return TerminalClient(CUP, "TERM0001", "MERCHANT0000001").build("sale", WHEN, pan=PAN, amount=1234)


def test_fields_with_sub_fields_and_whole_names() -> None:
    lines = field_lines(cup_sale(), CUP)
    text = "\n".join(lines)
    assert lines[0].split() == ["MTI", "0200"]
    assert f"F2    Primary Account Number           {MASKED} (masked)" in lines
    assert PAN not in text
    f60 = next(index for index, line in enumerate(lines) if line.startswith("F60 "))
    assert lines[f60].endswith("60.4-60.7 as the terminal sends them")  # the whole name, on its own line
    assert lines[f60 + 1].split() == ["22000001000"]
    assert lines[f60 + 2].split() == ["60.1", "Type", "22"]
    assert lines[f60 + 3].split() == ["60.2", "Batch", "000001"]


def test_hidden_fields_and_key_blocks() -> None:
    message = cup_sale()
    message.fields["35"] = f"{PAN}=29121010000000000000"
    message.fields["52"] = "0123456789ABCDEF"
    text = "\n".join(field_lines(message, CUP))
    assert "[not shown: track data]" in text
    assert "[not shown: PIN block]" in text
    assert "0123456789ABCDEF" not in text
    assert PAN not in text


@pytest.mark.parametrize(
    ("code", "expected"),
    [pytest.param("00", "F39 00: Approved", id="approved"), pytest.param("51", "F39 51: Insufficient funds", id="51")],
)
def test_verdict_line(code: str, expected: str) -> None:
    response = Message("0210", {"39": code})
    assert verdict_line(response, ISO87, colour=False) == expected
    painted = verdict_line(response, ISO87, colour=True)
    assert painted == paint(expected, code == "00", colour=True)
    assert painted is not None
    assert painted.startswith("\033[32m" if code == "00" else "\033[31m")
    assert verdict_line(Message("0210", {}), ISO87, colour=False) is None


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("tty", "environ", "expected"),
    [
        pytest.param(True, {}, True, id="terminal"),
        pytest.param(False, {}, False, id="pipe"),
        pytest.param(True, {"NO_COLOR": "1"}, False, id="no-color"),
        pytest.param(True, {"NO_COLOR": ""}, True, id="no-color-empty"),
        pytest.param(True, {"TERM": "dumb"}, False, id="dumb"),
    ],
)
def test_colour_only_on_a_terminal(tty: bool, environ: dict[str, str], expected: bool) -> None:
    assert use_colour(_Stream(tty), environ) is expected


@pytest.mark.parametrize(
    ("dialect", "code", "signed_on", "words"),
    [
        pytest.param(CUP, "A0", False, "sign on first", id="cup-mac-unkeyed"),
        pytest.param(CUP, "58", False, "sign on first", id="cup-not-signed-on"),
        pytest.param(CUP, "A0", True, None, id="cup-mac-keyed"),
        pytest.param(ISO87, "03", True, "may not know terminal TERM0001", id="unknown"),
        pytest.param(ISO87, "77", True, "does not hold batch 000003 open", id="out-of-sync"),
        pytest.param(ISO87, "00", False, None, id="approved"),
    ],
)
def test_hints(dialect: object, code: str, signed_on: bool, words: str | None) -> None:
    advice = hint(code, dialect, signed_on=signed_on, tid="TERM0001", batch=3)  # type: ignore[arg-type]
    assert (advice is None) if words is None else (advice is not None and words in advice)


def test_json_of_a_message_is_masked_with_sub_fields() -> None:
    document = message_json(cup_sale(), CUP)
    assert document is not None
    assert document["mti"] == "0200"
    assert document["fields"]["2"] == MASKED
    assert document["fields"]["60.1"] == "22"
    assert message_json(None, CUP) is None


def test_named_line_masks_the_card() -> None:
    item = {"kind": "sale", "stan": "000004", "rrn": "000000000007", "amount": 1000, "pan": PAN}
    assert named_line("refund", item) == f"refund names sale STAN 000004 RRN 000000000007, 10.00, card {MASKED}"


def test_a_void_slip() -> None:
    void = TerminalClient(ISO87, "TERM0001", "MERCHANT0000001").build("void", WHEN, pan=PAN, amount=2000,
                                                                       rrn="000000000008")  # fmt: skip
    response = Message("0210", {"11": void.fields["11"], "37": "000000000009", "38": "123456", "39": "00"})
    named = {"kind": "sale", "stan": "000005", "rrn": "000000000008", "amount": 2000, "pan": PAN}
    slip = slip_of("void", void, response, ISO87, tid="TERM0001", mid="MERCHANT0000001", merchant="Test Shop",
                   when=WHEN, batch=1, named=named, totals=None)  # fmt: skip
    assert slip.original == Original("000005", "000000000008", 2000)
    lines = render(slip)
    assert all(len(line) <= WIDTH for line in lines)
    text = "\n".join(lines)
    assert lines[0].strip() == "TEST SHOP"
    for words in ("VOID", f"CARD{' ' * 20}{MASKED}", "STAN 000005", "USD 20.00", "-USD 20.00", "123456",
                  "000000000009", "2026-03-10", "09:30:05", "APPROVED"):  # fmt: skip
        assert words in text, words
    assert PAN not in text


def test_a_declined_sale_slip_and_a_settlement_slip() -> None:
    declined = render(Slip("sale", "TERM0001", "MERCHANT0000001", WHEN, "156", approved=False, code="51",
                           meaning="Insufficient funds", card=MASKED, amount_minor=1234))  # fmt: skip
    assert "DECLINED 51" in "\n".join(declined)
    assert "CNY 12.34" in "\n".join(declined)
    totals = BatchTotals(Totals(debit_count=2, debit_minor=3234, credit_count=1, credit_minor=500))
    settled = "\n".join(render(Slip("settle", "TERM0001", "MERCHANT0000001", WHEN, "999", approved=True, code="00",
                                    meaning="Approved", batch=7, totals=totals)))  # fmt: skip
    assert "BATCH                             000007" in settled
    assert "DEBITS     2                   999 32.34" in settled
    assert "NET" in settled
    assert "27.34" in settled
