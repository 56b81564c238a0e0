"""`iso-host replay`: traces recorded from a live host, replayed against fresh hosts over real sockets."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import dpkt
import pytest
from hosting import MID, TEST_PAN, TID, RunningHost, local_now, running_host

from iso_host.cli.replay import add_parser as add_replay_parser
from iso_host.config import DEMO_TMK
from iso_host.core.terminals import TerminalState
from iso_host.terminal.captures import DEFAULT_IGNORE, compare
from iso_host.terminal.client import TerminalClient, pin_block_field
from iso_host.wire import LENGTH_HEADERS, Message, encode_frame

OTHER_TID = "TERM0003"  # configured on the recording host only
HOST_PORT = 8583
LENGTH_BINARY2 = LENGTH_HEADERS["binary2"]


@dataclass
class Recorder:
    """Writes the lines `iso-host serve --trace` writes (iso_host/trace.py), from the terminal's side."""

    dialect: str
    lines: list[dict[str, object]] = field(default_factory=list)

    def add(self, conn: int, direction: str, frame: bytes | None) -> None:
        line: dict[str, object] = {
            "conn": conn, "dir": direction, "mono_ns": time.monotonic_ns(), "wall": "2025-01-01T00:00:00.000000Z",
            "dialect": self.dialect, "peer": f"127.0.0.1:{50000 + conn}",
        }  # fmt: skip
        if direction != "close":
            line["hex"] = frame.hex().upper() if frame is not None else None
            if frame is None:
                line["undecodable"] = True
        self.lines.append(line)

    async def exchange(self, conn: int, client: TerminalClient, message: Message) -> Message:
        """Send a request (MAC'd when the client has keys) and record it with its response."""
        frame = client.frame(message)
        self.add(conn, "in", frame)
        await client.send_raw(frame)
        body = await client.receive_frame(5.0)
        self.add(conn, "out", encode_frame(client.dialect.length_header, body))
        return client.decode_response(body)

    def frames(self) -> dict[int, list[tuple[str, bytes]]]:
        """Per connection, the frames in order with their direction."""
        result: dict[int, list[tuple[str, bytes]]] = {}
        for line in self.lines:
            if line["dir"] != "close" and line["hex"]:
                result.setdefault(int(str(line["conn"])), []).append(
                    (str(line["dir"]), bytes.fromhex(str(line["hex"])))
                )
        return result

    def write(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(line) + "\n" for line in self.lines), encoding="utf-8")
        return path


async def run_replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`iso-host replay ARGV` in a thread (it runs its own event loop); exit code, stdout, stderr."""
    parser = argparse.ArgumentParser(prog="iso-host")
    add_replay_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["replay", *argv])
    code = await asyncio.to_thread(args.handler, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def address(host: RunningHost) -> str:
    return f"{host.address[0]}:{host.address[1]}"


def summary(out: str) -> list[str]:
    """The counts row: sent, matched, differed, no reply, skipped, no expectation."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["sent", "matched"])
    return lines[header + 1].split()


async def record_session(tmp_path: Path, dialect: str = "iso87binary") -> Recorder:
    """Sale, echo and void of one terminal on one connection, recorded from a live host."""
    recorder = Recorder(dialect)
    async with running_host(directory(tmp_path / "recorded"), dialect) as host:
        client = await host.connected_client()
        async with client:
            sale = await recorder.exchange(1, client, client.build("sale", local_now(), amount=1234, pan=TEST_PAN))
            assert sale.fields["39"] == "00"
            echo = await recorder.exchange(1, client, client.build("echo", local_now()))
            assert echo.fields["39"] == "00"
            void = client.build("void", local_now(), amount=1234, pan=TEST_PAN, rrn=sale.fields["37"],
                                original_stan=int(sale.fields["11"]), original_batch=1)  # fmt: skip
            assert (await recorder.exchange(1, client, void)).fields["39"] == "00"
        recorder.add(1, "close", None)
    return recorder


