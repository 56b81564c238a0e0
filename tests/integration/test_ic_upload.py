"""CUP chip uploads over real TCP (0320, 60.3 = 203 online IC, 205 offline IC): one transaction per message in its
own fields with field 55, counted with the magstripe records in the differences after totals disagreed, and
acknowledged without a change after a balanced settlement (ended by 207). Both ledgers; the terminal command's
chip sale goes up the same way.

Every frame is written by hand from shared CUP.md ("Frame", "Field encodings", "Network management", "Settlement",
"Batch upload record"): 2-byte length (added by ``exchange_bodies``), TPDU 60 0003 0000, the 6-byte header, BCD
MTI, the primary bitmap, then the fields in order. Field 55 is EMV BER-TLV (tag, length, value) as the card
answered its second GENERATE AC: a TC (9F27 40), the ATC, the amount authorised and the data it was computed over.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Final

from databases import ledger_query
from hosting import exchange_bodies, running_host
from processes import ISO_HOST, serving, terminal
from test_chip import CHIP_PAN, IMK
from test_real_terminals import LAB_TID, cup_sale_by_hand, lab_terminal, sealed

from iso_host.config import DEMO_MID, DEMO_TID, DEMO_TMK
from iso_host.wire import Message, decode, load_dialect

CUP = load_dialect("cup")
ENVELOPE: Final = "6000030000" "613100000000"  # TPDU 60 0003 0000; header: IC application 61, version 31
TERMINAL: Final = "4C41425445524D31" "4D45524348414E5430303030303031"  # F41 "LABTERM1", F42 "MERCHANT0000001"
PAN: Final = "4761739001010010"  # a 4761 card: foreign in the CUP totals


# fmt: off
def icc_data(amount: str) -> str:
    """Field 55 with its BCD LLL byte count: the card's answer to the second GENERATE AC for ``amount`` (n12)."""
    tlv = (
        "9F2608" "1122334455667788"  # 9F26 application cryptogram: the TC
        "9F2701" "40"  # 9F27 cryptogram information data: 01xx xxxx, a TC (approved)
        "9F3602" "001C"  # 9F36 application transaction counter
        "9F0206" + amount +  # 9F02 amount, authorised
        "5F2A02" "0156"  # 5F2A transaction currency: CNY
        "9A03" "261202"  # 9A transaction date, YYMMDD
        "9C01" "00"  # 9C transaction type: goods and services
        "9505" "0000000000"  # 95 terminal verification results
    )
    return f"{len(tlv) // 2:04d}" + tlv


def ic_upload_by_hand(stan: str, amount: str, upload_code: str = "203", chip: str | None = None) -> bytes:
    """0320 with 60.3 = 203 (205: offline): F2, F3, F4, F11 the transaction's STAN, F22 051 (chip), F41, F42, F49,
    F55 and F60 = 00 + batch 000024 + the upload code, 11 digits padded with 0."""
    return bytes.fromhex(
        ENVELOPE + "0320"
        "7020040000C08210"  # bitmap: 2, 3, 4, 11, 22, 41, 42, 49, 55, 60
        "16" + PAN +  # F2 LLVAR n..19: a BCD length in digits
        "000000" + amount + stan +  # F3, F4 n12, F11 n6
        "0510"  # F22 051 (chip read), left-aligned, padded with 0
        + TERMINAL + "313536"  # F41, F42, F49 "156"
        + (chip if chip is not None else icc_data(amount)) +  # F55 LLLVAR b: a BCD length in bytes
        "0011" "00000024" + upload_code + "0"  # F60: 60.1 00, 60.2 batch 000024, 60.3
    )


