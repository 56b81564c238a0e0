"""Secrets the tests handle, so the whole run's log can be checked for them at the end (see conftest.py)."""

from __future__ import annotations

SECRETS: set[str] = set()


def remember_secret(*values: str | bytes | None) -> None:
    """Register clear PANs, keys and PIN blocks (as text or bytes) that must never reach a log line."""
    for value in values:
        if value:
            SECRETS.add(value.hex().upper() if isinstance(value, bytes) else value.upper())
