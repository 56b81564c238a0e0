"""What real CUP terminals send that a textbook host refuses: long F60, fields the host does not interpret
(F47, F59 with the terminal's serial), BCD padded with F, their own batch number without signing on; and a MAC
that is checked before the host reads anything else of the message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from hosting import MID, TEST_PAN, exchange_bodies, local_now, running_host
from log_audit import remember_secret

from iso_host.core.message_auth import seal
from iso_host.core.terminals import TerminalState, WorkingKeys
from iso_host.terminal.client import MacKeys
from iso_host.wire import Message, decode, load_dialect

CUP = load_dialect("cup")
LAB_TID: Final = "LABTERM1"
STATIC_TAK: Final = bytes.fromhex("0123456789ABCDEF")  # single length, as CUP's TAK always is
STATIC_TPK: Final = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
remember_secret(STATIC_TAK, STATIC_TPK)

# fmt: off
# A CUP sale as terminal applications since 2019 send it, written by hand from ../shared/CUP.md ("Frame", "Field
# encodings", "Message identification" and the note on F47/F51/F57/F58/F59): F60 carries 19 digits (60.1 to
# 60.7), F47 and F59 are present, F22 is padded with F, and the batch is the terminal's own, 000024.
def cup_sale_by_hand(stan: str = "000123", type_60_1: str = "22") -> bytes:
    assert len(stan) == 6
    assert len(type_60_1) == 2
    return bytes.fromhex(
        "6000030000" "603100000000"  # TPDU 60 0003 0000, header: magstripe 60, version 31
        "0200"  # MTI, BCD
        "70200480 00C28031"  # bitmap: 2, 3, 4, 11, 22, 25, 41, 42, 47, 49, 59, 60, 64
        .replace(" ", "") +
        "16" "4761739001010010"  # F2 LLVAR n..19, BCD length in digits
        "000000"  # F3 processing code: sale
        "000000000100"  # F4 amount 1.00
        + stan +  # F11 STAN
        "021F"  # F22 POS entry mode 021, left-aligned, padded with F (not 0)
        "00"  # F25 condition code: normal
        "4C41425445524D31"  # F41 "LABTERM1"
        "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001"
        "0003" "A1B2C3"  # F47 LLLVAR b, 3 bytes the host does not interpret
        "313536"  # F49 "156"
        "0014" "5455534E30313233343536373839"  # F59 LLLVAR ans: "TUSN0123456789"
        "0019" + type_60_1 + "00002400051000000" "0"  # F60: 60.1, batch 000024, 60.3 000, 60.4-60.7; 19 digits, pad 0
        "0000000000000000"  # F64 MAC: sealed below with the terminal's TAK
    )
# fmt: on


def sealed(body: bytes) -> bytes:
    """The frame body with its MAC computed over MTI..F63 under the static TAK (as the terminal does)."""
    envelope_bytes = CUP.envelope_bytes
    _, message = decode(body, CUP)
    return body[:envelope_bytes] + seal(body[envelope_bytes:], message, CUP, "cup-ecb", STATIC_TAK)


async def exchange(address: tuple[str, int], body: bytes) -> tuple[bytes, Message]:
    (reply,) = await exchange_bodies(address, body)
    return reply, decode(reply, CUP)[1]


def lab_terminal() -> TerminalState:
    """A static-key CUP terminal that never signs on (test labs, some unattended terminals)."""
    return TerminalState(LAB_TID, MID, static_keys=WorkingKeys(STATIC_TPK, STATIC_TAK), require_signon=False)


async def test_a_real_terminals_sale_is_approved_and_its_batch_adopted(tmp_path: Path, ledger_url: str) -> None:
    """19-digit F60, F47, F59 and an F-padded F22 are read; the host adopts batch 000024 (its own batch 1 held
    nothing), so the terminal's settlement of batch 000024 is approved, not 77. Both ledgers."""
    lab = {LAB_TID: lab_terminal()}
    async with running_host(tmp_path, "cup", extra_terminals=lab, ledger_url=ledger_url) as host:
        reply, response = await exchange(host.address, sealed(cup_sale_by_hand()))
        rows = [r for r in await host.records() if r.tid == LAB_TID]
        async with await host.connected_client(LAB_TID, signon=False) as client:
            client.mac = MacKeys("cup-ecb", STATIC_TAK, STATIC_TAK)
            totals = "0" * 31 + "000000000100001" "000000000000000" "0"  # domestic none; foreign (a 4761 card): 1.00
            settle = client.build("settlement", local_now(), batch=24, totals=totals)
            settled = await client.request(settle)
    assert response.fields["39"] == "00", response
    assert response.fields["60"].startswith("22000024"), "F60 is echoed as the terminal sent it"
    assert response.pads.get("22") == "F", "F22 is answered with the pad the terminal used"
    assert bytes.fromhex("021F") in reply
    assert [(row.batch_number, row.amount_minor, row.status.value) for row in rows] == [(24, 100, "APPROVED")]
    assert settled.fields["39"] == "00", settled
    assert host.host.terminals[LAB_TID].batch_number == 25, "batch 24 adopted, then settled"