def settlement_by_hand(foreign_debits: str) -> bytes:
    """0500 60.3 = 201 with F48's 62 digits: domestic none, foreign ``foreign_debits`` (n12 amount + n3 count)."""
    return bytes.fromhex(
        ENVELOPE + "0500"
        "00200000" "00C18010"  # bitmap: 11, 41, 42, 48, 49, 60
        "000900" + TERMINAL +  # F11, F41, F42
        "0062" + "0" * 31 + foreign_debits + "000000000000" "000" "0"  # F48 LLLVAR n: two sections of 31 digits
        "313536" "0011" "00000024201" "0"  # F49, F60: batch 000024, 60.3 201
    )


def upload_end_by_hand(count: str, end_code: str) -> bytes:
    """0320 that ends the upload: F48 the n4 count of transactions uploaded, 60.3 = 202 (or 207 when balanced)."""
    return bytes.fromhex(
        ENVELOPE + "0320"
        "00200000" "00C10010"  # bitmap: 11, 41, 42, 48, 60
        "000901" + TERMINAL + "0004" + count +  # F11, F41, F42, F48 LLLVAR n4
        "0011" "00000024" + end_code + "0"  # F60
    )
# fmt: on


async def exchange(address: tuple[str, int], *bodies: bytes) -> list[Message]:
    return [decode(reply, CUP)[1] for reply in await exchange_bodies(address, *bodies)]


def uploaded(url: str) -> list[tuple[object, ...]]:
    return ledger_query(url, "SELECT stan, amount_minor, masked_pan FROM batch_uploads ORDER BY stan")


def differences(url: str) -> list[tuple[object, ...]]:
    sql = "SELECT stan, difference, host_amount_minor, terminal_amount_minor FROM batch_differences ORDER BY stan"
    return ledger_query(url, sql)


async def test_chip_uploads_join_the_differences(tmp_path: Path, ledger_url: str) -> None:
    """Totals disagree: the terminal uploads its chip sale (the host's, 1.00) and one the host never approved
    (2.00) with 203 and 205, then ends with 202: one difference, missing on the host; the batch closes."""
    async with running_host(tmp_path, "cup", extra_terminals={LAB_TID: lab_terminal()}, ledger_url=ledger_url) as host:
        (sale,) = await exchange(host.address, sealed(cup_sale_by_hand(stan="000123")))
        assert sale.fields["39"] == "00", "the sale adopts batch 000024"
        settle, online, offline, end = await exchange(
            host.address, settlement_by_hand("000000000300" "002"), ic_upload_by_hand("000123", "000000000100"),
            ic_upload_by_hand("000124", "000000000200", "205"), upload_end_by_hand("0002", "202"),
        )  # fmt: skip
    assert settle.fields["39"] == CUP.response_code("OUT_OF_BALANCE")
    assert [online.mti, online.fields["39"], offline.fields["39"], end.fields["39"]] == ["0330", "00", "00", "00"]
    assert uploaded(ledger_url) == [("000123", 100, "476173******0010"), ("000124", 200, "476173******0010")]
    assert differences(ledger_url) == [("000124", "missing_on_host", None, 200)]
    batch = ledger_query(ledger_url, "SELECT status, result FROM batches WHERE tid = %s", (LAB_TID,))
    assert batch == [("settled", "out_of_balance")]


async def test_bad_chip_data_in_an_upload_is_refused(tmp_path: Path, ledger_url: str) -> None:
    """Field 55 whose 9F26 announces 8 bytes and carries 4: format error (30), nothing uploaded."""
    broken = "0007" "9F2608" "11223344"
    async with running_host(tmp_path, "cup", extra_terminals={LAB_TID: lab_terminal()}, ledger_url=ledger_url) as host:
        await exchange(host.address, sealed(cup_sale_by_hand(stan="000123")))
        settle, refused = await exchange(
            host.address, settlement_by_hand("000000000900" "001"),
            ic_upload_by_hand("000123", "000000000100", chip=broken),
        )  # fmt: skip
    assert settle.fields["39"] == CUP.response_code("OUT_OF_BALANCE")
    assert refused.fields["39"] == CUP.response_code("FORMAT_ERROR") == "30"
    assert uploaded(ledger_url) == []


