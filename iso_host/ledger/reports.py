"""The operator's read side of a ledger: batch reports, exports, invariant checks and SQLite backups.

Rule: nothing here writes to a ledger. Every command reads one consistent snapshot (a SQLite read
transaction on a ``mode=ro`` connection, which a host writing in WAL mode never waits for; a PostgreSQL
``REPEATABLE READ READ ONLY`` transaction), so a report taken while terminals are busy adds up. Every
statement is written once with ``%s`` placeholders and goes through ``Reader``. Exports leave ``pan_hash``
in the database: it is a keyed hash of the card number, of use to nobody outside the host.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import psycopg
from psycopg.rows import dict_row

from iso_host.errors import ConfigError, StoreError
from iso_host.ledger.invariants import (
    BATCH_KEYS,
    CHECKS,
    BatchKey,
    Reader,
    Violation,
    batch_key,
    key_text,
)
from iso_host.ledger.model import BatchDifference, BatchTotals, Difference, TransactionFilter
from iso_host.ledger.postgres_steps import describe
from iso_host.ledger.schema import MIGRATIONS
from iso_host.ledger.sql import (
    BATCH_TOTALS,
    TRANSACTION_COLUMNS,
    Row,
    batch_totals_from_rows,
    qmark,
    transactions_select,
)
from iso_host.ledger.totals_json import optional_totals_from_json
from iso_host.private_files import open_private
from iso_host.urls import redacted_url

SQLITE_PREFIX: Final = "sqlite:///"
POSTGRES_PREFIXES: Final = ("postgresql://", "postgres://")
MIN_SCHEMA_VERSION: Final = 4  # batches.result/host_totals/terminal_totals and batch_differences
CONNECT_TIMEOUT_S: Final = 10  # an unreachable PostgreSQL fails the command instead of hanging it
EXPORT_CHUNK_ROWS: Final = 1_000  # rows held in memory at a time while exporting
EXPORT_COLUMNS: Final = ("id", *(column for column in TRANSACTION_COLUMNS if column != "pan_hash"))
assert "pan_hash" not in EXPORT_COLUMNS
assert len(EXPORT_COLUMNS) == len(TRANSACTION_COLUMNS)
assert len(MIGRATIONS) >= MIN_SCHEMA_VERSION

_COUNTS: Final = "SELECT tid, mid, batch_number, kind, status, COUNT(*) AS n FROM transactions"
_BATCHES: Final = "SELECT tid, mid, batch_number, status, result, settled_at, host_totals, terminal_totals FROM batches"
_DIFFERENCES: Final = (
    "SELECT tid, mid, batch_number, stan, difference, rrn, host_amount_minor, terminal_amount_minor, masked_pan"
    " FROM batch_differences"
)
CurrencyTotals = dict[str, BatchTotals]  # by ISO 4217 numeric currency code
_EXPORT: Final = f"SELECT {', '.join(EXPORT_COLUMNS)} FROM transactions ORDER BY id"  # noqa: S608 - constants only
# The host totals of every batch per currency (ledger/sql.py's BATCH_TOTALS grouped by batch and currency instead of
# computed for one batch): a batch of 840 and 156 sales has two sets of totals, never one sum of both.
_ONE_BATCH: Final = " WHERE tid = %s AND mid = %s AND batch_number = %s"
_TOTALS_SELECT, _TOTALS_KEY, _TOTALS_AFTER_KEY = BATCH_TOTALS.partition(_ONE_BATCH)
assert _TOTALS_KEY, "ledger/sql.py BATCH_TOTALS no longer selects one batch by its key"
assert _TOTALS_AFTER_KEY.endswith(" GROUP BY 1"), "ledger/sql.py BATCH_TOTALS changed shape"
_TOTALS_BY_CURRENCY: Final = "SELECT tid, mid, batch_number, currency, " + _TOTALS_SELECT.removeprefix("SELECT ")
_TOTALS_CONDITION: Final = _TOTALS_AFTER_KEY.removesuffix(" GROUP BY 1").removeprefix(" AND ")


class _SqliteReader:
    def __init__(self, connection: sqlite3.Connection, name: str) -> None:
        self.connection, self.name = connection, name

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]:
        try:
            return list(self.connection.execute(qmark(sql), tuple(parameters)).fetchall())
        except sqlite3.Error as error:
            raise StoreError(f"ledger {self.name}: {error}") from None

    def chunks(self, sql: str, parameters: Sequence[object], size: int) -> Generator[list[Row]]:
        assert size > 0
        try:
            cursor = self.connection.execute(qmark(sql), tuple(parameters))
            while chunk := cursor.fetchmany(size):
                yield list(chunk)
        except sqlite3.Error as error:
            raise StoreError(f"ledger {self.name}: {error}") from None

    def schema_version(self) -> int:
        try:
            tables = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'transactions'"
            if not self.connection.execute(tables).fetchall():
                return 0
            return int(self.connection.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as error:
            raise StoreError(f"not an iso-host ledger: {self.name} is not a SQLite database ({error})") from None


class _PostgresReader:
    def __init__(self, connection: psycopg.Connection[dict[str, Any]], name: str) -> None:
        self.connection, self.name = connection, name

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]:
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(sql, tuple(parameters))
                return list(cursor.fetchall())
        except psycopg.Error as error:
            raise StoreError(f"ledger {self.name}: {describe(error)}") from None

    def chunks(self, sql: str, parameters: Sequence[object], size: int) -> Generator[list[Row]]:
        assert size > 0
        try:
            # A server-side cursor: a client-side one would fetch the whole result before the first row.
            with self.connection.cursor(name="iso_host_read") as cursor:
                cursor.itersize = size
                cursor.execute(sql, tuple(parameters))
                while chunk := cursor.fetchmany(size):
                    yield list(chunk)
        except psycopg.Error as error:
            raise StoreError(f"ledger {self.name}: {describe(error)}") from None

    def schema_version(self) -> int:
        tables = "SELECT to_regclass('schema_version') IS NULL OR to_regclass('transactions') IS NULL AS missing"
        if self.rows(tables)[0]["missing"]:
            return 0
        return int(self.rows("SELECT MAX(version) AS v FROM schema_version")[0]["v"] or 0)


def _sqlite_path(url: str) -> Path:
    path = url.removeprefix(SQLITE_PREFIX)
    if not path:
        raise ConfigError(f"--ledger: sqlite URL needs a file path, got {url!r}")
    return Path(path)


def _check_url(url: str) -> None:
    if not url.startswith((SQLITE_PREFIX, *POSTGRES_PREFIXES)):
        raise ConfigError(f"--ledger: expected sqlite:///FILE or postgresql://..., got {redacted_url(url)!r}")


def _sqlite_read_only(url: str) -> sqlite3.Connection:
    path = _sqlite_path(url)
    if not path.is_file():
        raise StoreError(f"ledger {url}: no such file")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"ledger {url}: {error}") from None
    connection.row_factory = sqlite3.Row
    return connection


@contextmanager
def open_reader(url: str) -> Iterator[Reader]:
    """A reader over one snapshot of the ledger at ``url``, closed when the block ends.

    Raises:
        ConfigError: the URL is neither ``sqlite:///FILE`` nor ``postgresql://...``.
        StoreError: the file is missing, the server unreachable, or the database is no iso-host ledger this
            version reads (the message names the ledger, without its password).
    """
    _check_url(url)
    reader: _SqliteReader | _PostgresReader
    if url.startswith(SQLITE_PREFIX):
        connection = _sqlite_read_only(url)
        reader, close = _SqliteReader(connection, url), connection.close
    else:
        name = redacted_url(url)
        try:
            pg = psycopg.connect(url, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as error:
            raise StoreError(f"ledger {name}: {describe(error)}") from None
        pg.isolation_level, pg.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        # Without statistics (autovacuum off, or right after a bulk load) the planner takes each per-original
        # sum for one row and nests loops over the whole table: minutes for 30,000 sales. Hash and merge joins
        # do not depend on the estimate. A session setting: the ledger is only read.
        pg.execute("SET enable_nestloop = off")
        pg.commit()
        reader, close = _PostgresReader(pg, name), pg.close
    try:
        if isinstance(reader, _SqliteReader):
            reader.rows("BEGIN")  # one read transaction: the statements that follow see one snapshot
        _check_schema(reader)  # PostgreSQL's REPEATABLE READ transaction takes its snapshot here
        yield reader
    finally:
        close()


def _check_schema(reader: Reader) -> None:
    version = reader.schema_version()
    if version == 0:
        raise StoreError(f"not an iso-host ledger: {reader.name} has no iso-host tables")
    if version > len(MIGRATIONS):
        raise StoreError(f"ledger {reader.name}: schema version {version} is newer than this iso-host reads")
    if version < MIN_SCHEMA_VERSION:
        msg = f"ledger {reader.name}: schema version {version} predates settlement; run iso-host serve once to migrate"
        raise StoreError(msg)


@dataclass(frozen=True, slots=True)
class BatchReport:
    """One batch as the operator sees it. Totals are gross (``ledger/model.py`` ``Totals``)."""

    tid: str
    mid: str
    batch_number: int
    status: str  # open | uploading | settled
    result: str | None  # balanced | out_of_balance, once the terminal has settled
    settled_at: str | None  # UTC ISO 8601, as stored
    host_totals: BatchTotals  # summed from the batch's transactions now
    recorded_host_totals: BatchTotals | None  # what the host had when the terminal last settled
    terminal_totals: BatchTotals | None  # what the terminal reported
    counts: tuple[tuple[str, str, int], ...]  # (kind, status, transactions), sorted
    differences: tuple[BatchDifference, ...]  # found after a batch upload, in STAN order
    # host_totals per currency (ISO 4217 numeric, sorted): what the report shows. host_totals adds the currencies up,
    # as the settlement compares them; the terminal's totals carry no currency.
    host_totals_by_currency: tuple[tuple[str, BatchTotals], ...] = ()

    @property
    def transaction_count(self) -> int:
        return sum(count for _, _, count in self.counts)


def _filter(tid: str | None, batch: int | None) -> tuple[str, tuple[object, ...]]:
    """`` WHERE tid = %s AND batch_number = %s`` (the parts given, or ""): the same columns in every table."""
    named = [(column, value) for column, value in (("tid", tid), ("batch_number", batch)) if value is not None]
    where = " WHERE " + " AND ".join(f"{column} = %s" for column, _ in named) if named else ""
    return where, tuple(value for _, value in named)


def _stored_totals(reader: Reader, key: BatchKey, column: str, text: str | None) -> BatchTotals | None:
    try:
        return optional_totals_from_json(text)
    except ValueError as error:
        msg = f"ledger {reader.name}: {key_text(key)}: {column} unreadable ({error}); see iso-host ledger verify"
        raise StoreError(msg) from None


def _difference(reader: Reader, row: Row) -> BatchDifference:
    try:
        kind = Difference(row["difference"])
    except ValueError:
        msg = f"ledger {reader.name}: {key_text(batch_key(row))}: unknown difference {row['difference']!r}"
        raise StoreError(msg) from None
    return BatchDifference(str(row["stan"]), kind, row["host_amount_minor"], row["terminal_amount_minor"],
                           row["rrn"], row["masked_pan"])  # fmt: skip


def _totals_by_currency(reader: Reader, where: str, parameters: Sequence[object]) -> dict[BatchKey, CurrencyTotals]:
    """Per batch that ``where`` selects (`` WHERE ...`` on transactions, or ""), its host totals in each currency."""
    conditions = [condition for condition in (where.removeprefix(" WHERE "), _TOTALS_CONDITION) if condition]
    sql = _TOTALS_BY_CURRENCY + (" WHERE " + " AND ".join(conditions) if conditions else "") + " GROUP BY 1, 2, 3, 4, 5"
    grouped: dict[BatchKey, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in reader.rows(sql, parameters):
        grouped[batch_key(row)][str(row["currency"])].append(row)
    return {key: {currency: batch_totals_from_rows(rows) for currency, rows in sorted(by_currency.items())}
            for key, by_currency in grouped.items()}  # fmt: skip


def _report(reader: Reader, key: BatchKey, stored: Row | None, *, totals: dict[str, BatchTotals],
            counts: list[tuple[str, str, int]], differences: list[BatchDifference]) -> BatchReport:  # fmt: skip
    """One batch's report; ``stored`` is its row of ``batches``, None while no settlement was tried."""
    overall = sum(totals.values(), BatchTotals())
    by_currency = tuple(totals.items())
    if stored is None:
        return BatchReport(*key, "open", None, None, overall, None, None, tuple(sorted(counts)), tuple(differences),
                           by_currency)  # fmt: skip
    return BatchReport(
        *key, status=str(stored["status"]), result=stored["result"], settled_at=stored["settled_at"],
        host_totals=overall, recorded_host_totals=_stored_totals(reader, key, "host_totals", stored["host_totals"]),
        terminal_totals=_stored_totals(reader, key, "terminal_totals", stored["terminal_totals"]),
        counts=tuple(sorted(counts)), differences=tuple(differences), host_totals_by_currency=by_currency,
    )  # fmt: skip


