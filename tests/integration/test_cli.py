"""The user-facing commands, run as a newcomer runs them: separate processes over a real socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from databases import fresh_postgres_database
from processes import EXAMPLES, ISO_HOST, serving, terminal
from tls_material import make_tls_files

TEST_PAN = "4761739001010010"






@pytest.mark.parametrize("dialect", ["iso87binary", "iso87ascii", "cup"])
def test_serve_then_terminal_sale(tmp_path: Path, dialect: str) -> None:
    """`iso-host terminal signon` then `sale 12.34` (MAC'd, response MAC checked) against `iso-host serve`."""
    with serving(tmp_path, "--dialect", dialect) as (address, process):
        signon = terminal(tmp_path, address, "--dialect", dialect, "signon")
        assert signon.returncode == 0, signon.stderr
        assert "check values match" in signon.stdout
        state = (tmp_path / "terminal.json").read_text()
        assert "tak_under_tmk" in state
        result = terminal(tmp_path, address, "--dialect", dialect, "sale", "12.34", "--pan", TEST_PAN)
        assert result.returncode == 0, result.stderr
        assert "response MAC verified" in result.stdout
        assert "F39" in result.stdout
        assert "476173******0010" in result.stdout
        assert TEST_PAN not in result.stdout
        echo = terminal(tmp_path, address, "--dialect", dialect, "echo")
        assert echo.returncode == 0, echo.stderr
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
        assert process.returncode == 0
    assert TEST_PAN not in output, "the host's log must never show a clear PAN"
    events = [json.loads(line)["event"] for line in output.splitlines()]
    assert "request_decided" in events
    assert "host_stopped" in events
    listing = subprocess.run(
        [*ISO_HOST, "ledger", "list", "--json", "--ledger", f"sqlite:///{tmp_path / 'iso-host.db'}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(row["amount_minor"], row["status"]) for row in rows] == [(1234, "APPROVED")]


def test_terminal_declined_exit_code(tmp_path: Path) -> None:
    """An unknown terminal is declined and `iso-host terminal` exits 1."""
    with serving(tmp_path) as (address, _):
        result = terminal(tmp_path, address, "--tid", "UNKNOWN1", "sale", "1.00")
    assert result.returncode == 1
    assert "03" in result.stdout


def test_terminal_connection_refused_exit_code(tmp_path: Path) -> None:
    """No host listening: one line on stderr naming the address, exit code 2."""
    result = terminal(tmp_path, "127.0.0.1:1", "echo")
    assert result.returncode == 2
    assert "cannot connect to 127.0.0.1:1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param('[server]\nport = "x"\n', "server.port", id="bad-port"),
        pytest.param('[server]\ndialect = "nope"\n', "dialect 'nope'", id="unknown-dialect"),
        pytest.param('[ledger]\nurl = "mysql://x"\n', "ledger.url", id="bad-ledger-url"),
        pytest.param('[[terminals]]\ntid = "SHORT"\nmid = "MERCHANT0000001"\n', "terminals[0].tid", id="short-tid"),
        pytest.param("[surprise]\n", "surprise: unknown section", id="unknown-section"),
    ],
)
def test_bad_config_fails_at_start_with_one_line(tmp_path: Path, config: str, expected: str) -> None:
    """A bad config file stops `iso-host serve` before it binds, with one line naming the key."""
    path = tmp_path / "host.toml"
    path.write_text(config)
    result = subprocess.run(
        [*ISO_HOST, "serve", "--config", str(path), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_second_host_on_same_sqlite_ledger_is_refused(tmp_path: Path) -> None:
    """Two hosts must not share one SQLite file: the second one says which file is in use."""
    with serving(tmp_path):
        result = subprocess.run(
            [*ISO_HOST, "serve", "--port", "0"], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
        )
    assert result.returncode == 2
    assert "in use by another iso-host process" in result.stderr


def test_installed_command_runs(tmp_path: Path) -> None:
    """The console script is installed and lists the built-in dialects."""
    env = {**os.environ}
    result = subprocess.run(["iso-host", "dialects"], capture_output=True, text=True, timeout=60, check=True, env=env)
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["cup", "iso87ascii", "iso87ascii-dukpt", "iso87bcd", "iso87binary"]


def test_cli_over_mutual_tls(tmp_path: Path) -> None:
    """`serve --tls-cert --tls-key --tls-client-ca` and `terminal --tls --tls-ca --tls-cert --tls-key`."""
    files = make_tls_files(tmp_path)
    server_flags = ["--tls-cert", str(files.server_cert), "--tls-key", str(files.server_key),
                    "--tls-client-ca", str(files.ca)]  # fmt: skip
    with serving(tmp_path, *server_flags) as (address, _):
        trusted = terminal(tmp_path, address, "--tls", "--tls-ca", str(files.ca), "--tls-cert", str(files.client_cert),
                           "--tls-key", str(files.client_key), "sale", "3.00")  # fmt: skip
        anonymous = terminal(tmp_path, address, "--tls", "--tls-ca", str(files.ca), "--timeout", "5", "echo")
    assert trusted.returncode == 0, trusted.stderr
    assert anonymous.returncode == 2
    assert len(anonymous.stderr.strip().splitlines()) == 1, anonymous.stderr


def test_postgresql_ledger_from_the_command_line(tmp_path: Path) -> None:
    """`serve --ledger postgresql://...` records a sale that `ledger list --ledger postgresql://...` shows."""
    with fresh_postgres_database() as url:
        with serving(tmp_path, "--ledger", url) as (address, _):
            assert terminal(tmp_path, address, "sale", "7.50").returncode == 0
            declined = terminal(tmp_path, address, "--tid", "UNKNOWN1", "sale", "1.00")
            assert declined.returncode == 1
        listing = subprocess.run(
            [*ISO_HOST, "ledger", "list", "--ledger", url, "--status", "APPROVED", "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(row["amount_minor"], row["kind"]) for row in rows] == [(750, "sale")]


@pytest.mark.parametrize("dialect", ["iso87binary", "cup"])
def test_business_day_from_the_command_line(tmp_path: Path, dialect: str) -> None:
    """sale, void, reverse, refund and settle as commands; then a batch the terminal got wrong is uploaded."""
    state_file = tmp_path / "terminal.json"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = terminal(tmp_path, address, "--dialect", dialect, *args)
        assert result.returncode == 0, f"{args}: {result.stdout} {result.stderr}"
        return result

    def stans() -> list[str]:
        return [item["stan"] for item in json.loads(state_file.read_text())["items"] if item["kind"] == "sale"]

    with serving(tmp_path, "--dialect", dialect) as (address, _):
        run("signon")
        for amount in ("10.00", "20.00", "30.00"):
            run("sale", amount)
        first, second, third = stans()
        run("void", "--stan", second)
        run("reverse", "--stan", third)
        run("refund", "5.00", "--stan", first)
        settled = run("settle")
        assert "batch settled; batch 2 is open" in settled.stdout
        assert "uploading" not in settled.stdout
        run("sale", "1.00")
        run("sale", "2.00")
        state = json.loads(state_file.read_text())
        state["items"][0]["amount"] = 150  # the terminal's record of one sale is wrong
        state_file.write_text(json.dumps(state))
        uploaded = run("settle")
        assert "out of balance: uploading the batch" in uploaded.stdout
        assert "batch settled; batch 3 is open" in uploaded.stdout
    listing = subprocess.run(
        [*ISO_HOST, "ledger", "list", "--json", "--ledger", f"sqlite:///{tmp_path / 'iso-host.db'}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(row["kind"], row["status"]) for row in rows if row["batch_number"] == 1] == [
        ("sale", "PARTIALLY_REFUNDED"), ("sale", "VOIDED"), ("sale", "REVERSED"),
        ("void", "APPROVED"), ("reversal", "APPROVED"), ("refund", "APPROVED"),
    ]
    ledger = f"sqlite:///{tmp_path / 'iso-host.db'}"
    verify = subprocess.run([*ISO_HOST, "ledger", "verify", "--ledger", ledger], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ledger ok" in verify.stdout
    report = subprocess.run([*ISO_HOST, "ledger", "report", "--json", "--ledger", ledger, "--batch", "2"],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "amount_differs" in report.stdout




@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param(["sale", "12.51"], "51", id="cents-51"),
        pytest.param(["sale", "12.05"], "05", id="cents-05"),
        pytest.param(["sale", "10.00", "--pan", "4000000000000002"], "41", id="lost-card"),
        pytest.param(["sale", "10.00", "--pan", "4000000000000028"], "54", id="expired-card"),
        pytest.param(["sale", "100.01", "--pan", "4000000000000044"], "61", id="over-limit"),
        pytest.param(["sale", "12.00"], "00", id="plain"),
    ],
)
def test_example_scenarios_file(tmp_path: Path, args: list[str], code: str) -> None:
    """`iso-host serve --config examples/scenarios.toml` answers the magic amounts and test cards as documented."""
    with serving(tmp_path, "--config", str(EXAMPLES / "scenarios.toml")) as (address, _):
        result = terminal(tmp_path, address, *args)
    assert f"Response Code                    {code}" in result.stdout
    assert result.returncode == (0 if code == "00" else 1)


def test_capture_then_replay(tmp_path: Path) -> None:
    """A day captured with `serve --trace` replays clean on a fresh host, and shows exactly the one declined card
    on a host whose test cards say that card is lost."""
    trace = tmp_path / "day.jsonl"
    lost_card = "5413330089010012"
    with serving(tmp_path, "--trace", str(trace)) as (address, _):
        for args in (["sale", "10.00"], ["sale", "20.00", "--pan", lost_card], ["echo"]):
            assert terminal(tmp_path, address, *args).returncode == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with serving(fresh) as (address, _):
        same = subprocess.run([*ISO_HOST, "replay", str(trace), "--to", address], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    declining = tmp_path / "declining"
    declining.mkdir()
    config = declining / "host.toml"
    config.write_text(f'[[terminals]]\ntid = "TERM0001"\nmid = "MERCHANT0000001"\n\n'
                      f'[[cards]]\npan = "{lost_card}"\nstatus = "lost"\n')  # fmt: skip
    with serving(declining, "--config", str(config)) as (address, _):
        junit = tmp_path / "replay.xml"
        differs = subprocess.run([*ISO_HOST, "replay", str(trace), "--to", address, "--junit", str(junit)],
                                 capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert differs.returncode == 1, differs.stdout + differs.stderr
    difference_lines = [line.split() for line in differs.stdout.splitlines() if line.split()[4:5] == ["F39"]]
    assert [row[3:] for row in difference_lines] == [["000002", "F39", "00", "41"]], differs.stdout
    assert lost_card not in differs.stdout
    assert junit.read_text().count("<failure") == 1
