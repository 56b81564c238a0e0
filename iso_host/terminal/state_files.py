"""Where a terminal keeps its state, and what a state file must hold to be read. Pure but for ``legacy_note``'s
look at the disk.

One file per terminal *and* host *and* dialect: ``~/.iso-host/terminal-<TID>-<dialect>-<host>_<port>.json``. A
terminal's STAN counter, batch and working keys belong to the host that issued them; shared between two hosts (or
a CUP and an iso87 host on one port, one after the other) the second would see the first one's batch and keys.
``--state`` still names any file.

An older iso-host kept ``~/.iso-host/terminal-<TID>.json`` for every host. It is not read any more (whose host was
it?): the first command that makes the new file says so on stderr, once, with the ``--state`` that goes on with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

STATE_DIR: Final = ".iso-host"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]")
MAX_STAN: Final = 999_999
MAX_BATCH: Final = 999_999
MAX_ATC: Final = 0xFFFF  # tag 9F36 is two bytes
# What a state file may hold, with the rule each value must keep; anything else is refused by name.
_NUMBERS: Final = {"stan": (0, MAX_STAN), "batch": (1, MAX_BATCH), "ksn_counter": (0, 0x1FFFFF), "atc": (0, MAX_ATC)}
_TEXTS: Final = ("tpk_under_tmk", "tak_under_tmk")
_LABELS: Final = ("tid", "dialect", "host")
_LISTS: Final = ("items", "pending_reversals")
ITEM_KEYS: Final = ("kind", "stan", "amount", "status")


def _safe(text: str) -> str:
    """A host name, dialect or TID as a file name can hold it: other characters (``:`` of IPv6, ``/``) become ``_``."""
    return _UNSAFE.sub("_", text) or "_"


def default_state_path(home: Path, tid: str, dialect: str, host: str, port: int) -> Path:
    """``HOME/.iso-host/terminal-TERM0001-iso87binary-127.0.0.1_8583.json``."""
    return home / STATE_DIR / f"terminal-{_safe(tid)}-{_safe(dialect)}-{_safe(host)}_{port}.json"


def legacy_state_path(home: Path, tid: str) -> Path:
    """Where an older iso-host kept this TID's state, for every host and dialect."""
    return home / STATE_DIR / f"terminal-{_safe(tid)}.json"


def legacy_note(home: Path, tid: str, keyed: Path) -> str | None:
    """The line to print when an older, shared state file exists and the keyed one is about to be made, else None."""
    legacy = legacy_state_path(home, tid)
    if keyed.exists() or not legacy.is_file():
        return None
    return (f"note: {legacy} (an older iso-host's state, shared by every host and dialect) is not used; this"
            f" terminal's state for this host is {keyed}; give --state {legacy} to go on with the old one")  # fmt: skip


def document_problem(document: Any) -> str | None:
    """Why a state file's JSON cannot be a terminal's state (the first problem, naming the key), or None."""
    if not isinstance(document, Mapping):
        return "not a JSON object"
    known = {*_NUMBERS, *_TEXTS, *_LABELS, *_LISTS, "pan_seal_key"}
    if unknown := [key for key in document if key not in known]:
        return f"unknown key {unknown[0]!r}"
    return _numbers_problem(document) or _texts_problem(document) or _lists_problem(document)


def _numbers_problem(document: Mapping[str, Any]) -> str | None:
    for key, (low, high) in _NUMBERS.items():
        value = document.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"{key!r} must be a whole number from {low} to {high}, got {value!r}"
    return None


def _texts_problem(document: Mapping[str, Any]) -> str | None:
    for key in _TEXTS:
        value = document.get(key)
        if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]+", value)):
            return f"{key!r} must be hex or null"
    for key in _LABELS:
        if not isinstance(document.get(key, ""), str):
            return f"{key!r} must be text"
    return None


def _lists_problem(document: Mapping[str, Any]) -> str | None:
    for key in _LISTS:
        items = document.get(key, [])
        if not isinstance(items, list):
            return f"{key!r} must be a list"
        for index, item in enumerate(items):
            if problem := _item_problem(item):
                return f"{key}[{index}]: {problem}"
    return None


def _item_problem(item: Any) -> str | None:
    if not isinstance(item, Mapping):
        return "not a JSON object"
    for key in ITEM_KEYS:
        if key not in item:
            return f"no {key!r}"
    if not isinstance(item["amount"], int) or isinstance(item["amount"], bool) or item["amount"] < 0:
        return f"'amount' must be a whole number of minor units, got {item['amount']!r}"
    if not isinstance(item["stan"], str) or not (item["stan"].isdigit() or item["stan"] == ""):
        return f"'stan' must be digits as text, got {item['stan']!r}"
    return None
