"""The composition root: a running host, built from a ``Config`` (``iso-host serve``) or from a test's parts.

Every host is wired here, once: the ledger opened, the configured terminals joined with the sessions the
ledger remembers, the ``Host`` with the machine's monotonic clock, fresh random working keys and one lock per
terminal, the TCP server with its tracer, and the MQTT relay and control listener beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from iso_host.cards import pan_hash
from iso_host.clock import HostClock, local_now
from iso_host.config import Config, TerminalConfig, load_config
from iso_host.config_checks import Problems
from iso_host.config_keys import mac_key_problems
from iso_host.config_security import check_terminal_kinds
from iso_host.control.secret import load_secret
from iso_host.core.guards import SecuritySettings
from iso_host.core.issuer_scripts import overflow
from iso_host.core.pipeline import Host
from iso_host.core.rules import RuleSettings
from iso_host.core.scenarios import ScenarioBook
from iso_host.core.sessions import restore_session
from iso_host.core.terminals import TerminalState, WorkingKeys, random_working_keys
from iso_host.core.test_cards import CardBook, TestCard
from iso_host.errors import ConfigError
from iso_host.events.record import EventSink
from iso_host.gate import fit_open_file_limit
from iso_host.keyed_locks import KeyedLocks
from iso_host.ledger import Store, TerminalRecord, open_store
from iso_host.ledger.pan_key import DEFAULT_PAN_KEY, PanKeySource
from iso_host.ledger.store import DEFAULT_LEDGER_DEADLINE_S
from iso_host.log import get_logger
from iso_host.mqtt.client import check_settings
from iso_host.mqtt.tasks import MqttTasks, start_mqtt_tasks
from iso_host.server import Edge, Server, cannot_listen
from iso_host.tls import server_context
from iso_host.trace import DEFAULT_MAX_BYTES, Tracer
from iso_host.wire import Dialect, load_dialect
from iso_host.workers.pool import WorkerPool, listening_socket

if TYPE_CHECKING:  # the console (aiohttp) is imported only by a host that serves it: commands start faster
    from iso_host.console.http import RunningConsole

MQTT_READY_TIMEOUT_S: Final = 3.0  # at start, how long to wait for the broker before serving without it


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """``serve --trace FILE [--trace-redact] [--trace-max-bytes N]``."""

    path: Path
    redact: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES


def pan_key_source(config: Config) -> PanKeySource:
    """Where the host finds its PAN hash key: ``ISO_HOST_PAN_KEY``, else ``[ledger] pan_key_file`` or the default."""
    return PanKeySource(Path(config.pan_key_file) if config.pan_key_file else None)


async def open_ledger(url: str, *, group_commit: bool = True, pan_key: PanKeySource | None = DEFAULT_PAN_KEY) -> Store:
    """The store for ``url``, opened (migrated, the PAN hash key settled, writers started)."""
    store = open_store(url, group_commit=group_commit, pan_key=pan_key)
    await store.open()
    return store


def terminal_state(configured: TerminalConfig, record: TerminalRecord) -> TerminalState:
    """A configured terminal with the session the ledger remembers: keys unwrapped with its TMK and checked against
    their stored check values. A session that does not check is dropped (the terminal must sign on again), with one
    log line naming the terminal."""

    def key(hex_text: str | None) -> bytes | None:
        return bytes.fromhex(hex_text) if hex_text else None

    tmk = key(configured.tmk)
    session, dropped = restore_session(tmk, record)
    if dropped is not None:
        get_logger().warning("session_dropped", tid=configured.tid, why=dropped, hint="the terminal must sign on again")
    signed_on = record.signed_on and dropped is None
    return TerminalState(
        tid=configured.tid, mid=configured.mid, batch_number=record.batch_number, tmk=tmk,
        static_keys=WorkingKeys(key(configured.tpk), key(configured.tak)), bdk=key(configured.bdk),
        mac_algorithm=configured.mac, require_signon=configured.require_signon, signed_on=signed_on,
        session_keys=session, operator=record.operator,
        operators=dict(configured.operators) if configured.operators is not None else None,
        merchant_name=configured.merchant_name,
        keyed=record.keyed, mac_policy=configured.mac_policy, mac_kinds=frozenset(configured.mac_kinds),
        tls_subject=configured.tls_subject,
    )  # fmt: skip


async def open_terminals(store: Store, configured: Iterable[TerminalConfig]) -> dict[str, TerminalState]:
    """The configured terminals, registered in the ledger, each with the session the ledger remembers."""
    return {t.tid: terminal_state(t, await store.register_terminal(t.tid, t.mid)) for t in configured}


def card_book(cards: Iterable[tuple[str, TestCard]], pan_key: bytes) -> CardBook:
    """Test cards by PAN, reachable by PAN and by the ledger's keyed PAN hash."""
    return CardBook(cards, lambda pan: pan_hash(pan, pan_key))


