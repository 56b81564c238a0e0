"""How long a 10,000-transaction batch takes to settle, over TCP, against `iso-host serve`.

For each ledger (SQLite, and PostgreSQL when reachable) the script fills RUNS terminals' batches with
--sales sales each (straight into the store), starts the host, and times from writing the 0500 to reading
the 0510: a balanced settlement, and the close after an upload (iso87 0500 96xxxx, where the host loads
the batch and the uploaded records and records the differences). The same-run baseline is the settlement
of an empty batch, so the figures read as "what 10,000 transactions add". Medians of the runs.
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
            await asyncio.gather(*(store.apply([command]) for command in commands))
    finally:
        await store.close()


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


async def settle(port: int, tid: str, totals: BatchTotals, processing_code: str) -> float:
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
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.fields["39"] in ("00", "95"), response.fields
    return elapsed_ms


def serve(url: str, tids: list[str], directory: Path) -> tuple[subprocess.Popen[str], int]:
    config = directory / "host.toml"
    config.write_text(f"[ledger]\nurl = {json.dumps(url)}\n" + "".join(
        f'[[terminals]]\ntid = "{tid}"\nmid = "{MID}"\n' for tid in tids))  # fmt: skip
    executable = shutil.which("iso-host") or "iso-host"
    process = subprocess.Popen([executable, "serve", "--config", str(config), "--port", "0", "--log-level", "warning",
                                "--log-format", "json"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, int(json.loads(line)["event"].rpartition(":")[2])


async def measure(url: str, sales: int, runs: int, directory: Path) -> dict[str, Any]:
    full = [f"F{i:07d}" for i in range(runs)]
    uploaded = [f"U{i:07d}" for i in range(runs)]
    empty = [f"E{i:07d}" for i in range(runs)]
    await fill(url, full + uploaded, sales)
    process, port = serve(url, full + uploaded + empty, directory)
    amount = sum(100 + index % 900 for index in range(1, sales + 1))
    host_totals = BatchTotals(Totals(sales, amount))
    try:
        balanced = [await settle(port, tid, host_totals, "920000") for tid in full]
        baseline = [await settle(port, tid, BatchTotals(), "920000") for tid in empty]
        closes = []
        for tid in uploaded:
            await settle(port, tid, BatchTotals(Totals(sales, amount + 1)), "920000")  # out of balance
            await upload(port, tid, sales)
            closes.append(await settle(port, tid, BatchTotals(Totals(sales, amount + 1)), "960000"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return {"sales_per_batch": sales, "settle_ms": statistics.median(balanced),
            "close_after_upload_ms": statistics.median(closes), "empty_batch_ms": statistics.median(baseline),
            "runs": runs}  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ledgers", default="sqlite,postgresql")
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
            results[ledger] = await measure(url, options.sales, options.runs, directory)
    print(f"settlement of one batch over TCP, median of {options.runs} runs")
    print(f"{'ledger':<12} {'sales':>7} {'settle_ms':>10} {'close_after_upload_ms':>22} {'empty_batch_ms':>15}")
    for ledger, figures in results.items():
        print(f"{ledger:<12} {figures['sales_per_batch']:>7} {figures['settle_ms']:>10.1f} "
              f"{figures['close_after_upload_ms']:>22.1f} {figures['empty_batch_ms']:>15.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