async def test_after_a_balanced_settlement_chip_uploads_are_acknowledged(tmp_path: Path, ledger_url: str) -> None:
    """Totals agree: the batch closes at the 0500; the chip upload that follows (203, then 207) is answered 00 and
    changes nothing, while a magstripe upload (201) into the closed batch is still out of sync (77)."""
    magstripe = bytes.fromhex(
        ENVELOPE + "0320" "00200000" "00C10010" "000902" + TERMINAL
        + "0042" "01" "00" "000123" "00004761739001010010" "000000000100"  # F48: 1 record, foreign card
        + "0011" "00000024201" "0"
    )  # fmt: skip
    async with running_host(tmp_path, "cup", extra_terminals={LAB_TID: lab_terminal()}, ledger_url=ledger_url) as host:
        await exchange(host.address, sealed(cup_sale_by_hand(stan="000123")))
        settle, chip, end, late = await exchange(
            host.address, settlement_by_hand("000000000100" "001"), ic_upload_by_hand("000123", "000000000100"),
            upload_end_by_hand("0001", "207"), magstripe,
        )  # fmt: skip
    assert settle.fields["39"] == "00"
    assert settle.fields["48"][61] == "1", "balanced"
    assert [chip.fields["39"], end.fields["39"]] == ["00", "00"]
    assert late.fields["39"] == CUP.response_code("BATCH_OUT_OF_SYNC") == "77"
    assert uploaded(ledger_url) == []
    batch = ledger_query(ledger_url, "SELECT status, result FROM batches WHERE tid = %s", (LAB_TID,))
    assert batch == [("settled", "balanced")]


def test_the_terminal_uploads_its_chip_sales(tmp_path: Path) -> None:
    """`iso-host terminal`: a chip sale and a magstripe sale. A balanced settlement still sends the chip sale up
    (203, then 207); in the next batch, a terminal whose chip sale's amount disagrees with the host's uploads it
    with 203 among the magstripe records: the difference is recorded, and `ledger verify` passes."""
    config = tmp_path / "host.toml"
    config.write_text(f'[[terminals]]\ntid = "{DEMO_TID}"\nmid = "{DEMO_MID}"\ntmk = "{DEMO_TMK}"\n\n'
                      f'[[cards]]\npan = "{CHIP_PAN}"\nimk = "{IMK}"\n')  # fmt: skip
    chip = ("--chip", "--imk", IMK, "--pan", CHIP_PAN)
    state = tmp_path / "terminal.json"
    with serving(tmp_path, "--config", str(config), "--dialect", "cup") as (address, _):
        cup = ("--dialect", "cup")
        assert terminal(tmp_path, address, *cup, "signon").returncode == 0
        assert terminal(tmp_path, address, *cup, "sale", "5.00", *chip).returncode == 0
        assert terminal(tmp_path, address, *cup, "sale", "7.00").returncode == 0
        balanced = terminal(tmp_path, address, *cup, "settle")
        assert terminal(tmp_path, address, *cup, "sale", "3.00", *chip).returncode == 0
        saved = json.loads(state.read_text(encoding="utf-8"))
        chip_stan = saved["items"][0]["stan"]
        saved["items"][0]["amount"] = 400  # the terminal's record of its chip sale says 4.00; the host's 3.00
        state.write_text(json.dumps(saved), encoding="utf-8")
        uploaded_batch = terminal(tmp_path, address, *cup, "settle")
    ledger = f"sqlite:///{tmp_path}/iso-host.db"
    assert balanced.returncode == 0, balanced.stdout + balanced.stderr
    assert "1 chip transaction uploaded" in balanced.stdout
    assert uploaded_batch.returncode == 0, uploaded_batch.stdout + uploaded_batch.stderr
    assert "out of balance: uploading the batch" in uploaded_batch.stdout
    assert differences(ledger) == [(chip_stan, "amount_differs", 300, 400)]
    verify = subprocess.run([*ISO_HOST, "ledger", "verify", "--ledger", ledger], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
