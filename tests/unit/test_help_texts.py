"""`--help` of serve, replay, dialects, certs and the ledger commands: every option explained with its default, the
exit codes in each command's epilog, and no internal name in a usage error."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from iso_host.cli.main import build_parser

ISO_HOST = [sys.executable, "-m", "iso_host.cli.main"]
LEDGER_COMMANDS = ("list", "report", "export", "verify", "backup")
COMMANDS = [("serve",), ("replay",), ("dialects",), ("certs",), ("ledger",), *(("ledger", c) for c in LEDGER_COMMANDS)]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISO_HOST, *args], capture_output=True, text=True, timeout=60, check=False)


def subparser(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("names", COMMANDS, ids=" ".join)
def test_exit_codes_in_the_epilog(names: tuple[str, ...]) -> None:
    result = run(*names, "--help")
    assert result.returncode == 0
    assert "Exit codes: 0 " in " ".join(result.stdout.split())


@pytest.mark.parametrize("names", [("serve",), ("replay",), ("certs",), *(("ledger", c) for c in LEDGER_COMMANDS)],
                         ids=" ".join)  # fmt: skip
def test_every_option_has_help(names: tuple[str, ...]) -> None:
    options = [a for a in subparser(*names)._actions if not isinstance(a, argparse._HelpAction)]
    assert options
    assert [a.dest for a in options if not a.help] == []


@pytest.mark.parametrize(("names", "flags"), [
    (("serve",), ("--log-format", "--log-level")),
    (("ledger", "list"), ("--ledger", "--tid", "--batch", "--status", "--limit", "--json")),
    (("replay",), ("--timeout", "--port-in-capture")),
])  # fmt: skip
def test_defaults_are_named(names: tuple[str, ...], flags: tuple[str, ...]) -> None:
    by_flag = {flag: a for a in subparser(*names)._actions for flag in a.option_strings}
    assert [flag for flag in flags if "default" not in (by_flag[flag].help or "")] == []


def test_serve_log_flags_say_their_defaults() -> None:
    text = " ".join(run("serve", "--help").stdout.split())
    assert "(default auto; [log] format)" in text
    assert "(default info; [log] level)" in text


def test_ledger_without_a_command_names_the_choices() -> None:
    result = run("ledger")
    assert result.returncode == 2
    choose = "iso-host ledger: error: choose one of list, report, export, verify, backup"
    assert result.stderr.splitlines()[-1] == choose
    assert "ledger_command" not in result.stderr


def test_status_in_any_case() -> None:
    args = build_parser().parse_args(["ledger", "list", "--status", "approved"])
    assert args.status == "APPROVED"
    refused = run("ledger", "list", "--status", "fine")
    assert refused.returncode == 2
    assert "invalid choice: 'FINE'" in refused.stderr
