"""``iso-host ledger list | report | export | verify | backup``: their arguments, and how their answers are printed.

Rule: this module parses and prints; every read of a ledger happens in ``iso_host.ledger.reports``, on a read-only
snapshot (beside a running host too), so a database that is no iso-host ledger is refused and left as it was. The
ledger is ``--ledger``, else ``--config``'s ``[ledger] url``, else the host's default. A problem the user can fix is
raised as ``ConfigError`` or ``StoreError``, which ``cli.main`` prints as one line (exit 2). Handlers take the
parsed arguments and return the exit status, as every command's do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Final, TextIO

from iso_host.cli.exit_codes import EXIT_NEGATIVE, EXIT_OK
from iso_host.config import Config, load_config
from iso_host.errors import ConfigError
from iso_host.ledger import TransactionFilter
from iso_host.ledger.model import BatchTotals, Totals
from iso_host.ledger.reports import (
    EXPORT_COLUMNS,
    EXPORT_FORMATS,
    BatchReport,
    backup_sqlite,
    batch_reports,
    export_rows,
    json_line,
    list_transactions,
    verify_ledger,
)
from iso_host.money import format_amount
from iso_host.private_files import open_private
from iso_host.styles import Family, family_of
from iso_host.vocab import Status
from iso_host.wire import load_dialect

DEFAULT_LEDGER_URL: Final = Config().ledger_url
PROGRESS_MIN_ROWS: Final = 10_000  # a smaller export is over before a bar would tell anything
PROGRESS_BAR_WIDTH: Final = 40  # characters between the brackets; the whole line stays under 80


def _amount(minor: int | None) -> str:
    """Minor units as ``12.34`` (two decimals, as ``ledger list`` shows them); ``-`` for none."""
    if minor is None:
        return "-"
    assert minor >= 0, "ledger amounts are unsigned"
    return format_amount(minor)


def splits_domestic_foreign(family: Family) -> bool:
    """Whether the family's settlement keeps domestic and foreign cards apart (CUP), asked of the family itself:
    totals that differ only in that split disagree for it. iso87 compares one set of totals."""
    one = Totals(debit_count=1, debit_minor=1)
    agreed, _ = family.compare(BatchTotals(domestic=one), BatchTotals(foreign=one))
    return not agreed


def _sides(totals: BatchTotals, split: bool) -> tuple[tuple[str, Totals], ...]:
    if not split:
        return (("", totals.overall),)
    return (("domestic", totals.domestic), ("foreign", totals.foreign), ("overall", totals.overall))


def _totals_lines(label: str, currency: str, totals: BatchTotals | None, split: bool) -> list[str]:
    if totals is None:
        return [f"  {label:<18} not reported"]
    side_width = 9 if split else 0
    return [
        f"  {label if index == 0 else '':<18} {currency if index == 0 else '':<4} {side:<{side_width}}"
        f"{t.debit_count:>8} {_amount(t.debit_minor):>14} {t.credit_count:>8} {_amount(t.credit_minor):>14}"
        for index, (side, t) in enumerate(_sides(totals, split))
    ]


def _reported_currency(report: BatchReport) -> str:
    """The currency the settlement's totals were in: the batch's one currency (a settlement carries none)."""
    currencies = [currency for currency, _ in report.host_totals_by_currency]
    return currencies[0] if len(currencies) == 1 else ("all" if currencies else "-")


def report_lines(report: BatchReport, *, split: bool = False) -> list[str]:
    """A batch as the ``report`` table prints it: state, counts, totals per currency on both sides (domestic and
    foreign apart when ``split``), differences."""
    state = ", ".join(part for part in (report.status, report.result) if part)
    settled = f", settled {report.settled_at}" if report.settled_at else ""
    counts = ", ".join(f"{kind} {status} {count}" for kind, status, count in report.counts) or "none"
    side = f"{'':<9}" if split else ""
    lines = [
        f"{report.tid} {report.mid} batch {report.batch_number}: {state}{settled}",
        f"  transactions: {report.transaction_count} ({counts})",
        f"  {'totals':<18} {'cur':<4} {side}{'debits':>8} {'debit amount':>14} {'credits':>8} {'credit amount':>14}",
    ]
    by_currency = report.host_totals_by_currency or (("-", report.host_totals),)
    for index, (currency, totals) in enumerate(by_currency):
        lines += _totals_lines("host (now)" if index == 0 else "", currency, totals, split)
    reported = _reported_currency(report)
    if report.recorded_host_totals is not None and report.recorded_host_totals != report.host_totals:
        lines += _totals_lines("host (at settle)", reported, report.recorded_host_totals, split)
    if report.status != "open" or report.terminal_totals is not None:
        lines += _totals_lines("terminal", reported, report.terminal_totals, split)
        if reported == "all":
            lines.append("  note: a settlement carries one set of totals: the terminal's are every currency's summed")
    lines.append(f"  differences: {len(report.differences) or 'none'}")
    lines += [
        f"    STAN {d.stan} {d.difference.value:<19} host {_amount(d.host_amount_minor):>12}"
        f" terminal {_amount(d.terminal_amount_minor):>12} RRN {d.rrn or '-'} PAN {d.masked_pan or '-'}"
        for d in report.differences
    ]
    return lines


def _totals_json(totals: BatchTotals | None, split: bool) -> dict[str, dict[str, int]] | None:
    if totals is None:
        return None
    return {side or "overall": asdict(t) for side, t in _sides(totals, split)}


def report_json(report: BatchReport, *, split: bool = False) -> dict[str, object]:
    """A batch as ``report --json`` prints it: one JSON object, amounts in minor units, the host's totals by currency;
    ``domestic`` and ``foreign`` beside ``overall`` only when ``split``."""
    counts: dict[str, dict[str, int]] = {}
    for kind, status, count in report.counts:
        counts.setdefault(kind, {})[status] = count
    return {
        "tid": report.tid, "mid": report.mid, "batch_number": report.batch_number, "status": report.status,
        "result": report.result, "settled_at": report.settled_at, "transactions": report.transaction_count,
        "counts": counts, "currencies": [currency for currency, _ in report.host_totals_by_currency],
        "host_totals": {currency: _totals_json(t, split) for currency, t in report.host_totals_by_currency},
        "recorded_host_totals": _totals_json(report.recorded_host_totals, split),
        "terminal_totals": _totals_json(report.terminal_totals, split),
        "differences": [asdict(d) | {"difference": d.difference.value} for d in report.differences],
    }  # fmt: skip


def ledger_url(args: argparse.Namespace) -> str:
    """``--ledger``, else ``--config``'s ``[ledger] url``, else the host's default."""
    if args.ledger is not None:
        return str(args.ledger)
    return load_config(args.config).ledger_url if args.config else DEFAULT_LEDGER_URL


def command_ledger_list(args: argparse.Namespace) -> int:
    status = Status(args.status) if args.status else None
    where = TransactionFilter(tid=args.tid, batch_number=args.batch, status=status, limit=args.limit)
    rows = list_transactions(ledger_url(args), where)
    if args.json:
        for values in rows:
            print(json_line(values))
        return EXIT_OK
    print(f"{'RRN':<12} {'TID':<8} {'BATCH':>5} {'STAN':<6} {'KIND':<15} {'AMOUNT':>12} {'CUR':<3} "
          f"{'PAN':<19} {'STATUS':<18} {'RC':<2} {'REASON':<22} ORIGINAL")  # fmt: skip
    for values in rows:
        r = dict(zip(EXPORT_COLUMNS, values, strict=True))
        print(f"{r['rrn']:<12} {r['tid']:<8} {r['batch_number']:>5} {r['stan']:<6} {r['kind']:<15} "
              f"{_amount(int(str(r['amount_minor']))):>12} {r['currency']:<3} {r['masked_pan'] or '-':<19} "
              f"{r['status']:<18} {r['response_code']:<2} {r['reason']:<22} {r['original_rrn'] or '-'}")  # fmt: skip
    return EXIT_OK


def _report_dialect(args: argparse.Namespace) -> str:
    if args.dialect is not None:
        return str(args.dialect)
    return load_config(args.config).dialect if args.config else Config().dialect


def command_ledger_report(args: argparse.Namespace) -> int:
    split = splits_domestic_foreign(family_of(load_dialect(_report_dialect(args))))
    reports = batch_reports(ledger_url(args), tid=args.tid, batch=args.batch)
    if args.json:
        for report in reports:
            print(json.dumps(report_json(report, split=split)))
        return EXIT_OK
    if not reports:
        print("no batches")
    for index, report in enumerate(reports):
        if index:
            print()
        print("\n".join(report_lines(report, split=split)))
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
            export_rows(ledger_url(args), args.format, sys.stdout, bar)
            return EXIT_OK
        count = _export_to_file(ledger_url(args), args.format, Path(args.output), bar)
    finally:
        if bar is not None:
            bar.finish()
    print(f"exported {count} transactions to {args.output}", file=sys.stderr)
    return EXIT_OK


def command_ledger_verify(args: argparse.Namespace) -> int:
    verification = verify_ledger(ledger_url(args))
    if verification.violations:
        for violation in verification.violations:
            print(violation)
        return EXIT_NEGATIVE
    print(f"ledger ok: {verification.transaction_count} transactions, {verification.batch_count} batches checked")
    return EXIT_OK


def command_ledger_backup(args: argparse.Namespace) -> int:
    url = ledger_url(args)
    pages = backup_sqlite(url, Path(args.file))
    print(f"backed up {url} to {args.file} ({pages} pages)")
    return EXIT_OK


LEDGER_COMMANDS: Final = ("list", "report", "export", "verify", "backup")
EXIT_CODES: Final = "Exit codes: 0 done; 2 a usage error, or a ledger that cannot be read or is no iso-host ledger"
VERIFY_EXIT_CODES: Final = "Exit codes: 0 the ledger is sound; 1 violations found (one line each); 2 as every command"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    epilog = f"Every command only reads the ledger (backup writes its copy). {EXIT_CODES}"
    ledger = commands.add_parser("ledger", help="inspect the ledger", epilog=epilog)
    subcommands = ledger.add_subparsers(dest="ledger_command", title="commands", metavar="COMMAND")
    add_ledger_commands(subcommands)

    def choose(_args: argparse.Namespace) -> int:
        ledger.error(f"choose one of {', '.join(LEDGER_COMMANDS)}")

    ledger.set_defaults(handler=choose)


def _status(text: str) -> str:
    """``--status approved`` as ``APPROVED``: the ledger's statuses, in any case."""
    return text.upper()


