"""`iso-host terminal` as a newcomer runs it (issue 17): separate processes against a real `iso-host serve`, each
command's output and exit code checked. Every state file lands under the test's own HOME or tmp_path."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from pathlib import Path

import pytest
from processes import ISO_HOST, serving, terminal
from tls_material import make_tls_files

TEST_PAN = "4761739001010010"
MASKED_PAN = "476173******0010"
BDK = "0123456789ABCDEFFEDCBA9876543210"
NOWHERE = "127.0.0.1:1"  # nothing listens: arguments are checked before any connection


def home_terminal(home: Path, address: str, *args: str, env: dict[str, str] | None = None,
                  stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`iso-host terminal --to ADDRESS ARGS` with HOME=home: the default (keyed) state file."""
    return subprocess.run(
        [*ISO_HOST, "terminal", "--to", address, *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
        timeout=60, check=False, env={**os.environ, "HOME": str(home), **(env or {})},
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit 2 and one line on stderr, no traceback; that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def ledger_rows(cwd: Path) -> list[dict[str, object]]:
    listing = subprocess.run([*ISO_HOST, "ledger", "list", "--json", "--ledger", f"sqlite:///{cwd / 'iso-host.db'}"],
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return [json.loads(line) for line in listing.stdout.splitlines()]


def host_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "host.toml"
    path.write_text('[[terminals]]\ntid = "TERM0001"\nmid = "MERCHANT0000001"\n'
                    'tmk = "0123456789ABCDEFFEDCBA9876543210"\n\n' + text)  # fmt: skip
    return str(path)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["--tid", "TERMINAL01", "echo"], ["--tid", "exactly 8"], id="tid"),
        pytest.param(["--mid", "M1", "echo"], ["--mid", "exactly 15"], id="mid"),
        pytest.param(["sale", "1.00", "--pan", "4" * 23], ["--pan", "12 to 19 digits"], id="pan-23-digits"),
        pytest.param(["sale", "1.00", "--expiry", "13/29"], ["--expiry", "YYMM"], id="expiry"),
        pytest.param(["sale", "1.00", "--tak", "0011"], ["--tak", "32 hex digits"], id="tak"),
        pytest.param(["sale", "1.00", "--bdk", "00"], ["--bdk", "32 hex digits"], id="bdk"),
        pytest.param(["sale", "1.00", "--mac", "md5"], ["--mac", "x9.19"], id="mac"),
        pytest.param(["sale", "0.00"], ["AMOUNT", "amount must be > 0"], id="zero"),
        pytest.param(["sale", "1e3"], ["AMOUNT", "at most two decimals"], id="exponent"),
        pytest.param(["sale", "-5"], ["AMOUNT", "at most two decimals"], id="negative"),
        pytest.param(["sale", "12.345"], ["AMOUNT", "at most two decimals"], id="three-decimals"),
        pytest.param(["refund", "5.00", "--stan", "x1"], ["--stan", "1 to 6 digits"], id="stan"),
        pytest.param(["--timeout", "0", "echo"], ["--timeout", "more than 0"], id="timeout"),
        pytest.param(["--to", "nowhere", "echo"], ["--to", "HOST:PORT"], id="to"),
        pytest.param(["--tls-key", "k.pem", "echo"], ["--tls-key", "only with --tls"], id="tls-key-alone"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_2(tmp_path: Path, args: list[str], words: list[str]) -> None:
    """Each bad value: exit 2 and one line naming the option and its rule; nothing sent, no traceback, no PAN."""
    line = one_line(terminal(tmp_path, NOWHERE, *args))
    for word in words:
        assert word in line, line
    assert "4" * 23 not in line


@pytest.mark.parametrize(
    ("document", "words"),
    [
        pytest.param({"stan": "x"}, ["'stan' must be a whole number"], id="stan-text"),
        pytest.param({"batch": 0}, ["'batch' must be a whole number from 1"], id="batch-zero"),
        pytest.param({"items": [{"kind": "sale"}]}, ["items[0]: no 'stan'"], id="item"),
        pytest.param([1, 2], ["not a JSON object"], id="not-an-object"),
    ],
)
def test_a_bad_state_file_is_one_line(tmp_path: Path, document: object, words: list[str]) -> None:
    (tmp_path / "terminal.json").write_text(json.dumps(document))
    line = one_line(terminal(tmp_path, NOWHERE, "echo"))
    assert "terminal state file (--state)" in line
    assert "iso-host terminal reset" in line
    for word in words:
        assert word in line, line


def test_state_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    result = subprocess.run([*ISO_HOST, "terminal", "--to", NOWHERE, "--state", str(tmp_path / "plain" / "t.json"),
                             "echo"], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    line = one_line(result)
    assert "--state" in line
    assert "is a file, not a directory" in line


def test_readme_business_day_in_order(tmp_path: Path) -> None:
    """README's "Try a sale" and its business day, pasted in order: the void and the refund name the sales they mean
    (and say so), the terminal's state file is keyed by host, port and dialect, and the day settles in balance."""
    home = tmp_path / "home"
    with serving(tmp_path) as (address, _):
        def run(*args: str) -> str:
            result = home_terminal(home, address, *args)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            return result.stdout

        assert "F39 00: Approved" in run("sale", "12.34")
        run("echo")
        run("balance")
        host, port = address.rsplit(":", 1)
        state_file = home / ".iso-host" / f"terminal-TERM0001-iso87binary-{host}_{port}.json"
        status = run("status")
        assert f"state file   {state_file}" in status
        assert "next STAN    000004" in status
        assert re.search(rf"sale +STAN 000001 +RRN \d{{12}} +12\.34 +{re.escape(MASKED_PAN)} +approved", status)
        run("sale", "10.00")
        run("sale", "20.00")
        void = run("void", "--last")
        assert re.search(r"void names sale STAN 000005 RRN \d{12}, 20\.00, card 476173\*{6}0010", void), void
        refund = run("refund", "5.00", "--last")
        assert re.search(r"refund names sale STAN 000004 RRN \d{12}, 10\.00, card 476173\*{6}0010", refund), refund
        named = run("refund", "1.00", "--stan", "000001")  # README's old STAN: it says it is the 12.34 sale
        assert "refund names sale STAN 000001" in named
        assert ", 12.34, " in named
        settled = run("settle", "--receipt")
        assert "batch settled; batch 2 is open" in settled
        assert "uploading" not in settled
        assert re.search(r"DEBITS +3 +USD 42\.34\nCREDITS +3 +USD 26\.00\nNET +USD 16\.34", settled), settled
        assert state_file.is_file()
        assert TEST_PAN not in state_file.read_text()
        assert "removed " + str(state_file) in run("reset")
        assert not state_file.exists()
        assert "nothing to remove" in run("reset")
    rows = ledger_rows(tmp_path)
    assert [(row["kind"], row["amount_minor"], row["status"]) for row in rows if row["kind"] != "balance"] == [
        ("sale", 1234, "PARTIALLY_REFUNDED"), ("sale", 1000, "PARTIALLY_REFUNDED"), ("sale", 2000, "VOIDED"),
        ("void", 2000, "APPROVED"), ("refund", 500, "APPROVED"), ("refund", 100, "APPROVED"),
    ]  # fmt: skip


def test_readme_cup_walkthrough_in_order(tmp_path: Path) -> None:
    """README's CUP commands, in order, on a CUP host: sign-on, MACs, PINs, the pre-auth family and the offline
    adjust and tip, each original named by --last."""
    home = tmp_path / "home"
    steps: list[tuple[tuple[str, ...], int, str]] = [
        (("sale", "12.34"), 1, "hint: this terminal has no working keys: sign on first"),
        (("signon",), 0, "check values match"), (("sale", "12.34"), 0, "response MAC verified"),
        (("sale", "12.34", "--pin", "1234"), 0, "F39 00: Approved"), (("signoff",), 0, "F39 00"),
        (("parameter-download",), 0, "F39 00"), (("signon",), 0, "check values match"),
        (("preauth", "100.00"), 0, "F39 00"), (("complete", "112.00", "--last"), 0, "complete names preauth STAN"),
        (("complete-void", "--last"), 0, "complete-void names completion STAN"),
        (("preauth-void", "--last"), 0, "preauth-void names preauth STAN"),
        (("reverse", "--last"), 0, "reverse names preauth_void STAN"), (("settle",), 0, "batch settled; batch 2"),
        (("send", "offline_sale", "--amount", "80.00"), 0, "F39 00"),
        (("adjust", "85.00", "--last"), 0, ", 80.00, card"), (("tip", "12.00", "--last"), 0, ", 85.00, card"),
        (("settle",), 0, "batch settled; batch 3"),
    ]  # fmt: skip
    with serving(tmp_path, "--dialect", "cup", "--ledger", f"sqlite:///{tmp_path / 'cup.db'}") as (address, _):
        for args, code, words in steps:
            result = home_terminal(home, address, "--dialect", "cup", *args)
            assert result.returncode == code, (args, result.stdout, result.stderr)
            assert words in result.stdout, (args, result.stdout)


def test_state_is_kept_per_dialect_and_old_files_are_not_shared(tmp_path: Path) -> None:
    """A CUP terminal and an iso87 terminal of one TID against two hosts keep two files; the older shared
    terminal-TID.json is not read, and one note says so."""
    home = tmp_path / "home"
    legacy = home / ".iso-host" / "terminal-TERM0001.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"stan": 41, "batch": 7}))
    cup_dir = tmp_path / "cup"
    cup_dir.mkdir()
    with serving(tmp_path) as (iso87, _), serving(cup_dir, "--dialect", "cup") as (cup, _):
        first = home_terminal(home, iso87, "echo")
        assert first.returncode == 0, first.stderr
        assert "is not used" in first.stderr
        assert f"--state {legacy}" in first.stderr
        assert "F11   System Trace Audit Number        000001" in first.stdout  # not the old file's 42
        assert home_terminal(home, iso87, "echo").stderr == ""  # said once
        signon = home_terminal(home, cup, "--dialect", "cup", "signon")
        assert signon.returncode == 0, signon.stderr
        assert "[key block, KCV TPK " in signon.stdout  # CUP F62: check values, never the block
        files = sorted(path.name for path in (home / ".iso-host").glob("terminal-TERM0001-*.json"))
        assert [name.split("-")[2] for name in files] == ["cup", "iso87binary"]
        cup_status = home_terminal(home, cup, "--dialect", "cup", "status").stdout
        assert re.search(r"signed on    yes, TPK KCV [0-9A-F]{6}, TAK KCV [0-9A-F]{6}", cup_status), cup_status
    assert json.loads(legacy.read_text())["stan"] == 41


def test_the_response_is_explained(tmp_path: Path) -> None:
    """F39 with its meaning, sub-fields under F60, the sign-on key block as check values, whole field names."""
    with serving(tmp_path, "--dialect", "cup") as (address, _):
        declined = terminal(tmp_path, address, "--dialect", "cup", "sale", "12.34")
        assert declined.returncode == 1
        assert "F39 58: Terminal disabled or not signed on" in declined.stdout
        assert "hint: this terminal has no working keys: sign on first (iso-host terminal signon)" in declined.stdout
        signon = terminal(tmp_path, address, "--dialect", "cup", "signon")
        assert "[key block, KCV TPK" in signon.stdout
        assert "[not shown]" not in signon.stdout
        sale = terminal(tmp_path, address, "--dialect", "cup", "sale", "12.34")
        assert sale.returncode == 0, sale.stderr
        assert re.search(r"^  60\.1 +Type +22$", sale.stdout, re.MULTILINE), sale.stdout
        assert re.search(r"^  60\.2 +Batch +000001$", sale.stdout, re.MULTILINE)
        assert "60.3 network management code, then 60.4-60.7 as the terminal sends them" in sale.stdout  # not cut
        assert "F39 00: Approved" in sale.stdout
        assert "response MAC verified" in sale.stdout
        unknown = terminal(tmp_path, address, "--dialect", "cup", "--tid", "UNKNOWN1", "sale", "1.00")
        assert unknown.returncode == 1
        assert re.search(r"^F39 97: Unknown terminal", unknown.stdout, re.MULTILINE), unknown.stdout


def test_colour_on_a_terminal_only(tmp_path: Path) -> None:
    """Green F39 on a TTY, none with NO_COLOR, none into a pipe."""
    with serving(tmp_path) as (address, _):
        outputs = {}
        for name, env in (("tty", {"NO_COLOR": "", "TERM": "xterm"}), ("no-color", {"NO_COLOR": "1"})):
            main, secondary = pty.openpty()
            try:
                result = home_terminal(tmp_path / "home", address, "echo", env=env, stdout=secondary)
                os.close(secondary)
                chunks = []
                while True:
                    try:
                        chunk = os.read(main, 65_536)
                    except OSError:  # EIO: the pty's other side is closed and drained
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(main)
            assert result.returncode == 0, result.stderr
            outputs[name] = b"".join(chunks).decode()
        piped = home_terminal(tmp_path / "home", address, "echo", env={"NO_COLOR": ""})
    assert "\033[32mF39 00: Approved\033[0m" in outputs["tty"]
    assert "\033[" not in outputs["no-color"]
    assert "F39 00: Approved" in outputs["no-color"]
    assert "\033[" not in piped.stdout


def test_tls_against_a_plaintext_port_says_so(tmp_path: Path) -> None:
    """A --tls terminal against a plaintext host fails within seconds with the likely cause; an iso87 terminal
    against a CUP host hears that the host may speak another dialect."""
    files = make_tls_files(tmp_path)
    with serving(tmp_path, "--dialect", "cup") as (address, _):
        started = time.monotonic()
        plain = terminal(tmp_path, address, "--tls", "--tls-ca", str(files.ca), "echo")
        took = time.monotonic() - started
        line = one_line(plain)
        assert "TLS handshake failed" in line, line
        assert "is the port plaintext?" in line, line
        assert took < 15, took
        other = one_line(terminal(tmp_path, address, "--dialect", "iso87binary", "--state",
                                  str(tmp_path / "iso87.json"), "sale", "1.00"))  # fmt: skip
        assert "unreadable response" in other, other
        assert "the host answered in another dialect?" in other, other
    no_key = one_line(terminal(tmp_path, NOWHERE, "--tls", "--tls-cert", str(files.client_cert), "echo"))
    assert "--tls-cert" in no_key
    assert "--tls-key" in no_key
    assert "PEM lib" not in no_key


@pytest.mark.parametrize("dialect", ["iso87binary", "cup"])
def test_an_unanswered_sale_is_reversed_at_once(tmp_path: Path, dialect: str) -> None:
    """no_reply on the sale: after --timeout the terminal reverses it (0400) and says so; exit 2; the ledger's sale is
    REVERSED and nothing stays pending."""
    config = host_config(tmp_path, '[[scenarios]]\nkind = "sale"\namount_cents = 98\nno_reply = true\n')
    with serving(tmp_path, "--config", config, "--dialect", dialect) as (address, _):
        if dialect == "cup":
            assert terminal(tmp_path, address, "--dialect", dialect, "signon").returncode == 0
        result = terminal(tmp_path, address, "--dialect", dialect, "--timeout", "1", "sale", "12.98")
        line = one_line(result)
        expected = r"iso-host: sale STAN \d{6} \(12\.98\): no response within 1 s \(--timeout\); reversed"
        assert re.fullmatch(expected, line), line
        assert "reversing the sale STAN" in result.stdout
        assert re.search(r"reversal of sale STAN \d{6} \(12\.98\): sent \(0400\), host answered 00", result.stdout)
        status = terminal(tmp_path, address, "--dialect", dialect, "status")
        assert "pending reversals: none" in status.stdout
    rows = [(row["kind"], row["status"]) for row in ledger_rows(tmp_path)]
    assert ("sale", "REVERSED") in rows
    assert ("reversal", "APPROVED") in rows


def test_a_reversal_left_unanswered_is_sent_again_at_the_next_command(tmp_path: Path) -> None:
    """The host is silent to the sale and to its first reversal: the reversal stays pending (status shows it) and
    goes out before the next command's request; --no-auto-reversal sends none."""
    config = host_config(tmp_path, "[[scenarios]]\namount_cents = 97\nno_reply = true\ntimes = 2\n")
    with serving(tmp_path, "--config", config) as (address, _):
        first = one_line(terminal(tmp_path, address, "--timeout", "1", "sale", "12.97"))
        assert "got no answer either" in first, first
        assert "sent again at the next command" in first, first
        pending = terminal(tmp_path, address, "status").stdout
        assert "pending reversals (1: sent before the next request)" in pending
        assert re.search(rf"sale +STAN 000001 +12\.97 +{re.escape(MASKED_PAN)} +pending", pending), pending
        echo = terminal(tmp_path, address, "echo")
        assert echo.returncode == 0, echo.stderr
        assert "reversal of sale STAN 000001 (12.97): sent (0400), host answered 00" in echo.stdout
        assert "pending reversals: none" in terminal(tmp_path, address, "status").stdout
    second = tmp_path / "second"
    second.mkdir()
    config = host_config(second, '[[scenarios]]\namount_cents = 96\nno_reply = true\n')
    with serving(second, "--config", config) as (address, _):
        off = one_line(terminal(tmp_path, address, "--timeout", "1", "--no-auto-reversal", "sale", "12.96"))
        assert "may have been approved; not reversed (--no-auto-reversal)" in off, off
        assert "pending reversals: none" in terminal(tmp_path, address, "status").stdout


def test_json_output(tmp_path: Path) -> None:
    """--json: one object on stdout, fields masked, the same exit codes."""
    with serving(tmp_path) as (address, _):
        sale = terminal(tmp_path, address, "--json", "sale", "12.34")
        declined = terminal(tmp_path, address, "--json", "--tid", "UNKNOWN1", "sale", "1.00")
        void = terminal(tmp_path, address, "--json", "void", "--last")
        status = terminal(tmp_path, address, "--json", "status")
        session = tmp_path / "echo.toml"
        session.write_text('[[steps]]\naction = "echo"\nexpect = { "39" = "00" }\n')
        script = terminal(tmp_path, address, "--json", "run", str(session))
    assert sale.returncode == 0, sale.stderr
    document = json.loads(sale.stdout)
    assert document["approved"] is True
    assert document["code"] == "00"
    assert document["meaning"] == "Approved"
    assert document["request"]["mti"] == "0200"
    assert document["request"]["fields"]["2"] == MASKED_PAN
    assert document["response"]["fields"]["39"] == "00"
    assert re.fullmatch(r"\d{12}", document["rrn"])
    assert document["state_file"] == str(tmp_path / "terminal.json")
    assert TEST_PAN not in sale.stdout
    assert declined.returncode == 1
    assert json.loads(declined.stdout)["approved"] is False
    assert json.loads(void.stdout)["named"].startswith("void names sale STAN 000001")
    assert json.loads(status.stdout)["transactions"][0]["status"] == "voided"
    assert script.returncode == 0, script.stderr
    ran = json.loads(script.stdout)
    assert ran["passed"] is True
    assert len(ran["steps"]) == 2  # the session's line, then the step's


def test_receipts(tmp_path: Path) -> None:
    """--receipt after a sale, a void, a refund and a settlement: the slip, 40 columns, the card masked."""
    with serving(tmp_path) as (address, _):
        slips = {}
        for args in (["sale", "12.34"], ["sale", "20.00"], ["void", "--last"], ["refund", "2.00", "--stan", "000001"],
                     ["settle"]):  # fmt: skip
            result = terminal(tmp_path, address, *args, "--receipt", "--merchant-name", "Test Shop")
            assert result.returncode == 0, result.stderr
            slips[args[0]] = result.stdout.split("\n\n", 1)[1]  # a blank line, then the slip
    for slip in slips.values():
        assert all(len(line) <= 40 for line in slip.splitlines()), slip
        assert "MERCHANT0000001" in slip
        assert "TERM0001" in slip
        assert "APPROVED" in slip
        assert TEST_PAN not in slip
    assert re.search(r"CARD +476173\*{6}0010", slips["sale"])
    assert "USD 20.00" in slips["sale"]
    assert re.search(r"RRN +\d{12}", slips["sale"])
    assert re.search(r"APPR CODE +\w{6}", slips["sale"])
    assert re.search(r"VOID OF +STAN 000002", slips["void"])
    assert re.search(r"AMOUNT +USD 20\.00", slips["void"])
    assert re.search(r"REFUND OF +STAN 000001", slips["refund"])
    assert "-USD 2.00" in slips["refund"]
    assert "SETTLEMENT" in slips["settle"]
    assert re.search(r"DEBITS +2 +USD 32\.34", slips["settle"])
    assert re.search(r"CREDITS +2 +USD 22\.00", slips["settle"])


def test_help_gives_every_default_and_the_exit_codes(tmp_path: Path) -> None:
    result = subprocess.run([*ISO_HOST, "terminal", "--help"], capture_output=True, text=True, timeout=60, check=True)
    text = " ".join(result.stdout.split())
    for expected in ("(default 127.0.0.1:8583)", "(default iso87binary;", "(default TERM0001,",
                     "(default MERCHANT0000001)", "(default 30)", "(default: the demo terminal's)",
                     "--no-auto-reversal", "exit codes: 0 approved (F39 00) 1 declined", "2 error"):  # fmt: skip
        assert expected in text, expected
    sale = subprocess.run([*ISO_HOST, "terminal", "sale", "--help"], capture_output=True, text=True, timeout=60,
                          check=True)  # fmt: skip
    assert "--receipt" in sale.stdout
    assert "exit codes:" in sale.stdout


def test_a_dukpt_sale_says_its_response_mac_verified(tmp_path: Path) -> None:
    config = host_config(tmp_path, f'[[terminals]]\ntid = "DUKPT001"\nmid = "MERCHANT0000001"\nbdk = "{BDK}"\n')
    with serving(tmp_path, "--config", config) as (address, _):
        sale = terminal(tmp_path, address, "--tid", "DUKPT001", "sale", "12.34", "--bdk", BDK)
    assert sale.returncode == 0, sale.stdout + sale.stderr
    assert "response MAC verified" in sale.stdout


def test_a_reader_that_left_early_does_not_change_the_exit_code(tmp_path: Path) -> None:
    """`iso-host terminal settle | head -1`: standard output's reader is gone; the command still does its work and
    exits with its own code (0 approved, 1 declined), silently."""
    with serving(tmp_path) as (address, _):
        assert terminal(tmp_path, address, "sale", "1.00").returncode == 0
        codes = []
        for args in (["settle"], ["--tid", "UNKNOWN1", "echo"]):
            read_end, write_end = os.pipe()
            os.close(read_end)  # the reader has left before the first line
            try:
                process = subprocess.run(
                    [*ISO_HOST, "terminal", "--to", address, "--state", str(tmp_path / "terminal.json"), *args],
                    stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                )  # fmt: skip
            finally:
                os.close(write_end)
            assert process.stderr == "", process.stderr
            codes.append(process.returncode)
        assert codes == [0, 1]
        assert "batch        000002: 0 transactions" in terminal(tmp_path, address, "status").stdout  # it settled
