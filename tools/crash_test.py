"""Crash test: SIGKILL the host under load, restart it on the same ledger, and check that nothing is lost.

Terminals (one connection each, one request at a time, as a real terminal) send sales, voids, refunds,
reversals and a settlement per round to an ``iso-host serve`` process (dialect iso87binary). After a random
number of answers the host gets SIGKILL and is restarted on the same ledger. Each terminal first settles what
the kill left in doubt, as a terminal does: a sale or a void without an answer is reversed (a reversal is
idempotent), a reversal or a settlement is sent again, a refund stays in doubt (the check accepts it applied
or not). After the last kill the host is stopped and the ledger is read:

(a) every approval a terminal received is in the ledger, with the status the terminal was told last, and a
    sale or void the kill cut off is reversed if it was committed at all;
(b) every acknowledged settlement closed its batch, and each terminal's open batch is the host's;
(c) ``iso-host ledger verify`` exits 0.

    python tools/crash_test.py --ledger sqlite --kills 20 --connections 16 --seed 7
    python tools/crash_test.py --ledger postgresql --kills 10 --connections 16 --seed 7

Each ledger is fresh: a SQLite file in a temporary directory, or a database ``iso_host_crash_<random>``
created on ``--postgres-url`` and dropped afterwards. The run is bounded: ``--kills`` rounds of at most
``--max-answers`` answers (or ``ROUND_TIMEOUT_S``), every request under ``REQUEST_TIMEOUT_S``.

Exit 0 when nothing was lost and the ledger verifies, 1 otherwise (the ledger is then kept for a look).
The test suite runs a short version (tests/integration/test_crash.py) through ``run_ledger``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

from iso_host.config import DEMO_TMK
from iso_host.ledger.model import BatchTotals, Totals
from iso_host.styles import family_of
from iso_host.terminal.client import ClientError, ClientState, TerminalClient
from iso_host.wire import Dialect, Message, load_dialect

DIALECT_NAME: Final = "iso87binary"  # no sign-on, no MAC for a terminal with only a TMK
MID: Final = "CRASHMERCHANT01"  # field 42, 15 characters
PAN: Final = "4761739001010010"
DEFAULT_POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
ISO_HOST: Final = (sys.executable, "-m", "iso_host.cli.main")
START_TIMEOUT_S: Final = 60.0  # a cold interpreter, then migrations on a fresh database
STOP_TIMEOUT_S: Final = 30.0  # the server's grace period plus closing the store
REQUEST_TIMEOUT_S: Final = 15.0  # on loopback an answer slower than this is a hang, not load
ROUND_TIMEOUT_S: Final = 120.0  # a round that never reaches its answer target is killed anyway
VERIFY_TIMEOUT_S: Final = 600.0
KILL_JITTER_S: Final = 0.05  # several group commits (one takes 2 to 50 ms here): the kill lands anywhere in one
MAX_REQUESTS_PER_ROUND: Final = 1_000_000  # per terminal: bounds the loop; the kill ends a round long before
MAX_FINDINGS_SHOWN: Final = 20
KINDS: Final = ("sale", "void", "refund", "reversal")
WEIGHTS: Final = (64, 12, 12, 12)  # sales dominate, as in a shop; the rest needs sales to act on
APPROVED, PARTIALLY_REFUNDED, REFUNDED = "APPROVED", "PARTIALLY_REFUNDED", "REFUNDED"
REVERSED, VOIDED, DECLINED = "REVERSED", "VOIDED", "DECLINED"
assert len(KINDS) == len(WEIGHTS)


class CrashTestError(Exception):
    """The test could not run (the host did not start or stop); not a finding about the ledger."""


@dataclass(eq=False)
class Approval:
    """An answer 00 that created a ledger row (it carried an RRN), and the status the terminal expects now."""

    kind: str  # sale | void | refund | reversal
    tid: str
    stan: str
    rrn: str
    amount: int
    original: Approval | None = None  # void, refund, reversal: the row it acted on, when the terminal knows it
    status: str = APPROVED
    refunded: int = 0  # sales: refunds acknowledged
    refund_in_doubt: int = 0  # sales: a refund the kill cut off, applied or not

    def _after_refunds(self, refunded: int) -> str:
        return APPROVED if refunded == 0 else REFUNDED if refunded == self.amount else PARTIALLY_REFUNDED

    def expected(self) -> set[tuple[str, int]]:
        """The (status, refunded_minor) pairs the ledger may hold for this row."""
        if not self.refund_in_doubt:
            return {(self.status, self.refunded)}
        assert self.kind == "sale"
        assert self.status in (APPROVED, PARTIALLY_REFUNDED), "a sale in doubt is left alone"
        return {(self._after_refunds(r), r) for r in (self.refunded, self.refunded + self.refund_in_doubt)}


@dataclass(frozen=True)
class InDoubt:
    """A request whose answer a kill cut off, still to be settled with the host."""

    kind: str  # sale | void | reversal | settlement (a refund is left in doubt on its sale)
    stan: str = ""  # sale, void: the request's own STAN, which a reversal names
    amount: int = 0
    target: Approval | None = None  # reversal: what it reverses


@dataclass
class Round:
    """One host process's life: load until ``target_answers``, then the kill (None: the last, quiet round)."""

    target_answers: int | None
    terminals: int
    answers: int = 0
    closing: bool = False
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self) -> None:
        self.answers += 1
        if self.target_answers is not None and self.answers >= self.target_answers:
            self.reached.set()


