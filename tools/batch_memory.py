"""The host's memory across many batch closes, each with its own number of differences (issue 11, defect 9).

Each distinct number of rows in one statement used to be a new statement text that the database driver keeps
(80 closes: RSS 56 -> 99 MB). The script fills CLOSES terminals' batches straight into the ledger, starts
`iso-host serve`, and closes every batch after an out-of-balance settlement (iso87 0500 92xxxx, then 96xxxx
with nothing uploaded, so each close records one difference per sale). Run A gives every batch a different
number of sales (1, 2, ..., CLOSES); the same-run baseline B gives every batch the same number (their mean).
It prints the host's RSS before and after each run and the growth of A over B.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

from settle_bench import MID, POSTGRES, sale, serve, settle

from iso_host.ledger import open_store
from iso_host.ledger.model import BatchTotals, Totals


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def fill(url: str, batches: dict[str, int]) -> None:
    store = open_store(url)
    await store.open()
    try:
        for tid, count in batches.items():
            await store.register_terminal(tid, MID)
            commands = [sale(tid, index, await store.next_rrn()) for index in range(1, count + 1)]
            await asyncio.gather(*(store.apply([command]) for command in commands))
    finally:
        await store.close()


async def run(url: str, batches: dict[str, int], directory: Path) -> tuple[float, float]:
    """Close every batch through the host; the host's RSS (MiB) after start and after the last close."""
    await fill(url, batches)
    process, port = serve(url, list(batches), directory)
    try:
        await settle(port, next(iter(batches)), BatchTotals(Totals(1, 1)), "920000")  # warm: code paths loaded
        before = rss_mib(process.pid)
        for tid in batches:
            wrong = BatchTotals(Totals(1, 1))
            await settle(port, tid, wrong, "920000")  # out of balance: the batch waits for its upload
            await settle(port, tid, wrong, "960000")  # nothing uploaded: one difference per sale, and closed
        after = rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return before, after


def ledger_url(ledger: str, directory: Path, name: str) -> str:
    if ledger == "sqlite":
        return f"sqlite:///{directory / (name + '.db')}"
    import psycopg  # noqa: PLC0415 - only when PostgreSQL is measured

    database = f"iso_host_memory_{name}"
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {database}")
    return POSTGRES.rpartition("/")[0] + "/" + database


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closes", type=int, default=80)
    parser.add_argument("--ledgers", default="sqlite,postgresql")
    options = parser.parse_args()
    closes = options.closes
    distinct = {f"A{i:07d}": i for i in range(1, closes + 1)}
    same = {f"B{i:07d}": (closes + 1) // 2 for i in range(1, closes + 1)}
    print(f"{closes} batch closes per run; RSS of the host in MiB")
    print(f"{'ledger':<12} {'run':<28} {'before':>8} {'after':>8} {'growth':>8}")
    with tempfile.TemporaryDirectory(prefix="iso-host-memory-") as name:
        directory = Path(name)
        for ledger in options.ledgers.split(","):
            growth = {}
            for label, batches in (("B same count (baseline)", same), ("A distinct counts", distinct)):
                before, after = await run(ledger_url(ledger, directory, label[0].lower()), batches, directory)
                growth[label[0]] = after - before
                print(f"{ledger:<12} {label:<28} {before:>8.1f} {after:>8.1f} {after - before:>8.1f}")
            print(f"{ledger:<12} {'A growth - B growth':<28} {'':>8} {'':>8} {growth['A'] - growth['B']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
