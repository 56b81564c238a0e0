"""Run-wide fixtures: every in-process log line of the test run goes to one JSON file, checked at the end.

The run's hosts (in this process and the ones it starts) take their PAN hash key from ``ISO_HOST_PAN_KEY``, so no
test writes ``~/.iso-host/pan-hash.key``; the tests of the key file itself unset it. They serve no web console
(``ISO_HOST_HTTP=off``) unless a test asks for one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from log_audit import SECRETS, remember_secret

from iso_host.config import DEMO_TMK
from iso_host.log import configure

TEST_PAN_HASH_KEY = "5A17" * 16
os.environ.setdefault("ISO_HOST_PAN_KEY", TEST_PAN_HASH_KEY)
# The hosts the tests start serve no web console (it would cost each start the import of aiohttp, and 8080 is one
# port for all): the console's own tests ask for one with --http 127.0.0.1:0.
os.environ.setdefault("ISO_HOST_HTTP", "off")
remember_secret(DEMO_TMK, "4761739001010010", TEST_PAN_HASH_KEY)


@pytest.fixture(scope="session", autouse=True)
def audited_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Logs of the whole run contain no clear PAN, key or PIN block that a test registered."""
    path = tmp_path_factory.mktemp("logs") / "run.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        configure("json", "debug", stream)
        yield path
        structlog.reset_defaults()
    text = path.read_text(encoding="utf-8").upper()
    leaked = sorted(secret for secret in SECRETS if secret in text)
    assert not leaked, f"{len(leaked)} secret(s) appear in the test run's log, e.g. one of length {len(leaked[0])}"
