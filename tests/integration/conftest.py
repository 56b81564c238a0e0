"""Fixtures for the integration tests (real sockets, real databases)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["iso87ascii", "iso87binary", "cup"])
def dialect_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)
