"""The crash test, short: `iso-host serve` killed with SIGKILL three times under load, on each ledger.

Terminals send sales, voids, refunds, reversals and settlements; after each kill the host restarts on the
same ledger and the terminals settle what the kill left in doubt. Every approval a terminal received must
be in the ledger as the terminal was last told, every acknowledged settlement must have closed its batch,
and ``iso-host ledger verify`` must pass. The full run is ``python tools/crash_test.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from databases import fresh_postgres_database

TOOL = Path(__file__).resolve().parents[2] / "tools" / "crash_test.py"


def _load_tool() -> ModuleType:
    """tools/crash_test.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("crash_test", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


crash_test = _load_tool()


@contextmanager
def empty_ledger(ledger: str, tmp_path: Path) -> Iterator[str]:
    if ledger == "sqlite":
        yield f"sqlite:///{tmp_path}/crash.db"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.mark.parametrize("ledger", ["sqlite", "postgresql"])
def test_nothing_acknowledged_is_lost_across_kills(ledger: str, tmp_path: Path) -> None:
    """Three SIGKILLs under load: no acknowledged approval or settlement lost, and the ledger verifies."""
    settings = crash_test.Settings(kills=3, seed=20_261_201, connections=6, min_answers=300, max_answers=1_000)
    lines: list[str] = []
    with empty_ledger(ledger, tmp_path) as url:
        report = crash_test.run_ledger(ledger, url, settings, tmp_path, lines.append)
    text = "\n".join([*lines, *report.lines()])
    assert report.lost == [], text
    assert report.inconsistent == [], text
    assert report.unexpected == [], text
    assert report.verify_exit == 0, text
    counts = report.counts
    assert min(counts["sale"], counts["void"], counts["refund"], counts["reversal"]) > 0, text
    assert counts["settlement"] > 0, text
    assert sum(n for kind, n in counts.items() if kind.startswith("cut_off_")) > 0, "the kills hit requests in flight"
