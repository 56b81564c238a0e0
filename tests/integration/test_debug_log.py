"""`iso-host serve --log-level debug` logs each answered request field by field (masked), beside the console."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Final

from hosting import TEST_PAN
from processes import ISO_HOST
from waiting import until_blocking

MASKED_PAN: Final = TEST_PAN[:6] + "******" + TEST_PAN[-4:]
# fmt: off
# An iso87binary sale written from ISO 8583:1987 (ASCII fields, binary bitmap), as `iso-host terminal sale 12.34`
# sends it to the default host: F2, F3 000000, F4 12.34, F7, F11, F12, F13, F22 012, F25 00, F41, F42, F49 840.
SALE: Final = (
    b"0200" + bytes.fromhex("7238048000C08000") + b"16" + TEST_PAN.encode() + b"000000" + b"000000001234"
    + b"0101120000" + b"000001" + b"120000" + b"0101" + b"012" + b"00" + b"TERM0001" + b"MERCHANT0000001" + b"840"
)
# fmt: on


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The whole lines written so far (the host may be writing the last one as the file is read)."""
    text = path.read_text(encoding="utf-8")
    whole = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.startswith("{")]


def event_starting(path: Path, prefix: str) -> dict[str, Any] | None:
    return next((line for line in log_lines(path) if str(line.get("event", "")).startswith(prefix)), None)


def announced(path: Path, prefix: str) -> str:
    """What follows ``prefix`` in the host's ``listening on ADDRESS`` or ``console on URL`` line."""
    line = event_starting(path, prefix)
    assert line is not None, prefix
    return str(line["event"]).removeprefix(prefix)


def exchange(address: str, body: bytes) -> bytes:
    """One request behind its 2-byte length header; the reply's body."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(len(body).to_bytes(2, "big") + body)
        reply = b""
        while len(reply) < 2 or len(reply) < 2 + int.from_bytes(reply[:2], "big"):
            chunk = connection.recv(65_536)
            assert chunk, "the host closed the connection without a reply"
            reply += chunk
    return reply[2:]


def test_debug_level_logs_each_request_and_response_decoded_and_masked(tmp_path: Path) -> None:
    output = tmp_path / "host.log"
    with output.open("w", encoding="utf-8") as stream:
        process = subprocess.Popen(
            [*ISO_HOST, "serve", "--port", "0", "--log-format", "json", "--log-level", "debug",
             "--http", "127.0.0.1:0"],
            cwd=tmp_path, stdout=stream, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            until_blocking(lambda: event_starting(output, "console on ") is not None, what="the host and its console")
            reply = exchange(announced(output, "listening on "), SALE)
            assert reply[:4] == b"0210"
            until_blocking(lambda: event_starting(output, "request_fields") is not None, what="a request_fields line")
            console = announced(output, "console on ").rstrip("/")
            with urllib.request.urlopen(f"{console}/api/transactions", timeout=10) as response:
                seen = json.load(response)["transactions"]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
    line = event_starting(output, "request_fields")
    assert line is not None
    assert line["level"] == "debug"
    assert (line["mti"], line["response_mti"], line["kind"], line["reason"]) == ("0200", "0210", "sale", "APPROVED")
    assert (line["response_code"], line["meaning"]) == ("00", "Approved")
    assert (line["tid"], line["stan"]) == ("TERM0001", "000001")
    request = {row["id"]: row for row in line["request"]}
    response = {row["id"]: row for row in line["response"]}
    assert request["2"] == {"id": "2", "name": "Primary Account Number (PAN)", "value": MASKED_PAN, "parts": [],
                            "note": "masked"}  # fmt: skip
    assert request["4"]["value"] == "000000001234"
    assert response["2"]["value"] == MASKED_PAN
    assert response["39"]["value"] == "00"
    assert len(seen) == 1, "the console's monitor got the exchange too"
    text = output.read_text(encoding="utf-8")
    assert TEST_PAN not in text
    assert TEST_PAN.encode().hex().upper() not in text.upper()
    assert process.returncode == 0, text[-2000:]