def _source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="URL",
                        help=f"sqlite:///FILE or postgresql://... (default: --config's [ledger] url, else"
                             f" {DEFAULT_LEDGER_URL})")  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="the host's TOML config: its [ledger] url (--ledger wins)")


def add_ledger_commands(ledger_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``list``, ``report``, ``export``, ``verify`` and ``backup`` under ``iso-host ledger``.

    Args:
        ledger_subparsers: what ``ledger.add_subparsers(...)`` returned; each command sets ``handler``.
    """
    read_only = "Reads only: a database that is no iso-host ledger is refused and left as it is."
    listing = ledger_subparsers.add_parser("list", help="list transactions, card numbers masked",
                                           epilog=f"{read_only} {EXIT_CODES}")  # fmt: skip
    _source_flags(listing)
    listing.add_argument("--tid", help="only this terminal's transactions (default: every terminal)")
    listing.add_argument("--batch", type=int, metavar="N", help="only batch number N (default: every batch)")
    listing.add_argument("--status", type=_status, choices=[s.value for s in Status], metavar="STATUS",
                         help=f"only this status, any case: {', '.join(Status)} (default: every status)")  # fmt: skip
    listing.add_argument("--limit", type=int, default=1_000, metavar="N",
                         help="at most N rows, oldest first (default 1000)")  # fmt: skip
    listing.add_argument("--json", action="store_true",
                         help="one JSON object per line, as export --format jsonl (default: a table)")  # fmt: skip
    listing.set_defaults(handler=command_ledger_list)

    report = ledger_subparsers.add_parser(
        "report", help="per batch: status, host and terminal totals per currency, differences",
        epilog=f"{read_only} {EXIT_CODES}",
    )  # fmt: skip
    _source_flags(report)
    report.add_argument("--dialect", metavar="NAME|PATH",
                        help="the host's dialect: domestic and foreign totals apart where it keeps them apart (cup)"
                             f" (default: --config's [server] dialect, else {Config().dialect})")  # fmt: skip
    report.add_argument("--tid", help="only this terminal's batches (default: every terminal)")
    report.add_argument("--batch", type=int, metavar="N", help="only batches numbered N (default: every batch)")
    report.add_argument("--json", action="store_true", help="one JSON object per batch and line (default: a table)")
    report.set_defaults(handler=command_ledger_report)

    export = ledger_subparsers.add_parser("export", help="every transaction, oldest first, card numbers masked",
                                          epilog=f"{read_only} {EXIT_CODES}")  # fmt: skip
    _source_flags(export)
    export.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS),
                        help="csv (with a header) or jsonl (one object per line, as list --json)")  # fmt: skip
    export.add_argument("--output", metavar="FILE", help="file to write, 0600 (default: standard output)")
    export.set_defaults(handler=command_ledger_export)

    verify = ledger_subparsers.add_parser("verify", help="check the ledger's invariants (exit 1 on a violation)",
                                          epilog=f"{read_only} {VERIFY_EXIT_CODES}")  # fmt: skip
    _source_flags(verify)
    verify.set_defaults(handler=command_ledger_verify)

    backup = ledger_subparsers.add_parser("backup", help="copy a SQLite ledger consistently, even while in use",
                                          epilog=EXIT_CODES)  # fmt: skip
    backup.add_argument("file", help="the copy to make, 0600 (must not exist)")
    _source_flags(backup)
    backup.set_defaults(handler=command_ledger_backup)