async def record_two_terminals(tmp_path: Path) -> Recorder:
    """A sale of TERM0001 on connection 1, then one of TERM0003 (known to this host only) on connection 2."""
    recorder = Recorder("iso87binary")
    other = TerminalState(tid=OTHER_TID, mid=MID, tmk=bytes.fromhex(DEMO_TMK))
    async with running_host(
        directory(tmp_path / "recorded"), "iso87binary", extra_terminals={OTHER_TID: other}
    ) as host:
        for conn, tid in ((1, TID), (2, OTHER_TID)):
            async with await host.connected_client(tid) as client:
                sale = await recorder.exchange(
                    conn, client, client.build("sale", local_now(), amount=500, pan=TEST_PAN)
                )
                assert sale.fields["39"] == "00"
            recorder.add(conn, "close", None)
    return recorder


def directory(path: Path) -> Path:
    """A directory for one host's ledger: every host in these tests starts with an empty one."""
    path.mkdir(exist_ok=True)
    return path


async def test_a_session_replays_against_a_fresh_host_and_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sale, echo and void from a live host match field by field on a fresh one (RRN, times, MAC ignored)."""
    recorder = await record_session(tmp_path)
    recorder.add(9, "in", None)  # a redacted frame the trace could not keep: skipped and counted
    recorder.add(9, "out", None)
    trace = recorder.write(tmp_path / "trace.jsonl")
    async with running_host(directory(tmp_path / "fresh"), "iso87binary") as host:
        code, out, err = await run_replay(capsys, str(trace), "--to", address(host))
    assert code == 0, out + err
    assert summary(out) == ["3", "3", "0", "0", "1", "0"], out
    assert "2 redacted or undecodable trace lines skipped" in out


async def test_a_host_that_answers_differently_reports_exactly_that_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without TERM0003 the fresh host answers its sale 03: that one field differs, nothing else."""
    trace = (await record_two_terminals(tmp_path)).write(tmp_path / "trace.jsonl")
    junit = tmp_path / "report.xml"
    async with running_host(directory(tmp_path / "fresh"), "iso87binary") as host:
        code, out, _ = await run_replay(capsys, str(trace), "--to", address(host), "--junit", str(junit))
    async with running_host(directory(tmp_path / "another"), "iso87binary") as host:
        ignored, ignored_out, _ = await run_replay(capsys, str(trace), "--to", address(host), "--ignore", "F39")
    assert code == 1, out
    rows = [line.split() for line in out.splitlines() if line.startswith("   2 ")]
    assert len(rows) == 1, out
    assert rows[0][:5] == ["2", "1", "0200", "000001", "F39"], out
    assert rows[0][5:] == ["00", "03"], out
    assert summary(out) == ["2", "1", "1", "0", "0", "0"], out
    assert ignored == 0, ignored_out
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"  # the layout terminal run --junit writes too (terminal/junit.py)
    (suite,) = root
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failures = suite.findall("testcase/failure")
    assert len(failures) == 1
    assert "F39: expected '00', actual '03'" in (failures[0].text or "")
    assert [case.get("name") for case in suite.iter("testcase")] == ["1-1 0200 000001", "2-1 0200 000001"]


