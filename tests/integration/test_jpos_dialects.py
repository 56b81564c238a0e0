"""The iso87 dialects that match jPOS packagers, over real TCP with frames written by hand.

Each frame below is laid out by hand from jPOS's packager definitions (jpos/jPOS, jpos/src/main/java/org/jpos/iso/
packager/ISO87APackager.java and ISO87BPackager.java: which field packager each field has) and ISO 8583:1987's
field numbers; only MACs and PIN blocks are computed, as a terminal computes them. Every test checks the
answer (F39 and echoed fields) and the ledger.

iso87bcd also runs in the dialect-parametrized tests (conftest.py ``dialect_name``, with seeds of its own in
frame_fuzz.py); here it gets hand-written frames for echo, sale, void, settlement and MAC'd sales, and a
business day from the terminal client's templates.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import pytest
from hosting import MID, TEST_PAN, RunningHost, running_host
from log_audit import remember_secret
from test_settlement import terminal as settling_terminal

from iso_host.core.terminals import TerminalState, WorkingKeys
from iso_host.security import compute_mac, verify_mac
from iso_host.terminal.client import dukpt_keys, pin_block_field
from iso_host.vocab import Status
from iso_host.wire import Message, decode

STATIC_TAK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
STATIC_TPK: Final = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
DUKPT_BDK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KSN: Final = bytes.fromhex("FFFF9876543210E00001")  # ANSI X9.24-1 test KSN
PIN: Final = "1234"
LAB: Final = "LABTERM1"  # static keys: MACs from its first message, no sign-on
remember_secret(STATIC_TAK, STATIC_TPK, DUKPT_BDK)


def _ascii4(body: bytes) -> bytes:
    return f"{len(body):04d}".encode("ascii") + body  # ASCIIChannel: 4 ASCII digits


def _binary2(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body  # NACChannel without TPDU, PostChannel: 2 bytes big-endian


async def _exchange(host: RunningHost, body: bytes) -> bytes:
    """Send one frame with the dialect's length header; return the reply's body."""
    ascii_header = host.dialect.length_header.size_bytes == 4
    reader, writer = await asyncio.open_connection(*host.address)
    try:
        writer.write(_ascii4(body) if ascii_header else _binary2(body))
        await writer.drain()
        head = await reader.readexactly(host.dialect.length_header.size_bytes)
        size = int(head.decode("ascii"), 10) if ascii_header else int.from_bytes(head, "big")
        return await reader.readexactly(size)
    finally:
        writer.close()
        await writer.wait_closed()


def _lab_terminal() -> dict[str, TerminalState]:
    return {LAB: TerminalState(LAB, MID, static_keys=WorkingKeys(STATIC_TPK, STATIC_TAK))}


def _dukpt_terminal() -> dict[str, TerminalState]:
    return {"DUKPTT01": TerminalState("DUKPTT01", MID, bdk=DUKPT_BDK)}


# --- iso87ascii: jPOS ISO87APackager --------------------------------------------------------------------------

# fmt: off
# A MAC'd sale as ISO87APackager lays it out: MTI IFA_NUMERIC(4); IFA_BITMAP as 16 hex characters; F2 IFA_LLNUM
# (2 ASCII length digits); F3, F4, F11, F22 IFA_NUMERIC; F41, F42, F49 IF_CHAR; F53 IFA_NUMERIC(16), 16 digits;
# F64 IFA_BINARY(8), 16 hex characters. Bitmap 7020040000C08801: fields 2 3 4 | 11 | 22 | 41 42 | 49 53 | 64.
ISO87A_SALE_BEFORE_MAC: Final = (
    b"0200" + b"7020040000C08801"
    + b"16" + TEST_PAN.encode("ascii")  # F2
    + b"000000"  # F3 sale
    + b"000000004321"  # F4 43.21
    + b"000101"  # F11
    + b"012"  # F22
    + LAB.encode("ascii") + MID.encode("ascii")  # F41, F42
    + b"840"  # F49
    + b"2001010100000000"  # F53: n16, security related control information
)
# fmt: on


class TestIso87ascii:
    async def test_a_maced_sale_with_f53_as_jpos_sends_it(self, tmp_path: Path) -> None:
        """F53 n16 is read as 16 digits, so the MAC after it is where ISO87APackager put it: it verifies, the sale
        is approved and recorded, and the reply is MAC'd under the same key."""
        mac = compute_mac("x9.19", STATIC_TAK, ISO87A_SALE_BEFORE_MAC)
        frame = ISO87A_SALE_BEFORE_MAC + mac.hex().upper().encode("ascii")  # F64 as hex, IFA_BINARY
        async with running_host(tmp_path, "iso87ascii", extra_terminals=_lab_terminal()) as host:
            reply = await _exchange(host, frame)
            rows = host.ledger_rows()
        _, response = decode(reply, host.dialect)
        assert (response.mti, response.fields["39"]) == ("0210", "00")
        assert [response.fields[f] for f in ("2", "3", "4", "11", "22", "41", "42", "49")] == [
            TEST_PAN, "000000", "000000004321", "000101", "012", LAB, MID, "840"
        ]  # fmt: skip
        assert reply[:4] == b"0210"
        assert verify_mac("x9.19", STATIC_TAK, reply[:-16], bytes.fromhex(reply[-16:].decode("ascii")))
        assert [(r["tid"], r["amount_minor"], r["status"], r["rrn"]) for r in rows] == [
            (LAB, 4321, "APPROVED", response.fields["37"])
        ]


