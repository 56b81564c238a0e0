"""Fixtures for the integration tests (real sockets, real databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from databases import BACKENDS, opened, store_url

from iso_host.ledger import Store


@pytest.fixture(params=["iso87ascii", "iso87binary", "iso87bcd", "cup"])
def dialect_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each ledger backend: a SQLite file, and a fresh PostgreSQL database."""
    return str(request.param)


@pytest.fixture(params=["iso87binary", "cup"])
def family(request: pytest.FixtureRequest) -> str:
    """One dialect of each family: generic ISO 8583:1987 and China UnionPay."""
    return str(request.param)


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty ledger of each backend."""
    with store_url(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture
async def store(ledger_url: str) -> AsyncIterator[Store]:
    """An open store on ``ledger_url``, closed afterwards."""
    store = await opened(ledger_url)
    try:
        yield store
    finally:
        await store.close()
