"""``iso-host serve --loop``: uvloop when installed (auto) or asked for, asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from iso_host.errors import ConfigError
from iso_host.event_loops import event_loop

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.parametrize(
    ("choice", "installed", "expected"),
    [
        pytest.param("auto", False, "asyncio", id="auto-without-uvloop"),
        pytest.param("asyncio", False, "asyncio", id="asyncio-without-uvloop"),
        pytest.param("asyncio", True, "asyncio", id="asyncio-with-uvloop"),
        pytest.param("auto", True, "uvloop", id="auto-with-uvloop"),
        pytest.param("uvloop", True, "uvloop", id="uvloop-with-uvloop"),
    ],
)  # fmt: skip
def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch, choice: str, installed: bool, expected: str) -> None:
    """The loop named in the listening line is the one the factory makes."""
    if installed and not HAVE_UVLOOP:
        pytest.skip("uvloop is not installed (pip install -e '.[fast]')")
    if not installed:
        monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    name, factory = event_loop(choice)
    assert name == expected
    loop = factory()
    try:
        assert (type(loop).__module__.split(".")[0] == "uvloop") is (expected == "uvloop")
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_uvloop_asked_for_and_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(ConfigError, match=r"pip install 'iso-host\[fast\]'"):
        event_loop("uvloop")
