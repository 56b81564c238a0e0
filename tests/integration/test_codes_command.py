"""`iso-host codes` run as a user runs it: each response code with its meaning and the reasons behind it."""

from __future__ import annotations

import json
import subprocess

from processes import ISO_HOST

from iso_host.wire import builtin_dialect_names


def codes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISO_HOST, "codes", *args], capture_output=True, text=True, timeout=60, check=False)


def test_one_dialect_lists_codes_meanings_and_reasons() -> None:
    """CUP (specs/cup.toml [reasons]): 25 stands for four reasons, 00 also answers an out-of-balance settlement."""
    result = codes("--dialect", "cup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cup  China UnionPay")
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["00"].split()[1] == "Approved"
    assert rows["00"].rstrip().endswith("APPROVED, OUT_OF_BALANCE")
    assert "Original not found, already cancelled, batch closed or void window expired" in rows["25"]
    assert rows["25"].rstrip().endswith("ORIGINAL_NOT_FOUND, ALREADY_CANCELLED, BATCH_CLOSED, VOID_WINDOW_EXPIRED")
    assert "MAC check failed" in rows["A0"]
    assert list(rows) == sorted(rows)


def test_every_dialect_as_json_lines() -> None:
    """Without --dialect every built-in dialect; --json: one object per code, every reason under exactly one code."""
    result = codes("--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {row["dialect"] for row in rows} == set(builtin_dialect_names())
    iso87 = {row["code"]: row for row in rows if row["dialect"] == "iso87binary"}
    assert iso87["51"] == {"dialect": "iso87binary", "code": "51", "meaning": "Insufficient funds",
                           "reasons": ["INSUFFICIENT_FUNDS"]}  # fmt: skip
    reasons = [reason for row in iso87.values() for reason in row["reasons"]]
    assert len(reasons) == len(set(reasons))
    assert "MAC_FAILED" in reasons


def test_an_unknown_dialect_exits_2_with_one_line() -> None:
    result = codes("--dialect", "nosuch")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "nosuch" in result.stderr