def scenario_book(config: Config, pan_key: bytes) -> ScenarioBook:
    """The configured scenarios; a PAN to match on becomes its keyed hash, as requests carry it."""
    return ScenarioBook(
        replace(s.scenario, pan_hash=pan_hash(s.pan, pan_key)) if s.pan else s.scenario for s in config.scenarios
    )


def cards_reloader(config: Config, host: Host) -> Callable[[], int] | None:
    """Live control's reload-cards: read the config file's [[cards]] again (balances start afresh)."""
    if config.source == "defaults":
        return None

    def reload() -> int:
        fresh = load_config(config.source)
        host.cards.replace((c.pan, c.test_card()) for c in fresh.cards)
        return len(fresh.cards)

    return reload


def build_host(
    dialect: Dialect, store: Store, terminals: dict[str, TerminalState], clock: Callable[[], datetime], *,
    cards: CardBook, scenarios: ScenarioBook, rules: RuleSettings | None = None, events: bool = False,
    ledger_deadline_s: float = DEFAULT_LEDGER_DEADLINE_S, security: SecuritySettings | None = None,
) -> Host:  # fmt: skip
    """The ``Host``: the machine's monotonic clock for deadlines, fresh random working keys at sign-on, one
    terminal's stateful requests decided one at a time, and an event sink when ``events`` are on."""
    return Host(
        dialect, store, terminals, clock, monotonic=time.monotonic, cards=cards, key_source=random_working_keys,
        rules=rules, scenarios=scenarios, events=EventSink() if events else None,
        ledger_deadline_s=ledger_deadline_s, serialiser=KeyedLocks(), security=security,
    )  # fmt: skip


@dataclass
class RunningApp:
    """A host serving: its server (or its workers) and the MQTT tasks beside it. ``stop`` shuts it all down in order."""

    host: Host
    server: Server | WorkerPool
    background: MqttTasks
    address: tuple[str, int]
    console: RunningConsole | None = None
    console_token: str | None = None  # made at start (to be printed once); None when configured or not needed

    async def stop(self) -> None:
        if self.console is not None:
            await self.console.stop()
        await self.server.stop()  # closes the tracer too, after the last connection's lines; workers before the hub
        await self.background.stop()
        await self.host.store.close()


def check_for_dialect(config: Config, dialect: Dialect) -> None:
    """What the configuration asks of the dialect: keys its MAC algorithm takes, a KSN field for DUKPT terminals, room
    in field 55 for the scenarios' issuer scripts.

    Raises:
        ConfigError: naming the terminal or the scenario; every terminal whose keys its MAC algorithm does not take,
            one line each.
    """
    problems = Problems(config.source)
    mac_key_problems(problems, config.terminals, dialect)
    problems.raise_if_any()
    for index, terminal in enumerate(config.terminals):
        if terminal.bdk is not None and dialect.security.ksn_field is None:
            msg = (f"terminals[{index}].bdk: dialect {dialect.name} has no KSN field for a DUKPT terminal"
                   " (iso87binary and iso87ascii-dukpt have one)")  # fmt: skip
            raise ConfigError(msg)
    for index, configured in enumerate(config.scenarios):
        too_long = overflow(configured.scenario.issuer_scripts, dialect)
        if too_long is not None:
            raise ConfigError(f"scenarios[{index}] ({configured.scenario.name or 'unnamed'}): {too_long}")


