"""`iso-host dialects`: list the built-in dialects."""

from __future__ import annotations

import argparse

from iso_host.cli.exit_codes import EXIT_OK
from iso_host.wire import builtin_dialect_names, load_dialect


def command_dialects(_args: argparse.Namespace) -> int:
    names = builtin_dialect_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {load_dialect(name).description}")
    return EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dialects = commands.add_parser("dialects", help="list the built-in dialects",
                                   epilog="Exit codes: 0 listed; 2 a dialect that does not load.")  # fmt: skip
    dialects.set_defaults(handler=command_dialects)
