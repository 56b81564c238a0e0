"""``iso-host ledger list | report | export | verify | backup``: their arguments, and how their answers are printed.

Rule: this module parses and prints; every read of a ledger happens in ``iso_host.ledger.reports``, except
``list``, which reads through the ``Store`` (it works beside a running host). A problem the user can fix is
raised as ``ConfigError`` or ``StoreError``, which ``cli.main`` prints as one line (exit 2). Handlers take the
parsed arguments and return the exit status, as every command's do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Final, TextIO

from iso_host.cli.exit_codes import EXIT_NEGATIVE, EXIT_OK
from iso_host.errors import ConfigError
from iso_host.ledger import TransactionFilter, TransactionRecord, open_store
from iso_host.ledger.model import BatchTotals, Totals
from iso_host.ledger.reports import (
    EXPORT_FORMATS,
    BatchReport,
    backup_sqlite,
    batch_reports,
    export_rows,
    verify_ledger,
)
from iso_host.money import format_amount
from iso_host.private_files import open_private
from iso_host.vocab import Status

DEFAULT_LEDGER_URL: Final = "sqlite:///iso-host.db"
PROGRESS_MIN_ROWS: Final = 10_000  # a smaller export is over before a bar would tell anything
PROGRESS_BAR_WIDTH: Final = 40  # characters between the brackets; the whole line stays under 80


def _amount(minor: int | None) -> str:
    """Minor units as ``12.34`` (two decimals, as ``ledger list`` shows them); ``-`` for none."""
    if minor is None:
        return "-"
    assert minor >= 0, "ledger amounts are unsigned"
    return format_amount(minor)


def _totals_lines(label: str, totals: BatchTotals | None) -> list[str]:
    if totals is None:
        return [f"  {label:<18} not reported"]
    sides = (("domestic", totals.domestic), ("foreign", totals.foreign), ("overall", totals.overall))
    return [
        f"  {label if index == 0 else '':<18} {side:<8} {t.debit_count:>8} {_amount(t.debit_minor):>14}"
        f" {t.credit_count:>8} {_amount(t.credit_minor):>14}"
        for index, (side, t) in enumerate(sides)
    ]


def report_lines(report: BatchReport) -> list[str]:
    """A batch as the ``report`` table prints it: state, counts, totals on both sides, differences."""
    state = ", ".join(part for part in (report.status, report.result) if part)
    settled = f", settled {report.settled_at}" if report.settled_at else ""
    counts = ", ".join(f"{kind} {status} {count}" for kind, status, count in report.counts) or "none"
    lines = [
        f"{report.tid} {report.mid} batch {report.batch_number}: {state}{settled}",
        f"  transactions: {report.transaction_count} ({counts})",
        f"  {'totals':<18} {'':<8} {'debits':>8} {'debit amount':>14} {'credits':>8} {'credit amount':>14}",
        *_totals_lines("host (now)", report.host_totals),
    ]
    if report.recorded_host_totals is not None and report.recorded_host_totals != report.host_totals:
        lines += _totals_lines("host (at settle)", report.recorded_host_totals)
    if report.status != "open" or report.terminal_totals is not None:
        lines += _totals_lines("terminal", report.terminal_totals)
    lines.append(f"  differences: {len(report.differences) or 'none'}")
    lines += [
        f"    STAN {d.stan} {d.difference.value:<19} host {_amount(d.host_amount_minor):>12}"
        f" terminal {_amount(d.terminal_amount_minor):>12} RRN {d.rrn or '-'} PAN {d.masked_pan or '-'}"
        for d in report.differences
    ]
    return lines


def _totals_json(totals: BatchTotals | None) -> dict[str, dict[str, int]] | None:
    if totals is None:
        return None
    sides: tuple[tuple[str, Totals], ...] = (
        ("domestic", totals.domestic), ("foreign", totals.foreign), ("overall", totals.overall),
    )  # fmt: skip
    return {side: asdict(t) for side, t in sides}


def report_json(report: BatchReport) -> dict[str, object]:
    """A batch as ``report --json`` prints it: one JSON object, amounts in minor units."""
    counts: dict[str, dict[str, int]] = {}
    for kind, status, count in report.counts:
        counts.setdefault(kind, {})[status] = count
    return {
        "tid": report.tid, "mid": report.mid, "batch_number": report.batch_number, "status": report.status,
        "result": report.result, "settled_at": report.settled_at, "transactions": report.transaction_count,
        "counts": counts, "host_totals": _totals_json(report.host_totals),
        "recorded_host_totals": _totals_json(report.recorded_host_totals),
        "terminal_totals": _totals_json(report.terminal_totals),
        "differences": [asdict(d) | {"difference": d.difference.value} for d in report.differences],
    }  # fmt: skip


async def _read_transactions(url: str, where: TransactionFilter) -> list[TransactionRecord]:
    """Read a ledger that a host may be using right now: SQLite directly (WAL), PostgreSQL through the store."""
    store = open_store(url, pan_key=None)  # rows only: the PAN hash key is neither needed nor made
    if url.startswith("sqlite:///"):
        return await store.transactions(where)  # no lock file taken: a running host keeps it
    await store.open()
    try:
        return await store.transactions(where)
    finally:
        await store.close()


def command_ledger_list(args: argparse.Namespace) -> int:
    status = Status(args.status) if args.status else None
    where = TransactionFilter(tid=args.tid, batch_number=args.batch, status=status, limit=args.limit)
    records = asyncio.run(_read_transactions(args.ledger, where))
    if args.json:
        for record in records:
            row = asdict(record)
            row["created_at"] = record.created_at.isoformat()
            if row.get("card"):
                row["card"].pop("pan_hash", None)  # keyed, yet never shown: PCI DSS 3.5.1 (not correlatable)
            print(json.dumps(row, default=str))
        return EXIT_OK
    print(f"{'RRN':<12} {'TID':<8} {'BATCH':>5} {'STAN':<6} {'KIND':<15} {'AMOUNT':>12} {'CUR':<3} "
          f"{'PAN':<19} {'STATUS':<18} {'RC':<2} {'REASON':<22} ORIGINAL")  # fmt: skip
    for r in records:
        pan = r.card.masked_pan if r.card else "-"
        print(f"{r.rrn:<12} {r.tid:<8} {r.batch_number:>5} {r.stan:<6} {r.kind.value:<15} "
              f"{format_amount(r.amount_minor):>12} {r.currency:<3} {pan:<19} {r.status.value:<18} "
              f"{r.response_code:<2} {r.reason.value:<22} {r.original_rrn or '-'}")  # fmt: skip
    return EXIT_OK


def command_ledger_report(args: argparse.Namespace) -> int:
    reports = batch_reports(args.ledger, tid=args.tid, batch=args.batch)
    if args.json:
        for report in reports:
            print(json.dumps(report_json(report)))
        return EXIT_OK
    if not reports:
        print("no batches")
    for index, report in enumerate(reports):
        if index:
            print()
        print("\n".join(report_lines(report)))
    return EXIT_OK


class ProgressBar:
    """A one-line text bar, redrawn in place: ``[#######-----]  58% 58,000/100,000 rows``.

    Draws only for more than ``min_rows`` rows, and only when the percentage moves (101 redraws at most).
    """

    def __init__(self, stream: TextIO, *, min_rows: int = PROGRESS_MIN_ROWS, width: int = PROGRESS_BAR_WIDTH) -> None:
        assert min_rows >= 0
        assert width > 0
        self.stream, self.min_rows, self.width = stream, min_rows, width
        self.percent: int | None = None

    def __call__(self, done: int, total: int) -> None:
        assert 0 <= done <= total
        if total <= self.min_rows:
            return
        percent = done * 100 // total
        if percent == self.percent:
            return
        self.percent = percent
        filled = self.width * done // total
        self.stream.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {percent:3d}% {done:,}/{total:,} rows")
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line, if one was drawn."""
        if self.percent is not None:
            self.stream.write("\n")
            self.stream.flush()


def _export_to_file(url: str, fmt: str, path: Path, progress: Callable[[int, int], None] | None) -> int:
    """Export beside ``path`` first, then move it into place: a failed export leaves no half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with os.fdopen(open_private(partial), "w", encoding="utf-8", newline="") as out:
            count = export_rows(url, fmt, out, progress)
        partial.replace(path)
    except OSError as error:
        raise ConfigError(f"--output: cannot write {path}: {error.strerror or error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return count


def command_ledger_export(args: argparse.Namespace) -> int:
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        if args.output is None:
            export_rows(args.ledger, args.format, sys.stdout, bar)
            return EXIT_OK
        count = _export_to_file(args.ledger, args.format, Path(args.output), bar)
    finally:
        if bar is not None:
            bar.finish()
    print(f"exported {count} transactions to {args.output}", file=sys.stderr)
    return EXIT_OK


def command_ledger_verify(args: argparse.Namespace) -> int:
    verification = verify_ledger(args.ledger)
    if verification.violations:
        for violation in verification.violations:
            print(violation)
        return EXIT_NEGATIVE
    print(f"ledger ok: {verification.transaction_count} transactions, {verification.batch_count} batches checked")
    return EXIT_OK


def command_ledger_backup(args: argparse.Namespace) -> int:
    pages = backup_sqlite(args.ledger, Path(args.file))
    print(f"backed up {args.ledger} to {args.file} ({pages} pages)")
    return EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = commands.add_parser("ledger", help="inspect the ledger")
    add_ledger_commands(ledger.add_subparsers(dest="ledger_command", required=True))


def add_ledger_commands(ledger_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``list``, ``report``, ``export``, ``verify`` and ``backup`` under ``iso-host ledger``.

    Args:
        ledger_subparsers: what ``ledger.add_subparsers(...)`` returned; each command sets ``handler``.
    """
    listing = ledger_subparsers.add_parser("list", help="list transactions")
    listing.add_argument("--ledger", default=DEFAULT_LEDGER_URL)
    listing.add_argument("--tid")
    listing.add_argument("--batch", type=int)
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--limit", type=int, default=1_000, help="at most this many rows, oldest first (1000)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=command_ledger_list)

    ledger_help = f"ledger URL: sqlite:///FILE or postgresql://... (default {DEFAULT_LEDGER_URL})"
    report = ledger_subparsers.add_parser("report", help="per batch: status, host and terminal totals, differences")
    report.add_argument("--ledger", default=DEFAULT_LEDGER_URL, help=ledger_help)
    report.add_argument("--tid", help="only this terminal's batches")
    report.add_argument("--batch", type=int, help="only batches with this number")
    report.add_argument("--json", action="store_true", help="one JSON object per batch and line")
    report.set_defaults(handler=command_ledger_report)

    export = ledger_subparsers.add_parser("export", help="every transaction, oldest first, card numbers masked")
    export.add_argument("--ledger", default=DEFAULT_LEDGER_URL, help=ledger_help)
    export.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS))
    export.add_argument("--output", help="file to write (default: standard output)")
    export.set_defaults(handler=command_ledger_export)

    verify = ledger_subparsers.add_parser("verify", help="check the ledger's invariants (exit 1 on a violation)")
    verify.add_argument("--ledger", default=DEFAULT_LEDGER_URL, help=ledger_help)
    verify.set_defaults(handler=command_ledger_verify)

    backup = ledger_subparsers.add_parser("backup", help="copy a SQLite ledger consistently, even while in use")
    backup.add_argument("file", help="the copy to make (must not exist)")
    backup.add_argument("--ledger", default=DEFAULT_LEDGER_URL, help=ledger_help)
    backup.set_defaults(handler=command_ledger_backup)
