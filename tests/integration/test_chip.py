"""The chip path over real TCP: a chip sale's ARQC (F55 tag 9F26) verified under the test card's issuer master key,
answered with the ARPC in F55 tag 91, which the card checks at its second GENERATE AC; a wrong ARQC declined (05)
and recorded; a replayed ARQC (an ATC already seen) declined; F55 that disagrees with the message (5A, 9F02)
refused; issuer scripts (71/72) a scenario adds after tag 91, given in code, in the config file and over MQTT.

The CUP sale is written by hand as hex from shared CUP.md, its field 55 from pyemv's published Visa CVN 10 vector
(github.com/knovichikhin/pyemv, tests/test_cvn_hsm.py, test_visa_cvn10, checked there against an HSM): IMK-AC
0123456789ABCDEFFEDCBA9876543210, PAN 1234567890123456, PAN sequence 00, its CDOL1 data (below) and CVR 03A06010;
ARQC 29CCA15AE665FA2E, and ARPC 28993816AFAE4AEB for the ARC 3030, the two ASCII characters of F39 "00".
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Final

import pytest
from hosting import TEST_PAN, RunningHost, local_now, running_host
from log_audit import remember_secret
from processes import serving, terminal
from test_control_listener import controlled, ok
from test_preauth import sealed

from iso_host.core.issuer_scripts import wrapped
from iso_host.core.scenarios import Scenario
from iso_host.core.test_cards import TestCard
from iso_host.security import EMV_SCHEMES, derive_icc_key, parse_tlv, tag_values, verify_arpc
from iso_host.terminal.chip import ChipCard, IssuerScript, chip_request, issuer_authentication, issuer_scripts
from iso_host.vocab import Reason, Status
from iso_host.wire import Message, decode, load_dialect

IMK: Final = "0123456789ABCDEFFEDCBA9876543210"
OTHER_IMK: Final = "FEDCBA98765432100123456789ABCDEF"
CHIP_PAN: Final = "1234567890123456"
ICC_KEY: Final = derive_icc_key(bytes.fromhex(IMK), pan=CHIP_PAN, pan_sequence="00", scheme=EMV_SCHEMES["visa-cvn10"])
remember_secret(IMK, OTHER_IMK, CHIP_PAN, ICC_KEY.master_key)
CHIP_CARD: Final = {CHIP_PAN: TestCard(imk=bytes.fromhex(IMK), emv_scheme="visa-cvn10")}
ARQC: Final = "29CCA15AE665FA2E"
PUBLISHED_91: Final = "28993816AFAE4AEB" "3030"  # ARPC || ARC "00"
CUP = load_dialect("cup")

# fmt: off
# Field 55 (EMV BER-TLV, tag, length, value), 84 bytes: the published card's answer to the first GENERATE AC.
ICC_DATA_BY_HAND: Final = (
    "9F2608" "{arqc}"  # 9F26 application cryptogram: the ARQC
    "9F2701" "80"  # 9F27 cryptogram information data: 10xx xxxx, an ARQC (go online)
    "9F1007" "06010A03A06010"  # 9F10 issuer application data, Visa: length 06, DKI 01, CVN 0A (10), CVR 03A06010
    "9F3704" "52BF4585"  # 9F37 unpredictable number
    "9F3602" "001C"  # 9F36 application transaction counter
    "9505" "8000048000"  # 95 terminal verification results
    "9A03" "191105"  # 9A transaction date, YYMMDD
    "9C01" "01"  # 9C transaction type
    "9F0206" "000000004000"  # 9F02 amount, authorised: 40.00
    "5F2A02" "0124"  # 5F2A transaction currency code
    "8202" "1800"  # 82 application interchange profile
    "9F1A02" "0124"  # 9F1A terminal country code
    "9F0306" "000000000000"  # 9F03 amount, other
)


def chip_sale_by_hand(stan: str, arqc: str = ARQC, *, amount: str = "000000004000", first_tags: str = "") -> bytes:
    """A CUP chip sale of 40.00 (0200, F3 000000, F25 00, 60.1 22) read from the chip (F22 051, F23, F55), written
    from shared CUP.md: the frame body (TPDU, header, BCD MTI, bitmap, fields), F64 eight zero bytes until sealed.
    ``amount``: F4 (n12 BCD) where it should differ from 9F02; ``first_tags``: TLV before the card's (such as 5A)."""
    icc_data = first_tags + ICC_DATA_BY_HAND.format(arqc=arqc)
    assert len(icc_data) % 2 == 0
    return bytes.fromhex(
        "6000030000"  # TPDU: 60, destination NII 0003, source NII 0000
        "613100000000"  # header: IC application 61, software version 31, status 00, sub-version 000000
        "0200"  # MTI, BCD: financial request
        "7020068000C08211"  # bitmap: 2, 3, 4, 11, 22, 23, 25, 41, 42, 49, 55, 60, 64
        "16" "1234567890123456"  # F2 PAN: LLVAR, 1-byte BCD length in digits (16)
        "000000"  # F3 processing code n6 BCD: sale
        f"{amount}"  # F4 amount n12 BCD, minor units: 40.00, as 9F02
        f"{stan}"  # F11 STAN n6 BCD
        "0510"  # F22 POS entry mode n3, left-aligned: 051 (chip, PIN capable) + pad nibble
        "0000"  # F23 card sequence number n3 BCD, right-aligned: 000 (PAN sequence 00)
        "00"  # F25 condition code n2: 00 normal
        "5445524D30303031"  # F41 "TERM0001" ans8
        "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001" ans15
        "313536"  # F49 "156" an3
        f"{len(icc_data) // 2:04d}" + icc_data  # F55 LLLVAR b: 2-byte BCD length in bytes (84), then the TLV
        + "0011" "220000010000"  # F60 LLLVAR n: length 11 digits: 60.1 22, 60.2 000001, 60.3 000, pad
        "0000000000000000"  # F64 MAC b8, sealed by the test
    )
