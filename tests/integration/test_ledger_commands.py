"""``iso-host ledger report | export | verify | backup`` on ledgers written through the real stores (SQLite and
PostgreSQL), and on ledgers corrupted on purpose with raw SQL, one invariant at a time.

The ledger every test starts from: terminal TERM0001's batch 1 (a domestic sale, a voided sale and its void, a
partly refunded sale and its refund, a reversed sale and its reversal, a declined sale) settled balanced; its
batch 2 settled out of balance after an upload that found a difference; TERM0002's batch 1 still open.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from databases import BACKENDS, fresh_postgres_database, ledger_query, store_url
from hosting import TEST_PAN, running_host
from processes import ISO_HOST, serving, terminal

from iso_host.cli.ledger import ProgressBar, add_ledger_commands
from iso_host.errors import ConfigError, StoreError
from iso_host.ledger import Card, RecordTransaction, Store, TransactionFilter, TransactionRecord, open_store
from iso_host.ledger.invariants import Invariant, key_text
from iso_host.ledger.model import (
    AdvanceBatch,
    BatchDifference,
    BatchItem,
    BatchTotals,
    ChangeStatus,
    Difference,
    RecordDifferences,
    RecordRefund,
    RecordUpload,
    SettleBatch,
    Totals,
)
from iso_host.ledger.reports import (
    EXPORT_COLUMNS,
    BatchReport,
    backup_sqlite,
    batch_reports,
    export_rows,
    verify,
    verify_ledger,
)
from iso_host.ledger.sql import TRANSACTION_COLUMNS, utc_text
from iso_host.ledger.totals_json import optional_totals_from_json, totals_from_json, totals_to_json
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import Message

NOW = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
TID, OTHER_TID, MID = "TERM0001", "TERM0002", "MERCHANT0000001"
DOMESTIC_PAN, FOREIGN_PAN = "622588******1234", "476173******0010"  # BIN 62: UnionPay, domestic in CUP's split
PAN_HASH = "5e" * 32  # the keyed hash the store keeps; no export may show it

SALE_DOMESTIC, SALE_VOIDED, VOID, SALE_REFUNDED, REFUND = (f"{n:012d}" for n in range(1, 6))
SALE_REVERSED, REVERSAL, SALE_DECLINED, SALE_BATCH_2, SALE_OTHER = (f"{n:012d}" for n in range(6, 11))
WRITE_ORDER = [  # the order build_ledger writes them in, and so their id order
    SALE_DOMESTIC, SALE_VOIDED, SALE_REFUNDED, SALE_REVERSED, SALE_DECLINED, VOID, REFUND, REVERSAL, SALE_BATCH_2,
    SALE_OTHER,
]  # fmt: skip

# Gross (DESIGN.md): the voided and the partly refunded sale stay in debits, the void and the refund are
# credits, the reversed sale and the declined one count nowhere.
BATCH_1_TOTALS = BatchTotals(domestic=Totals(1, 1_000, 0, 0), foreign=Totals(2, 5_000, 2, 2_500))
BATCH_2_TOTALS = BatchTotals(domestic=Totals(1, 1_500, 0, 0))
BATCH_2_TERMINAL = BatchTotals(domestic=Totals(2, 2_200, 0, 0))  # the terminal also counts a sale the host never saw
SETTLED_1, SETTLED_2 = NOW + timedelta(hours=1), NOW + timedelta(hours=3, minutes=5)


def record(
    rrn: str, stan: str, amount_minor: int, *, kind: Kind = Kind.SALE, status: Status = Status.APPROVED,
    pan: str = FOREIGN_PAN, batch_number: int = 1, tid: str = TID, original_rrn: str | None = None,
    at: datetime = NOW, currency: str = "840",
) -> TransactionRecord:  # fmt: skip
    approved = status is Status.APPROVED
    processing_code = {Kind.VOID: "020000", Kind.REFUND: "200000"}.get(kind, "000000")
    return TransactionRecord(
        kind=kind, tid=tid, mid=MID, batch_number=batch_number, stan=stan, rrn=rrn,
        auth_code="A00001" if approved else "", amount_minor=amount_minor, currency=currency,
        card=Card(pan, PAN_HASH), status=status, response_code="00" if approved else "55",
        reason=Reason.APPROVED if approved else Reason.PIN_INCORRECT, mti="0400" if kind is Kind.REVERSAL else "0200",
        processing_code=processing_code, created_at=at, original_rrn=original_rrn,
    )  # fmt: skip


def minutes(count: int) -> datetime:
    return NOW + timedelta(minutes=count)


async def build_ledger(url: str) -> None:
    """Write the module docstring's ledger through the real store, as the flows would."""
    store = open_store(url)
    await store.open()
    try:
        for tid in (TID, OTHER_TID):
            await store.register_terminal(tid, MID)
        await store.apply([RecordTransaction(r) for r in (
            record(SALE_DOMESTIC, "000001", 1_000, pan=DOMESTIC_PAN), record(SALE_VOIDED, "000002", 2_000),
            record(SALE_REFUNDED, "000004", 3_000), record(SALE_REVERSED, "000006", 4_000),
            record(SALE_DECLINED, "000008", 5_000, status=Status.DECLINED),
        )])  # fmt: skip
        await store.apply([
            RecordTransaction(record(VOID, "000003", 2_000, kind=Kind.VOID, original_rrn=SALE_VOIDED, at=minutes(10))),
            ChangeStatus(SALE_VOIDED, Status.APPROVED, Status.VOIDED, minutes(10)),
        ])  # fmt: skip
        await store.apply([
            RecordTransaction(record(REFUND, "000005", 500, kind=Kind.REFUND, original_rrn=SALE_REFUNDED,
                                     at=minutes(20))),
            RecordRefund(SALE_REFUNDED, 0, 500, Status.PARTIALLY_REFUNDED, minutes(20)),
        ])  # fmt: skip
        await store.apply([
            RecordTransaction(record(REVERSAL, "000006", 4_000, kind=Kind.REVERSAL, original_rrn=SALE_REVERSED,
                                     at=minutes(30))),
            ChangeStatus(SALE_REVERSED, Status.APPROVED, Status.REVERSED, minutes(30)),
        ])  # fmt: skip
        batch_1 = totals_to_json(BATCH_1_TOTALS)
        await store.apply([SettleBatch(TID, MID, 1, "balanced", True, batch_1, batch_1, SETTLED_1),
                           AdvanceBatch(TID, MID, 2)])  # fmt: skip
        await settle_batch_2_after_upload(store)
        await store.apply([RecordTransaction(record(SALE_OTHER, "000001", 700, tid=OTHER_TID, at=minutes(240)))])
    finally:
        await store.close()


