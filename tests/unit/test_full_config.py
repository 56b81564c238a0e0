"""examples/iso-host.full.toml cannot rot: every key iso-host reads is in it, its active lines are the defaults, and its
commented-out examples are valid too."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path

from iso_host.config import SECTIONS, TERMINAL_KEYS, Config, load_config, parse_config
from iso_host.config_cards import CARD_KEYS, SCENARIO_KEYS

FULL = Path(__file__).resolve().parents[2] / "examples" / "iso-host.full.toml"
HEADER = re.compile(r"^(?:# )?(\[\[?[\w.]+\]\]?)")
KEY = re.compile(r"^(?:# )?([a-z_0-9]+) = ")
COMMENTED = re.compile(r"(?m)^# (\[\[?[\w.]+\]\]?|[a-z_0-9]+ = )")  # a commented-out header or key, not prose


def keys_by_table(text: str) -> dict[str, set[str]]:
    """The keys under each table header, active or commented out: ``{"[server]": {"host", ...}, ...}``."""
    tables: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        if header := HEADER.match(line):
            current = header.group(1)
            tables.setdefault(current, set())
        elif key := KEY.match(line):
            tables.setdefault(current, set()).add(key.group(1))
    return tables


def test_loads_as_the_defaults() -> None:
    """Loaded as it is, the file configures the host exactly as no --config does."""
    assert load_config(str(FULL)) == replace(Config(), source=str(FULL))


def test_every_key_is_there() -> None:
    tables = keys_by_table(FULL.read_text(encoding="utf-8"))
    arrays = {"[[terminals]]", "[[terminals.operators]]", "[[cards]]", "[[scenarios]]"}
    missing = {f"[{name}]": sorted(set(keys) - tables.get(f"[{name}]", set())) for name, keys in SECTIONS.items()}
    missing |= {
        "[[terminals]]": sorted(TERMINAL_KEYS - {"operators"} - tables["[[terminals]]"]),
        "[[terminals.operators]]": sorted({"id", "can_void"} - tables["[[terminals.operators]]"]),
        "[[cards]]": sorted(CARD_KEYS - tables["[[cards]]"]),
        "[[scenarios]]": sorted(SCENARIO_KEYS - tables["[[scenarios]]"]),
    }
    assert {table: keys for table, keys in missing.items() if keys} == {}
    assert set(tables) - {f"[{section}]" for section in SECTIONS} - arrays == set(), "a table iso-host does not read"


def test_the_commented_examples_are_valid() -> None:
    """With every commented-out key and table switched on, the file still parses: each example value is one iso-host
    takes, and no key in the file is unknown to it."""
    everything = COMMENTED.sub(r"\1", FULL.read_text(encoding="utf-8"))
    config = parse_config(tomllib.loads(everything), "uncommented")
    assert config.tls is not None
    assert config.events is not None
    assert (len(config.cards), len(config.scenarios)) == (1, 1)
    assert config.terminals[0].operators == (("001", True),)