def batch_reports(url: str, tid: str | None = None, batch: int | None = None) -> list[BatchReport]:
    """Every batch (of ``tid``, numbered ``batch``, when given) found in transactions or batches, in key order.

    Raises:
        ConfigError: as ``open_reader``.
        StoreError: as ``open_reader``, and for stored totals or differences that do not parse.
    """
    where, parameters = _filter(tid, batch)
    with open_reader(url) as reader:
        keys = [batch_key(row) for row in reader.rows(f"{BATCH_KEYS}{where} ORDER BY 1, 2, 3", parameters)]
        totals = _totals_by_currency(reader, where, parameters)
        counts: dict[BatchKey, list[tuple[str, str, int]]] = defaultdict(list)
        for row in reader.rows(f"{_COUNTS}{where} GROUP BY tid, mid, batch_number, kind, status", parameters):
            counts[batch_key(row)].append((str(row["kind"]), str(row["status"]), int(row["n"])))
        stored = {batch_key(row): row for row in reader.rows(f"{_BATCHES}{where}", parameters)}
        differences: dict[BatchKey, list[BatchDifference]] = defaultdict(list)
        for row in reader.rows(f"{_DIFFERENCES}{where} ORDER BY tid, mid, batch_number, stan", parameters):
            differences[batch_key(row)].append(_difference(reader, row))
        return [
            _report(
                reader,
                key,
                stored.get(key),
                totals=totals.get(key, {}),
                counts=counts[key],
                differences=differences[key],
            )
            for key in keys
        ]


