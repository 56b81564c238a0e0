"""The ``iso-host`` command: each command group's module registers its own subcommands."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, TextIO, cast

from iso_host import __version__
from iso_host.cli.exit_codes import EXIT_ERROR
from iso_host.errors import ConfigError, IsoHostError, StoreError
from iso_host.terminal.client import ClientError

# In the order ``iso-host --help`` lists them: each is the module ``iso_host.cli.<name>``, whose
# ``add_parser(commands)`` registers it and whose commands set ``handler``.
COMMANDS: Final = ("serve", "terminal", "replay", "decode", "events", "control", "fuzz", "ledger", "dialects", "codes",
                   "certs")  # fmt: skip


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the arguments, only the named command's module is imported (``iso-host terminal ...`` does
    not load the host, its database drivers or the console: every command starts sooner), else every command's."""
    parser = argparse.ArgumentParser(prog="iso-host", description="ISO 8583 acquirer host emulator")
    parser.add_argument("--version", action="version", version=f"iso-host {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    named = next((arg for arg in argv or () if not arg.startswith("-")), None)
    for name in (named,) if named in COMMANDS else COMMANDS:
        importlib.import_module(f"iso_host.cli.{name}").add_parser(commands)
    return parser


class _PipeSafe:
    """Standard output that a reader who left early (``iso-host terminal settle | head -1``) cannot break: at the
    first broken pipe it is pointed at /dev/null (Python docs, "Note on SIGPIPE") and the command carries on, so it
    finishes its work (a settlement, a state file) and exits with its own code, not 2."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _silence(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser(arguments).parse_args(arguments)
    stdout = sys.stdout
    sys.stdout = cast(TextIO, _PipeSafe(stdout))
    try:
        result: int = args.handler(args)
    except (ConfigError, StoreError, ClientError) as error:
        print(f"iso-host: {error}", file=sys.stderr)
        return EXIT_ERROR
    except IsoHostError as error:
        print(f"iso-host: {error.__class__.__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    finally:
        sys.stdout.flush()  # while still pipe-safe: what is left in the buffer must not fail at exit
        sys.stdout = stdout
    return result


if __name__ == "__main__":
    sys.exit(main())