# fmt: on


def published_tags(arqc: str = ARQC) -> dict[str, bytes]:
    return tag_values(parse_tlv(bytes.fromhex(ICC_DATA_BY_HAND.format(arqc=arqc))))


async def test_a_hand_written_cup_chip_sale_gets_the_published_arpc(tmp_path: Path, ledger_url: str) -> None:
    """The published ARQC verifies: 0210 00 with F55 = tag 91 alone, the published ARPC and ARC "00", which the card
    verifies; the same sale with its ARQC's last bit changed is declined 05 without F55, and both are recorded."""
    async with (
        running_host(tmp_path, "cup", ledger_url=ledger_url, test_cards=CHIP_CARD) as host,
        await host.connected_client() as client,
    ):
        assert client.mac is not None
        await client.send_raw(sealed(chip_sale_by_hand("000101"), client.mac.request_key))
        approved = await client.receive(mac=client.mac)
        tampered_arqc = ARQC[:-1] + "F"
        await client.send_raw(sealed(chip_sale_by_hand("000102", tampered_arqc), client.mac.request_key))
        declined = await client.receive(mac=client.mac)
        records = {record.stan: record for record in await host.records()}
    assert (approved.mti, approved.fields["39"], approved.fields["23"]) == ("0210", "00", "000")
    assert approved.fields["55"] == "910A" + PUBLISHED_91
    assert verify_arpc(ICC_KEY, published_tags(), bytes.fromhex(PUBLISHED_91))
    assert (declined.fields["39"], "55" in declined.fields) == ("05", False)
    assert not verify_arpc(ICC_KEY, published_tags(tampered_arqc), bytes.fromhex(PUBLISHED_91))
    sale, refused = records["000101"], records["000102"]
    assert (sale.status, sale.reason, sale.response_code) == (Status.APPROVED, Reason.APPROVED, "00")
    assert (refused.status, refused.reason, refused.response_code) == (Status.DECLINED, Reason.CRYPTOGRAM_FAILED, "05")
    assert refused.amount_minor == 4_000
    assert not refused.auth_code


