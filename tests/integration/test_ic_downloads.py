"""A CUP EMV terminal's first minutes after sign-on: status upload, IC public keys and IC parameters downloaded
one by one, the end of each download, a script result notification. Frames written by hand from CUP.md."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hosting import exchange_bodies, running_host

from iso_host.security import TlvItem, build_tlv, parse_tlv, tag_values
from iso_host.wire import Message, decode, load_dialect

CUP = load_dialect("cup")
ENVELOPE = "6000030000" "603100000000"  # TPDU 60 0003 0000, header (CUP.md "Frame")
TERMINAL = "5445524D30303031" "4D45524348414E5430303030303031"  # F41 TERM0001, F42 MERCHANT0000001


def network(mti: str, code: str, f62: bytes | None = None, stan: str = "000001") -> bytes:
    """A CUP network-management request by hand: F11, F41, F42, F60 (60.1 00, batch 000001, 60.3 = code), F62."""
    bitmap = "0020000000C00014" if f62 is not None else "0020000000C00010"  # 11, 41, 42, 60 (, 62)
    body = ENVELOPE + mti + bitmap + stan + TERMINAL + "0011" + f"00000001{code}0"
    if f62 is not None:
        body += f"{len(f62):04d}" + f62.hex()  # F62 LLLVAR b: 2-byte BCD length in bytes
    return bytes.fromhex(body)


async def ask(address: tuple[str, int], *bodies: bytes) -> list[Message]:
    return [decode(reply, CUP)[1] for reply in await exchange_bodies(address, *bodies)]


def listed(answer: Message) -> tuple[bytes, list[dict[str, bytes]]]:
    """The flag and the records of a status answer (identity TLVs one after another)."""
    data = bytes.fromhex(answer.fields["62"])
    items = parse_tlv(data[1:])
    records: list[dict[str, bytes]] = []
    for item in items:
        if item.tag == "9F06":
            records.append({})
        records[-1][item.tag] = item.value
    return data[:1], records


async def test_ic_public_keys_are_downloaded_and_verify(tmp_path: Path) -> None:
    async with running_host(tmp_path, "cup") as host:
        (status,) = await ask(host.address, network("0820", "372"))
        flag, keys = listed(status)
        requests = [network("0800", "370", build_tlv([TlvItem("9F06", k["9F06"]), TlvItem("9F22", k["9F22"])]),
                            stan=f"{i + 2:06d}") for i, k in enumerate(keys)]  # fmt: skip
        *downloads, end = await ask(host.address, *requests, network("0800", "371", stan="000099"))
        rows = host.ledger_rows()
    assert (status.mti, status.fields["39"], flag) == ("0830", "00", b"1")
    assert [(k["9F06"].hex().upper(), k["9F22"].hex().upper()) for k in keys] == [
        ("A000000333", index) for index in ("03", "04", "08", "09", "0A", "0B")
    ]
    for answer in downloads:
        data = bytes.fromhex(answer.fields["62"])
        assert (answer.fields["39"], data[:1]) == ("00", b"1")
        key = tag_values(parse_tlv(data[1:]))
        digest = hashlib.sha1(key["9F06"] + key["9F22"] + key["DF02"] + key["DF04"]).digest()
        assert digest == key["DF03"], "the terminal checks every key it stores"
    assert (end.mti, end.fields["39"]) == ("0810", "00")
    assert rows == [], "downloads are not transactions"


async def test_ic_parameters_status_download_and_an_unknown_aid(tmp_path: Path) -> None:
    unknown = build_tlv([TlvItem("9F06", bytes.fromhex("A000000999010101"))])
    known = build_tlv([TlvItem("9F06", bytes.fromhex("A000000333010102"))])
    async with running_host(tmp_path, "cup") as host:
        status, credit, missing, end = await ask(
            host.address, network("0820", "382"), network("0800", "380", known, stan="000002"),
            network("0800", "380", unknown, stan="000003"), network("0800", "381", stan="000004"),
        )  # fmt: skip
    assert [r["9F06"].hex().upper() for r in listed(status)[1]] == [
        "A000000333010101", "A000000333010102", "A000000333010103", "A000000333010106"
    ]
    parameters = tag_values(parse_tlv(bytes.fromhex(credit.fields["62"])[1:]))
    assert (parameters["9F06"].hex().upper(), parameters["DF14"].hex().upper()) == ("A000000333010102", "9F3704")
    assert (missing.fields["39"], missing.fields["62"]) == ("00", "30"), "flag 0: no such AID"
    assert end.fields["39"] == "00"


async def test_status_upload_notification_and_a_bad_tlv(tmp_path: Path) -> None:
    notification = bytes.fromhex(
        ENVELOPE + "0620" "0020000000C00010" "000007" + TERMINAL + "0011" "000000019510"
    )  # 0620 60.3=951 (CUP.md "A terminal's day")
    async with running_host(tmp_path, "cup") as host:
        uploaded, notified, broken = await ask(
            host.address, network("0820", "362"), notification, network("0800", "370", bytes.fromhex("9F0605A0"))
        )
    assert (uploaded.mti, uploaded.fields["39"]) == ("0830", "00")
    assert (notified.mti, notified.fields["39"]) == ("0630", "00")
    assert broken.fields["39"] == CUP.response_code("FORMAT_ERROR"), "a TLV that runs past its field is a 30"
