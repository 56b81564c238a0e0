"""The ``iso-host`` command: serve, terminal, ledger, dialects."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path

from iso_host import __version__
from iso_host.app import TraceOptions, start
from iso_host.cli.control import add_control_parser
from iso_host.cli.events import add_events_parser
from iso_host.cli.exit_codes import EXIT_ERROR, EXIT_OK
from iso_host.cli.fuzz import add_fuzz_parser
from iso_host.cli.ledger import add_ledger_commands
from iso_host.cli.replay import add_replay_parser
from iso_host.cli.terminal import add_terminal_parser
from iso_host.config import DEMO_MID, DEMO_TID, Config, TlsConfig, load_config, with_overrides
from iso_host.errors import ConfigError, IsoHostError, StoreError
from iso_host.ledger import TransactionFilter, TransactionRecord, open_store
from iso_host.log import announce, configure, get_logger
from iso_host.money import format_amount
from iso_host.mqtt.client import describe_broker
from iso_host.terminal.client import ClientError
from iso_host.trace import DEFAULT_MAX_BYTES
from iso_host.vocab import Status
from iso_host.wire import builtin_dialect_names, load_dialect


async def _serve(config: Config, trace: TraceOptions | None = None) -> int:
    log = get_logger()
    app = await start(config, trace)
    if config.source == "defaults":
        log.info("demo_terminal", tid=DEMO_TID, mid=DEMO_MID, hint="iso-host terminal --tid TERM0001 ...")
    (bound_host, bound_port), host = app.address, app.host
    announce(f"listening on {bound_host}:{bound_port}", dialect=host.dialect.name, ledger=config.ledger_url,
             terminals=len(host.terminals), tls="mutual" if config.tls and config.tls.client_ca else bool(config.tls),
             trace=str(trace.path) if trace else None,
             events=describe_broker(config.events) if config.events else None, control=config.control_enabled,
             version=__version__)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("host_stopping", connections=app.server.connection_count)
    await app.stop()
    log.info("host_stopped")
    return EXIT_OK


def command_serve(args: argparse.Namespace) -> int:
    config = with_overrides(
        load_config(args.config), host=args.host, port=args.port, dialect=args.dialect,
        ledger_url=args.ledger, log_format=args.log_format, log_level=args.log_level,
    )  # fmt: skip
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        config = replace(config, tls=TlsConfig(args.tls_cert, args.tls_key, args.tls_client_ca))
    trace = trace_options(args)
    configure(config.log_format, config.log_level)
    return asyncio.run(_serve(config, trace))


def trace_options(args: argparse.Namespace) -> TraceOptions | None:
    """The ``--trace*`` flags of ``serve``, checked."""
    if args.trace is None:
        if args.trace_redact or args.trace_max_bytes is not None:
            raise ConfigError("--trace-redact and --trace-max-bytes need --trace FILE")
        return None
    max_bytes = DEFAULT_MAX_BYTES if args.trace_max_bytes is None else args.trace_max_bytes
    if max_bytes <= 0:
        raise ConfigError(f"--trace-max-bytes must be bytes > 0, got {max_bytes}")
    return TraceOptions(Path(args.trace), redact=args.trace_redact, max_bytes=max_bytes)


async def _read_transactions(url: str, where: TransactionFilter) -> list[TransactionRecord]:
    """Read a ledger that a host may be using right now: SQLite directly (WAL), PostgreSQL through the store."""
    store = open_store(url)
    if url.startswith("sqlite:///"):
        return await store.transactions(where)  # no lock file taken: a running host keeps it
    await store.open()
    try:
        return await store.transactions(where)
    finally:
        await store.close()


def command_ledger_list(args: argparse.Namespace) -> int:
    status = Status(args.status) if args.status else None
    where = TransactionFilter(tid=args.tid, batch_number=args.batch, status=status, limit=args.limit)
    records = asyncio.run(_read_transactions(args.ledger, where))
    if args.json:
        for record in records:
            row = asdict(record)
            row["created_at"] = record.created_at.isoformat()
            print(json.dumps(row, default=str))
        return EXIT_OK
    print(f"{'RRN':<12} {'TID':<8} {'BATCH':>5} {'STAN':<6} {'KIND':<8} {'AMOUNT':>12} {'CUR':<3} "
          f"{'PAN':<19} {'STATUS':<18} {'RC':<2} {'REASON':<22} ORIGINAL")  # fmt: skip
    for r in records:
        pan = r.card.masked_pan if r.card else "-"
        print(f"{r.rrn:<12} {r.tid:<8} {r.batch_number:>5} {r.stan:<6} {r.kind.value:<8} "
              f"{format_amount(r.amount_minor):>12} {r.currency:<3} {pan:<19} {r.status.value:<18} "
              f"{r.response_code:<2} {r.reason.value:<22} {r.original_rrn or '-'}")  # fmt: skip
    return EXIT_OK


def command_dialects(_args: argparse.Namespace) -> int:
    for name in builtin_dialect_names():
        dialect = load_dialect(name)
        print(f"{name:<12} {dialect.description}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iso-host", description="ISO 8583 acquirer host emulator")
    parser.add_argument("--version", action="version", version=f"iso-host {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the host")
    serve.add_argument("--config", help="TOML config file (default: built-in demo settings)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8583; 0 picks a free one)")
    serve.add_argument("--dialect", help=f"built-in dialect ({', '.join(builtin_dialect_names())}) or a .toml path")
    serve.add_argument("--ledger", help="ledger URL (default sqlite:///iso-host.db)")
    serve.add_argument("--log-format", choices=["auto", "json", "console"])
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS 1.2+")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed (mutual TLS)")
    serve.add_argument("--trace", metavar="FILE", help="record every frame in and out as JSON lines (FILE.jsonl)")
    serve.add_argument("--trace-redact", action="store_true",
                       help="mask PAN, tracks and PIN block inside the recorded frames")  # fmt: skip
    serve.add_argument("--trace-max-bytes", type=int, metavar="N",
                       help=f"rotate the trace at N bytes, 5 old files kept (default {DEFAULT_MAX_BYTES})")  # fmt: skip
    serve.set_defaults(handler=command_serve)

    add_terminal_parser(commands)
    add_replay_parser(commands)
    add_events_parser(commands)
    add_control_parser(commands)
    add_fuzz_parser(commands)

    ledger = commands.add_parser("ledger", help="inspect the ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    listing = ledger_commands.add_parser("list", help="list transactions")
    listing.add_argument("--ledger", default="sqlite:///iso-host.db")
    listing.add_argument("--tid")
    listing.add_argument("--batch", type=int)
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--limit", type=int, default=1_000, help="at most this many rows, oldest first (1000)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=command_ledger_list)
    add_ledger_commands(ledger_commands)

    dialects = commands.add_parser("dialects", help="list the built-in dialects")
    dialects.set_defaults(handler=command_dialects)
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