async def test_icc_data_that_does_not_parse_is_a_format_error(tmp_path: Path) -> None:
    """Field 55 whose last data object (9F03, at byte 75) claims 7 bytes where 6 are left is 30, and nothing is
    recorded (the detail, naming the tag and the offset, is the unit tables')."""
    body = chip_sale_by_hand("000103").replace(bytes.fromhex("9F0306"), bytes.fromhex("9F0307"))
    async with running_host(tmp_path, "cup", test_cards=CHIP_CARD) as host, await host.connected_client() as client:
        assert client.mac is not None
        await client.send_raw(sealed(body, client.mac.request_key))
        response = await client.receive(mac=client.mac)
        records = await host.records()
    assert response.fields["39"] == "30"
    assert records == []


@pytest.mark.parametrize("dialect_name", ["cup", "iso87ascii", "iso87binary"])
async def test_the_reply_f55_follows_the_dialects_spec(tmp_path: Path, dialect_name: str) -> None:
    """A terminal's chip sale in each dialect: the reply's F55 is bytes where the dialect's F55 is binary (cup
    LLLVAR b, iso87binary b) and hex text where it is characters (iso87ascii); the card verifies the ARPC either way.
    A card without an IMK is answered as before, without F55."""
    card = ChipCard.derive(bytes.fromhex(IMK), pan=CHIP_PAN, pan_sequence="01", scheme="visa-cvn10")
    async with (
        running_host(tmp_path, dialect_name, test_cards=CHIP_CARD | {TEST_PAN: TestCard()}) as host,
        await host.connected_client() as client,
    ):
        dialect = host.dialect
        frames, chips = [], []
        for pan in (CHIP_PAN, TEST_PAN):
            sale = client.build("sale", local_now(), pan=pan, amount=2_500)
            chips.append(chip_request(card, amount_minor=2_500, currency=sale.fields["49"], now=local_now(), atc=1))
            sale.fields.update(chips[-1].fields)
            await client.send_raw(client.frame(sale))
            frames.append(await client.receive_frame())
    (_, approved), (_, plain) = (decode(frame, dialect) for frame in frames)
    assert (approved.fields["39"], approved.fields["55"][:4]) == ("00", "910A")
    arpc = bytes.fromhex(approved.fields["55"])[2:]
    assert verify_arpc(card.icc_key, chips[0].tags, arpc)
    wire = arpc.hex().upper().encode("ascii") if dialect.spec["55"]["data_enc"] != "b" else arpc
    assert wire in frames[0]
    assert (plain.fields["39"], "55" in plain.fields) == ("00", False)


def test_the_terminal_command_sends_a_chip_sale(tmp_path: Path) -> None:
    """`iso-host terminal sale --chip --imk` against `iso-host serve --config` with a card carrying an imk (the
    default scheme on both sides): "ARPC verified", exit 0; another IMK's ARQC is declined 05, exit 1; a card the
    host has no IMK for is approved without an ARPC, which the card would decline: exit 2 and one line."""
    config = tmp_path / "host.toml"
    config.write_text('[[terminals]]\ntid = "TERM0001"\nmid = "MERCHANT0000001"\n\n'
                      f'[[cards]]\npan = "{CHIP_PAN}"\nimk = "{IMK}"\n')  # fmt: skip
    chip = ("--chip", "--pan", CHIP_PAN, "--psn", "01")
    with serving(tmp_path, "--config", str(config)) as (address, _):
        verified = terminal(tmp_path, address, "sale", "12.34", *chip, "--imk", IMK)
        wrong_key = terminal(tmp_path, address, "sale", "12.34", *chip, "--imk", OTHER_IMK)
        no_imk = terminal(tmp_path, address, "sale", "12.34", "--chip", "--imk", IMK)
        no_key = terminal(tmp_path, address, "sale", "12.34", "--chip")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ARPC verified\n")
    assert "F55 " in verified.stdout
    assert IMK not in verified.stdout + verified.stderr
    assert wrong_key.returncode == 1, wrong_key.stdout + wrong_key.stderr
    assert "Response Code                    05" in wrong_key.stdout
    assert no_imk.returncode == 2, no_imk.stdout + no_imk.stderr
    assert no_imk.stderr == ("iso-host: the approved response carries no ARPC (F55 tag 91); the card would decline"
                             " what the host approved (reverse it: --stan 000003)\n")  # fmt: skip
    assert no_key.returncode == 2
    assert no_key.stderr == "iso-host: --chip: give the card's issuer master key with --imk (32 hex digits)\n"