def pcap_of(recorder: Recorder, *, pcapng: bool) -> bytes:
    """A capture of the recorded connections: handshake, data both ways (one request segment retransmitted,
    its halves out of order), FIN; the client's sequence numbers wrap past 2**32."""
    output = io.BytesIO()
    writer = (dpkt.pcapng.Writer if pcapng else dpkt.pcap.Writer)(output, snaplen=65_535, linktype=1)
    clock = [1_700_000_000.0]

    def send(conn: int, to_host: bool, seq: int, ack: int, flags: int, data: bytes = b"") -> None:
        client, host = (bytes([10, 0, 0, 1]), 40_000 + conn), (bytes([10, 0, 0, 2]), HOST_PORT)
        (src, sport), (dst, dport) = (client, host) if to_host else (host, client)
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq % 2**32, ack=ack % 2**32, flags=flags, data=data)
        ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, data=tcp)
        ethernet = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        clock[0] += 0.001
        writer.writepkt(bytes(ethernet), ts=clock[0])

    syn, ack, fin = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN
    for conn, frames in recorder.frames().items():
        client_seq, host_seq = 2**32 - 7, 1_000
        send(conn, True, client_seq, 0, syn)
        send(conn, False, host_seq, client_seq + 1, syn | ack)
        client_seq, host_seq = client_seq + 1, host_seq + 1
        send(conn, True, client_seq, host_seq, ack)
        for direction, frame in frames:
            if direction == "in":
                half = len(frame) // 2
                send(conn, True, client_seq + half, host_seq, ack, frame[half:])  # out of order
                send(conn, True, client_seq, host_seq, ack, frame[:half])
                send(conn, True, client_seq, host_seq, ack, frame[:half])  # retransmitted
                client_seq += len(frame)
            else:
                send(conn, False, host_seq, client_seq, ack, frame)
                host_seq += len(frame)
        send(conn, True, client_seq, host_seq, fin | ack)
        send(conn, False, host_seq, client_seq + 1, fin | ack)
    return output.getvalue()


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
async def test_a_capture_replays_like_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pcapng: bool
) -> None:
    """The same two-terminal session as a pcap / pcapng file: the same result as the JSONL trace."""
    recorder = await record_two_terminals(tmp_path)
    capture = tmp_path / ("trace.pcapng" if pcapng else "trace.pcap")
    capture.write_bytes(pcap_of(recorder, pcapng=pcapng))
    async with running_host(directory(tmp_path / "fresh"), "iso87binary") as host:
        port = ["--port-in-capture", str(HOST_PORT)] if pcapng else []  # pcap: the port the first SYN went to
        code, out, _ = await run_replay(capsys, str(capture), "--to", address(host), "--dialect", "iso87binary", *port)
    assert code == 1, out
    assert summary(out) == ["2", "1", "1", "0", "0", "0"], out
    rows = [line.split() for line in out.splitlines() if line.startswith("   2 ")]
    assert rows == [["2", "1", "0200", "000001", "F39", "00", "03"]], out


async def test_hex_lines_must_get_replies_but_have_no_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One request frame per line: every request gets a reply, none is compared."""
    recorder = await record_session(tmp_path)
    lines = ["# sale, echo, void", *(frame.hex() for direction, frame in recorder.frames()[1] if direction == "in")]
    hex_file = tmp_path / "requests.txt"
    hex_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    async with running_host(directory(tmp_path / "fresh"), "iso87binary") as host:
        code, out, err = await run_replay(capsys, str(hex_file), "--to", address(host), "--dialect", "iso87binary")
        missing, _, missing_err = await run_replay(capsys, str(hex_file), "--to", address(host))
    assert code == 0, out + err
    assert summary(out) == ["3", "0", "0", "0", "0", "3"], out
    assert missing == 2
    assert missing_err.startswith("iso-host: --dialect: required")


async def test_a_recorded_close_matches_a_close(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A request the host answered by closing the connection replays as a match when the host closes again."""
    recorder = Recorder("iso87binary")
    recorder.add(1, "in", encode_frame(LENGTH_BINARY2, b"\xff\xff\xff\xff" + bytes(8)))  # no readable MTI
    recorder.add(1, "close", None)
    trace = recorder.write(tmp_path / "trace.jsonl")
    async with running_host(directory(tmp_path / "fresh"), "iso87binary") as host:
        code, out, _ = await run_replay(capsys, str(trace), "--to", address(host), "--timeout", "5")
    assert code == 0, out
    assert summary(out) == ["1", "1", "0", "0", "0", "0"], out


async def record_signon_and_pin_sale(tmp_path: Path, dialect: str) -> Recorder:
    """Sign-on, then a MAC'd sale with a PIN block under the TPK the recording host issued."""
    recorder = Recorder(dialect)
    async with running_host(directory(tmp_path / "recorded"), dialect, cards={TEST_PAN: "1234"}) as host:
        async with await host.connected_client(signon=False) as client:
            signon = client.build("signon", local_now())
            response = await recorder.exchange(1, client, signon)
            keys = client.accept_signon(response, signon, bytes.fromhex(DEMO_TMK))
            sale = client.build("sale", local_now(), amount=2500, pan=TEST_PAN)
            sale.fields["52"] = pin_block_field(keys.tpk, "1234", TEST_PAN, 0)
            assert (await recorder.exchange(1, client, sale)).fields["39"] == "00"
        recorder.add(1, "close", None)
    return recorder