# --- DUKPT: iso87ascii-dukpt (F53 20 hex characters) and iso87binary (F53 10 bytes) -----------------------------


def _dukpt_sale(dialect_name: str) -> tuple[bytes, bytes]:
    """A sale from a DUKPT terminal with PIN and MAC, and the response MAC key.

    F2, F3, F4, F11, F41, F42 as in ISO 8583:1987; F52 the ISO 9564 format 0 PIN block under the KSN's PIN key;
    F53 the KSN: 20 hex characters in iso87ascii-dukpt, 10 raw bytes in iso87binary (both wider than ISO's n16);
    F64 the X9.19 MAC under the KSN's request MAC key. Bitmap 7020000000C01801: 2 3 4 | 11 | 41 42 | 52 53 | 64.
    """
    pin_key, mac_keys = dukpt_keys(DUKPT_BDK, KSN)
    pin_block = bytes.fromhex(pin_block_field(pin_key, PIN, TEST_PAN, 0))
    remember_secret(pin_key, mac_keys.request_key, mac_keys.response_key, pin_block.hex().upper())
    ascii_ = dialect_name == "iso87ascii-dukpt"
    bitmap = b"7020000000C01801" if ascii_ else bytes.fromhex("7020000000C01801")
    secrets = (pin_block.hex().upper().encode("ascii") + KSN.hex().upper().encode("ascii")) if ascii_ else (
        pin_block + KSN
    )  # fmt: skip
    body = (b"0200" + bitmap + b"16" + TEST_PAN.encode("ascii") + b"000000" + b"000000000900" + b"000202"
            + b"DUKPTT01" + MID.encode("ascii") + secrets)  # fmt: skip
    mac = compute_mac("x9.19", mac_keys.request_key, body)
    return body + (mac.hex().upper().encode("ascii") if ascii_ else mac), mac_keys.response_key