# fmt: off
# An issuer script for template 72, written by hand (EMV 4.3 Book 3 Annex A): 9F18 the script identifier, then two
# command APDUs in tag 86: APPLICATION BLOCK (CLA 84, INS 1E, P1 P2 0000, Lc 04, a 4-byte MAC) and PUT DATA (CLA 04,
# INS DA, P1 P2 9F58: the lower consecutive offline limit, Lc 05, the value 01 and a 4-byte MAC). 30 bytes.
SCRIPT_72: Final = "9F1804" "11223344" "8609" "841E000004" "A1B2C3D4" "860A" "04DA9F5805" "01" "A1B2C3D4"
# The reply's whole field 55: tag 91 (the published ARPC and ARC "00"), then the script the host wrapped in 72 (1E: 30).
REPLY_WITH_SCRIPT: Final = "910A" + PUBLISHED_91 + "721E" + SCRIPT_72
# fmt: on
BLOCKING = Scenario(name="block", kind="sale", issuer_scripts=wrapped({"72": bytes.fromhex(SCRIPT_72)}))


async def exchange_sealed(host: RunningHost, *bodies: bytes) -> list[Message]:
    """Hand-written CUP frames, MAC'd with the signed-on terminal's key, on one connection; the decoded replies."""
    async with await host.connected_client() as client:
        assert client.mac is not None
        replies = []
        for body in bodies:
            await client.send_raw(sealed(body, client.mac.request_key))
            replies.append(await client.receive(mac=client.mac))
    return replies


async def test_a_scenario_adds_a_72_script_after_the_arpc(tmp_path: Path) -> None:
    """A scenario with script72 fires on the chip sale: F55 is tag 91 then the 72 template, byte for byte; a sale
    without F55 on the same host does not fire it (its reply has no F55), so the scenario waits for a chip."""
    async with running_host(tmp_path, "cup", test_cards=CHIP_CARD, scenarios=[BLOCKING]) as host:
        async with await host.connected_client() as client:
            plain = await client.request(client.build("sale", local_now(), pan=TEST_PAN, amount=4_000))
        (chip_reply,) = await exchange_sealed(host, chip_sale_by_hand("000201"))
    assert (plain.fields["39"], "55" in plain.fields) == ("00", False)
    assert chip_reply.fields["39"] == "00"
    assert chip_reply.fields["55"] == REPLY_WITH_SCRIPT


async def test_a_forced_decline_carries_the_script_without_an_arpc(tmp_path: Path) -> None:
    """respond = 05 with a script: the issuer's decline with its script; no ARQC was verified, so no tag 91."""
    forced = replace(BLOCKING, respond="05")
    async with running_host(tmp_path, "cup", test_cards=CHIP_CARD, scenarios=[forced]) as host:
        (declined,) = await exchange_sealed(host, chip_sale_by_hand("000202"))
    assert (declined.fields["39"], declined.fields["55"]) == ("05", "721E" + SCRIPT_72)


