"""The ``iso-host`` command: serve, terminal, ledger, dialects."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from iso_host import __version__
from iso_host.cards import pan_hash
from iso_host.cli.control import add_control_parser
from iso_host.cli.events import add_events_parser
from iso_host.cli.exit_codes import EXIT_ERROR, EXIT_OK
from iso_host.cli.fuzz import add_fuzz_parser
from iso_host.cli.ledger import add_ledger_commands
from iso_host.cli.replay import add_replay_parser
from iso_host.cli.terminal import add_terminal_parser
from iso_host.clock import HostClock, local_now
from iso_host.config import DEMO_MID, DEMO_TID, Config, TerminalConfig, TlsConfig, load_config, with_overrides
from iso_host.core.pipeline import Host
from iso_host.core.scenarios import ScenarioBook
from iso_host.core.terminals import NO_KEYS, TerminalState, WorkingKeys, random_working_keys
from iso_host.core.test_cards import CardBook
from iso_host.errors import ConfigError, IsoHostError, StoreError
from iso_host.events.record import EventSink
from iso_host.keyed_locks import KeyedLocks
from iso_host.ledger import TerminalRecord, TransactionFilter, TransactionRecord, open_store
from iso_host.log import announce, configure, get_logger
from iso_host.money import format_amount
from iso_host.mqtt.client import check_settings, describe_broker
from iso_host.mqtt.tasks import start_mqtt_tasks
from iso_host.security import unwrap_key
from iso_host.server import Server
from iso_host.terminal.client import ClientError
from iso_host.tls import server_context
from iso_host.trace import DEFAULT_MAX_BYTES, Tracer
from iso_host.vocab import Status
from iso_host.wire import builtin_dialect_names, load_dialect

MQTT_READY_TIMEOUT_S = 3.0  # at start, how long to wait for the broker before serving without it


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """``serve --trace FILE [--trace-redact] [--trace-max-bytes N]``."""

    path: Path
    redact: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES


async def _serve(config: Config, trace: TraceOptions | None = None) -> int:
    log = get_logger()
    dialect = load_dialect(config.dialect)
    if config.events is not None:
        check_settings(config.events)
    store = open_store(config.ledger_url, group_commit=config.group_commit)
    await store.open()
    terminals = {t.tid: terminal_state(t, await store.register_terminal(t.tid, t.mid)) for t in config.terminals}
    clock = HostClock(local_now)
    events = EventSink() if config.events is not None else None
    host = Host(
        dialect, store, terminals, clock, monotonic=time.monotonic, cards=card_book(config, store.pan_hash_key),
        key_source=random_working_keys, rules=config.rules, scenarios=scenario_book(config, store.pan_hash_key),
        events=events, ledger_deadline_s=config.ledger_deadline_s, serialiser=KeyedLocks(),
    )  # fmt: skip
    ssl_context = server_context(config.tls.cert, config.tls.key, config.tls.client_ca) if config.tls else None
    try:
        tracer = Tracer(trace.path, dialect, redact=trace.redact, max_bytes=trace.max_bytes) if trace else None
    except ConfigError:
        await store.close()
        raise
    server = Server(host, config.limits, ssl_context=ssl_context, tracer=tracer)
    try:
        bound_host, bound_port = await server.start(config.host, config.port)
    except OSError as error:
        if tracer is not None:
            await asyncio.to_thread(tracer.close)
        await store.close()
        raise ConfigError(f"server.port: cannot listen on {config.host}:{config.port}: {error.strerror}") from None
    background = start_mqtt_tasks(config, host, events, cards_reloader(config, host))
    # A script that starts the host and at once sends a control command must find the listener subscribed.
    await background.ready(MQTT_READY_TIMEOUT_S)
    if config.source == "defaults":
        log.info("demo_terminal", tid=DEMO_TID, mid=DEMO_MID, hint="iso-host terminal --tid TERM0001 ...")
    announce(f"listening on {bound_host}:{bound_port}", dialect=dialect.name, ledger=config.ledger_url,
             terminals=len(terminals), tls="mutual" if config.tls and config.tls.client_ca else bool(config.tls),
             trace=str(trace.path) if trace else None,
             events=describe_broker(config.events) if config.events else None, control=config.control_enabled,
             version=__version__)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("host_stopping", connections=server.connection_count)
    await server.stop()  # closes the tracer too, after the last connection's lines
    await background.stop()
    await store.close()
    log.info("host_stopped")
    return EXIT_OK


def card_book(config: Config, pan_key: bytes) -> CardBook:
    """The configured test cards, reachable by PAN and by the ledger's keyed PAN hash."""
    return CardBook(((c.pan, c.test_card()) for c in config.cards), lambda pan: pan_hash(pan, pan_key))


def cards_reloader(config: Config, host: Host) -> Callable[[], int] | None:
    """Live control's reload-cards: read the config file's [[cards]] again (balances start afresh)."""
    if config.source == "defaults":
        return None

    def reload() -> int:
        fresh = load_config(config.source)
        host.cards.replace((c.pan, c.test_card()) for c in fresh.cards)
        return len(fresh.cards)

    return reload


def scenario_book(config: Config, pan_key: bytes) -> ScenarioBook:
    """The configured scenarios; a PAN to match on becomes its keyed hash, as requests carry it."""
    return ScenarioBook(
        replace(s.scenario, pan_hash=pan_hash(s.pan, pan_key)) if s.pan else s.scenario for s in config.scenarios
    )


def terminal_state(configured: TerminalConfig, record: TerminalRecord) -> TerminalState:
    """A configured terminal with the session the ledger remembers (keys unwrapped with its TMK)."""

    def key(hex_text: str | None) -> bytes | None:
        return bytes.fromhex(hex_text) if hex_text else None

    tmk = key(configured.tmk)
    signed_on = record.signed_on and tmk is not None
    session = WorkingKeys(
        *(unwrap_key(tmk, wrapped) if (tmk and wrapped) else None
          for wrapped in (record.tpk_under_tmk, record.tak_under_tmk, record.tdk_under_tmk))
    ) if signed_on else NO_KEYS  # fmt: skip
    return TerminalState(
        tid=configured.tid, mid=configured.mid, batch_number=record.batch_number, tmk=tmk,
        static_keys=WorkingKeys(key(configured.tpk), key(configured.tak)), bdk=key(configured.bdk),
        mac_algorithm=configured.mac, require_signon=configured.require_signon, signed_on=signed_on,
        session_keys=session, operator=record.operator,
        operators=dict(configured.operators) if configured.operators is not None else None,
    )  # fmt: skip


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
