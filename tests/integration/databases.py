"""Throw-away databases for the store tests: a fresh, empty PostgreSQL database per test, or a SQLite file.

``fresh_postgres_database()`` creates ``iso_host_test_<random>`` on the server named by
``ISO_HOST_TEST_POSTGRES`` (default: the local one), yields its URL and drops it afterwards. When the server
cannot be reached the test is skipped, except on CI (``CI=true``), where it fails: a CI run that silently
skipped the PostgreSQL ledger would prove nothing about it.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from iso_host.ledger import Store, open_store

BASE_URL_VARIABLE = "ISO_HOST_TEST_POSTGRES"
DEFAULT_BASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")
START_HINT = (
    "PostgreSQL is not running on 127.0.0.1:5432; start it with:"
    " pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)


def base_url() -> str:
    """The maintenance database the test databases are created from."""
    return os.environ.get(BASE_URL_VARIABLE, DEFAULT_BASE_URL)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _maintenance_connection() -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the base database, or the test skips (fails on CI) when the server is down."""
    try:
        return psycopg.connect(base_url(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if os.environ.get("CI") == "true":
            pytest.fail(f"{START_HINT} ({reason}); on CI the PostgreSQL tests must run, not skip")
        pytest.skip(START_HINT)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (disconnecting whoever is still on it)."""
    name = f"iso_host_test_{secrets.token_hex(6)}"
    with _maintenance_connection() as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(base_url(), name)
    finally:
        with _maintenance_connection() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A ledger URL for ``backend`` ("sqlite" or "postgresql"), empty, removed after the block.

    Parametrize a fixture over ``BACKENDS`` and enter this in it to run a test against both stores.
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/l.db"
    elif backend == "postgresql":
        with fresh_postgres_database() as url:
            yield url
    else:
        raise ValueError(f"unknown ledger backend {backend!r}; expected one of {BACKENDS}")


async def opened(url: str, *, group_commit: bool = True) -> Store:
    """A store on ``url``, open (created and migrated)."""
    store = open_store(url, group_commit=group_commit)
    await store.open()
    return store


def ledger_query(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """The rows of one SELECT (``%s`` placeholders) on a ledger of either backend, read outside the store."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            return [tuple(row) for row in connection.execute(sql.replace("%s", "?"), params)]
    with psycopg.connect(url) as connection:
        return [tuple(row) for row in connection.execute(sql, params)]
