"""`iso-host serve`: run the host until SIGINT or SIGTERM; its flags, the start and stop log lines.

The host itself is built by ``iso_host.app``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import replace
from pathlib import Path

from iso_host import __version__
from iso_host.app import TraceOptions, start
from iso_host.cli.exit_codes import EXIT_OK
from iso_host.config import DEMO_MID, DEMO_TID, Config, TlsConfig, load_config, with_overrides
from iso_host.config_http import http_overrides
from iso_host.errors import ConfigError
from iso_host.event_loops import event_loop
from iso_host.log import announce, configure, get_logger
from iso_host.mqtt.client import describe_broker
from iso_host.trace import DEFAULT_MAX_BYTES
from iso_host.urls import redacted_url
from iso_host.wire import builtin_dialect_names


async def _serve(config: Config, trace: TraceOptions | None = None, loop_name: str = "asyncio") -> int:
    log = get_logger()
    app = await start(config, trace)
    if config.source == "defaults":
        log.info("demo_terminal", tid=DEMO_TID, mid=DEMO_MID, hint="iso-host terminal --tid TERM0001 ...")
    (bound_host, bound_port), host = app.address, app.host
    announce(f"listening on {bound_host}:{bound_port}", dialect=host.dialect.name,
             ledger=redacted_url(config.ledger_url), terminals=len(host.terminals),
             tls="mutual" if config.tls and config.tls.client_ca else bool(config.tls),
             trace=str(trace.path) if trace else None,
             events=describe_broker(config.events) if config.events else None, control=config.control_enabled,
             loop=loop_name, workers=config.workers, console=app.console.url if app.console else None,
             version=__version__)  # fmt: skip
    if app.console is not None:
        made = {"token": app.console_token, "hint": "the token is shown this once: changes need it"}
        announce(f"console on {app.console.url}", control=config.http.control,
                 **(made if app.console_token else {}))  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("host_stopping", connections=app.server.connection_count, workers=config.workers)
    await app.stop()
    log.info("host_stopped")
    return EXIT_OK


def command_serve(args: argparse.Namespace) -> int:
    config = with_overrides(
        load_config(args.config), host=args.host, port=args.port, dialect=args.dialect,
        ledger_url=args.ledger, log_format=args.log_format, log_level=args.log_level, edge=args.edge, loop=args.loop,
        workers=args.workers,
    )
    config = replace(config, http=http_overrides(config.http, args.http, args.no_http))  # fmt: skip
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        config = replace(config, tls=TlsConfig(args.tls_cert, args.tls_key, args.tls_client_ca))
    trace = trace_options(args)
    loop_name, loop_factory = event_loop(config.loop)
    configure(config.log_format, config.log_level, sample_approvals=config.log_sample_approvals)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(config, trace, loop_name))


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


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve", help="run the host",
        epilog="Flags override the config file. Exit codes: 0 stopped by SIGINT or SIGTERM (in-flight requests"
               " answered first); 2 a bad flag, config or dialect file, a port in use, or a ledger that cannot be"
               " opened (one line on stderr).",
    )  # fmt: skip
    serve.add_argument("--config", help="TOML config file (default: built-in demo settings)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8583; 0 picks a free one)")
    serve.add_argument("--dialect", help=f"built-in dialect ({', '.join(builtin_dialect_names())}) or a .toml path")
    serve.add_argument("--ledger", help="ledger URL (default sqlite:///iso-host.db)")
    serve.add_argument("--log-format", choices=["auto", "json", "console"],
                       help="log lines as JSON or readable console lines; auto: console on a terminal, JSON"
                            " otherwise (default auto; [log] format)")  # fmt: skip
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="the least severe lines logged; debug logs every approval, info 1 in [log]"
                            " sample_approvals (default info; [log] level)")  # fmt: skip
    serve.add_argument("--edge", choices=["protocol", "streams"],
                       help="the connection edge: asyncio Protocol (default) or streams (for comparison)")  # fmt: skip
    serve.add_argument("--loop", choices=["auto", "uvloop", "asyncio"],
                       help="the event loop: asyncio's (default), uvloop, or auto (uvloop when installed)")  # fmt: skip
    serve.add_argument("--workers", type=int, metavar="N",
                       help="N protocol worker processes on the one port, this process deciding and keeping the"
                            " ledger for all of them (default 1: this process serves the sockets too)")  # fmt: skip
    serve.add_argument("--http", metavar="HOST:PORT",
                       help="the web console's address (default 127.0.0.1:8080; [http] listen; ISO_HOST_HTTP)")
    serve.add_argument("--no-http", action="store_true", help="no web console, no /metrics")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS 1.2+")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed (mutual TLS)")
    serve.add_argument("--trace", metavar="FILE", help="record every frame in and out as JSON lines (FILE.jsonl)")
    serve.add_argument("--trace-redact", action="store_true",
                       help="mask PAN, tracks and PIN block inside the recorded frames")  # fmt: skip
    serve.add_argument("--trace-max-bytes", type=int, metavar="N",
                       help=f"rotate the trace at N bytes, 5 old files kept (default {DEFAULT_MAX_BYTES})")  # fmt: skip
    serve.set_defaults(handler=command_serve)
