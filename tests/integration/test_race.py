"""Two `iso-host serve` processes on one PostgreSQL ledger race a void and a reversal for each of 200 sales.

The database decides (conditional updates and unique indexes): every sale ends cancelled exactly once,
whichever host got there first, and the ledger invariants hold.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import psycopg
from databases import fresh_postgres_database

from iso_host.terminal.client import ClientState, TerminalClient
from iso_host.wire import load_dialect

ORIGINALS = 200
TEST_PAN = "4761739001010010"
VOID_STAN_START = 500_000  # the voiding connection's STANs never meet the sales'


@contextmanager
def serve(ledger_url: str, tmp_path: Path, name: str) -> Iterator[tuple[str, int]]:
    """An `iso-host serve` process on the shared ledger; yields its address once it listens."""
    log = (tmp_path / f"{name}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "iso_host.cli.main", "serve", "--port", "0", "--ledger", ledger_url,
         "--log-format", "json", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on" in line, f"{name} did not start: {(tmp_path / f'{name}.log').read_text()}"
        host, _, port = json.loads(line)["event"].removeprefix("listening on ").rpartition(":")
        yield host, int(port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        log.close()
        assert process.returncode == 0, f"{name} exited {process.returncode}"


async def race(first: tuple[str, int], second: tuple[str, int]) -> tuple[list[str], list[str]]:
    dialect = load_dialect("iso87binary")
    seller = TerminalClient(dialect, "TERM0001", "MERCHANT0000001")
    await seller.connect(*first)
    sales = []
    async with seller:
        for index in range(ORIGINALS):
            request = seller.build("sale", datetime.now().astimezone(), amount=100 + index, pan=TEST_PAN)
            response = await seller.request(request)
            assert response.fields["39"] == "00"
            sales.append((request, response))
    voider = TerminalClient(dialect, "TERM0001", "MERCHANT0000001", ClientState(stan=VOID_STAN_START))
    reverser = TerminalClient(dialect, "TERM0001", "MERCHANT0000001")
    await voider.connect(*first)
    await reverser.connect(*second)
    async with voider, reverser:

        async def both(request_and_response: tuple[object, object]) -> tuple[str, str]:
            request, response = request_and_response
            now = datetime.now().astimezone()
            amount = int(request.fields["4"])  # type: ignore[attr-defined]
            void = voider.build("void", now, amount=amount, pan=TEST_PAN, rrn=response.fields["37"])  # type: ignore[attr-defined]
            reversal = reverser.build("reversal", now, amount=amount, pan=TEST_PAN,
                                      original_stan=int(request.fields["11"]))  # type: ignore[attr-defined]  # fmt: skip
            # Each client has one connection, so requests of one kind go in turn; the two kinds race.
            answers = await asyncio.gather(voider.request(void), reverser.request(reversal))
            return answers[0].fields["39"], answers[1].fields["39"]

        results = []
        for pair in sales:
            results.append(await both(pair))
    return [void for void, _ in results], [reversal for _, reversal in results]


def test_void_and_reversal_race_on_two_hosts(tmp_path: Path) -> None:
    """200 sales, each voided through one host and reversed through the other at once: one effect each."""
    with fresh_postgres_database() as url, ExitStack() as stack:
        first = stack.enter_context(serve(url, tmp_path, "first"))
        second = stack.enter_context(serve(url, tmp_path, "second"))
        void_answers, reversal_answers = asyncio.run(race(first, second))
        with psycopg.connect(url) as connection:
            statuses = dict(connection.execute(
                "SELECT rrn, status FROM transactions WHERE kind = 'sale'").fetchall())  # fmt: skip
            cancels = connection.execute(
                "SELECT original_rrn, count(*) FROM transactions WHERE kind IN ('void', 'reversal')"
                " AND status = 'APPROVED' GROUP BY original_rrn").fetchall()  # fmt: skip
    assert len(statuses) == ORIGINALS
    assert set(statuses.values()) <= {"VOIDED", "REVERSED"}, "every sale ends cancelled"
    assert len(cancels) == ORIGINALS
    assert all(count == 1 for _, count in cancels), "no sale is cancelled twice"
    voided = sum(1 for status in statuses.values() if status == "VOIDED")
    assert void_answers.count("00") == voided, "a void answered 00 is exactly a sale left VOIDED"
    assert set(void_answers) <= {"00", "12"}  # 12: ALREADY_CANCELLED in iso87
    assert set(reversal_answers) == {"00"}, "a reversal is answered 00 whether it took effect or not"
