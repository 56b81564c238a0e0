"""Fixtures for the console's browser tests: a real `iso-host serve` with its console (console_host.py), and Debian's
Chromium driven by Playwright (never a downloaded browser).

Without /usr/bin/chromium the tests skip, except when ``CI`` is set, where they fail: a CI run that silently skipped
the browser would prove nothing about the console.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from console_host import ARTIFACTS, UI_TIMEOUT_MS, Host
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; skipped when it is missing, failed when it is missing on CI."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: on CI the browser tests must run (.ci/run installs Debian's chromium)")
    pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` to run the console's browser tests")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, chromium: Path) -> Iterator[Host]:
    """One host for the module: its tests are steps of one QA session, in order (one terminal, one open batch)."""
    running = Host(tmp_path_factory.mktemp("console"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, host: Host, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab on the console; afterwards a screenshot in artifacts/, and the page must have thrown nothing."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=host.url)
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    thrown: list[str] = []
    tab.on("pageerror", lambda error: thrown.append(str(error)))
    tab.on("console", _console_errors(thrown))
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()
    assert not thrown, f"the page reported errors: {thrown}"


def _console_errors(thrown: list[str]) -> Callable[[ConsoleMessage], None]:
    """JavaScript errors logged to the console; an API answer of 4xx that a test provoked is expected and shown
    inline by the page, so the browser's own "Failed to load resource" lines are not the page's errors."""

    def collect(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            thrown.append(message.text)

    return collect