class TestDukpt:
    @pytest.mark.parametrize("dialect", ["iso87ascii-dukpt", "iso87binary"])
    async def test_a_dukpt_sale_written_by_hand(self, tmp_path: Path, dialect: str) -> None:
        """The KSN in F53 gives the PIN key (the PIN is checked) and the MAC keys; 00, recorded, reply MAC'd."""
        frame, response_key = _dukpt_sale(dialect)
        async with running_host(tmp_path, dialect, cards={TEST_PAN: PIN}, extra_terminals=_dukpt_terminal()) as host:
            reply = await _exchange(host, frame)
            rows = host.ledger_rows()
        _, response = decode(reply, host.dialect)
        assert (response.mti, response.fields["39"], response.fields["11"], response.fields["4"]) == (
            "0210", "00", "000202", "000000000900"
        )  # fmt: skip
        received = bytes.fromhex(reply[-16:].decode("ascii")) if dialect == "iso87ascii-dukpt" else reply[-8:]
        mac_bytes = 16 if dialect == "iso87ascii-dukpt" else 8
        assert verify_mac("x9.19", response_key, reply[:-mac_bytes], received)
        assert [(r["tid"], r["amount_minor"], r["status"]) for r in rows] == [("DUKPTT01", 900, "APPROVED")]

    async def test_iso87ascii_no_longer_reads_a_20_character_f53(self, tmp_path: Path) -> None:
        """The frame iso87ascii-dukpt approves is a format error to iso87ascii (F53 n16), and nothing is recorded."""
        frame, _ = _dukpt_sale("iso87ascii-dukpt")
        terminals = _dukpt_terminal()
        async with running_host(tmp_path, "iso87ascii", cards={TEST_PAN: PIN}, extra_terminals=terminals) as host:
            reply = await _exchange(host, frame)
            rows = host.ledger_rows()
        _, response = decode(reply, host.dialect)
        assert (response.mti, response.fields["39"]) == ("0210", "30")
        assert rows == []


# --- iso87bcd: jPOS ISO87BPackager -------------------------------------------------------------------------------

# fmt: off
# ISO87BPackager: MTI IFB_NUMERIC(4), 2 bytes BCD; IFB_BITMAP, 8 bytes each; IFB_NUMERIC fields BCD, an odd digit
# count with a 0 nibble in front (F22, F70); IFB_LLNUM (F2, F35) a 1-byte BCD length counting digits, then BCD,
# an odd count with a 0 nibble behind, track 2's "=" as the nibble D; IF_CHAR (F37, F41, F42, F49) ASCII;
# IFB_LLLCHAR (F60) a 2-byte BCD length, then ASCII; IFB_BINARY (F64) 8 bytes.
TID2: Final = b"TERM0002"  # a terminal with only a master key: it sends no MAC
BCD_ECHO: Final = (
    bytes.fromhex("0800" "8220000000C00000" "0400000000000000")  # bitmaps: 1 7 | 11 | 41 42 ; 70
    + bytes.fromhex("0101120000" "000001")  # F7 MMDDhhmmss, F11
    + TID2 + MID.encode("ascii")  # F41, F42
    + bytes.fromhex("0301")  # F70 301 (echo test), behind a 0 nibble
)
BCD_SALE: Final = (
    bytes.fromhex("0200" "3220048020C08000")  # bitmap: 3 4 7 | 11 | 22 | 25 | 35 | 41 42 | 49
    + bytes.fromhex("000000" "000000001500" "0101120000" "000011")  # F3 sale, F4 15.00, F7, F11
    + bytes.fromhex("0021" "00")  # F22 021 (magnetic stripe), F25 00
    + bytes.fromhex("27" "4761739001010010D49121011230")  # F35 27 digits: PAN D 4912 101 123, then the pad 0
    + TID2 + MID.encode("ascii") + b"840"  # F41, F42, F49
)


def _bcd_void(rrn: str) -> bytes:
    """0200 F3 020000 naming the sale by its RRN. Bitmap 3020000008C00000: 3 4 | 11 | 37 | 41 42."""
    return (bytes.fromhex("0200" "3020000008C00000" "020000" "000000001500" "000012")
            + rrn.encode("ascii") + TID2 + MID.encode("ascii"))  # fmt: skip