def _csv_writer(out: TextIO) -> Callable[[Sequence[object]], object]:
    writer = csv.writer(out, lineterminator="\n")  # LF, as the JSON lines; spreadsheets read both
    writer.writerow(EXPORT_COLUMNS)
    return writer.writerow


def json_line(values: Sequence[object]) -> str:
    """One transaction as ``export --format jsonl`` and ``list --json`` print it: the values of ``EXPORT_COLUMNS``."""
    return json.dumps(dict(zip(EXPORT_COLUMNS, values, strict=True)))


def _jsonl_writer(out: TextIO) -> Callable[[Sequence[object]], object]:
    def write(values: Sequence[object]) -> int:
        return out.write(json_line(values) + "\n")

    return write


EXPORT_FORMATS: Final[dict[str, Callable[[TextIO], Callable[[Sequence[object]], object]]]] = {
    "csv": _csv_writer,
    "jsonl": _jsonl_writer,
}


def export_rows(url: str, fmt: str, out: TextIO, progress: Callable[[int, int], None] | None = None) -> int:
    """Write every transaction, oldest first, as CSV (with a header) or JSON lines; returns the rows written.

    Rows stream through ``EXPORT_CHUNK_ROWS`` at a time; ``progress(done, total)`` is called after each chunk.
    The card appears only masked: ``pan_hash`` is never exported.

    Raises:
        ConfigError: an unknown ``fmt``, or as ``open_reader``.
        StoreError: as ``open_reader``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    with open_reader(url) as reader:
        total = int(reader.rows("SELECT COUNT(*) AS n FROM transactions")[0]["n"])
        write, done = EXPORT_FORMATS[fmt](out), 0
        # closing(): a failed write ends the cursor (PostgreSQL: a server-side one) before the connection.
        with closing(reader.chunks(_EXPORT, (), EXPORT_CHUNK_ROWS)) as chunks:
            for chunk in chunks:
                for row in chunk:
                    write([row[column] for column in EXPORT_COLUMNS])
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    assert done == total, "the count and the rows come from one snapshot"
    return done


def list_transactions(url: str, where: TransactionFilter) -> list[tuple[object, ...]]:
    """``ledger list``: the values of ``EXPORT_COLUMNS`` of the transactions ``where`` selects, oldest first.

    Raises:
        ConfigError, StoreError: as ``open_reader`` (a database that is no iso-host ledger is left as it is).
    """
    sql, parameters = transactions_select(where)
    assert sql.startswith("SELECT * FROM transactions")
    sql = sql.replace("*", ", ".join(EXPORT_COLUMNS), 1)
    with open_reader(url) as reader:
        return [tuple(row[column] for column in EXPORT_COLUMNS) for row in reader.rows(sql, parameters)]


@dataclass(frozen=True, slots=True)
class Verification:
    violations: tuple[Violation, ...]
    transaction_count: int
    batch_count: int


def verify_ledger(url: str) -> Verification:
    """Check the ledger invariants (``ledger/invariants.py``) on one snapshot: what was checked, every violation.

    Raises:
        ConfigError, StoreError: as ``open_reader``.
    """
    with open_reader(url) as reader:
        transactions = int(reader.rows("SELECT COUNT(*) AS n FROM transactions")[0]["n"])
        batches = int(reader.rows(f"SELECT COUNT(*) AS n FROM ({BATCH_KEYS}) AS b")[0]["n"])  # noqa: S608 - constants
        violations = tuple(violation for check in CHECKS for violation in check(reader))
    return Verification(violations, transactions, batches)


def verify(url: str) -> list[Violation]:
    """Every violation of the ledger invariants; [] when the ledger is clean (see ``verify_ledger``)."""
    return list(verify_ledger(url).violations)


def backup_sqlite(url: str, destination: Path) -> int:
    """Copy a SQLite ledger, consistently, while a host may be writing it; returns the pages copied.

    The copy is one step of SQLite's online backup from a read-only connection: it reads one snapshot (WAL
    lets the host go on writing meanwhile) and is written beside ``destination`` first, then linked into
    place, so a failed backup never leaves a half-written file under that name.

    Raises:
        ConfigError: a PostgreSQL URL (use pg_dump), or ``destination`` exists.
        StoreError: the ledger is missing or unreadable, or the copy cannot be written.
    """
    _check_url(url)
    if url.startswith(POSTGRES_PREFIXES):
        msg = (f"backup copies SQLite ledgers; for {redacted_url(url)} use"
               " pg_dump --format=custom --file FILE DBNAME instead")  # fmt: skip
        raise ConfigError(msg)
    if destination.exists():
        raise ConfigError(f"backup: {destination} exists; a backup never overwrites a file")
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    source = _sqlite_read_only(url)
    try:
        os.close(open_private(partial))  # 0600 before SQLite writes a page into it (its directory 0700 if new)
        target = sqlite3.connect(partial)
        try:
            source.backup(target, pages=-1)  # -1: all pages in one step, from one snapshot
            pages = int(target.execute("PRAGMA page_count").fetchone()[0])
        finally:
            target.close()
        os.link(partial, destination)  # unlike rename, fails rather than replace a file made meanwhile
    except FileExistsError:
        raise ConfigError(f"backup: {destination} exists; a backup never overwrites a file") from None
    except (sqlite3.Error, OSError) as error:
        raise StoreError(f"backup of ledger {url} to {destination}: {error}") from None
    finally:
        source.close()
        partial.unlink(missing_ok=True)
    assert pages > 0
    return pages