class Terminal:
    """One terminal: its own connection, STAN counter, batch and book of what the host told it."""

    def __init__(self, dialect: Dialect, tid: str, rng: random.Random) -> None:
        self.dialect, self.tid, self.rng = dialect, tid, rng
        self.state = ClientState()
        self.approvals: list[Approval] = []  # everything acknowledged, for the final check
        self.batch: list[Approval] = []  # the open batch: its sales, voids and refunds
        self.pending: list[InDoubt] = []  # cut off by a kill, resolved first thing on the next connection
        self.reversed_in_doubt: list[tuple[str, str]] = []  # (kind, STAN): if in the ledger, it is REVERSED
        self.settled: list[int] = []  # batches the host said it closed
        self.counts: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self._exposed: InDoubt | None = None  # what the request on the wire leaves in doubt if cut off
        self._in_flight = ""

    async def run_round(self, address: tuple[str, int], round_: Round) -> None:
        client = TerminalClient(self.dialect, self.tid, MID, self.state)
        try:
            await client.connect(*address, timeout_s=REQUEST_TIMEOUT_S)
            await self._resolve(client, round_)
            if round_.target_answers is None:
                return
            share = max(1, round_.target_answers // round_.terminals)
            settle_at, settled = self.rng.randint(1, share), False
            for sent in range(MAX_REQUESTS_PER_ROUND):
                if round_.closing:  # an answer written just before the kill was read: this terminal's round is over
                    break
                if not settled and sent >= settle_at:
                    await self._settle(client, round_, retry=False)
                    settled = True
                else:
                    await self._step(client, round_)
        except ClientError as error:
            self._cut_off(round_, error)
        finally:
            await client.close()

    @property
    def cut_off(self) -> int:
        """Requests whose answer a kill cut off, so far."""
        return sum(count for kind, count in self.counts.items() if kind.startswith("cut_off_"))

    def _cut_off(self, round_: Round, error: ClientError) -> None:
        if not round_.closing:
            self.unexpected.append(f"{self.tid}: {self._in_flight or 'connect'} failed with the host up: {error}")
        if not self._in_flight:
            return
        self.counts[f"cut_off_{self._in_flight}"] += 1
        doubt, self._exposed, self._in_flight = self._exposed, None, ""
        if doubt is None:
            return
        if doubt.kind == "refund":
            assert doubt.target is not None
            doubt.target.refund_in_doubt = doubt.amount
        elif doubt not in self.pending:
            self.pending.append(doubt)

    async def _send(self, client: TerminalClient, message: Message, kind: str, doubt: InDoubt | None,
                    round_: Round) -> Message:  # fmt: skip
        self._in_flight, self._exposed = kind, doubt
        response = await client.request(message, timeout_s=REQUEST_TIMEOUT_S)
        self._in_flight, self._exposed = "", None
        round_.answered()
        return response

    def _unexpected(self, what: str, response: Message) -> None:
        self.unexpected.append(f"{self.tid}: {what}: answer {response.fields.get('39')!r}")

    def _approved(self, kind: str, message: Message, response: Message, amount: int,
                  original: Approval | None = None) -> Approval:  # fmt: skip
        approval = Approval(kind, self.tid, message.fields["11"], response.fields["37"], amount, original)
        self.approvals.append(approval)
        self.counts[kind] += 1
        return approval

    async def _step(self, client: TerminalClient, round_: Round) -> None:
        kind = self.rng.choices(KINDS, WEIGHTS)[0]
        sales = [item for item in self.batch if item.kind == "sale"]
        target = self.rng.choice(sales) if sales else None
        if kind == "void" and target is not None and _voidable(target):
            await self._void(client, round_, target)
        elif kind == "refund" and target is not None and _refundable(target):
            await self._refund(client, round_, target)
        elif kind == "reversal" and target is not None:
            if target.status == VOIDED:  # reverse its void instead: the sale is approved again
                target = self._void_of(target)
            if _voidable(target) or target.kind == "void":
                await self._reverse(client, round_, target, retry=False)
            else:
                await self._sale(client, round_)
        else:
            await self._sale(client, round_)

    def _void_of(self, sale: Approval) -> Approval:
        voids = [item for item in self.batch if item.kind == "void" and item.original is sale]
        approved = [item for item in voids if item.status == APPROVED]
        assert len(approved) == 1, "a voided sale has one approved void (and maybe reversed ones) in the batch"
        assert all(item.status == REVERSED for item in voids if item is not approved[0])
        return approved[0]

    async def _sale(self, client: TerminalClient, round_: Round) -> None:
        amount = self.rng.randint(100, 99_999)
        message = client.build("sale", _now(), amount=amount, pan=PAN)
        doubt = InDoubt("sale", message.fields["11"], amount)
        response = await self._send(client, message, "sale", doubt, round_)
        if response.fields.get("39") != "00":
            self._unexpected("sale", response)
            return
        self.batch.append(self._approved("sale", message, response, amount))

    async def _void(self, client: TerminalClient, round_: Round, sale: Approval) -> None:
        message = client.build("void", _now(), amount=sale.amount, pan=PAN, rrn=sale.rrn)
        doubt = InDoubt("void", message.fields["11"], sale.amount)
        response = await self._send(client, message, "void", doubt, round_)
        if response.fields.get("39") != "00":
            self._unexpected(f"void of {sale.rrn}", response)
            return
        sale.status = VOIDED
        self.batch.append(self._approved("void", message, response, sale.amount, sale))

    async def _refund(self, client: TerminalClient, round_: Round, sale: Approval) -> None:
        amount = self.rng.randint(1, sale.amount - sale.refunded)
        message = client.build("refund", _now(), amount=amount, pan=PAN, rrn=sale.rrn)
        response = await self._send(client, message, "refund", InDoubt("refund", amount=amount, target=sale), round_)
        if response.fields.get("39") != "00":
            self._unexpected(f"refund of {sale.rrn}", response)
            return
        sale.refunded += amount
        sale.status = REFUNDED if sale.refunded == sale.amount else PARTIALLY_REFUNDED
        self.batch.append(self._approved("refund", message, response, amount, sale))

    async def _reverse(self, client: TerminalClient, round_: Round, target: Approval, *, retry: bool) -> None:
        """Reverse a sale (it counts nowhere) or a void (its sale is approved again)."""
        message = client.build("reversal", _now(), amount=target.amount, pan=PAN, original_stan=int(target.stan))
        response = await self._send(client, message, "reversal", InDoubt("reversal", target=target), round_)
        if response.fields.get("39") != "00":
            self._unexpected(f"reversal of {target.rrn}", response)
            return
        if "37" in response.fields:
            self._approved("reversal", message, response, target.amount, target)
        elif retry:
            self.counts["reversal_repeated"] += 1  # the cut-off attempt had taken effect
        else:
            self._unexpected(f"reversal of {target.rrn} took no effect", response)
            return
        target.status = REVERSED
        if target.kind == "void":
            assert target.original is not None
            target.original.status = APPROVED

    async def _resolve(self, client: TerminalClient, round_: Round) -> None:
        """Settle, oldest first, what the last kill left in doubt."""
        while self.pending:
            doubt = self.pending[0]
            if doubt.kind == "settlement":
                await self._settle(client, round_, retry=True)
            elif doubt.kind == "reversal":
                assert doubt.target is not None
                await self._reverse(client, round_, doubt.target, retry=True)
            else:
                await self._reverse_in_doubt(client, round_, doubt)
            self.pending.pop(0)

    async def _reverse_in_doubt(self, client: TerminalClient, round_: Round, doubt: InDoubt) -> None:
        """A sale or void without an answer: reverse it by its STAN, whether or not the host committed it."""
        message = client.build("reversal", _now(), amount=doubt.amount, pan=PAN, original_stan=int(doubt.stan))
        response = await self._send(client, message, "reversal", doubt, round_)
        if response.fields.get("39") != "00":
            self._unexpected(f"reversal of the {doubt.kind} in doubt with STAN {doubt.stan}", response)
            return
        self.reversed_in_doubt.append((doubt.kind, doubt.stan))
        if "37" in response.fields:
            self._approved("reversal", message, response, doubt.amount)
            self.counts[f"in_doubt_{doubt.kind}_committed"] += 1
        else:
            self.counts[f"in_doubt_{doubt.kind}_absent"] += 1

    def _totals(self) -> BatchTotals:
        """Gross totals as the host sums them; a refund in doubt is left out (the upload settles it)."""
        debits = [item.amount for item in self.batch if item.kind == "sale" and item.status != REVERSED]
        credits = [item.amount for item in self.batch if item.kind in ("void", "refund") and item.status == APPROVED]
        return BatchTotals(foreign=Totals(len(debits), sum(debits), len(credits), sum(credits)))  # PAN not BIN 62

    async def _settle(self, client: TerminalClient, round_: Round, *, retry: bool) -> None:
        """0500 92; out of balance: upload the debits (0320) and close with 0500 96. 77 on a retry: closed."""
        batch, doubt = self.state.batch, InDoubt("settlement")
        response = await self._send(client, self._settlement(client, "920000"), "settlement", doubt, round_)
        code = response.fields.get("39")
        if code == self.dialect.response_code("OUT_OF_BALANCE"):
            self.counts["settlement_upload"] += 1
            for sale in (item for item in self.batch if item.kind == "sale" and item.status != REVERSED):
                upload = client.build("batch_upload", _now(), original_stan=int(sale.stan), pan=PAN,
                                      amount=sale.amount)  # fmt: skip
                answer = await self._send(client, upload, "settlement", doubt, round_)
                if answer.fields.get("39") != "00":
                    self._unexpected(f"upload of STAN {sale.stan}", answer)
                    return
            response = await self._send(client, self._settlement(client, "960000"), "settlement", doubt, round_)
            code = response.fields.get("39")
        if code == "00":
            self.counts["settlement"] += 1
        elif code == self.dialect.response_code("BATCH_OUT_OF_SYNC") and retry:
            self.counts["settlement_confirmed_on_retry"] += 1  # the cut-off attempt had closed the batch
        else:
            self._unexpected(f"settlement of batch {batch}", response)
            return
        self.settled.append(batch)
        self.state.batch += 1
        self.batch = []

    def _settlement(self, client: TerminalClient, processing_code: str) -> Message:
        totals = self._totals()
        t = totals.overall
        message = client.build("settlement", _now(), processing_code=processing_code, debit_count=t.debit_count,
                               debit_amount=t.debit_minor, credit_count=t.credit_count,
                               credit_amount=t.credit_minor)  # fmt: skip
        message.fields.update(family_of(self.dialect).totals_fields(totals))
        return message


def _voidable(sale: Approval) -> bool:
    return sale.kind == "sale" and sale.status == APPROVED and not sale.refunded and not sale.refund_in_doubt


def _refundable(sale: Approval) -> bool:
    return sale.status in (APPROVED, PARTIALLY_REFUNDED) and not sale.refund_in_doubt and sale.refunded < sale.amount


def _now() -> datetime:
    return datetime.now().astimezone()


def _listening_address(line: bytes) -> tuple[str, int] | None:
    """The address in serve's ``listening on HOST:PORT`` line (JSON), or None for any other line."""
    try:
        event = str(json.loads(line).get("event", ""))
    except (ValueError, AttributeError):
        return None
    if not event.startswith("listening on "):
        return None
    host, _, port = event.removeprefix("listening on ").rpartition(":")
    return host, int(port)


class HostProcess:
    """``iso-host serve`` as a child process: started, killed with SIGKILL, or stopped with SIGTERM."""

    def __init__(self, process: asyncio.subprocess.Process, address: tuple[str, int]) -> None:
        self.process, self.address = process, address
        assert process.stdout is not None
        self._drain = asyncio.create_task(process.stdout.read())  # nothing else reads stdout: keep it flowing

    @classmethod
    async def start(cls, ledger_url: str, config: Path, log_path: Path) -> HostProcess:
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *ISO_HOST, "serve", "--config", str(config), "--port", "0", "--no-http", "--ledger", ledger_url,
                "--log-format", "json", "--log-level", "warning",
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=config.parent,
            )  # fmt: skip
        assert process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while line := await process.stdout.readline():
                    if (address := _listening_address(line)) is not None:
                        return cls(process, address)
        except TimeoutError:
            process.kill()
        await process.wait()
        tail = (await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace"))[-2_000:]
        raise CrashTestError(f"iso-host serve did not start (exit {process.returncode}); its log ends:\n{tail}")

    async def kill(self) -> None:
        self.process.kill()  # SIGKILL: no graceful stop, no flush, no lock release but the kernel's
        await self.process.wait()
        await self._drain
        assert self.process.returncode == -signal.SIGKILL

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self._drain
        if self.process.returncode != 0:
            raise CrashTestError(f"iso-host serve exited {self.process.returncode} on SIGTERM")


@dataclass(frozen=True)
class Settings:
    kills: int = 3
    seed: int = 1
    connections: int = 8  # terminals, one connection each
    min_answers: int = 2_000  # per round, before the kill: drawn at random between these two
    max_answers: int = 20_000

    def __post_init__(self) -> None:
        assert self.kills >= 0
        assert self.connections >= 1
        assert 1 <= self.min_answers <= self.max_answers


def write_config(directory: Path, tids: Sequence[str]) -> Path:
    """The host's configuration: the terminals, and a void window in hours (a run may cross midnight)."""
    entries = "".join(f'[[terminals]]\ntid = "{tid}"\nmid = "{MID}"\ntmk = "{DEMO_TMK}"\n\n' for tid in tids)
    path = directory / "crash-host.toml"
    path.write_text(f"[rules]\nvoid_window = 24\n\n{entries}", encoding="utf-8")
    return path


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _: event.set()


async def drive(ledger_url: str, settings: Settings, directory: Path, say: Callable[[str], object]) -> list[Terminal]:
    """Load, kill, restart, ``settings.kills`` times; then a last start that resolves what is in doubt, and stop."""
    dialect = load_dialect(DIALECT_NAME)
    tids = [f"CRASH{index:03d}" for index in range(1, settings.connections + 1)]
    terminals = [Terminal(dialect, tid, random.Random(f"{settings.seed}/{tid}")) for tid in tids]
    config, rng = write_config(directory, tids), random.Random(settings.seed)
    for index in range(settings.kills + 1):
        host = await HostProcess.start(ledger_url, config, directory / "host.log")
        cut_off_before = sum(t.cut_off for t in terminals)
        last = index == settings.kills
        round_ = Round(None if last else rng.randint(settings.min_answers, settings.max_answers), len(terminals))
        workers = [asyncio.create_task(t.run_round(host.address, round_)) for t in terminals]
        if last:
            await asyncio.gather(*workers)
            await host.stop()
            break
        everyone = asyncio.gather(*workers)
        everyone.add_done_callback(_setter(round_.reached))  # every worker stopped early (anomalies, reported)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ROUND_TIMEOUT_S):
                await round_.reached.wait()
        await asyncio.sleep(rng.uniform(0.0, KILL_JITTER_S))  # not at the target answer: at a moment after it
        round_.closing = True
        await host.kill()
        await everyone
        cut_off = sum(t.cut_off for t in terminals) - cut_off_before
        say(f"  kill {index + 1}/{settings.kills}: {round_.answers:,} answers this round, {cut_off} cut off")
    return terminals


TRANSACTIONS_SQL: Final = (
    "SELECT kind, tid, stan, rrn, amount_minor, status, original_rrn, refunded_minor FROM transactions WHERE mid = %s"
)
BATCHES_SQL: Final = "SELECT tid, batch_number, status FROM batches WHERE mid = %s"
TERMINALS_SQL: Final = "SELECT tid, batch_number FROM terminals WHERE mid = %s"


def query(url: str, sql: str) -> list[dict[str, Any]]:
    """The crash terminals' rows of one query (``%s`` is the MID), straight from the database."""
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True)
        connection.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in connection.execute(sql.replace("%s", "?"), (MID,))]
        finally:
            connection.close()
    with psycopg.connect(url, row_factory=dict_row) as pg:
        return [dict(row) for row in pg.execute(sql.encode(), (MID,))]


