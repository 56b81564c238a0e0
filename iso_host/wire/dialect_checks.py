"""What every part of a dialect's validation shares: one-line errors naming the file and the key."""

from __future__ import annotations

from typing import Any

from iso_host.errors import ConfigError


def fail(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}")


def check_keys(source: str, where: str, table: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise fail(source, f"{prefix}{unknown[0]}", f"unknown key (expected one of {', '.join(sorted(allowed))})")


def string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def field_reference_ok(reference: str, fields: dict[str, Any], subfields: dict[str, Any]) -> bool:
    head, _, sub = reference.partition(".")
    if head not in fields:
        return False
    return not sub or any(name == sub for name, _ in subfields.get(head, ()))