# Settlement 0500 F3 920000, batch 000001 in F60, the terminal's totals: the sale (a debit, 15.00) and its void
# (a credit, 15.00). Bitmaps A020000000C00010 | 0050050000000000: 1 3 | 11 | 41 42 | 60 ; 74 76 | 86 88.
BCD_SETTLEMENT: Final = (
    bytes.fromhex("0500" "A020000000C00010" "0050050000000000" "920000" "000013")
    + TID2 + MID.encode("ascii")
    + bytes.fromhex("0006") + b"000001"  # F60: IFB_LLLCHAR, 2-byte BCD length 6, ASCII
    + bytes.fromhex("0000000001" "0000000001")  # F74 credits count, F76 debits count: n10, 5 bytes BCD
    + bytes.fromhex("0000000000001500" "0000000000001500")  # F86 credits, F88 debits amount: n16, 8 bytes BCD
)

# A MAC'd sale from the static-key terminal, with F53 n16 (IFB_NUMERIC(16), 8 bytes BCD) before the MAC:
# bitmap 7020000000C00801: 2 3 4 | 11 | 41 42 | 53 | 64; F2 16 digits, even, so no pad.
BCD_MACED_SALE_BEFORE_MAC: Final = (
    bytes.fromhex("0200" "7020000000C00801" "16" "4761739001010010" "000000" "000000002222" "000014")
    + LAB.encode("ascii") + MID.encode("ascii")
    + bytes.fromhex("2001010100000000")
)
# fmt: on


class TestIso87bcd:
    async def test_echo(self, tmp_path: Path) -> None:
        """0810 comes back in BCD: MTI bytes 08 10, F70 echoed, F39 00; the ledger stays empty."""
        async with running_host(tmp_path, "iso87bcd") as host:
            reply = await _exchange(host, BCD_ECHO)
            rows = host.ledger_rows()
        _, response = decode(reply, host.dialect)
        assert reply[:2] == bytes.fromhex("0810")
        assert (response.fields["39"], response.fields["70"], response.fields["11"]) == ("00", "301", "000001")
        assert rows == []

    async def test_sale_void_and_settlement(self, tmp_path: Path) -> None:
        """A swiped sale (card from BCD track 2) is approved and recorded; a void by RRN cancels it; the batch
        settles with the terminal's BCD totals, and the reply carries the host's."""
        async with running_host(tmp_path, "iso87bcd") as host:
            _, sold = decode(await _exchange(host, BCD_SALE), host.dialect)
            assert (sold.mti, sold.fields["39"]) == ("0210", "00")
            assert [sold.fields[f] for f in ("3", "4", "11", "22", "25", "41", "49")] == [
                "000000", "000000001500", "000011", "021", "00", "TERM0002", "840"
            ]  # fmt: skip
            rows = host.ledger_rows()
            assert [(r["rrn"], r["amount_minor"], r["status"], r["masked_pan"]) for r in rows] == [
                (sold.fields["37"], 1500, "APPROVED", "476173******0010")
            ]
            _, voided = decode(await _exchange(host, _bcd_void(sold.fields["37"])), host.dialect)
            assert (voided.mti, voided.fields["39"], voided.fields["11"]) == ("0210", "00", "000012")
            assert [r.status for r in await host.records() if r.rrn == sold.fields["37"]] == [Status.VOIDED]
            settle_reply = await _exchange(host, BCD_SETTLEMENT)
            _, settled = decode(settle_reply, host.dialect)
            batches = [tuple(row) for row in _batches(host)]
        assert settle_reply[:2] == bytes.fromhex("0510")
        assert settled.fields["39"] == "00"
        assert [settled.fields[f] for f in ("74", "76", "86", "88")] == [
            "0000000001", "0000000001", "0000000000001500", "0000000000001500"
        ]  # fmt: skip
        assert batches == [("TERM0002", 1, "settled", "balanced")]

    async def test_a_maced_sale_with_f53(self, tmp_path: Path) -> None:
        """F53 n16 takes 8 BCD bytes and F64 its 8 raw bytes after it: the MAC verifies, 00, recorded, and the
        reply's MAC verifies too."""
        mac = compute_mac("x9.19", STATIC_TAK, BCD_MACED_SALE_BEFORE_MAC)
        async with running_host(tmp_path, "iso87bcd", extra_terminals=_lab_terminal()) as host:
            reply = await _exchange(host, BCD_MACED_SALE_BEFORE_MAC + mac)
            rows = host.ledger_rows()
        _, response = decode(reply, host.dialect)
        assert (response.mti, response.fields["39"], response.fields["4"]) == ("0210", "00", "000000002222")
        assert verify_mac("x9.19", STATIC_TAK, reply[:-8], reply[-8:])
        assert [(r["tid"], r["amount_minor"], r["status"]) for r in rows] == [(LAB, 2222, "APPROVED")]

    async def test_a_wrong_mac_is_refused(self, tmp_path: Path) -> None:
        """63, no MAC on the reply, nothing recorded."""
        async with running_host(tmp_path, "iso87bcd", extra_terminals=_lab_terminal()) as host:
            reply = await _exchange(host, BCD_MACED_SALE_BEFORE_MAC + bytes(8))
            rows = host.ledger_rows()
        _, response = decode(reply, host.dialect)
        assert response.fields["39"] == "63"
        assert "64" not in response.fields
        assert rows == []

    async def test_a_business_day_from_the_templates(self, tmp_path: Path) -> None:
        """The terminal client speaks iso87bcd from the shared templates: sign-on (keys in F48), MAC'd sales, a
        void, a reversal and a refund, then totals that balance."""
        async with settling_terminal(tmp_path, "iso87bcd", "sqlite") as t:
            assert t.client.mac is not None, "signed on: the keys came in F48"
            kept, voided, reversed_sale, refunded = [await t.sell(amount) for amount in (1_000, 2_000, 3_000, 4_000)]
            assert await t.void(voided) == "00"
            assert await t.reverse(reversed_sale) == "00"
            assert await t.refund(refunded, 1_500) == "00"
            response = await t.settle(t.totals([kept, voided, refunded], credits=(2_000, 1_500)))
            assert response.fields["39"] == "00"
            statuses = {r.rrn: r.status for r in await t.host.records()}
        assert statuses[voided.response.fields["37"]] is Status.VOIDED
        assert statuses[reversed_sale.response.fields["37"]] is Status.REVERSED