def check(terminals: Sequence[Terminal], url: str) -> tuple[list[str], list[str]]:
    """(lost, inconsistent): approvals missing from the ledger, and rows not as the terminals were told."""
    transactions, batches, terminal_rows = (query(url, sql) for sql in (TRANSACTIONS_SQL, BATCHES_SQL, TERMINALS_SQL))
    lost, inconsistent = _check_approvals([a for t in terminals for a in t.approvals], transactions)
    inconsistent += _check_in_doubt(terminals, transactions)
    inconsistent += _check_batches(terminals, batches, terminal_rows)
    return lost, inconsistent


def _check_approvals(approvals: list[Approval], transactions: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    by_rrn = {row["rrn"]: row for row in transactions}
    lost: list[str] = []
    inconsistent: list[str] = []
    for approval in approvals:
        what = f"{approval.kind} RRN {approval.rrn} ({approval.tid} STAN {approval.stan})"
        row = by_rrn.get(approval.rrn)
        if row is None:
            lost.append(f"{what}: acknowledged 00, not in the ledger")
            continue
        original = approval.original.rrn if approval.original else row["original_rrn"]
        told = (approval.kind, approval.tid, approval.stan, approval.amount, original)
        stored = (row["kind"], row["tid"], row["stan"], row["amount_minor"], row["original_rrn"])
        if told != stored:
            inconsistent.append(f"{what}: acknowledged as {told}, stored as {stored}")
        if (row["status"], row["refunded_minor"]) not in approval.expected():
            inconsistent.append(f"{what}: status {row['status']} refunded {row['refunded_minor']},"
                                f" expected one of {sorted(approval.expected())}")  # fmt: skip
    return lost, inconsistent


def _check_in_doubt(terminals: Sequence[Terminal], transactions: list[dict[str, Any]]) -> list[str]:
    """A sale or void the kill cut off and the terminal then reversed is, if the host committed it, REVERSED."""
    by_stan: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in transactions:
        by_stan.setdefault((row["tid"], row["kind"], row["stan"]), []).append(row)
    return [
        f"{kind} {terminal.tid} STAN {stan}, in doubt and then reversed, is {row['status']}"
        for terminal in terminals
        for kind, stan in terminal.reversed_in_doubt
        for row in by_stan.get((terminal.tid, kind, stan), [])
        if row["status"] not in (REVERSED, DECLINED)
    ]


def _check_batches(terminals: Sequence[Terminal], batches: list[dict[str, Any]],
                   terminal_rows: list[dict[str, Any]]) -> list[str]:  # fmt: skip
    status = {(row["tid"], int(row["batch_number"])): row["status"] for row in batches}
    open_batch = {row["tid"]: int(row["batch_number"]) for row in terminal_rows}
    problems = [
        f"{t.tid} batch {batch}: settlement acknowledged, batch {status.get((t.tid, batch), 'missing')}"
        for t in terminals for batch in t.settled if status.get((t.tid, batch)) != "settled"
    ]  # fmt: skip
    problems += [
        f"{t.tid}: the terminal's open batch is {t.state.batch}, the host's {open_batch.get(t.tid)}"
        for t in terminals if open_batch.get(t.tid) != t.state.batch
    ]  # fmt: skip
    return problems


@dataclass
class Report:
    ledger: str
    url: str
    settings: Settings
    seconds: float
    counts: Counter[str]
    lost: list[str]
    inconsistent: list[str]
    unexpected: list[str]
    verify_exit: int
    verify_output: str

    @property
    def passed(self) -> bool:
        return not self.lost and not self.inconsistent and not self.unexpected and self.verify_exit == 0

    def lines(self) -> list[str]:
        c = self.counts
        cut_off = {k.removeprefix("cut_off_"): v for k, v in sorted(c.items()) if k.startswith("cut_off_")}
        lines = [
            f"{self.ledger}: {self.settings.kills} kills in {self.seconds:.1f} s"
            f" (seed {self.settings.seed}, {self.settings.connections} terminals)",
            f"  acknowledged approvals: {c['sale']:,} sales, {c['void']:,} voids, {c['refund']:,} refunds,"
            f" {c['reversal']:,} reversals, {c['settlement']:,} settlements"
            f" ({c['settlement_upload']:,} out of balance, closed after an upload)",
            f"  also confirmed on a retry after a kill: {c['reversal_repeated']:,} reversals,"
            f" {c['settlement_confirmed_on_retry']:,} settlements",
            f"  answers cut off by a kill: {sum(cut_off.values()):,}"
            f" ({', '.join(f'{k} {v:,}' for k, v in cut_off.items()) or 'none'})",
            f"  sales in doubt, reversed: {c['in_doubt_sale_committed']:,} had been committed,"
            f" {c['in_doubt_sale_absent']:,} had not; voids: {c['in_doubt_void_committed']:,} and"
            f" {c['in_doubt_void_absent']:,}",
            f"  lost: {len(self.lost)}",
            f"  inconsistent: {len(self.inconsistent)}",
            f"  unexpected answers: {len(self.unexpected)}",
            f"  ledger verify: {'passed' if self.verify_exit == 0 else 'FAILED'} (exit {self.verify_exit})",
        ]
        for title, findings in (("lost", self.lost), ("inconsistent", self.inconsistent),
                                ("unexpected", self.unexpected)):  # fmt: skip
            lines += [f"    {title}: {finding}" for finding in findings[:MAX_FINDINGS_SHOWN]]
        if self.verify_exit != 0:
            lines += [f"    {line}" for line in self.verify_output.splitlines()[:MAX_FINDINGS_SHOWN]]
        return lines


def verify(url: str) -> tuple[int, str]:
    """``iso-host ledger verify``: its exit status and output (-1 when it overran ``VERIFY_TIMEOUT_S``).

    On PostgreSQL the tables are analyzed first: with no statistics (a fresh database, autovacuum off as on
    some test servers) the planner joins verify's per-original sums by nested loops, minutes for 50,000 rows.
    """
    if not url.startswith("sqlite:"):
        _postgres(url, "ANALYZE")
    try:
        done = subprocess.run([*ISO_HOST, "ledger", "verify", "--ledger", url], capture_output=True, text=True,
                              timeout=VERIFY_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return -1, f"iso-host ledger verify did not finish within {VERIFY_TIMEOUT_S:g} s"
    return done.returncode, done.stdout + done.stderr


def run_ledger(
    ledger: str, url: str, settings: Settings, directory: Path, say: Callable[[str], object] = print
) -> Report:
    """The whole test on one ledger (empty at the start): drive, then check and verify."""
    started = time.monotonic()
    say(f"{ledger}: {settings.kills} kills, {settings.connections} terminals, seed {settings.seed}")
    terminals = asyncio.run(drive(url, settings, directory, say))
    lost, inconsistent = check(terminals, url)
    verify_started = time.monotonic()
    verify_exit, verify_output = verify(url)
    say(f"  ledger verify: exit {verify_exit} in {time.monotonic() - verify_started:.1f} s")
    counts = sum((t.counts for t in terminals), Counter[str]())
    unexpected = [line for t in terminals for line in t.unexpected]
    return Report(ledger, url, settings, time.monotonic() - started, counts, lost, inconsistent, unexpected,
                  verify_exit, verify_output)  # fmt: skip


def _postgres(base_url: str, statement: str) -> None:
    with psycopg.connect(base_url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement.encode())


def _run_one(ledger: str, postgres_url: str, settings: Settings) -> bool:
    """One ledger, fresh: a SQLite file in a temporary directory, or ``iso_host_crash_<random>``.

    A ledger that fails the test is kept, with the host's log, and its place printed.
    """
    directory = Path(tempfile.mkdtemp(prefix=f"iso-host-crash-{ledger}-"))
    database = f"iso_host_crash_{secrets.token_hex(4)}"
    if ledger == "sqlite":
        url = f"sqlite:///{directory / 'ledger.db'}"
    else:
        parts = urlsplit(postgres_url)
        url = urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
        _postgres(postgres_url, f"CREATE DATABASE {database}")
    passed = False
    try:
        report = run_ledger(ledger, url, settings, directory)
        print("\n".join(report.lines()), flush=True)
        passed = report.passed
    finally:
        if passed:
            shutil.rmtree(directory, ignore_errors=True)
            if ledger == "postgresql":
                _postgres(postgres_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        else:
            print(f"  kept for a look: {url} (host log {directory / 'host.log'})", flush=True)
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ledger", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per ledger (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    parser.add_argument("--connections", type=int, default=8, help="terminals, one connection each (default 8)")
    parser.add_argument("--min-answers", type=int, default=2_000, help="answers per round before a kill, at least")
    parser.add_argument("--max-answers", type=int, default=20_000, help="answers per round before a kill, at most")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="server where iso_host_crash_<random> is created and dropped")  # fmt: skip
    options = parser.parse_args(argv)
    seed = options.seed if options.seed is not None else secrets.randbelow(1_000_000)
    try:
        settings = Settings(options.kills, seed, options.connections, options.min_answers, options.max_answers)
    except AssertionError:
        parser.error("--kills >= 0, --connections >= 1 and 1 <= --min-answers <= --max-answers")
    ledgers = ["sqlite", "postgresql"] if options.ledger == "both" else [options.ledger]
    try:
        results = [_run_one(ledger, options.postgres_url, settings) for ledger in ledgers]
    except (CrashTestError, psycopg.OperationalError) as error:
        print(f"crash test could not run: {error}", file=sys.stderr)
        return 2
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