async def test_a_batch_is_not_adopted_while_the_hosts_holds_approvals(tmp_path: Path) -> None:
    """Once the host's open batch holds an approved sale, a request naming another batch changes nothing."""
    terminal = lab_terminal()
    async with running_host(tmp_path, "cup", extra_terminals={LAB_TID: terminal}) as host:
        async with await host.connected_client(LAB_TID, signon=False) as client:
            client.mac = MacKeys("cup-ecb", STATIC_TAK, STATIC_TAK)
            first = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN, batch=1))
        _, later = await exchange(host.address, sealed(cup_sale_by_hand()))
        batches = sorted({row["batch_number"] for row in host.ledger_rows() if row["tid"] == LAB_TID})
    assert first.fields["39"] == "00"
    assert later.fields["39"] == "00", "the terminal's own batch number is not refused; it is not adopted either"
    assert terminal.batch_number == 1
    assert batches == [1, 24]


async def test_the_mac_is_checked_before_the_kind(tmp_path: Path) -> None:
    """A tampered frame of a kind the host does not know is a MAC failure (A0), not an unknown kind (12); with
    a good MAC the same unknown kind is 12."""
    good = sealed(cup_sale_by_hand(type_60_1="99"))
    tampered = good[:-1] + bytes([good[-1] ^ 0x01])
    async with running_host(tmp_path, "cup", extra_terminals={LAB_TID: lab_terminal()}) as host:
        _, refused = await exchange(host.address, tampered)
        _, unknown = await exchange(host.address, good)
        rows = host.ledger_rows()
    assert refused.fields["39"] == CUP.response_code("MAC_FAILED") == "A0"
    assert "64" not in refused.fields, "a MAC failure is answered without a MAC"
    assert unknown.fields["39"] == CUP.response_code("INVALID_TRANSACTION")
    assert "64" in unknown.fields, "a message whose MAC checked is answered with a MAC"
    assert rows == []


# fmt: off
# A CUP QR (scan code) payment written by hand (CUP.md "Message identification": 0200 with F3 70xxxx and no F2 or
# F35): F3, F4, F11, F22, F25, F41, F42, F49, F60 and the MAC.
QR_SALE_BY_HAND: Final = bytes.fromhex(
    "6000030000" "603100000000" "0200"
    "3020048000C08011"  # bitmap: 3, 4, 11, 22, 25, 41, 42, 49, 60, 64
    "700000" "000000000250" "000321" "0300" "00"  # F3 QR, F4 2.50, F11, F22 030 left-aligned, F25
    "4C41425445524D31" "4D45524348414E5430303030303031" "313536"  # F41 LABTERM1, F42, F49 156
    "0011" "220000010000"  # F60: sale 22, batch 000001, 000
    "0000000000000000"  # F64, sealed below
)
# fmt: on


async def test_a_qr_sale_needs_no_card_and_an_offline_sale_is_recorded(tmp_path: Path, ledger_url: str) -> None:
    """A kind may say it carries no card (QR), or be a sale the terminal approved offline: both are sales, on
    both ledgers."""
    lab = {LAB_TID: lab_terminal()}
    async with running_host(tmp_path, "cup", extra_terminals=lab, ledger_url=ledger_url) as host:
        _, qr = await exchange(host.address, sealed(QR_SALE_BY_HAND))
        async with await host.connected_client(LAB_TID, signon=False) as client:
            client.mac = MacKeys("cup-ecb", STATIC_TAK, STATIC_TAK)
            offline = await client.request(client.build("offline_sale", local_now(), amount=700, pan=TEST_PAN))
        records = await host.records()
        batch = await host.store.batch_view(LAB_TID, MID, 1, with_totals=True, deadline=time.monotonic() + 5)
    assert batch.host_totals.domestic.debit_minor == 250, "a QR payment is UnionPay's: domestic"
    assert batch.host_totals.foreign.debit_minor == 700, "the offline sale's 4761 card is foreign"
    rows = [(r.kind.value, r.amount_minor, r.card.masked_pan if r.card else None, r.mti) for r in records]
    assert qr.fields["39"] == "00", qr
    assert offline.mti == "0230"
    assert offline.fields["39"] == "00", offline
    assert rows == [("sale", 250, None, "0200"), ("sale", 700, "476173******0010", "0220")]