async def settle_batch_2_after_upload(store: Store) -> None:
    """Batch 2: the terminal's totals disagree, it uploads, the host records the sale it never approved."""
    apply = store.apply
    host, terminal = totals_to_json(BATCH_2_TOTALS), totals_to_json(BATCH_2_TERMINAL)
    await apply([RecordTransaction(record(SALE_BATCH_2, "000009", 1_500, pan=DOMESTIC_PAN, batch_number=2,
                                          at=minutes(120)))])  # fmt: skip
    await apply([SettleBatch(TID, MID, 2, "out_of_balance", False, host, terminal, minutes(180))])
    uploaded = ((BatchItem("000009", 1_500, DOMESTIC_PAN), PAN_HASH, False),
                (BatchItem("000011", 700, DOMESTIC_PAN), PAN_HASH, False))  # fmt: skip
    await apply([RecordUpload(TID, MID, 2, uploaded, minutes(182))])
    missing = BatchDifference("000011", Difference.MISSING_ON_HOST, None, 700, masked_pan=DOMESTIC_PAN)
    await apply([SettleBatch(TID, MID, 2, "out_of_balance", True, host, terminal, SETTLED_2),
                 AdvanceBatch(TID, MID, 3), RecordDifferences(TID, MID, 2, (missing,), SETTLED_2)])  # fmt: skip


SETTLED_BATCH_TRIGGERS = ("transactions_into_open_batch", "transactions_settled_unchanged")  # schema v6


def execute_sql(url: str, sql: str, parameters: tuple[object, ...] = ()) -> None:
    """Change the ledger behind the store's back (``?`` placeholders on both backends), past the triggers that
    keep settled batches immutable: as an older iso-host, or an operator's SQL, could have."""
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            for trigger in SETTLED_BATCH_TRIGGERS:
                connection.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            connection.execute(sql, parameters)
            connection.commit()
        finally:
            connection.close()
        return
    with psycopg.connect(url, autocommit=True) as pg, pg.transaction():
        pg.execute("SET LOCAL session_replication_role = replica")  # user triggers do not fire
        pg.execute(sql.replace("?", "%s"), parameters)