@pytest.mark.parametrize(("dialect", "mac_failed"), [("cup", "A0"), ("iso87binary", "63")])
async def test_keys_re_mac_and_re_encrypt_the_pin_for_a_host_with_other_working_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dialect: str, mac_failed: str
) -> None:
    """With --keys the sale is MAC'd and its PIN block re-encrypted under the fresh host's keys: all match.
    Without, the fresh host refuses the recorded MAC (cup A0, iso87 63)."""
    trace = (await record_signon_and_pin_sale(tmp_path, dialect)).write(tmp_path / "trace.jsonl")
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[terminals]]\ntid = "{TID}"\nmid = "{MID}"\ntmk = "{DEMO_TMK}"\n', encoding="utf-8")
    async with running_host(directory(tmp_path / "fresh"), dialect, cards={TEST_PAN: "1234"}) as host:
        code, out, err = await run_replay(capsys, str(trace), "--to", address(host), "--keys", str(keys))
    async with running_host(directory(tmp_path / "another"), dialect, cards={TEST_PAN: "1234"}) as host:
        plain, plain_out, _ = await run_replay(capsys, str(trace), "--to", address(host))
    assert code == 0, out + err
    assert summary(out) == ["2", "2", "0", "0", "0", "0"], out
    assert plain == 1, plain_out
    rows = [line.split() for line in plain_out.splitlines() if line.startswith("   1    2 ")]
    assert ["1", "2", "0200", "000002", "F39", "00", mac_failed] in rows, plain_out
    assert TEST_PAN not in plain_out


async def test_a_host_that_does_not_answer_gets_no_reply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reply that does not come within --timeout is "no reply" (exit 1); the rest of that connection is not sent."""
    recorder = await record_session(tmp_path)
    trace = recorder.write(tmp_path / "trace.jsonl")
    connections: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code, out, _ = await run_replay(capsys, str(trace), "--to", f"127.0.0.1:{port}", "--timeout", "0.2")
    finally:
        for writer in connections:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
    assert code == 1, out
    assert summary(out) == ["1", "0", "0", "1", "2", "0"], out
    assert "no reply within 0.2 s" in out


async def test_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable trace, a bad keys file or a host that cannot be reached: exit 2 and one line on stderr."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\xff\xfe binary")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"conn": 1, "dir": "sideways", "hex": "00"}\n', encoding="utf-8")
    good = Recorder("iso87binary")
    good.add(1, "in", encode_frame(LENGTH_BINARY2, b"0800"))
    good.write(tmp_path / "good.jsonl")
    bad_keys = tmp_path / "keys.toml"
    bad_keys.write_text(f'[[terminals]]\ntid = "{TID}"\nmid = "{MID}"\ntmk = "{DEMO_TMK[:-1]}"\n', encoding="utf-8")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    cases = [
        ([str(garbage), "--to", "127.0.0.1:1"], "not UTF-8"),
        ([str(tmp_path / "missing.jsonl"), "--to", "127.0.0.1:1"], "cannot read the trace"),
        ([str(broken), "--to", "127.0.0.1:1"], "line 1: dir must be"),
        ([str(tmp_path / "good.jsonl"), "--to", "127.0.0.1:1", "--keys", str(bad_keys)], "tmk must be"),
        ([str(tmp_path / "good.jsonl"), "--to", f"127.0.0.1:{closed_port}"], "cannot connect"),
        ([str(tmp_path / "good.jsonl"), "--to", "nowhere"], "--to: expected HOST:PORT"),
    ]
    for argv, expected in cases:
        code, out, err = await run_replay(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert len(err.splitlines()) == 1, err
        assert err.startswith("iso-host: ")
        assert expected in err, err
        assert DEMO_TMK not in err


def test_differences_never_show_card_data_in_clear() -> None:
    """F2 is masked 6/4; track 2 and the PIN block are hidden; volatile fields are not compared."""
    expected = Message("0210", {"2": TEST_PAN, "35": f"{TEST_PAN}=2512", "52": "00" * 8, "37": "1", "39": "00"})
    actual = Message("0210", {"2": "4761739001010028", "35": "x", "52": "11" * 8, "37": "2", "39": "05"})
    shown = {d.field: (d.expected, d.actual) for d in compare(expected, actual, DEFAULT_IGNORE)}
    assert shown == {
        "2": ("476173******0010", "476173******0028"),
        "35": ("[not shown]", "[not shown]"),
        "52": ("[not shown]", "[not shown]"),
        "39": ("00", "05"),
    }
