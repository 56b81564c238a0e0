"""Fixtures for the integration tests (real sockets, real databases)."""

from __future__ import annotations

import pytest
from databases import BACKENDS


@pytest.fixture(params=["iso87ascii", "iso87binary", "cup"])
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