def run_command(argv: list[str]) -> int:
    """Parse ``argv`` as ``iso-host ledger`` would (once cli.py wires these commands) and run the handler."""
    parser = argparse.ArgumentParser(prog="iso-host ledger")
    add_ledger_commands(parser.add_subparsers(dest="ledger_command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


@pytest.fixture(scope="module", params=BACKENDS)
def shared_ledger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ledger, built once per backend, for the tests that only read it."""
    with store_url(str(request.param), tmp_path_factory.mktemp("shared")) as url:
        asyncio.run(build_ledger(url))
        yield url


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/ledger.db"
    asyncio.run(build_ledger(url))
    return url


@pytest.fixture(params=BACKENDS)
async def fresh_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The ledger, built for one test that may change it."""
    with store_url(str(request.param), tmp_path) as url:
        await build_ledger(url)
        yield url


def by_key(reports: list[BatchReport]) -> dict[tuple[str, int], BatchReport]:
    return {(r.tid, r.batch_number): r for r in reports}


class TestReport:
    def test_totals_are_gross(self, shared_ledger: str) -> None:
        """A voided sale stays in debits, void and refund are credits, reversed and declined count nowhere."""
        batch = by_key(batch_reports(shared_ledger))[TID, 1]
        assert batch.host_totals == BATCH_1_TOTALS
        assert batch.host_totals.overall == Totals(3, 6_000, 2, 2_500)
        assert (batch.status, batch.result, batch.settled_at) == ("settled", "balanced", utc_text(SETTLED_1))
        assert batch.recorded_host_totals == BATCH_1_TOTALS
        assert batch.terminal_totals == BATCH_1_TOTALS
        assert batch.counts == (
            ("refund", "APPROVED", 1), ("reversal", "APPROVED", 1), ("sale", "APPROVED", 1), ("sale", "DECLINED", 1),
            ("sale", "PARTIALLY_REFUNDED", 1), ("sale", "REVERSED", 1), ("sale", "VOIDED", 1), ("void", "APPROVED", 1),
        )  # fmt: skip
        assert batch.transaction_count == 8
        assert batch.differences == ()

    def test_every_batch_in_key_order(self, shared_ledger: str) -> None:
        """Batches named by transactions or settlements, sorted by terminal, merchant and number."""
        reports = batch_reports(shared_ledger)
        assert [(r.tid, r.mid, r.batch_number) for r in reports] == [(TID, MID, 1), (TID, MID, 2), (OTHER_TID, MID, 1)]

    def test_out_of_balance_batch_shows_both_sides_and_differences(self, shared_ledger: str) -> None:
        """An uploaded batch reports the terminal's totals and the difference the upload found."""
        batch = by_key(batch_reports(shared_ledger))[TID, 2]
        assert (batch.status, batch.result, batch.settled_at) == ("settled", "out_of_balance", utc_text(SETTLED_2))
        assert batch.host_totals == BATCH_2_TOTALS
        assert batch.terminal_totals == BATCH_2_TERMINAL
        assert batch.differences == (
            BatchDifference("000011", Difference.MISSING_ON_HOST, None, 700, None, DOMESTIC_PAN),
        )

    def test_open_batch(self, shared_ledger: str) -> None:
        """A batch no settlement has touched is open, with host totals only."""
        batch = by_key(batch_reports(shared_ledger))[OTHER_TID, 1]
        assert (batch.status, batch.result, batch.settled_at) == ("open", None, None)
        assert batch.host_totals == BatchTotals(foreign=Totals(1, 700, 0, 0))
        assert batch.recorded_host_totals is None
        assert batch.terminal_totals is None

    @pytest.mark.parametrize(
        ("tid", "batch", "expected"),
        [(OTHER_TID, None, [(OTHER_TID, 1)]), (None, 2, [(TID, 2)]), (TID, 1, [(TID, 1)]), ("NOBODY00", None, [])],
    )
    def test_filters(self, shared_ledger: str, tid: str | None, batch: int | None, expected: list[object]) -> None:
        """--tid and --batch narrow the report, and together name one batch."""
        assert [(r.tid, r.batch_number) for r in batch_reports(shared_ledger, tid=tid, batch=batch)] == expected

    async def test_totals_match_the_settlement_query(self, shared_ledger: str) -> None:
        """The report's totals, summed for all batches at once, equal the store's per-batch BATCH_TOTALS."""
        store = open_store(shared_ledger)
        await store.open()
        try:
            for report in batch_reports(shared_ledger):
                view = await store.batch_view(report.tid, report.mid, report.batch_number, with_items=False)
                assert view.host_totals == report.host_totals, report
        finally:
            await store.close()

    def test_command_prints_a_table(self, shared_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
        """The table shows state, counts, host and terminal totals, and the differences, per batch; a CUP host's
        domestic and foreign cards apart."""
        assert run_command(["report", "--ledger", shared_ledger, "--tid", TID, "--dialect", "cup"]) == 0
        out = capsys.readouterr().out
        assert f"{TID} {MID} batch 1: settled, balanced, settled {utc_text(SETTLED_1)}" in out
        assert "transactions: 8 (refund APPROVED 1, reversal APPROVED 1," in out
        host = out.splitlines()[3:6]
        assert [line.split() for line in host] == [
            ["host", "(now)", "840", "domestic", "1", "10.00", "0", "0.00"],
            ["foreign", "2", "50.00", "2", "25.00"],
            ["overall", "3", "60.00", "2", "25.00"],
        ]  # fmt: skip
        assert f"{TID} {MID} batch 2: settled, out_of_balance" in out
        assert "STAN 000011 missing_on_host" in out
        assert re.search(r"host +- terminal +7\.00 RRN - PAN 622588\*{6}1234", out)
        assert OTHER_TID not in out

    def test_command_prints_json(self, shared_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints one object per batch, amounts in minor units."""
        assert run_command(["report", "--ledger", shared_ledger, "--json", "--batch", "1"]) == 0
        documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(d["tid"], d["status"]) for d in documents] == [(TID, "settled"), (OTHER_TID, "open")]
        assert documents[0]["currencies"] == ["840"]
        assert documents[0]["host_totals"] == {"840": {"overall": {
            "debit_count": 3, "debit_minor": 6_000, "credit_count": 2, "credit_minor": 2_500,
        }}}  # fmt: skip
        assert documents[0]["counts"]["sale"]["VOIDED"] == 1
        assert documents[1]["terminal_totals"] is None

    def test_command_with_nothing_to_show(self, shared_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A filter that matches nothing says so."""
        assert run_command(["report", "--ledger", shared_ledger, "--tid", "NOBODY00"]) == 0
        assert capsys.readouterr().out == "no batches\n"


class TestExport:
    def test_csv_has_every_row_masked(self, shared_ledger: str) -> None:
        """CSV: a header and every transaction in id order, masked PAN only, never the PAN hash."""
        out = io.StringIO()
        assert export_rows(shared_ledger, "csv", out, None) == len(WRITE_ORDER)
        text = out.getvalue()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert tuple(rows[0]) == EXPORT_COLUMNS
        assert [row["rrn"] for row in rows] == WRITE_ORDER
        assert [int(row["id"]) for row in rows] == sorted(int(row["id"]) for row in rows)
        assert {row["masked_pan"] for row in rows} == {DOMESTIC_PAN, FOREIGN_PAN}
        assert "pan_hash" not in text
        assert PAN_HASH not in text
        assert rows[0]["original_rrn"] == ""

    def test_jsonl_has_every_row_masked(self, shared_ledger: str) -> None:
        """JSON lines: one object per transaction in id order, typed values, never the PAN hash."""
        out = io.StringIO()
        assert export_rows(shared_ledger, "jsonl", out) == len(WRITE_ORDER)
        rows = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [row["rrn"] for row in rows] == WRITE_ORDER
        assert all(tuple(row) == EXPORT_COLUMNS for row in rows)
        assert PAN_HASH not in out.getvalue()
        void = next(row for row in rows if row["rrn"] == VOID)
        assert (void["kind"], void["amount_minor"], void["original_rrn"]) == ("void", 2_000, SALE_VOIDED)
        assert set(EXPORT_COLUMNS) == {"id", *TRANSACTION_COLUMNS} - {"pan_hash"}

    def test_streams_in_chunks(self, shared_ledger: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rows arrive a chunk at a time, and progress is told after each chunk."""
        monkeypatch.setattr("iso_host.ledger.reports.EXPORT_CHUNK_ROWS", 3)
        calls: list[tuple[int, int]] = []
        export_rows(shared_ledger, "jsonl", io.StringIO(), lambda done, total: calls.append((done, total)))
        assert calls == [(3, 10), (6, 10), (9, 10), (10, 10)]

    def test_a_failed_write_surfaces_as_itself(self, shared_ledger: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A reader that goes away mid-export (``| head``) stops it with its own error, the cursor closed."""
        monkeypatch.setattr("iso_host.ledger.reports.EXPORT_CHUNK_ROWS", 3)

        class ClosedPipe(io.StringIO):
            def write(self, text: str) -> int:
                if self.tell() > 200:
                    raise BrokenPipeError
                return super().write(text)

        with pytest.raises(BrokenPipeError):
            export_rows(shared_ledger, "jsonl", ClosedPipe())
        assert len(batch_reports(shared_ledger)) == 3, "the ledger is still readable afterwards"

    def test_unknown_format(self, shared_ledger: str) -> None:
        """A format other than csv or jsonl is a configuration error naming the flag."""
        with pytest.raises(ConfigError, match="--format: expected one of csv, jsonl, got 'xml'"):
            export_rows(shared_ledger, "xml", io.StringIO())

    def test_command_writes_the_file(
        self, sqlite_ledger: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--output writes the file (and nothing half-written beside it) and says how many rows went."""
        target = tmp_path / "out.csv"
        assert run_command(["export", "--ledger", sqlite_ledger, "--format", "csv", "--output", str(target)]) == 0
        assert len(target.read_text(encoding="utf-8").splitlines()) == 1 + len(WRITE_ORDER)
        assert capsys.readouterr().err == f"exported {len(WRITE_ORDER)} transactions to {target}\n"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []

    def test_command_writes_stdout(self, sqlite_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Without --output the rows go to standard output, and no bar is drawn where stderr is no terminal."""
        assert run_command(["export", "--ledger", sqlite_ledger, "--format", "jsonl"]) == 0
        captured = capsys.readouterr()
        assert len(captured.out.splitlines()) == len(WRITE_ORDER)
        assert captured.err == ""

    def test_command_output_in_a_missing_directory(self, sqlite_ledger: str, tmp_path: Path) -> None:
        """An output file that cannot be created is a one-line configuration error."""
        target = tmp_path / "missing" / "out.csv"
        with pytest.raises(ConfigError, match=r"^--output: cannot write .*out\.csv: No such file or directory$"):
            run_command(["export", "--ledger", sqlite_ledger, "--format", "csv", "--output", str(target)])


class TestProgressBar:
    def test_draws_in_place(self) -> None:
        """The bar redraws its one line with the percentage and the rows done."""
        stream = io.StringIO()
        bar = ProgressBar(stream, min_rows=10, width=10)
        bar(25, 100)
        bar(25, 100)  # the same percentage is not drawn again
        bar(100, 100)
        bar.finish()
        assert stream.getvalue() == "\r[##--------]  25% 25/100 rows\r[##########] 100% 100/100 rows\n"

    def test_small_exports_draw_nothing(self) -> None:
        """At or under min_rows there is no bar, and finish() writes nothing."""
        stream = io.StringIO()
        bar = ProgressBar(stream)
        bar(10_000, 10_000)
        bar.finish()
        assert stream.getvalue() == ""


_COPY_OF_VOID = (
    f"INSERT INTO transactions ({', '.join(TRANSACTION_COLUMNS)}) SELECT "
    + ", ".join({"stan": "?", "rrn": "?"}.get(column, column) for column in TRANSACTION_COLUMNS)
    + " FROM transactions WHERE rrn = ?"
)
LATER = utc_text(NOW + timedelta(days=1))
CORRUPTIONS = [  # (statement, parameters, the invariant it breaks, the subject the violation names)
    pytest.param(_COPY_OF_VOID, ("000099", "000000000099", VOID), Invariant.CANCELLED_AT_MOST_ONCE, SALE_VOIDED,
                 id="a-second-approved-void"),
    pytest.param("UPDATE transactions SET status = 'VOIDED' WHERE rrn = ?", (SALE_DOMESTIC,),
                 Invariant.STATUS_MATCHES_LINKS, SALE_DOMESTIC, id="b-voided-without-a-void"),
    pytest.param("UPDATE transactions SET status = 'APPROVED' WHERE rrn = ?", (SALE_REVERSED,),
                 Invariant.STATUS_MATCHES_LINKS, SALE_REVERSED, id="b-approved-with-a-reversal"),
    pytest.param("UPDATE transactions SET refunded_minor = 600 WHERE rrn = ?", (SALE_REFUNDED,),
                 Invariant.REFUNDS_ADD_UP, SALE_REFUNDED, id="c-refunded-minor-wrong"),
    pytest.param("UPDATE transactions SET status = 'REFUNDED' WHERE rrn = ?", (SALE_REFUNDED,),
                 Invariant.REFUNDS_ADD_UP, SALE_REFUNDED, id="c-refunded-in-full-by-half"),
    pytest.param("UPDATE transactions SET amount_minor = 999, updated_at = ? WHERE rrn = ?", (LATER, SALE_DOMESTIC),
                 Invariant.SETTLED_BATCH_UNCHANGED, SALE_DOMESTIC, id="d-changed-after-settlement"),
    pytest.param("UPDATE batches SET host_totals = ? WHERE tid = ? AND batch_number = 1",
                 (totals_to_json(BATCH_2_TOTALS), TID), Invariant.STORED_TOTALS_MATCH, key_text((TID, MID, 1)),
                 id="e-host-totals-altered"),
    pytest.param("UPDATE batches SET host_totals = 'garbage' WHERE tid = ? AND batch_number = 1", (TID,),
                 Invariant.STORED_TOTALS_MATCH, key_text((TID, MID, 1)), id="e-host-totals-unreadable"),
    pytest.param("UPDATE transactions SET response_code = '00' WHERE rrn = ?", (SALE_DECLINED,),
                 Invariant.EVERY_00_IS_AN_APPROVAL, SALE_DECLINED, id="f-declined-answered-00"),
]  # fmt: skip


class TestVerify:
    def test_clean_ledger(self, shared_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
        """The ledger as the flows write it breaks no invariant; the command says what it checked."""
        assert verify(shared_ledger) == []
        assert run_command(["verify", "--ledger", shared_ledger]) == 0
        assert capsys.readouterr().out == "ledger ok: 10 transactions, 3 batches checked\n"

    @pytest.mark.parametrize(("sql", "parameters", "invariant", "subject"), CORRUPTIONS)
    def test_corruption_is_found(
        self, fresh_ledger: str, sql: str, parameters: tuple[object, ...], invariant: Invariant, subject: str
    ) -> None:
        """A ledger changed behind the store's back fails verify, naming the invariant and the row or batch."""
        execute_sql(fresh_ledger, sql, parameters)
        found = {(v.invariant, v.subject) for v in verify(fresh_ledger)}
        assert (invariant, subject) in found

    def test_command_prints_one_line_per_violation(
        self, sqlite_ledger: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each violation is one line, invariant first; the exit status is 1."""
        execute_sql(sqlite_ledger, "UPDATE transactions SET response_code = '00' WHERE rrn = ?", (SALE_DECLINED,))
        execute_sql(sqlite_ledger, "UPDATE transactions SET status = 'VOIDED' WHERE rrn = ?", (SALE_DOMESTIC,))
        assert run_command(["verify", "--ledger", sqlite_ledger]) == 1
        assert capsys.readouterr().out.splitlines() == [
            f"status-matches-links: {SALE_DOMESTIC}: sale VOIDED with 0 approved void(s)"
            " and 0 approved reversal(s) naming it",
            f"every-00-is-an-approval: {SALE_DECLINED}: sale DECLINED, answered 00",
        ]

    def test_counts_what_it_checked(self, sqlite_ledger: str) -> None:
        """The verification reports how many transactions and batches the snapshot held."""
        verification = verify_ledger(sqlite_ledger)
        assert (verification.violations, verification.transaction_count, verification.batch_count) == ((), 10, 3)


class TestBackup:
    async def test_copy_while_a_store_writes(self, sqlite_ledger: str, tmp_path: Path) -> None:
        """A backup taken while the host's store holds the ledger and writes to it is one consistent snapshot."""
        store = open_store(sqlite_ledger)
        await store.open()
        destination = tmp_path / "copy.db"
        try:
            before = len(await store.transactions(TransactionFilter()))
            writes = asyncio.gather(*(
                store.apply([RecordTransaction(record(f"{500 + n:012d}", f"{500 + n:06d}", 100, tid=OTHER_TID))])
                for n in range(200)
            ))  # fmt: skip
            pages = await asyncio.to_thread(backup_sqlite, sqlite_ledger, destination)
            await writes
            after = len(await store.transactions(TransactionFilter()))
        finally:
            await store.close()
        assert pages > 0
        copy = sqlite3.connect(destination)
        try:
            assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            copied = copy.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
        finally:
            copy.close()
        assert before <= copied <= after
        assert verify(f"sqlite:///{destination}") == []

    def test_copy_has_every_row(self, sqlite_ledger: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The command copies the whole ledger and says how many pages it copied."""
        destination = tmp_path / "copy.db"
        assert run_command(["backup", str(destination), "--ledger", sqlite_ledger]) == 0
        assert capsys.readouterr().out.startswith(f"backed up {sqlite_ledger} to {destination} (")
        copy_url = f"sqlite:///{destination}"
        assert batch_reports(copy_url) == batch_reports(sqlite_ledger)
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []

    def test_refuses_postgresql(self, tmp_path: Path) -> None:
        """PostgreSQL has its own tool; the message names it, and never the password."""
        url = "postgresql://iso:s3cret@127.0.0.1:5432/ledger"
        with pytest.raises(ConfigError, match="pg_dump --format=custom --file FILE DBNAME") as raised:
            backup_sqlite(url, tmp_path / "copy.dump")
        assert "s3cret" not in str(raised.value)
        assert not (tmp_path / "copy.dump").exists()

    def test_refuses_an_existing_destination(self, sqlite_ledger: str, tmp_path: Path) -> None:
        """A backup never overwrites a file."""
        destination = tmp_path / "copy.db"
        destination.write_text("keep me", encoding="utf-8")
        with pytest.raises(ConfigError, match="exists"):
            backup_sqlite(sqlite_ledger, destination)
        assert destination.read_text(encoding="utf-8") == "keep me"

    def test_missing_ledger(self, tmp_path: Path) -> None:
        """Backing up a file that is not there is a store error naming it."""
        url = f"sqlite:///{tmp_path}/nothing.db"
        with pytest.raises(StoreError, match=f"^ledger {url}: no such file$"):
            backup_sqlite(url, tmp_path / "copy.db")


def export_csv(url: str) -> int:
    return export_rows(url, "csv", io.StringIO())


READERS = [pytest.param(batch_reports, id="report"), pytest.param(export_csv, id="export"),
           pytest.param(verify, id="verify")]  # fmt: skip


class TestErrors:
    @pytest.mark.parametrize("read", READERS)
    def test_missing_sqlite_file(self, tmp_path: Path, read: Callable[[str], object]) -> None:
        """A ledger file that is not there is one line naming the URL, and is not created."""
        url = f"sqlite:///{tmp_path}/nothing.db"
        with pytest.raises(StoreError, match=f"^ledger {url}: no such file$"):
            read(url)
        assert not (tmp_path / "nothing.db").exists()

    @pytest.mark.parametrize("read", READERS)
    def test_unreachable_postgresql(self, read: Callable[[str], object]) -> None:
        """A server that cannot be reached is one line naming the URL without its password."""
        with pytest.raises(StoreError, match=r"^ledger postgresql://iso@127\.0\.0\.1:1/ledger: ") as raised:
            read("postgresql://iso:s3cret@127.0.0.1:1/ledger")
        assert "s3cret" not in str(raised.value)
        assert "\n" not in str(raised.value)

    def test_not_a_ledger(self, tmp_path: Path) -> None:
        """A SQLite file without the ledger's tables is refused as such."""
        path = tmp_path / "other.db"
        sqlite3.connect(path).close()
        with pytest.raises(StoreError, match="not an iso-host ledger"):
            verify(f"sqlite:///{path}")

    def test_older_schema(self, tmp_path: Path) -> None:
        """A ledger from before settlement (schema 3) asks to be migrated by the host first."""
        path = tmp_path / "old.db"
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE transactions (id INTEGER PRIMARY KEY)")
        connection.execute("PRAGMA user_version = 3")
        connection.close()
        with pytest.raises(StoreError, match="schema version 3 predates settlement; run iso-host serve once"):
            batch_reports(f"sqlite:///{path}")

    def test_unknown_scheme(self) -> None:
        """Only sqlite:/// and postgresql:// ledgers exist."""
        with pytest.raises(ConfigError, match="--ledger: expected sqlite:///FILE or postgresql://"):
            batch_reports("mysql://localhost/ledger")

    def test_unreadable_stored_totals(self, sqlite_ledger: str) -> None:
        """A report cannot show totals it cannot read; it says which batch, and where to look."""
        execute_sql(sqlite_ledger, "UPDATE batches SET terminal_totals = 'garbage' WHERE batch_number = 2")
        with pytest.raises(StoreError, match=r"batch 2: terminal_totals unreadable .*; see iso-host ledger verify"):
            batch_reports(sqlite_ledger)


class TestTotalsJson:
    def test_round_trip(self) -> None:
        """What settlement stores reads back as the same totals."""
        assert totals_from_json(totals_to_json(BATCH_1_TOTALS)) == BATCH_1_TOTALS
        assert json.loads(totals_to_json(BATCH_2_TOTALS))["domestic"] == {
            "credit_count": 0, "credit_minor": 0, "debit_count": 1, "debit_minor": 1_500,
        }  # fmt: skip

    @pytest.mark.parametrize("text", [None, "{}", " {} "])
    def test_no_totals(self, text: str | None) -> None:
        """NULL and the empty document (the end of a CUP upload) mean the terminal reported none."""
        assert optional_totals_from_json(text) is None

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[1]", "expected an object"),
            ("{", "not JSON"),
            ('{"domestic": {}}', "'domestic' must have exactly debit_count, debit_minor, credit_count, credit_minor"),
            ('{"domestic": {"debit_count": 1, "debit_minor": 1, "credit_count": 0, "credit_minor": 0}}',
             "'foreign' is missing"),
            (totals_to_json(BATCH_1_TOTALS).replace('"debit_count": 2', '"debit_count": -2'),
             r"foreign\.debit_count must be an integer >= 0, got -2"),
            (totals_to_json(BATCH_1_TOTALS).replace('"debit_count": 2', '"debit_count": true'),
             r"foreign\.debit_count must be an integer >= 0, got True"),
        ],
    )  # fmt: skip
    def test_refuses_other_documents(self, text: str, message: str) -> None:
        """Anything else is a ValueError that says what is wrong."""
        with pytest.raises(ValueError, match=message):
            totals_from_json(text)


class TestWrittenByTheHost:
    async def test_a_day_of_cancellations_verifies_clean(self, tmp_path: Path) -> None:
        """What the real flows write (a void reversed, then voided again, refunds, refusals, a repeated
        reversal) breaks no invariant, checked while the host still holds the ledger; its totals are gross."""
        async with running_host(tmp_path, "iso87binary") as host, await host.connected_client(TID) as client:
            now = datetime.now(UTC)

            async def send(template: str, **values: object) -> tuple[Message, Message]:
                request = client.build(template, now, pan=TEST_PAN, **values)
                return request, await client.request(request)

            _, sold_a = await send("sale", amount=1_000)
            _, sold_b = await send("sale", amount=1_000)
            sale_c, sold_c = await send("sale", amount=1_000)
            void_a, _ = await send("void", amount=1_000, rrn=sold_a.fields["37"])
            answers = [
                (await send("reversal", amount=1_000, original_stan=int(void_a.fields["11"])))[1],  # restores A
                (await send("void", amount=1_000, rrn=sold_a.fields["37"]))[1],  # A voided again
                (await send("refund", amount=300, rrn=sold_b.fields["37"]))[1],
                (await send("refund", amount=700, rrn=sold_b.fields["37"]))[1],  # B refunded in full
                (await send("reversal", amount=1_000, original_stan=int(sale_c.fields["11"])))[1],
                (await send("reversal", amount=1_000, original_stan=int(sale_c.fields["11"])))[1],  # a repeat
                (await send("void", amount=1_000, rrn=sold_c.fields["37"]))[1],  # refused, recorded DECLINED
            ]
            assert [a.fields["39"] for a in answers] == ["00"] * 6 + [host.dialect.response_code("ALREADY_CANCELLED")]
            url = f"sqlite:///{host.ledger_path}"
            assert verify(url) == []
            statuses = {r.rrn: r.status for r in await host.records()}
        assert [statuses[s.fields["37"]] for s in (sold_a, sold_b, sold_c)] == [
            Status.VOIDED, Status.REFUNDED, Status.REVERSED,
        ]  # fmt: skip
        (report,) = batch_reports(url)
        assert report.host_totals == BatchTotals(foreign=Totals(2, 2_000, 3, 2_000))


def iso_host(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``iso-host ARGS`` as a user runs it, in ``cwd``."""
    return subprocess.run([*ISO_HOST, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


async def build_two_currency_batch(url: str) -> None:
    """An iso87 host's batch of a 10.00 sale in 840 on a foreign card and a 5.00 sale in 156 on a UnionPay card,
    settled balanced: the host stored its totals split by card (as it always does), the terminal reported one set."""
    store = open_store(url)
    await store.open()
    try:
        await store.register_terminal(TID, MID)
        in_156 = record(SALE_VOIDED, "000002", 500, pan=DOMESTIC_PAN, currency="156")
        await store.apply([RecordTransaction(record(SALE_DOMESTIC, "000001", 1_000)), RecordTransaction(in_156)])
        host = totals_to_json(BatchTotals(domestic=Totals(1, 500, 0, 0), foreign=Totals(1, 1_000, 0, 0)))
        terminal = totals_to_json(BatchTotals(domestic=Totals(2, 1_500, 0, 0)))
        await store.apply([SettleBatch(TID, MID, 1, "balanced", True, host, terminal, SETTLED_1)])
    finally:
        await store.close()


class TestReportPerCurrency:
    """`ledger report` on an iso87 ledger: totals per currency, no domestic/foreign split the dialect lacks."""

    def test_iso87_totals_per_currency(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/l.db"
        asyncio.run(build_two_currency_batch(url))
        result = iso_host(tmp_path, "ledger", "report", "--ledger", url)
        assert (result.returncode, result.stderr) == (0, "")
        lines = [line.split() for line in result.stdout.splitlines()]
        assert ["host", "(now)", "156", "1", "5.00", "0", "0.00"] in lines
        assert ["840", "1", "10.00", "0", "0.00"] in lines  # the host's second currency, never added to the first
        assert not any("15.00" in line for line in lines if line[0] == "host")
        assert ["terminal", "all", "2", "15.00", "0", "0.00"] in lines
        assert "a settlement carries one set of totals" in result.stdout
        assert "foreign" not in result.stdout
        assert "domestic" not in result.stdout
        documents = [json.loads(line) for line in iso_host(tmp_path, "ledger", "report", "--ledger", url,
                                                            "--json").stdout.splitlines()]  # fmt: skip
        assert documents[0]["currencies"] == ["156", "840"]
        assert documents[0]["host_totals"]["840"] == {"overall": asdict(Totals(1, 1_000, 0, 0))}
        assert documents[0]["terminal_totals"] == {"overall": asdict(Totals(2, 1_500, 0, 0))}

    def test_cup_keeps_domestic_and_foreign_apart(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/l.db"
        asyncio.run(build_two_currency_batch(url))
        result = iso_host(tmp_path, "ledger", "report", "--ledger", url, "--dialect", "cup")
        assert result.returncode == 0, result.stderr
        lines = [line.split() for line in result.stdout.splitlines()]
        assert ["host", "(now)", "156", "domestic", "1", "5.00", "0", "0.00"] in lines
        assert ["foreign", "1", "10.00", "0", "0.00"] in lines

    def test_an_iso87_day_reports_balanced_without_a_split(self, tmp_path: Path) -> None:
        """The issue's walk: an iso87 host, a sale on the demo (non-UnionPay) card, settled; the report agrees."""
        config = tmp_path / "host.toml"
        config.write_text(f'[ledger]\nurl = "sqlite:///{tmp_path}/day.db"\n', encoding="utf-8")
        with serving(tmp_path, "--config", str(config)) as (address, _):
            assert terminal(tmp_path, address, "sale", "12.34").returncode == 0
            assert terminal(tmp_path, address, "settle").returncode == 0
        result = iso_host(tmp_path, "ledger", "report", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "batch 1: settled, balanced" in result.stdout
        lines = [line.split() for line in result.stdout.splitlines()]
        assert ["host", "(now)", "840", "1", "12.34", "0", "0.00"] in lines
        assert ["terminal", "840", "1", "12.34", "0", "0.00"] in lines
        assert "foreign" not in result.stdout


READ_COMMANDS = [["list"], ["list", "--json"], ["report"], ["export", "--format", "csv"], ["verify"]]


class TestConfigFlag:
    """Every ledger command takes its ledger from `--config`'s [ledger] url; `--ledger` wins over it."""

    @pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
    def test_reads_the_configured_ledger(self, sqlite_ledger: str, tmp_path: Path, command: list[str]) -> None:
        config = tmp_path / "host.toml"
        config.write_text(f'[ledger]\nurl = "{sqlite_ledger}"\n', encoding="utf-8")
        cwd = tmp_path / "elsewhere"  # no ./iso-host.db here: the default would be refused
        cwd.mkdir()
        result = iso_host(cwd, "ledger", *command, "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert any(text in result.stdout for text in (SALE_DOMESTIC, "ledger ok: 10 transactions", f"{MID} batch 1"))
        missing = f"sqlite:///{tmp_path}/missing.db"
        overridden = iso_host(cwd, "ledger", *command, "--config", str(config), "--ledger", missing)
        assert (overridden.returncode, overridden.stderr) == (2, f"iso-host: ledger {missing}: no such file\n")
        assert not list(cwd.iterdir()), "a read-only command created files"

    def test_backup(self, sqlite_ledger: str, tmp_path: Path) -> None:
        config = tmp_path / "host.toml"
        config.write_text(f'[ledger]\nurl = "{sqlite_ledger}"\n', encoding="utf-8")
        result = iso_host(tmp_path, "ledger", "backup", str(tmp_path / "copy.db"), "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"backed up {sqlite_ledger} to ")
        assert batch_reports(f"sqlite:///{tmp_path}/copy.db") == batch_reports(sqlite_ledger)

    def test_a_bad_config_is_one_line(self, tmp_path: Path) -> None:
        result = iso_host(tmp_path, "ledger", "list", "--config", str(tmp_path / "none.toml"))
        assert result.returncode == 2
        assert result.stderr.startswith("iso-host: ")
        assert "cannot read config file" in result.stderr
        assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_list_json_is_the_export_jsonl(backend: str, tmp_path: Path) -> None:
    """`ledger list --json` and `ledger export --format jsonl` print one shape: the same keys, the same values."""
    with store_url(backend, tmp_path) as url:
        asyncio.run(build_ledger(url))
        listed = iso_host(tmp_path, "ledger", "list", "--json", "--ledger", url)
        exported = iso_host(tmp_path, "ledger", "export", "--format", "jsonl", "--ledger", url)
    assert (listed.returncode, exported.returncode) == (0, 0)
    assert listed.stdout == exported.stdout
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["rrn"] for row in rows] == sorted(WRITE_ORDER, key=WRITE_ORDER.index)
    assert tuple(rows[0]) == EXPORT_COLUMNS


class TestReadOnly:
    """A read-only command pointed at a database that is no iso-host ledger says so and changes nothing."""

    @pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
    def test_postgresql_database_stays_untouched(self, tmp_path: Path, command: list[str]) -> None:
        with fresh_postgres_database() as url:
            with psycopg.connect(url, autocommit=True) as pg:
                pg.execute("CREATE TABLE customers (id INTEGER)")
            tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            result = iso_host(tmp_path, "ledger", *command, "--ledger", url)
            after = ledger_query(url, tables)
        assert result.returncode == 2
        refusal = r"iso-host: not an iso-host ledger: postgresql://\S+ has no iso-host tables\n"
        assert re.fullmatch(refusal, result.stderr)
        assert after == [("customers",)]

    @pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
    @pytest.mark.parametrize("content", ["other table", "empty", "text"])
    def test_sqlite_file_stays_untouched(self, tmp_path: Path, command: list[str], content: str) -> None:
        path = tmp_path / "other.db"
        if content == "other table":
            with closing(sqlite3.connect(path)) as connection:
                connection.execute("CREATE TABLE customers (id INTEGER)")
        else:
            path.write_text("" if content == "empty" else "not a database at all, just some text\n" * 10)
        before = path.read_bytes()
        result = iso_host(tmp_path, "ledger", *command, "--ledger", f"sqlite:///{path}")
        assert result.returncode == 2
        assert result.stderr.startswith(f"iso-host: not an iso-host ledger: sqlite:///{path} ")
        assert len(result.stderr.splitlines()) == 1
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
