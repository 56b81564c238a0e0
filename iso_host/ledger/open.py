"""The one place a ledger URL picks its store."""

from __future__ import annotations

from iso_host.errors import ConfigError
from iso_host.ledger.pan_key import DEFAULT_PAN_KEY, PanKeySource
from iso_host.ledger.store import Store
from iso_host.urls import redacted_url


def open_store(url: str, *, group_commit: bool = True, pan_key: PanKeySource | None = DEFAULT_PAN_KEY) -> Store:
    """The store for a ledger URL (``sqlite:///path``, ``postgresql://...``).

    ``pan_key`` says where the PAN hash key is (``pan_key.py``); None opens the ledger without it, for commands
    that only read rows.

    Raises:
        ConfigError: an unsupported scheme or a malformed URL.
    """
    from iso_host.ledger.sqlite import SqliteStore  # noqa: PLC0415 - only the backend that is used

    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ConfigError(f"ledger.url: sqlite URL needs a file path, got {url!r}")
        return SqliteStore(path, group_commit=group_commit, pan_key=pan_key)
    if url.startswith(("postgresql://", "postgres://")):
        from iso_host.ledger.postgres import PostgresStore  # noqa: PLC0415 - only the backend that is used

        return PostgresStore(url, group_commit=group_commit, pan_key=pan_key)
    raise ConfigError(f"ledger.url: expected sqlite:///FILE or postgresql://..., got {redacted_url(url)!r}")
