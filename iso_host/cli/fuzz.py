"""`iso-host fuzz`: its arguments and the command; the engine is ``iso_host.fuzz.run``.

Exit 0: nothing found; 1: findings (one JSON reproducer each in ``--out``); 2: usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio

from iso_host.cli.exit_codes import EXIT_NEGATIVE, EXIT_OK
from iso_host.config import DEMO_MID, DEMO_TID
from iso_host.fuzz import report
from iso_host.fuzz.run import fuzz
from iso_host.limits import DEFAULT_LIMITS
from iso_host.tls import client_context


def command_fuzz(args: argparse.Namespace) -> int:
    ssl_context = client_context(args.tls_ca, args.tls_cert, args.tls_key) if args.tls else None
    stats = asyncio.run(fuzz(report.options_from(args, ssl_context)))
    return EXIT_NEGATIVE if stats.found else EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("fuzz", help="send mutated frames of every kind to a host and report its faults")
    parser.add_argument("--to", default="127.0.0.1:8583", help="HOST:PORT of the host")
    parser.add_argument("--dialect", default="iso87binary", help="built-in dialect or a .toml path")
    parser.add_argument("--count", type=int, default=10_000, help="frames to send (10000)")
    parser.add_argument("--rate", type=float, default=0.0, help="frames per second; 0 = as fast as answered (0)")
    parser.add_argument("--seed", type=int, help="seed: frame N of a seed is always the same bytes (default: random)")
    parser.add_argument("--connections", type=int, default=4, help="connections sending at once (4)")
    parser.add_argument("--health-every", type=int, default=1_000, metavar="N",
                        help="a valid sale on its own connection every N frames, at start and at end")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer or a close (5)")
    parser.add_argument("--keys", metavar="tak=HEX[,mac=ALG]", help="the terminal's static MAC key: frames re-MAC'd")
    parser.add_argument("--tmk", help="terminal master key, hex: sign on first and re-MAC with the session TAK "
                                      "(default for dialects that require sign-on: the demo TMK)")  # fmt: skip
    parser.add_argument("--tid", default=DEMO_TID)
    parser.add_argument("--mid", default=DEMO_MID)
    parser.add_argument("--out", default="fuzz-findings", help="directory for reproducers, one JSON file each")
    parser.add_argument("--max-frame-bytes", type=int, default=DEFAULT_LIMITS.max_frame_bytes,
                        help="the host's frame limit: a larger frame may get a close (iso-host's: 8192)")  # fmt: skip
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--tls-ca", help="PEM CA that signed the host's certificate")
    parser.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="PEM key of --tls-cert")
    parser.set_defaults(handler=command_fuzz)