async def test_a_replayed_arqc_is_declined(tmp_path: Path, ledger_url: str) -> None:
    """The same F55 (ATC 001C) in a second sale, a new STAN: the ARQC verifies but its ATC is not above the one
    already seen, so 05 CRYPTOGRAM_REPLAYED, recorded, without tag 91; the very same frame again is a duplicate (94)."""
    first, replay = chip_sale_by_hand("000301"), chip_sale_by_hand("000302")
    async with running_host(tmp_path, "cup", ledger_url=ledger_url, test_cards=CHIP_CARD) as host:
        approved, replayed, again = await exchange_sealed(host, first, replay, first)
        records = {record.stan: record for record in await host.records()}
    assert (approved.fields["39"], approved.fields["55"]) == ("00", "910A" + PUBLISHED_91)
    assert (replayed.fields["39"], "55" in replayed.fields, again.fields["39"]) == ("05", False, "94")
    assert (records["000302"].status, records["000302"].reason) == (Status.DECLINED, Reason.CRYPTOGRAM_REPLAYED)
    assert records["000301"].status is Status.APPROVED


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # 5A (application PAN) 1234567890123457 before the card's data: F2 is 1234567890123456.
        pytest.param(chip_sale_by_hand("000401", first_tags="5A08" "1234567890123457"), "59", id="5a-other-pan"),
        # F4 40.01 where 9F02 says 40.00.
        pytest.param(chip_sale_by_hand("000402", amount="000000004001"), "13", id="9f02-other-amount"),
    ],
)
async def test_chip_data_that_disagrees_with_the_message_is_refused(tmp_path: Path, body: bytes, code: str) -> None:
    """5A against F2 (CHIP_PAN_MISMATCH, 59) and 9F02 against F4 (INVALID_AMOUNT, 13): refused, nothing recorded."""
    async with running_host(tmp_path, "cup", test_cards=CHIP_CARD) as host:
        (refused,) = await exchange_sealed(host, body)
        records = await host.records()
    assert (refused.fields["39"], "55" in refused.fields) == (code, False)
    assert records == []


def test_a_config_scenario_script_reaches_the_terminal_command(tmp_path: Path) -> None:
    """`[[scenarios]] script72` in the config file: `iso-host terminal sale --chip` prints the script it received
    (identifier and commands) and verifies the ARPC beside it; two sales, two ATCs, both approved."""
    config = tmp_path / "host.toml"
    config.write_text('[[terminals]]\ntid = "TERM0001"\nmid = "MERCHANT0000001"\n\n'
                      f'[[cards]]\npan = "{CHIP_PAN}"\nimk = "{IMK}"\n\n'
                      f'[[scenarios]]\nname = "block"\nscript72 = "{SCRIPT_72}"\n')  # fmt: skip
    chip = ("--chip", "--pan", CHIP_PAN, "--imk", IMK)
    with serving(tmp_path, "--config", str(config)) as (address, _):
        sales = [terminal(tmp_path, address, "sale", "12.34", *chip) for _ in range(2)]
    for sale in sales:
        assert sale.returncode == 0, sale.stdout + sale.stderr
        assert sale.stdout.startswith("issuer script 72 id 11223344: 841E000004A1B2C3D4, 04DA9F580501A1B2C3D4\n"
                                      "ARPC verified\n")  # fmt: skip


async def test_a_script_scenario_sent_over_mqtt(tmp_path: Path) -> None:
    """add-scenario with scenario.script72 over MQTT: the next chip sale's reply carries tag 91 then the script."""
    card = ChipCard.derive(bytes.fromhex(IMK), pan=CHIP_PAN, pan_sequence="00", scheme="visa-cvn10")
    async with controlled(tmp_path, test_cards=CHIP_CARD) as c, await c.host.connected_client() as client:
        added = ok(await c.commander.send("add-scenario", {"scenario": {"script72": SCRIPT_72}}), "add-scenario")
        sale = client.build("sale", local_now(), pan=CHIP_PAN, amount=2_500)
        chip = chip_request(card, amount_minor=2_500, currency=sale.fields["49"], now=local_now(), atc=1)
        sale.fields.update(chip.fields)
        reply = await client.request(sale)
    assert added["added"]["issuer_scripts"] == {"72": 32}
    (script,) = issuer_scripts(reply)
    commands = (bytes.fromhex("841E000004A1B2C3D4"), bytes.fromhex("04DA9F580501A1B2C3D4"))
    assert script == IssuerScript("72", bytes.fromhex("11223344"), commands)
    issuer_data = issuer_authentication(reply)
    assert issuer_data is not None
    assert verify_arpc(card.icc_key, chip.tags, issuer_data)
