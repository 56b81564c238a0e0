"""The ``iso-host`` command: each command group's module registers its own subcommands."""

from __future__ import annotations

import argparse
import os
import sys

from iso_host import __version__
from iso_host.cli import codes, control, decode, dialects, events, fuzz, ledger, replay, serve, terminal
from iso_host.cli.exit_codes import EXIT_ERROR
from iso_host.errors import ConfigError, IsoHostError, StoreError
from iso_host.terminal.client import ClientError

# In the order ``iso-host --help`` lists them; each has ``add_parser(commands)``, whose commands set ``handler``.
COMMAND_MODULES = (serve, terminal, replay, decode, events, control, fuzz, ledger, dialects, codes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iso-host", description="ISO 8583 acquirer host emulator")
    parser.add_argument("--version", action="version", version=f"iso-host {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    except BrokenPipeError:
        # `iso-host terminal ... | head` left early; silence the flush at exit (Python docs, "SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    return result


if __name__ == "__main__":
    sys.exit(main())