async def _start_console(config: Config, running: RunningApp) -> None:
    """The web console beside the host; an address it cannot listen on stops the host again (one line) rather than
    leave it running half-configured."""
    host, relay = running.host, running.background.relay
    from iso_host.console.running import console_token, open_console  # noqa: PLC0415 - see TYPE_CHECKING above

    token, made = console_token(config.http)
    try:
        running.console = await open_console(
            host, config.http, running.server, ledger_url=config.ledger_url, reload_cards=cards_reloader(config, host),
            wake_relay=relay.wake if relay is not None else None, token=token,
        )  # fmt: skip
    except ConfigError:
        await running.stop()
        raise
    running.console_token = token if made else None


async def start(config: Config, trace: TraceOptions | None = None) -> RunningApp:
    """Open the ledger, build the host, listen, and start the MQTT tasks (waiting a moment for the broker).

    Raises:
        ConfigError: a wrong broker setting, trace file or listening address (the ledger is closed again).
    """
    dialect = load_dialect(config.dialect)
    check_for_dialect(config, dialect)
    check_terminal_kinds(config.terminals, dialect, config.source)
    if config.events is not None:
        check_settings(config.events)
    limits = fit_open_file_limit(config.limits, get_logger())  # before the ledger and the broker take their files
    control_secret = load_secret(config.control_secret_file) if config.control_enabled else None
    if config.port != 0:  # a port in use is the answer, not the lock of the ledger a host there holds
        listening_socket(config.host, config.port).close()
    store = await open_ledger(config.ledger_url, group_commit=config.group_commit, pan_key=pan_key_source(config))
    terminals = await open_terminals(store, config.terminals)
    host = build_host(
        dialect, store, terminals, HostClock(local_now), rules=config.rules,
        cards=card_book(((c.pan, c.test_card()) for c in config.cards), store.pan_hash_key),
        scenarios=scenario_book(config, store.pan_hash_key), events=config.events is not None,
        ledger_deadline_s=config.ledger_deadline_s, security=config.security,
    )  # fmt: skip
    ssl_context = server_context(config.tls.cert, config.tls.key, config.tls.client_ca) if config.tls else None
    if trace is not None and config.workers > 1:
        await store.close()
        raise ConfigError("--trace: not with --workers (each worker would need a trace of its own); trace one process")
    if trace is not None and not trace.redact:
        hint = "the trace keeps full PANs, track 2, PIN blocks and sign-on key blocks; add --trace-redact"
        get_logger().warning("trace_not_redacted", trace=str(trace.path), hint=hint)
    try:
        tracer = Tracer(trace.path, dialect, redact=trace.redact, max_bytes=trace.max_bytes) if trace else None
    except ConfigError:
        await store.close()
        raise
    edge: Edge = "streams" if config.edge == "streams" else "protocol"
    server: Server | WorkerPool
    try:
        if config.workers > 1:
            server = WorkerPool(host, config, limits, config.workers)
            address = await server.start()
        else:
            server = Server(host, limits, ssl_context=ssl_context, tracer=tracer, edge=edge)
            try:
                address = await server.start(config.host, config.port)
            except OSError as error:
                raise cannot_listen(config.host, config.port, error) from None
    except ConfigError:
        if tracer is not None:
            await asyncio.to_thread(tracer.close)
        await store.close()
        raise
    background = start_mqtt_tasks(config, host, cards_reloader(config, host), control_secret=control_secret)
    running = RunningApp(host, server, background, address)
    if config.http.enabled:
        await _start_console(config, running)
    if config.log_level.lower() == "debug":  # only then: describing both messages costs every request something
        from iso_host.console.debug_log import with_debug_log  # noqa: PLC0415 - only at debug level

        host.observer = with_debug_log(host.observer, dialect)
    # A script that starts the host and at once sends a control command must find the listener subscribed.
    await background.ready(MQTT_READY_TIMEOUT_S)
    return running
