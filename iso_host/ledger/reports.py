"""The operator's read side of a ledger: batch reports, exports, invariant checks and SQLite backups.

Rule: nothing here writes to a ledger. Every command reads one consistent snapshot (a SQLite read
transaction on a ``mode=ro`` connection, which a host writing in WAL mode never waits for; a PostgreSQL
``REPEATABLE READ READ ONLY`` transaction), so a report taken while terminals are busy adds up. Every
statement is written once with ``%s`` placeholders and goes through ``Reader``. Exports leave ``pan_hash``
in the database: it is a keyed hash of the card number, of use to nobody outside the host.
"""

from __future__ import annotations

import csv
import enum
import json
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import psycopg
from psycopg.rows import dict_row

from iso_host.errors import ConfigError, StoreError
from iso_host.ledger.model import BatchDifference, BatchTotals, Difference
from iso_host.ledger.postgres import describe, redacted_url
from iso_host.ledger.schema import MIGRATIONS
from iso_host.ledger.sql import BATCH_TOTALS, TRANSACTION_COLUMNS, Row, batch_totals_from_rows, qmark
from iso_host.ledger.totals_json import optional_totals_from_json

SQLITE_PREFIX: Final = "sqlite:///"
POSTGRES_PREFIXES: Final = ("postgresql://", "postgres://")
MIN_SCHEMA_VERSION: Final = 4  # batches.result/host_totals/terminal_totals and batch_differences
CONNECT_TIMEOUT_S: Final = 10  # an unreachable PostgreSQL fails the command instead of hanging it
EXPORT_CHUNK_ROWS: Final = 1_000  # rows held in memory at a time while exporting
EXPORT_COLUMNS: Final = ("id", *(column for column in TRANSACTION_COLUMNS if column != "pan_hash"))
assert "pan_hash" not in EXPORT_COLUMNS
assert len(EXPORT_COLUMNS) == len(TRANSACTION_COLUMNS)
assert MIN_SCHEMA_VERSION <= len(MIGRATIONS)

BatchKey = tuple[str, str, int]  # (tid, mid, batch_number)

_KEYS: Final = (
    "SELECT tid, mid, batch_number FROM (SELECT tid, mid, batch_number FROM transactions"
    " UNION SELECT tid, mid, batch_number FROM batches) AS k"
)
_COUNTS: Final = "SELECT tid, mid, batch_number, kind, status, COUNT(*) AS n FROM transactions"
_BATCHES: Final = (
    "SELECT tid, mid, batch_number, status, result, settled_at, host_totals, terminal_totals FROM batches"
)
_DIFFERENCES: Final = (
    "SELECT tid, mid, batch_number, stan, difference, rrn, host_amount_minor, terminal_amount_minor, masked_pan"
    " FROM batch_differences"
)
_EXPORT: Final = f"SELECT {', '.join(EXPORT_COLUMNS)} FROM transactions ORDER BY id"  # noqa: S608 - constants only
# The settlement's totals (ledger/sql.py), grouped by batch instead of computed for one: one pass over the
# table for a whole report, where one BATCH_TOTALS per batch would scan it once per batch.
_ONE_BATCH: Final = "WHERE tid = %s AND mid = %s AND batch_number = %s GROUP BY 1"
assert BATCH_TOTALS.startswith("SELECT ") and BATCH_TOTALS.endswith(_ONE_BATCH), "BATCH_TOTALS changed shape"
_TOTALS_BY_BATCH: Final = "SELECT tid, mid, batch_number, " + BATCH_TOTALS.removeprefix("SELECT ").removesuffix(
    _ONE_BATCH
)
assert "%s" not in _TOTALS_BY_BATCH, "the totals' select list takes no parameters"


class Reader(Protocol):
    """One read-only snapshot of a ledger. Statements use ``%s`` placeholders on both databases."""

    name: str  # the ledger URL as messages may show it (no password)

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]: ...

    def chunks(self, sql: str, parameters: Sequence[object], size: int) -> Iterator[list[Row]]: ...

    def schema_version(self) -> int: ...


