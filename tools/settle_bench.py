"""How long a big batch (10,000 sales; --sales 100000) takes to settle, over TCP, against `iso-host serve`, and
what the settlement costs the sales of other terminals meanwhile.

For each ledger (SQLite, and PostgreSQL when reachable) the script fills RUNS terminals' batches with
--sales sales each (straight into the store), starts the host, and times from writing the 0500 to reading
the 0510: a balanced settlement, and the close after an upload (iso87 0500 96xxxx, where the host loads
the batch and the uploaded records and records the differences). The same-run baseline is the settlement
of an empty batch, so the figures read as "what 10,000 transactions add". While each balanced settlement
runs, --others other terminals send sales back to back (one connection each, strict request/response); the
p99 and the slowest of the sales that overlapped the settlement are reported, next to the p99 of the same
terminals' sales with no settlement running (the same run's baseline). Medians of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iso_host.ledger import Card, RecordTransaction, TransactionRecord, open_store
from iso_host.ledger.model import BatchTotals, Totals
from iso_host.styles import family_of
from iso_host.terminal.client import TerminalClient
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import load_dialect

MID = "BENCHMERCHANT01"
PAN = "4761739001010010"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
FILL_CHUNK = 1_000  # sales per ledger transaction while filling the batches
UPLOAD_MAX_SALES = 20_000  # bigger batches skip the close-after-upload case (one upload message per sale)
QUIET_S = 1.0


def sale(tid: str, index: int, rrn: str) -> RecordTransaction:
    return RecordTransaction(TransactionRecord(
        kind=Kind.SALE, tid=tid, mid=MID, batch_number=1, stan=f"{index:06d}", rrn=rrn, auth_code="000001",
        amount_minor=100 + index % 900, currency="840", card=Card("476173******0010", "00" * 32),
        status=Status.APPROVED, response_code="00", reason=Reason.APPROVED, mti="0200", processing_code="000000",
        created_at=datetime.now(UTC),
    ))  # fmt: skip


async def fill(url: str, tids: list[str], sales: int) -> None:
    store = open_store(url)
    await store.open()
    try:
        for tid in tids:
            await store.register_terminal(tid, MID)
            commands = [sale(tid, index, await store.next_rrn()) for index in range(1, sales + 1)]
            chunks = [commands[start : start + FILL_CHUNK] for start in range(0, len(commands), FILL_CHUNK)]
            await asyncio.gather(*(store.apply(chunk) for chunk in chunks))
    finally:
        await store.close()


class Sellers:
    """Other terminals selling back to back; each sale's (start, end) in perf_counter seconds."""

    def __init__(self, port: int, tids: list[str]) -> None:
        self.port, self.tids = port, tids
        self.spans: list[tuple[float, float]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _sell(self, tid: str) -> None:
        client = TerminalClient(load_dialect("iso87binary"), tid, MID)
        await client.connect("127.0.0.1", self.port)
        async with client:
            while not self._stop.is_set():
                message = client.build("sale", datetime.now().astimezone(), amount=100, pan=PAN)
                started = time.perf_counter()
                response = await client.request(message)
                self.spans.append((started, time.perf_counter()))
                assert response.fields["39"] == "00", response.fields

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sell(tid)) for tid in self.tids]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def latencies_ms(self, start: float, end: float) -> list[float]:
        """The sales that overlapped [start, end]."""
        return [(done - began) * 1000 for began, done in self.spans if done >= start and began <= end]


def p99(values: list[float]) -> float:
    """The 99th percentile, never beyond the slowest (inclusive: no extrapolation from few values)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def upload(port: int, tid: str, sales: int) -> None:
    """Upload the batch as the terminal has it: one sale's amount differs, so one difference is recorded."""
    client = TerminalClient(load_dialect("iso87binary"), tid, MID)
    await client.connect("127.0.0.1", port)
    async with client:
        for index in range(1, sales + 1):
            amount = 100 + index % 900 + (1 if index == sales else 0)
            message = client.build("batch_upload", datetime.now().astimezone(), original_stan=index, pan=PAN,
                                   amount=amount)  # fmt: skip
            assert (await client.request(message)).fields["39"] == "00"


async def settle(port: int, tid: str, totals: BatchTotals, processing_code: str) -> tuple[float, float, float]:
    """The settlement's time in ms, and when it began and ended (perf_counter seconds)."""
    dialect = load_dialect("iso87binary")
    client = TerminalClient(dialect, tid, MID)
    client.state.stan = 900_000
    await client.connect("127.0.0.1", port)
    async with client:
        t = totals.overall
        message = client.build("settlement", datetime.now().astimezone(), processing_code=processing_code,
                               debit_count=t.debit_count, debit_amount=t.debit_minor, credit_count=0,
                               credit_amount=0)  # fmt: skip
        message.fields.update(family_of(dialect).totals_fields(totals))
        started = time.perf_counter()
        response = await client.request(message)
        ended = time.perf_counter()
    assert response.fields["39"] in ("00", "95"), response.fields
    return (ended - started) * 1000, started, ended


