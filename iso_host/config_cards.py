"""The ``[[cards]]`` and ``[[scenarios]]`` tables: test cards and scenarios, checked key by key (live control
checks a scenario table the same way, through ``scenario_from_table``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from iso_host.config_checks import Problems, table_ok
from iso_host.core.issuer_scripts import SCRIPT_TEMPLATES, ScriptError, script_commands, wrapped
from iso_host.core.scenarios import ACTIONS as SCENARIO_ACTIONS
from iso_host.core.scenarios import Scenario
from iso_host.core.test_cards import DEFAULT_EMV_SCHEME, IMK_BYTES, STATUSES, TestCard
from iso_host.errors import ConfigError
from iso_host.money import minor_units
from iso_host.security import EMV_SCHEMES

CARD_KEYS: Final = {"pan", "pin", "expiry", "status", "balance", "limit", "imk", "emv_scheme"}
HEX_DIGITS: Final = frozenset("0123456789ABCDEFabcdef")
SCENARIO_MATCH_KEYS: Final = {"tid", "pan", "kind", "mti", "amount", "amount_cents"}
SCENARIO_KEYS: Final = {"name", "times", *SCENARIO_MATCH_KEYS, *SCENARIO_ACTIONS}


@dataclass(frozen=True, slots=True)
class CardConfig:
    """A test card: its PIN, expiry, status, balance and per-transaction limit (amounts in minor units), and the
    issuer master key its chip's application cryptograms are verified under, with their scheme."""

    pan: str = field(repr=False)
    pin: str | None = field(default=None, repr=False)
    expiry: str | None = None
    status: str = "active"
    balance_minor: int | None = None
    limit_minor: int | None = None
    imk: bytes | None = field(default=None, repr=False)
    emv_scheme: str = DEFAULT_EMV_SCHEME

    def test_card(self) -> TestCard:
        return TestCard(self.status, self.expiry, self.balance_minor, self.limit_minor, self.pin, imk=self.imk,
                        emv_scheme=self.emv_scheme)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """A `[[scenarios]]` entry; the PAN stays here and is matched by its keyed hash."""

    scenario: Scenario
    pan: str | None = field(default=None, repr=False)


def card_entry(problems: Problems, index: int, entry: Any) -> CardConfig | None:
    key = f"cards[{index}]"
    if not table_ok(problems, key, entry, CARD_KEYS):
        return None
    pan, pin = entry.get("pan"), entry.get("pin")
    pan_ok = isinstance(pan, str) and pan.isdigit() and 12 <= len(pan) <= 19
    pin_ok = pin is None or (isinstance(pin, str) and pin.isdigit() and 4 <= len(pin) <= 12)
    if not pan_ok:
        problems.add(f"{key}.pan", "must be 12 to 19 digits")  # never echo a PAN
    if not pin_ok:
        problems.add(f"{key}.pin", "must be 4 to 12 digits")  # never echo a PIN
    expiry, status = entry.get("expiry"), entry.get("status", "active")
    if expiry is not None and not (isinstance(expiry, str) and len(expiry) == 4 and expiry.isdigit()):
        problems.add(f"{key}.expiry", f"must be YYMM, got {expiry!r}")
        expiry = None
    if status not in STATUSES:
        problems.add(f"{key}.status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
        status = "active"
    balance = money(problems, f"{key}.balance", entry.get("balance"))
    limit = money(problems, f"{key}.limit", entry.get("limit"))
    imk, scheme = _chip_keys(problems, key, entry)
    if not (pan_ok and pin_ok):
        return None
    assert isinstance(pan, str)
    return CardConfig(pan, pin, expiry, status, balance, limit, imk, scheme)


def _chip_keys(problems: Problems, key: str, entry: dict[str, Any]) -> tuple[bytes | None, str]:
    """``imk`` (the IMK-AC, 32 hex digits) and ``emv_scheme`` (a name of EMV_SCHEMES, only with an IMK)."""
    raw_imk, scheme = entry.get("imk"), entry.get("emv_scheme", DEFAULT_EMV_SCHEME)
    imk: bytes | None = None
    if raw_imk is not None:
        digits = 2 * IMK_BYTES
        if isinstance(raw_imk, str) and len(raw_imk) == digits and all(c in HEX_DIGITS for c in raw_imk):
            imk = bytes.fromhex(raw_imk)
        else:
            problems.add(f"{key}.imk", f"must be {digits} hex digits (a double-length IMK-AC)")  # never echo a key
    if not isinstance(scheme, str) or scheme not in EMV_SCHEMES:
        problems.add(f"{key}.emv_scheme", f"must be one of {', '.join(EMV_SCHEMES)}, got {scheme!r}")
        scheme = DEFAULT_EMV_SCHEME
    elif "emv_scheme" in entry and raw_imk is None:
        problems.add(f"{key}.emv_scheme", "needs imk: the scheme says how cryptograms under the IMK are computed")
    return imk, scheme


def money(problems: Problems, key: str, raw: Any) -> int | None:
    """An amount in major units (``100``, ``12.34`` or ``"12.34"``) as minor units."""
    if raw is None:
        return None
    try:
        minor = None if isinstance(raw, bool) else minor_units(Decimal(str(raw)))
    except InvalidOperation:
        minor = None
    if minor is None:
        problems.add(key, f"must be an amount such as 100.00, got {raw!r}")
    return minor


def _scenario_texts(problems: Problems, key: str, entry: dict[str, Any], values: dict[str, Any]) -> None:
    for name in ("name", "tid", "kind", "mti", "respond"):
        if name in entry:
            if not isinstance(entry[name], str):
                problems.add(f"{key}.{name}", f"must be a string, got {entry[name]!r}")
            values[name] = str(entry[name])
    if "respond" in values and (len(values["respond"]) != 2 or not values["respond"].isalnum()):
        problems.add(f"{key}.respond", f"must be a 2-character response code, got {values['respond']!r}")
        values.pop("respond")


def _scenario_numbers(problems: Problems, key: str, entry: dict[str, Any], values: dict[str, Any]) -> None:
    for name, low, high in (("amount_cents", 0, 99), ("delay_ms", 0, 600_000), ("times", 1, 10**9)):
        raw = entry.get(name)
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high):
            problems.add(f"{key}.{name}", f"must be a whole number {low}..{high}, got {raw!r}")
        elif raw is not None:
            values[name] = raw
    for name in ("no_reply", "close", "bad_mac"):
        if name in entry and not isinstance(entry[name], bool):
            problems.add(f"{key}.{name}", f"must be true or false, got {entry[name]!r}")
        elif name in entry:
            values[name] = entry[name]
    if "amount" in entry and (amount := money(problems, f"{key}.amount", entry["amount"])) is not None:
        values["amount_minor"] = amount


