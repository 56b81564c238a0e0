"""`iso-host codes [--dialect D] [--json]`: the response codes a dialect answers, what each means, and the reasons
(the host's own words for why, a dialect's ``[reasons]`` table) that produce it."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Final

from iso_host.cli.exit_codes import EXIT_ERROR, EXIT_OK
from iso_host.console.fields import response_meaning
from iso_host.errors import ConfigError
from iso_host.vocab import Reason
from iso_host.wire import Dialect, builtin_dialect_names, load_dialect

MEANING_WIDTH: Final = 44  # a longer meaning pushes its reasons right rather than widening every row


@dataclass(frozen=True, slots=True)
class CodeRow:
    dialect: str
    code: str
    meaning: str
    reasons: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {"dialect": self.dialect, "code": self.code, "meaning": self.meaning, "reasons": list(self.reasons)}


def code_rows(dialect: Dialect) -> list[CodeRow]:
    """One row per distinct field 39 code of ``dialect``, in code order; reasons in the host's order."""
    by_code: dict[str, list[str]] = {}
    for reason in Reason:
        code = dialect.response_codes.get(reason)
        if code is not None:
            by_code.setdefault(code, []).append(reason.value)
    return [
        CodeRow(dialect.name, code, response_meaning(code, dialect) or "", tuple(reasons))
        for code, reasons in sorted(by_code.items())
    ]


def _print_table(dialect: Dialect, rows: list[CodeRow]) -> None:
    print(f"{dialect.name}" + (f"  {dialect.description}" if dialect.description else ""))
    width = min(max((len(row.meaning) for row in rows), default=0), MEANING_WIDTH)
    for row in rows:
        print(f"  {row.code:<4}{row.meaning:<{width}}  {', '.join(row.reasons)}")


def command_codes(args: argparse.Namespace) -> int:
    try:
        dialects = [load_dialect(args.dialect)] if args.dialect else [load_dialect(n) for n in builtin_dialect_names()]
    except ConfigError as error:
        print(f"iso-host: {error}", file=sys.stderr)
        return EXIT_ERROR
    for index, dialect in enumerate(dialects):
        rows = code_rows(dialect)
        if args.json:
            for row in rows:
                print(json.dumps(row.as_json()))
            continue
        if index:
            print()
        _print_table(dialect, rows)
    return EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    codes = commands.add_parser(
        "codes", help="list response codes (F39), their meanings and the reasons that produce them",
        description="List each dialect's response codes (F39) with their meaning and the host's reasons that answer "
        "with them (the dialect's [reasons] table). Exit 0, or 2 for an unknown dialect.",
    )  # fmt: skip
    codes.add_argument("--dialect", metavar="NAME|PATH", help="one dialect (default: every built-in dialect)")
    codes.add_argument("--json", action="store_true", help="one JSON object per code: dialect, code, meaning, reasons")
    codes.set_defaults(handler=command_codes)