def serve(url: str, tids: list[str], directory: Path) -> tuple[subprocess.Popen[str], int]:
    config = directory / "host.toml"
    config.write_text(f"[ledger]\nurl = {json.dumps(url)}\n" + "".join(
        f'[[terminals]]\ntid = "{tid}"\nmid = "{MID}"\n' for tid in tids))  # fmt: skip
    executable = shutil.which("iso-host") or "iso-host"
    process = subprocess.Popen([executable, "serve", "--config", str(config), "--port", "0", "--no-http",
                                "--log-level", "warning", "--log-format", "json"], stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, int(json.loads(line)["event"].rpartition(":")[2])


async def settle_while_selling(port: int, tids: list[str], others: list[str], totals: BatchTotals
                                ) -> tuple[list[float], list[float], list[float], list[float]]:  # fmt: skip
    """Each batch settled while the other terminals sell; their sales' p99 and slowest during each settlement,
    and the p99 of their sales over an equal stretch with no settlement running just before it."""
    sellers = Sellers(port, others)
    sellers.start()
    settles, during_p99, during_max, quiet_p99 = [], [], [], []
    try:
        for tid in tids:
            quiet_start = time.perf_counter()
            await asyncio.sleep(QUIET_S)  # the benchmark's own pacing: a stretch of sales with no settlement
            quiet = sellers.latencies_ms(quiet_start + 0.1, time.perf_counter())
            elapsed_ms, started, ended = await settle(port, tid, totals, "920000")
            during = sellers.latencies_ms(started, ended)
            settles.append(elapsed_ms)
            during_p99.append(p99(during))
            during_max.append(max(during, default=0.0))
            quiet_p99.append(p99(quiet))
    finally:
        await sellers.stop()
    return settles, during_p99, during_max, quiet_p99


async def measure(url: str, sales: int, runs: int, others: int, directory: Path) -> dict[str, Any]:
    full = [f"F{i:07d}" for i in range(runs)]
    uploaded = [f"U{i:07d}" for i in range(runs)] if sales <= UPLOAD_MAX_SALES else []
    empty = [f"E{i:07d}" for i in range(runs)]
    sellers = [f"S{i:07d}" for i in range(others)]
    await fill(url, full + uploaded, sales)
    process, port = serve(url, full + uploaded + empty + sellers, directory)
    amount = sum(100 + index % 900 for index in range(1, sales + 1))
    host_totals = BatchTotals(Totals(sales, amount))
    try:
        balanced, during_p99, during_max, quiet_p99 = await settle_while_selling(port, full, sellers, host_totals)
        baseline = [(await settle(port, tid, BatchTotals(), "920000"))[0] for tid in empty]
        closes = []
        for tid in uploaded:
            await settle(port, tid, BatchTotals(Totals(sales, amount + 1)), "920000")  # out of balance
            await upload(port, tid, sales)
            closes.append((await settle(port, tid, BatchTotals(Totals(sales, amount + 1)), "960000"))[0])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return {"sales_per_batch": sales, "settle_ms": statistics.median(balanced),
            "close_after_upload_ms": statistics.median(closes) if closes else None,
            "empty_batch_ms": statistics.median(baseline), "runs": runs, "others": others,
            "others_p99_during_ms": statistics.median(during_p99),
            "others_max_during_ms": statistics.median(during_max),
            "others_p99_quiet_ms": statistics.median(quiet_p99)}  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ledgers", default="sqlite,postgresql")
    parser.add_argument("--others", type=int, default=8, help="terminals selling during each settlement")
    options = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="iso-host-settle-") as name:
        directory = Path(name)
        for ledger in options.ledgers.split(","):
            if ledger == "sqlite":
                url = f"sqlite:///{directory / 'settle.db'}"
            else:
                import psycopg  # noqa: PLC0415

                database = "iso_host_settle_bench"
                with psycopg.connect(POSTGRES, autocommit=True) as connection:
                    connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                    connection.execute(f"CREATE DATABASE {database}")
                url = POSTGRES.rpartition("/")[0] + "/" + database
            results[ledger] = await measure(url, options.sales, options.runs, options.others, directory)
    print(f"settlement of one batch over TCP, median of {options.runs} runs")
    print(f"{'ledger':<12} {'sales':>7} {'settle_ms':>10} {'close_after_upload_ms':>22} {'empty_batch_ms':>15} "
          f"{'others':>6} {'p99_quiet_ms':>13} {'p99_during_ms':>14} {'max_during_ms':>14}")  # fmt: skip
    for ledger, figures in results.items():
        close = figures["close_after_upload_ms"]
        close_text = f"{close:>22.1f}" if close is not None else f"{'(skipped)':>22}"
        print(f"{ledger:<12} {figures['sales_per_batch']:>7} {figures['settle_ms']:>10.1f} {close_text} "
              f"{figures['empty_batch_ms']:>15.1f} {figures['others']:>6} {figures['others_p99_quiet_ms']:>13.1f} "
              f"{figures['others_p99_during_ms']:>14.1f} {figures['others_max_during_ms']:>14.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