def _batches(host: RunningHost) -> list[tuple[str, int, str, str]]:
    """Batch 1 of every terminal: who, number, status, result."""
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(host.ledger_path) as connection:
        sql = "SELECT tid, batch_number, status, result FROM batches WHERE batch_number = 1 ORDER BY tid"
        rows = connection.execute(sql).fetchall()
    return [tuple(row) for row in rows]


def test_the_frames_are_what_their_comments_say() -> None:
    """The hand-written bitmaps and lengths agree with the dialects: each frame decodes whole, to these fields."""
    from iso_host.wire import load_dialect  # noqa: PLC0415

    bcd = load_dialect("iso87bcd")
    assert decode(BCD_SALE, bcd)[1] == Message("0200", {
        "3": "000000", "4": "000000001500", "7": "0101120000", "11": "000011", "22": "021", "25": "00",
        "35": "4761739001010010D4912101123", "41": "TERM0002", "42": MID, "49": "840",
    })  # fmt: skip
    assert set(decode(BCD_SETTLEMENT, bcd)[1].fields) == {"3", "11", "41", "42", "60", "74", "76", "86", "88"}
    assert decode(BCD_ECHO, bcd)[1].fields["70"] == "301"
    assert decode(BCD_MACED_SALE_BEFORE_MAC + bytes(8), bcd)[1].fields["53"] == "2001010100000000"
    ascii_sale = decode(ISO87A_SALE_BEFORE_MAC + b"0" * 16, load_dialect("iso87ascii"))[1]
    assert (ascii_sale.fields["53"], ascii_sale.fields["64"]) == ("2001010100000000", "0" * 16)
