"""Helpers that run a real host on a loopback port with a real SQLite ledger."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from log_audit import remember_secret

from iso_host.app import build_host, card_book, open_ledger, open_terminals
from iso_host.cli.main import build_parser
from iso_host.clock import local_now
from iso_host.config import DEMO_TMK, TerminalConfig
from iso_host.core.guards import SecuritySettings
from iso_host.core.pipeline import Host
from iso_host.core.rules import RuleSettings
from iso_host.core.scenarios import Scenario, ScenarioBook
from iso_host.core.terminals import TerminalState
from iso_host.core.test_cards import TestCard
from iso_host.events.relay import Relay
from iso_host.ledger import Store, TransactionFilter, TransactionRecord
from iso_host.limits import Limits
from iso_host.mqtt.tasks import MqttTasks, start_relay
from iso_host.mqtt.topics import BrokerSettings
from iso_host.server import Server
from iso_host.terminal.client import TerminalClient
from iso_host.terminal.context import Params, open_session
from iso_host.terminal.session import ACTIONS
from iso_host.wire import Dialect, Message, load_dialect

TID, MID = "TERM0001", "MERCHANT0000001"
TEST_PAN = "4761739001010010"


@dataclass
class RunningHost:
    address: tuple[str, int]
    dialect: Dialect
    server: Server
    store: Store
    ledger_path: Path
    relay: Relay | None = None

    @property
    def host(self) -> Host:
        return self.server.host

    async def records(self) -> list[TransactionRecord]:
        """Every transaction in the ledger, oldest first, whichever store backs the host."""
        return await self.store.transactions(TransactionFilter())

    def client(self, tid: str = TID, mid: str = MID) -> TerminalClient:
        return TerminalClient(self.dialect, tid, mid)

    async def connected_client(self, tid: str = TID, mid: str = MID, *, signon: bool | None = None) -> TerminalClient:
        """A connected terminal; signed on (keys unwrapped, MAC on) where the dialect requires it."""
        client = self.client(tid, mid)
        await client.connect(*self.address)
        if signon if signon is not None else self.dialect.security.require_signon:
            request = client.build("signon", local_now())
            response = await client.request(request)
            assert response.fields["39"] == "00", response
            keys = client.accept_signon(response, request, bytes.fromhex(DEMO_TMK))
            remember_secret(keys.tpk, keys.tak, keys.tdk)
        return client

    def ledger_rows(self) -> list[sqlite3.Row]:
        connection = sqlite3.connect(self.ledger_path)
        connection.row_factory = sqlite3.Row
        try:
            return connection.execute("SELECT * FROM transactions ORDER BY id").fetchall()
        finally:
            connection.close()


def _operator_table(operators: dict[str, bool] | None) -> tuple[tuple[str, bool], ...] | None:
    return tuple(operators.items()) if operators is not None else None


@asynccontextmanager
async def running_host(
    tmp_path: Path,
    dialect_name: str,
    limits: Limits | None = None,
    clock: Callable[[], datetime] = local_now,
    *,
    extra_terminals: dict[str, TerminalState] | None = None,
    cards: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ledger_url: str | None = None,
    rules: RuleSettings | None = None,
    operators: dict[str, bool] | None = None,
    test_cards: dict[str, TestCard] | None = None,
    scenarios: list[Scenario] | None = None,
    events: BrokerSettings | None = None,
    keep_sent_s: float = 3_600.0,
    ledger_deadline_s: float = 5.0,
    security: SecuritySettings | None = None,
) -> AsyncIterator[RunningHost]:
    dialect = load_dialect(dialect_name)
    ledger_path = tmp_path / f"{dialect_name}.db"
    store = await open_ledger(ledger_url or f"sqlite:///{ledger_path}")
    # The same path `iso-host serve` takes: configured terminals plus the sessions the ledger remembers.
    configured = [TerminalConfig(tid, MID, DEMO_TMK, operators=_operator_table(operators)) for tid in (TID, "TERM0002")]
    terminals = await open_terminals(store, configured)
    for extra in (extra_terminals or {}).values():
        await store.register_terminal(extra.tid, extra.mid)
    terminals.update(extra_terminals or {})
    configured_cards = {pan: TestCard(pin=pin) for pan, pin in (cards or {}).items()} | (test_cards or {})
    host = build_host(
        dialect, store, terminals, clock, cards=card_book(configured_cards.items(), store.pan_hash_key),
        scenarios=ScenarioBook(scenarios or ()), rules=rules, events=events is not None,
        ledger_deadline_s=ledger_deadline_s, security=security,
    )  # fmt: skip
    background = (
        start_relay(host, events, keep_sent_s=keep_sent_s, prune_every_s=min(keep_sent_s, 60.0))
        if events is not None else MqttTasks()
    )  # fmt: skip
    server = Server(host, limits or Limits(), ssl_context=ssl_context)
    address = await server.start("127.0.0.1", 0)
    try:
        yield RunningHost(address, dialect, server, store, ledger_path, background.relay)
    finally:
        await server.stop(grace_s=2.0)
        await background.cancel()
        await store.close()


async def exchange_bodies(address: tuple[str, int], *bodies: bytes) -> list[bytes]:
    """Send frame bodies written by hand on one connection, each behind a 2-byte big-endian length (the framing of
    iso87binary, iso87bcd and cup), and return the reply bodies in order."""
    reader, writer = await asyncio.open_connection(*address)
    replies = []
    try:
        for body in bodies:
            writer.write(len(body).to_bytes(2, "big") + body)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            replies.append(await reader.readexactly(size))
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


async def terminal_action(address: tuple[str, int], dialect: str, state: Path, *argv: str) -> Message:
    """`iso-host terminal --to ADDRESS --dialect DIALECT --state STATE ARGV...`, run in this process (what the action
    prints goes to stdout); the state file is saved afterwards, as the command saves it."""
    args = build_parser().parse_args(["terminal", "--to", f"{address[0]}:{address[1]}", "--dialect", dialect,
                                      "--state", str(state), *argv])  # fmt: skip
    session = open_session(args, load_dialect(dialect), args.tid, args.mid)
    await session.connect()
    try:
        return await ACTIONS[args.action](session, Params.from_args(args))
    finally:
        await session.client.close()
        session.state.save(session.state_path)
