"""What every configuration table's check shares: problems gathered one line each, and tables that name
their unknown keys. Reading the file and the tables themselves: ``config.py`` and ``config_cards.py``."""

from __future__ import annotations

from typing import Any

from iso_host.errors import ConfigError


class Problems:
    """Every problem of one source, reported together (one line each), then raised as one ConfigError."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, problem: str) -> None:
        self.lines.append(f"{self.source}: {key}: {problem}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("\n".join(self.lines))


def string_value(problems: Problems, key: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        problems.add(key, f"must be a non-empty string, got {value!r}")
        return None
    return value


def table_ok(problems: Problems, key: str, entry: Any, allowed: set[str]) -> bool:
    """Whether ``entry`` is a table; its unknown keys are reported either way."""
    if not isinstance(entry, dict):
        problems.add(key, "must be a table")
        return False
    for unknown in sorted(set(entry) - allowed):
        problems.add(f"{key}.{unknown}", f"unknown key (expected one of {', '.join(sorted(allowed))})")
    return True
