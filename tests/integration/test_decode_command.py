"""`iso-host decode` run as a user runs it: frames written by hand as hex, a trace from a real `iso-host serve --trace`
and a pcap, decoded into named fields with the PAN masked, track data and PIN blocks not shown, and F39 explained."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Final

import dpkt
from hosting import TEST_PAN
from processes import ISO_HOST, serving, terminal

MASKED_PAN: Final = TEST_PAN[:6] + "******" + TEST_PAN[-4:]
PIN_BLOCK: Final = "0123456789ABCDEF"  # not a real PIN block: only its hiding is checked
TRACK_2: Final = f"{TEST_PAN}D2912201"

# fmt: off
# Field 55 (EMV BER-TLV): the PAN (5A), its sequence number, pyemv's published Visa CVN 10 ARQC (as in test_chip.py)
# and the track 2 equivalent (57), 39 bytes.
ICC_DATA: Final = "5A08" + TEST_PAN + "5F3401" "00" "9F2608" "29CCA15AE665FA2E" "570C" + TRACK_2
# A CUP magnetic-stripe sale with PIN, read from the chip as well, written from shared CUP.md (as test_chip.py writes
# its chip sale): the frame body without its length header.
CUP_SALE: Final = (
    "6000030000"  # TPDU: 60, destination NII 0003, source NII 0000
    "613100000000"  # header: IC application 61, software version 31, status 00, sub-version 000000
    "0200"  # MTI, BCD: financial request
    "7020048020C09211"  # bitmap: 2, 3, 4, 11, 22, 25, 35, 41, 42, 49, 52, 55, 60, 64
    "16" + TEST_PAN  # F2 PAN: LLVAR, 1-byte BCD length in digits (16)
    + "000000"  # F3 processing code n6 BCD: sale
    "000000001234"  # F4 amount n12 BCD: 12.34
    "000001"  # F11 STAN
    "0210"  # F22 POS entry mode 021 (magnetic stripe, PIN capable), left-aligned, pad nibble
    "00"  # F25 condition code 00
    "24" + TRACK_2  # F35 track 2: LLVAR, BCD length in digits (24), D the separator
    + "5445524D30303031"  # F41 "TERM0001"
    "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001"
    "313536"  # F49 "156"
    + PIN_BLOCK  # F52 PIN block b8
    + "0039" + ICC_DATA  # F55 LLLVAR b: 2-byte BCD length in bytes (39)
    + "0011" "220000010000"  # F60 LLLVAR n, 11 digits: 60.1 22 (sale), 60.2 batch 000001, 60.3 000, pad
    "0000000000000000"  # F64 MAC b8
)
# An iso87binary decline written from ISO 8583:1987 (ASCII fields, binary bitmap), shaped as test_iso87_kinds.py's
# requests: 0210 with F2, F3, F4, F11, F39 "51" (insufficient funds), F41, F42.
ISO87_DECLINE: Final = (
    b"0210" + bytes.fromhex("7020000002C00000") + b"16" + TEST_PAN.encode() + b"000000" + b"000000001234"
    + b"000001" + b"51" + b"TERM0001" + b"MERCHANT0000001"
).hex().upper()
# fmt: on
BYTES_BEFORE_F4: Final = 5 + 6 + 2 + 8 + 9 + 3  # TPDU, header, MTI, bitmap, F2, F3


def decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISO_HOST, "decode", *args], capture_output=True, text=True, timeout=60, check=False)


def no_card_data(text: str) -> None:
    upper = text.upper()
    for secret in (TEST_PAN, PIN_BLOCK, TRACK_2, TEST_PAN[6:-4] + "D29"):
        assert secret not in upper


def field_line(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.split()[:1] == [label])


def test_a_cup_sale_by_hand_shows_its_fields_masked() -> None:
    """Names, the masked PAN (F2 and F55 5A), track 2 and the PIN block not shown, F55's tags, CUP's 60.1."""
    result = decode("--dialect", "cup", CUP_SALE)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "MTI 0200  sale" in out
    assert "TPDU 6000030000" in out
    assert MASKED_PAN in field_line(out, "F2")
    assert "[not shown: track data]" in field_line(out, "F35")
    assert "[not shown: PIN block]" in field_line(out, "F52")
    assert MASKED_PAN in field_line(out, "55.5A")
    assert field_line(out, "55.9F26").split()[-1] == "29CCA15AE665FA2E"
    assert "Application Cryptogram" in field_line(out, "55.9F26")
    assert "[not shown: track data]" in field_line(out, "55.57")
    assert field_line(out, "60.1").split()[1:] == ["Type", "22"]
    assert field_line(out, "60.2").split()[1:] == ["Batch", "000001"]
    no_card_data(out + result.stderr)


def test_the_length_header_is_found_or_told() -> None:
    """With its binary2 length header the same frame decodes the same; --header on a frame without one fails on it."""
    framed = f"{len(CUP_SALE) // 2:04X}" + CUP_SALE
    found = decode("--dialect", "cup", framed)
    assert found.returncode == 0, found.stderr
    assert "binary2 length header" in found.stdout.splitlines()[0]
    told = decode("--dialect", "cup", "--header", CUP_SALE)
    assert told.returncode == 1
    assert "field length at byte 0" in told.stdout


def test_a_decline_explains_its_response_code_and_json_says_the_same() -> None:
    """F39 51 with its meaning in the text; --json: one object with the fields as rows, the code and its meaning."""
    spaced = " ".join(ISO87_DECLINE[i : i + 8] for i in range(0, len(ISO87_DECLINE), 8))
    text = decode("--dialect", "iso87binary", spaced)
    assert text.returncode == 0, text.stderr
    assert "(Insufficient funds)" in field_line(text.stdout, "F39")
    as_json = decode("--dialect", "iso87binary", "--json", ISO87_DECLINE)
    assert as_json.returncode == 0, as_json.stderr
    (line,) = as_json.stdout.splitlines()
    message = json.loads(line)
    assert (message["mti"], message["kind"], message["response_code"], message["meaning"]) == (
        "0210", "sale", "51", "Insufficient funds",
    )  # fmt: skip
    assert {"id": "2", "name": "Primary Account Number (PAN)", "value": MASKED_PAN, "parts": [], "note": "masked"} in (
        message["fields"]
    )
    assert message["error"] is None
    no_card_data(text.stdout + as_json.stdout)


def test_a_frame_that_does_not_decode_names_the_field_and_the_byte() -> None:
    """A sale cut short inside F4: the field, the byte offset, and the fields that did decode (masked); exit 1."""
    cut = CUP_SALE[: 2 * (BYTES_BEFORE_F4 + 3)]
    result = decode("--dialect", "cup", cut)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"does not decode: field 4 at byte {BYTES_BEFORE_F4}" in result.stdout
    assert MASKED_PAN in field_line(result.stdout, "F2")
    assert field_line(result.stdout, "F3").split()[-1] == "000000"
    as_json = json.loads(decode("--dialect", "cup", "--json", cut).stdout)
    assert as_json["error"]["field"] == "4"
    assert as_json["error"]["offset"] == BYTES_BEFORE_F4
    no_card_data(result.stdout)


def test_bad_arguments_and_unreadable_files_exit_2_with_one_line(tmp_path: Path) -> None:
    cases = (
        (["--dialect", "cup", "60ZZ"], "HEX: not hexadecimal"),
        ([CUP_SALE], "--dialect: required"),
        (["--dialect", "nosuch", CUP_SALE], "nosuch"),
        (["--dialect", "cup", "--trace", str(tmp_path / "missing.jsonl")], "cannot read"),
        (["--dialect", "cup", "--pcap", str(tmp_path / "missing.pcap")], "cannot read"),
        (["--dialect", "cup"], "give a frame as HEX"),
    )
    for args, expected in cases:
        result = decode(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_a_trace_from_a_real_host_decodes_frame_by_frame(tmp_path: Path) -> None:
    """`iso-host serve --trace`, a sale and an echo from `iso-host terminal`: every frame in and out, in order, with
    its connection, direction and time; the PAN masked; the dialect taken from the trace."""
    trace = tmp_path / "day.jsonl"
    with serving(tmp_path, "--trace", str(trace)) as (address, _):
        for args in (["sale", "12.34"], ["echo"]):
            assert terminal(tmp_path, address, *args).returncode == 0
    result = decode("--trace", str(trace))
    assert result.returncode == 0, result.stdout + result.stderr
    headings = [line for line in result.stdout.splitlines() if line.startswith("frame ")]
    assert [heading.split()[2:5] for heading in headings] == [
        ["(conn", "1", "in"], ["(conn", "1", "out"], ["(conn", "2", "in"], ["(conn", "2", "out"],
    ]  # fmt: skip
    assert MASKED_PAN in result.stdout
    assert field_line(result.stdout, "F39").split()[-2:] == ["00", "(Approved)"]
    assert result.stdout.rstrip().endswith("4 frames: 4 decoded, 0 did not decode")
    lines = [json.loads(line) for line in decode("--trace", str(trace), "--json").stdout.splitlines()]
    assert [(line["conn"], line["dir"], line["mti"], line["kind"]) for line in lines] == [
        (1, "in", "0200", "sale"), (1, "out", "0210", "sale"), (2, "in", "0800", "echo"), (2, "out", "0810", "echo"),
    ]  # fmt: skip
    assert all(line["time"].endswith("Z") and line["dialect"] == "iso87binary" for line in lines)
    assert lines[1]["meaning"] == "Approved"
    no_card_data(result.stdout + json.dumps(lines))


def pcap_of(port: int, *frames: tuple[bool, bytes]) -> bytes:
    """A pcap of one TCP connection to ``port``: the handshake, then each frame (True: to the host) in one segment."""
    output = io.BytesIO()
    writer = dpkt.pcap.Writer(output, snaplen=65_535, linktype=1)
    sequence = {True: 1_000, False: 5_000}

    def send(to_host: bool, flags: int, data: bytes = b"") -> None:
        client, host = (bytes([10, 0, 0, 1]), 40_001), (bytes([10, 0, 0, 2]), port)
        (src, sport), (dst, dport) = (client, host) if to_host else (host, client)
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=sequence[to_host], ack=sequence[not to_host], flags=flags,
                           data=data)  # fmt: skip
        ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, data=tcp)
        ethernet = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        writer.writepkt(bytes(ethernet), ts=1_700_000_000.0)
        sequence[to_host] += len(data) + bool(flags & dpkt.tcp.TH_SYN)

    send(True, dpkt.tcp.TH_SYN)
    send(False, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
    for to_host, frame in frames:
        send(to_host, dpkt.tcp.TH_ACK, frame)
    return output.getvalue()


def test_a_pcap_is_reassembled_and_decoded(tmp_path: Path) -> None:
    """The CUP sale and a cut-short frame in a capture: the sale decodes, the second fails on F4; exit 1."""
    sale = bytes.fromhex(CUP_SALE)
    cut = sale[: BYTES_BEFORE_F4 + 3]
    capture = tmp_path / "cup.pcap"
    capture.write_bytes(pcap_of(5_000, *((True, len(body).to_bytes(2, "big") + body) for body in (sale, cut))))
    result = decode("--dialect", "cup", "--pcap", str(capture))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "frame 1 (conn 1 in 2023-11-14T22:13:20.000000Z)" in result.stdout
    assert "MTI 0200  sale" in result.stdout
    assert MASKED_PAN in field_line(result.stdout, "55.5A")
    assert f"does not decode: field 4 at byte {BYTES_BEFORE_F4}" in result.stdout
    assert result.stdout.rstrip().endswith("2 frames: 1 decoded, 1 did not decode")
    no_card_data(result.stdout)
