"""The event loop a host process runs on: asyncio's own, or uvloop (the ``[fast]`` extra)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

from iso_host.errors import ConfigError


def event_loop(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop ``serve`` runs on (its name, for the listening line, and its factory): ``uvloop`` when chosen or,
    with ``auto``, when installed (``pip install 'iso-host[fast]'``); else asyncio's own.

    Raises:
        ConfigError: ``uvloop`` chosen and not installed.
    """
    if choice != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if choice == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed (pip install 'iso-host[fast]')") from None
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return "uvloop", factory
    return "asyncio", asyncio.new_event_loop
