"""The ``iso-host`` command: each command group's module registers its own subcommands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, TextIO, cast

from iso_host import __version__
from iso_host.cli import certs, codes, control, decode, dialects, events, fuzz, ledger, replay, serve, terminal
from iso_host.cli.exit_codes import EXIT_ERROR
from iso_host.errors import ConfigError, IsoHostError, StoreError
from iso_host.terminal.client import ClientError

# In the order ``iso-host --help`` lists them; each has ``add_parser(commands)``, whose commands set ``handler``.
COMMAND_MODULES = (serve, terminal, replay, decode, events, control, fuzz, ledger, dialects, codes, certs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iso-host", description="ISO 8583 acquirer host emulator")
    parser.add_argument("--version", action="version", version=f"iso-host {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(commands)
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
    args = build_parser().parse_args(argv)
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
