"""The one place a ledger URL picks its store."""

from __future__ import annotations

from iso_host.errors import ConfigError
from iso_host.ledger.store import Store


def open_store(url: str, *, group_commit: bool = True) -> Store:
    """The store for a ledger URL (``sqlite:///path``).

    Raises:
        ConfigError: an unsupported scheme or a malformed URL.
    """
    from iso_host.ledger.sqlite import SqliteStore  # noqa: PLC0415 - only the backend that is used

    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ConfigError(f"ledger.url: sqlite URL needs a file path, got {url!r}")
        return SqliteStore(path, group_commit=group_commit)
    if url.startswith(("postgresql://", "postgres://")):
        from iso_host.ledger.postgres import PostgresStore  # noqa: PLC0415 - only the backend that is used

        return PostgresStore(url, group_commit=group_commit)
    raise ConfigError(f"ledger.url: expected sqlite:///FILE, got {url!r}")