def _scenario_scripts(problems: Problems, key: str, entry: dict[str, Any], values: dict[str, Any]) -> None:
    """``script71`` / ``script72``: a template's contents as hex, wrapped in their templates for field 55."""
    scripts: dict[str, bytes] = {}
    for template in SCRIPT_TEMPLATES:
        name = f"script{template}"
        if name not in entry:
            continue
        try:
            scripts[template] = script_commands(template, entry[name])
        except ScriptError as error:
            problems.add(f"{key}.{name}", str(error))
    if scripts:
        values["issuer_scripts"] = wrapped(scripts)


def parse_scenario(problems: Problems, key: str, entry: Any) -> ScenarioConfig | None:
    """One scenario table (from `[[scenarios]]`, or a control command later)."""
    if not table_ok(problems, key, entry, SCENARIO_KEYS):
        return None
    values: dict[str, Any] = {}
    _scenario_texts(problems, key, entry, values)
    _scenario_numbers(problems, key, entry, values)
    _scenario_scripts(problems, key, entry, values)
    pan = entry.get("pan")
    if pan is not None and not (isinstance(pan, str) and pan.isdigit()):
        problems.add(f"{key}.pan", "must be digits")  # never echo a PAN
    if not set(entry) & set(SCENARIO_ACTIONS):
        problems.add(key, f"needs an action: one of {', '.join(SCENARIO_ACTIONS)}")
    try:
        return ScenarioConfig(Scenario(**values), pan if isinstance(pan, str) else None)
    except (AssertionError, TypeError):
        return None


def scenario_from_table(entry: Any, key: str) -> ScenarioConfig:
    """One scenario table from outside a file (a live-control command), checked as ``[[scenarios]]`` entries are.

    Raises:
        ConfigError: one ``key.name: problem`` line per problem (no file name: the table came from no file).
    """
    problems = Problems("")
    parsed = parse_scenario(problems, key, entry)
    if problems.lines or parsed is None:
        lines = [line.removeprefix(": ") for line in problems.lines] or [f"{key}: is not a valid scenario"]
        raise ConfigError("\n".join(lines))
    return parsed


def scenario_entry(problems: Problems, index: int, entry: Any) -> ScenarioConfig | None:
    return parse_scenario(problems, f"scenarios[{index}]", entry)