class _SqliteReader:
    def __init__(self, connection: sqlite3.Connection, name: str) -> None:
        self.connection, self.name = connection, name

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]:
        try:
            return list(self.connection.execute(qmark(sql), tuple(parameters)).fetchall())
        except sqlite3.Error as error:
            raise StoreError(f"ledger {self.name}: {error}") from None

    def chunks(self, sql: str, parameters: Sequence[object], size: int) -> Iterator[list[Row]]:
        assert size > 0
        try:
            cursor = self.connection.execute(qmark(sql), tuple(parameters))
            while chunk := cursor.fetchmany(size):
                yield list(chunk)
        except sqlite3.Error as error:
            raise StoreError(f"ledger {self.name}: {error}") from None

    def schema_version(self) -> int:
        if not self.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'transactions'"):
            return 0
        return int(self.rows("PRAGMA user_version")[0][0])


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

    def chunks(self, sql: str, parameters: Sequence[object], size: int) -> Iterator[list[Row]]:
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
        if self.rows("SELECT to_regclass('schema_version') IS NULL AS missing")[0]["missing"]:
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
        reader = _SqliteReader(connection, url)
        close = connection.close
        reader.rows("BEGIN")  # one read transaction: every statement below sees the same snapshot
    else:
        name = redacted_url(url)
        try:
            pg = psycopg.connect(url, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as error:
            raise StoreError(f"ledger {name}: {describe(error)}") from None
        pg.isolation_level, pg.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        reader, close = _PostgresReader(pg, name), pg.close
    try:
        _check_schema(reader)
        yield reader
    finally:
        close()


def _check_schema(reader: Reader) -> None:
    version = reader.schema_version()
    if version == 0:
        raise StoreError(f"ledger {reader.name}: not an iso-host ledger (no transactions table)")
    if version > len(MIGRATIONS):
        raise StoreError(f"ledger {reader.name}: schema version {version} is newer than this iso-host reads")
    if version < MIN_SCHEMA_VERSION:
        msg = f"ledger {reader.name}: schema version {version} predates settlement; run iso-host serve once to migrate"
        raise StoreError(msg)


@dataclass(frozen=True, slots=True)
class BatchReport:
    """One batch as the operator sees it. Totals are gross (DESIGN.md "The ledger")."""

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

    @property
    def transaction_count(self) -> int:
        return sum(count for _, _, count in self.counts)


def _filter(tid: str | None, batch: int | None) -> tuple[str, tuple[object, ...]]:
    clauses = [(f"{column} = %s", value) for column, value in (("tid", tid), ("batch_number", batch)) if value is not None]
    where = " WHERE " + " AND ".join(clause for clause, _ in clauses) if clauses else ""
    return where, tuple(value for _, value in clauses)


def _key(row: Row) -> BatchKey:
    return str(row["tid"]), str(row["mid"]), int(row["batch_number"])


def key_text(key: BatchKey) -> str:
    """A batch as messages name it: ``TERM0001 MERCHANT0000001 batch 3``."""
    return f"{key[0]} {key[1]} batch {key[2]}"


def totals_by_batch(reader: Reader, where: str, parameters: Sequence[object]) -> dict[BatchKey, BatchTotals]:
    """Every batch's host totals, summed now with the settlement's own expressions (``BATCH_TOTALS``)."""
    grouped: dict[BatchKey, list[Row]] = defaultdict(list)
    for row in reader.rows(f"{_TOTALS_BY_BATCH}{where.strip()} GROUP BY 1, 2, 3, 4", parameters):
        grouped[_key(row)].append(row)
    return {key: batch_totals_from_rows(rows) for key, rows in grouped.items()}


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
        raise StoreError(f"ledger {reader.name}: {key_text(_key(row))}: unknown difference in batch_differences") from None
    return BatchDifference(str(row["stan"]), kind, row["host_amount_minor"], row["terminal_amount_minor"],
                           row["rrn"], row["masked_pan"])  # fmt: skip


def batch_reports(url: str, tid: str | None = None, batch: int | None = None) -> list[BatchReport]:
    """Every batch (of ``tid``, numbered ``batch``, when given) found in transactions or batches, in key order.

    Raises:
        ConfigError, StoreError: as ``open_reader``; StoreError also for stored totals that do not parse.
    """
    where, parameters = _filter(tid, batch)
    with open_reader(url) as reader:
        keys = [_key(row) for row in reader.rows(f"{_KEYS}{where} ORDER BY tid, mid, batch_number", parameters)]
        totals = totals_by_batch(reader, where, parameters)
        counts: dict[BatchKey, list[tuple[str, str, int]]] = defaultdict(list)
        for row in reader.rows(f"{_COUNTS}{where} GROUP BY tid, mid, batch_number, kind, status", parameters):
            counts[_key(row)].append((str(row["kind"]), str(row["status"]), int(row["n"])))
        batches = {_key(row): row for row in reader.rows(f"{_BATCHES}{where}", parameters)}
        differences: dict[BatchKey, list[BatchDifference]] = defaultdict(list)
        for row in reader.rows(f"{_DIFFERENCES}{where} ORDER BY tid, mid, batch_number, stan", parameters):
            differences[_key(row)].append(_difference(reader, row))
        reports = []
        for key in keys:
            stored = batches.get(key)
            reports.append(BatchReport(
                *key, status=str(stored["status"]) if stored else "open",
                result=stored["result"] if stored else None, settled_at=stored["settled_at"] if stored else None,
                host_totals=totals.get(key, BatchTotals()),
                recorded_host_totals=_stored_totals(reader, key, "host_totals", stored["host_totals"] if stored else None),
                terminal_totals=_stored_totals(reader, key, "terminal_totals",
                                               stored["terminal_totals"] if stored else None),
                counts=tuple(sorted(counts[key])), differences=tuple(differences[key]),
            ))  # fmt: skip
    return reports


def _csv_writer(out: TextIO) -> Callable[[Sequence[object]], object]:
    writer = csv.writer(out, lineterminator="\n")  # LF, as the JSON lines; spreadsheets read both
    writer.writerow(EXPORT_COLUMNS)
    return writer.writerow


def _jsonl_writer(out: TextIO) -> Callable[[Sequence[object]], object]:
    def write(values: Sequence[object]) -> int:
        return out.write(json.dumps(dict(zip(EXPORT_COLUMNS, values, strict=True))) + "\n")

    return write


EXPORT_FORMATS: Final[dict[str, Callable[[TextIO], Callable[[Sequence[object]], object]]]] = {
    "csv": _csv_writer,
    "jsonl": _jsonl_writer,
}


def export_rows(
    url: str, fmt: str, out: TextIO, progress: Callable[[int, int], None] | None = None
) -> int:
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
        for chunk in reader.chunks(_EXPORT, (), EXPORT_CHUNK_ROWS):
            for row in chunk:
                write([row[column] for column in EXPORT_COLUMNS])
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    assert done == total, "the count and the rows come from one snapshot"
    return done


class Invariant(enum.StrEnum):
    """DESIGN.md's ledger invariants, as ``iso-host ledger verify`` names them."""

    CANCELLED_AT_MOST_ONCE = "cancelled-at-most-once"  # (a) one approved void or reversal per original
    STATUS_MATCHES_LINKS = "status-matches-links"  # (b) VOIDED/REVERSED exactly when one such row points to it
    REFUNDS_ADD_UP = "refunds-add-up"  # (c) refunded_minor and the refund statuses follow the approved refunds
    SETTLED_BATCH_UNCHANGED = "settled-batch-unchanged"  # (d) no row of a settled batch changed after it settled
    STORED_TOTALS_MATCH = "stored-totals-match"  # (e) a balanced batch's host_totals = its transactions' sum
    EVERY_00_IS_AN_APPROVAL = "every-00-is-an-approval"  # (f) no DECLINED row was answered 00


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: Invariant
    subject: str  # an RRN, or a batch as ``key_text`` names it
    detail: str  # one line

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"


MAX_VIOLATIONS_PER_INVARIANT: Final = 1_000  # a ledger broken everywhere still gets a readable answer
_CANCELS: Final = (  # per original: its approved voids and reversals
    "SELECT original_rrn, SUM(CASE WHEN kind = 'void' THEN 1 ELSE 0 END) AS voids,"
    " SUM(CASE WHEN kind = 'reversal' THEN 1 ELSE 0 END) AS reversals FROM transactions"
    " WHERE kind IN ('void', 'reversal') AND status = 'APPROVED' AND original_rrn IS NOT NULL GROUP BY original_rrn"
)
_LINKS: Final = (  # every row, with the approved voids, reversals and refund amounts that point to it
    "SELECT t.id, t.rrn, t.kind, t.status, t.amount_minor, t.refunded_minor, t.response_code,"
    " COALESCE(c.voids, 0) AS voids, COALESCE(c.reversals, 0) AS reversals, COALESCE(r.minor, 0) AS refunds_minor"
    f" FROM transactions t LEFT JOIN ({_CANCELS}) AS c ON c.original_rrn = t.rrn LEFT JOIN"
    " (SELECT original_rrn, SUM(amount_minor) AS minor FROM transactions WHERE kind = 'refund'"
    "  AND status = 'APPROVED' AND original_rrn IS NOT NULL GROUP BY original_rrn) AS r ON r.original_rrn = t.rrn"
)
_SETTLED_LATER: Final = (
    "SELECT t.rrn, t.batch_number, t.updated_at, b.settled_at FROM transactions t JOIN batches b ON b.tid = t.tid"
    " AND b.mid = t.mid AND b.batch_number = t.batch_number"
    " WHERE b.status = 'settled' AND t.updated_at > b.settled_at ORDER BY t.id LIMIT %s"  # UTC text compares as time
)


def _link_rows(reader: Reader, condition: str) -> list[Row]:
    sql = f"SELECT * FROM ({_LINKS}) AS l WHERE {condition} ORDER BY id LIMIT %s"  # noqa: S608 - constants only
    return reader.rows(sql, (MAX_VIOLATIONS_PER_INVARIANT,))


def _cancelled_at_most_once(reader: Reader) -> Iterator[Violation]:
    for row in _link_rows(reader, "voids + reversals > 1"):
        detail = f"cancelled {row['voids'] + row['reversals']} times ({row['voids']} voids, {row['reversals']} reversals)"
        yield Violation(Invariant.CANCELLED_AT_MOST_ONCE, row["rrn"], detail)


def _status_matches_links(reader: Reader) -> Iterator[Violation]:
    condition = (
        "NOT ((status = 'VOIDED' AND voids = 1 AND reversals = 0) OR (status = 'REVERSED' AND reversals = 1"
        " AND voids = 0) OR (status NOT IN ('VOIDED', 'REVERSED') AND voids = 0 AND reversals = 0))"
    )
    for row in _link_rows(reader, condition):
        detail = f"{row['kind']} {row['status']}, with {row['voids']} approved voids and {row['reversals']} approved reversals naming it"
        yield Violation(Invariant.STATUS_MATCHES_LINKS, row["rrn"], detail)


def _refunds_add_up(reader: Reader) -> Iterator[Violation]:
    condition = (
        "refunded_minor <> refunds_minor OR refunded_minor > amount_minor"
        " OR (refunded_minor = 0 AND status IN ('PARTIALLY_REFUNDED', 'REFUNDED'))"
        " OR (refunded_minor > 0 AND refunded_minor < amount_minor AND status <> 'PARTIALLY_REFUNDED')"
        " OR (refunded_minor > 0 AND refunded_minor = amount_minor AND status <> 'REFUNDED')"
    )
    for row in _link_rows(reader, condition):
        detail = (f"{row['status']}, amount {row['amount_minor']}, refunded_minor {row['refunded_minor']},"
                  f" approved refunds naming it sum to {int(row['refunds_minor'])}")  # fmt: skip
        yield Violation(Invariant.REFUNDS_ADD_UP, row["rrn"], detail)


def _settled_batch_unchanged(reader: Reader) -> Iterator[Violation]:
    for row in reader.rows(_SETTLED_LATER, (MAX_VIOLATIONS_PER_INVARIANT,)):
        detail = f"updated {row['updated_at']}, after its batch {row['batch_number']} settled {row['settled_at']}"
        yield Violation(Invariant.SETTLED_BATCH_UNCHANGED, row["rrn"], detail)


def _stored_totals_match(reader: Reader) -> Iterator[Violation]:
    balanced = "status = 'settled' AND result = 'balanced'"
    where = (" WHERE EXISTS (SELECT 1 FROM batches b WHERE b.tid = transactions.tid AND b.mid = transactions.mid"
             f" AND b.batch_number = transactions.batch_number AND b.{balanced.replace(' AND ', ' AND b.')})")  # fmt: skip
    summed = totals_by_batch(reader, where, ())
    rows = reader.rows(f"SELECT tid, mid, batch_number, host_totals FROM batches WHERE {balanced}")  # noqa: S608
    found = 0
    for row in rows:
        key, detail = _key(row), None
        try:
            stored = optional_totals_from_json(row["host_totals"])
        except ValueError as error:
            detail = f"host_totals unreadable: {error}"
        else:
            now = summed.get(key, BatchTotals())
            if stored != now:
                detail = f"host_totals record {_totals_text(stored)}; its transactions sum to {_totals_text(now)}"
        if detail is not None and found < MAX_VIOLATIONS_PER_INVARIANT:
            found += 1
            yield Violation(Invariant.STORED_TOTALS_MATCH, key_text(key), detail)


def _totals_text(totals: BatchTotals | None) -> str:
    if totals is None:
        return "nothing"
    return ", ".join(
        f"{side} debits {t.debit_count}/{t.debit_minor} credits {t.credit_count}/{t.credit_minor}"
        for side, t in (("domestic", totals.domestic), ("foreign", totals.foreign))
    )


def _every_00_is_an_approval(reader: Reader) -> Iterator[Violation]:
    for row in _link_rows(reader, "response_code = '00' AND status = 'DECLINED'"):
        yield Violation(Invariant.EVERY_00_IS_AN_APPROVAL, row["rrn"], f"{row['kind']} DECLINED but answered 00")


CHECKS: Final[tuple[Callable[[Reader], Iterator[Violation]], ...]] = (
    _cancelled_at_most_once,
    _status_matches_links,
    _refunds_add_up,
    _settled_batch_unchanged,
    _stored_totals_match,
    _every_00_is_an_approval,
)


@dataclass(frozen=True, slots=True)
class Verification:
    violations: tuple[Violation, ...]
    transaction_count: int
    batch_count: int


def verify_ledger(url: str) -> Verification:
    """Check DESIGN.md's ledger invariants on one snapshot; what was checked, and every violation found.

    Raises:
        ConfigError, StoreError: as ``open_reader``.
    """
    with open_reader(url) as reader:
        transactions = int(reader.rows("SELECT COUNT(*) AS n FROM transactions")[0]["n"])
        batches = int(reader.rows(f"SELECT COUNT(*) AS n FROM ({_KEYS}) AS b")[0]["n"])  # noqa: S608 - constants
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
