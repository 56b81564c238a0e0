"""Configuration: a TOML file, command-line overrides, and checks that name every bad key.

Every problem in a file is reported in one pass (one line each), before the port is bound.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from iso_host.config_cards import (
    CardConfig,
    ScenarioConfig,
    card_entry,
    scenario_entry,
)
from iso_host.config_checks import Problems, string_value, table_ok
from iso_host.config_http import HTTP_KEYS, HttpConfig, http_settings
from iso_host.config_security import SECURITY_KEYS, TERMINAL_SECURITY_KEYS, security_settings, terminal_security
from iso_host.core.guards import SecuritySettings
from iso_host.core.rules import DEFAULT_PIN_TRIES, SAME_BUSINESS_DAY, RuleSettings
from iso_host.errors import ConfigError
from iso_host.ledger.store import DEFAULT_LEDGER_DEADLINE_S
from iso_host.limits import Limits
from iso_host.log import DEFAULT_SAMPLE_APPROVALS
from iso_host.mqtt.topics import DEFAULT_PREFIX, BrokerSettings, broker_address
from iso_host.vocab import MAC_ALGORITHMS

DEMO_TID: Final = "TERM0001"
DEMO_MID: Final = "MERCHANT0000001"
DEMO_TMK: Final = "0123456789ABCDEFFEDCBA9876543210"
DEFAULT_KEEP_SENT_S: Final = 3_600.0
TID_LENGTH: Final = 8  # ISO 8583:1987 field 41, ans 8
MID_LENGTH: Final = 15  # field 42, ans 15
_HEX_KEY: Final = re.compile(r"(?:[0-9A-Fa-f]{16}){1,3}")


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    tid: str
    mid: str
    tmk: str | None = field(default=None, repr=False)  # terminal master key, hex: wraps sign-on keys
    tak: str | None = field(default=None, repr=False)  # static MAC key, hex (test labs with fixed keys)
    tpk: str | None = field(default=None, repr=False)  # static PIN key, hex
    bdk: str | None = field(default=None, repr=False)  # DUKPT base derivation key, hex
    mac: str | None = None  # MAC algorithm, overriding the dialect's
    require_signon: bool | None = None  # overrides the dialect's
    operators: tuple[tuple[str, bool], ...] | None = None  # (id, can_void); None: every operator may void
    merchant_name: str | None = None  # served in a parameter download instead of the parameter file's
    mac_policy: str | None = None  # "always": MACs mandatory from the start; overrides the dialect's
    mac_kinds: tuple[str, ...] = ()  # kinds MAC'd besides the dialect's (settlement, batch_upload, ...)
    tls_subject: str | None = None  # the client certificate subject it must connect with (mutual TLS)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: str
    key: str
    client_ca: str | None = None  # makes TLS mutual


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8583
    dialect: str = "iso87binary"
    ledger_url: str = "sqlite:///iso-host.db"
    group_commit: bool = True  # false: one database transaction (and fsync) per request, for comparison
    ledger_deadline_s: float = DEFAULT_LEDGER_DEADLINE_S  # a request the ledger has not answered by then gets 96
    pan_key_file: str | None = None  # the PAN hash key's file (None: ~/.iso-host/pan-hash.key); ISO_HOST_PAN_KEY wins
    log_format: str = "auto"
    log_level: str = "info"
    log_sample_approvals: int = DEFAULT_SAMPLE_APPROVALS  # 1 in N plain approvals logged at info (all at debug)
    limits: Limits = field(default_factory=Limits)
    terminals: tuple[TerminalConfig, ...] = (TerminalConfig(DEMO_TID, DEMO_MID, DEMO_TMK),)
    cards: tuple[CardConfig, ...] = ()
    scenarios: tuple[ScenarioConfig, ...] = ()
    tls: TlsConfig | None = None
    edge: str = "protocol"  # the server's connection edge: "protocol" (asyncio.Protocol) or "streams" (for comparison)
    # The event loop: "asyncio" (default), "uvloop", or "auto" (uvloop when installed: pip install '.[fast]'). Not auto
    # by default while the Protocol edge refuses uvloop's transports (edge.py asserts an asyncio.Transport).
    loop: str = "asyncio"
    # Protocol worker processes in front of this one (serve --workers N); 1: this process serves the sockets itself.
    workers: int = 1
    rules: RuleSettings = field(default_factory=RuleSettings)
    events: BrokerSettings | None = None  # None: events are off (no [events] mqtt_url)
    events_keep_sent_s: float = DEFAULT_KEEP_SENT_S  # sent outbox rows are pruned after this long
    control_enabled: bool = False
    control_secret_file: str | None = field(default=None, repr=False)  # signed commands only; the variable wins
    security: SecuritySettings = field(default_factory=SecuritySettings)  # [security]: replays, sign-on rate
    http: HttpConfig = field(default_factory=HttpConfig)  # [http]: the web console
    source: str = "defaults"


LOOPS: Final = ("auto", "uvloop", "asyncio")
MAX_WORKERS: Final = 64
RULE_KEYS: Final = {
    "void_window", "business_day_cutoff", "timezone", "max_void_age_h", "max_refused_void_attempts",
    "max_voids_per_day", "unknown_reversal", "refund_max_age_days", "allow_zero_amount",
    "preauth_days", "completion_tolerance_percent", "tip_limit_percent", "void_requires_card", "pin_tries",
}  # fmt: skip
SECTIONS: Final = {
    "server": {"host", "port", "dialect", "tls_cert", "tls_key", "tls_client_ca", "edge", "loop", "workers"},
    "ledger": {"url", "group_commit", "deadline_s", "pan_key_file"},
    "log": {"format", "level", "sample_approvals"},
    "limits": {f.name for f in fields(Limits)},
    "rules": RULE_KEYS,
    "events": {"mqtt_url", "username", "password", "client_id", "topic_prefix", "ca_file", "keep_sent_s"},
    "control": {"enabled", "secret_file"},
    "security": set(SECURITY_KEYS),
    "http": set(HTTP_KEYS),
}
TERMINAL_KEYS: Final = {"tid", "mid", "tmk", "tak", "tpk", "bdk", "mac", "require_signon", "operators",
                         "merchant_name", *TERMINAL_SECURITY_KEYS}  # fmt: skip


def _limits(problems: Problems, table: dict[str, Any]) -> Limits:
    values: dict[str, Any] = {}
    for name, raw in table.items():
        key = f"limits.{name}"
        if name.endswith("_s"):
            if name == "idle_timeout_s" and raw is False:
                values[name] = None
            elif isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
                problems.add(key, f"must be seconds > 0, got {raw!r}")
            else:
                values[name] = float(raw)
        elif isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
            problems.add(key, f"must be a whole number > 0, got {raw!r}")
        else:
            values[name] = raw
    limits = replace(Limits(), **values)
    if limits.max_frame_bytes > 65_535:
        problems.add("limits.max_frame_bytes", f"must be at most 65535, got {limits.max_frame_bytes}")
    return limits


def hex_key(flag: str, text: str) -> bytes:
    """A DES key given on the command line (single, double or triple length); the error never echoes it.

    Raises:
        ConfigError: naming ``flag``.
    """
    if not _HEX_KEY.fullmatch(text):
        raise ConfigError(f"{flag}: must be 16, 32 or 48 hex digits")
    return bytes.fromhex(text)


def _terminal(problems: Problems, index: int, entry: Any) -> TerminalConfig | None:
    key = f"terminals[{index}]"
    if not table_ok(problems, key, entry, TERMINAL_KEYS):
        return None
    tid, mid = entry.get("tid"), entry.get("mid")
    if not isinstance(tid, str) or len(tid) != TID_LENGTH:
        problems.add(f"{key}.tid", f"must be {TID_LENGTH} characters (field 41), got {tid!r}")
    if not isinstance(mid, str) or len(mid) != MID_LENGTH:
        problems.add(f"{key}.mid", f"must be {MID_LENGTH} characters (field 42), got {mid!r}")
    keys: dict[str, Any] = {}  # tmk, tak, tpk, bdk: hex text or None
    for name in ("tmk", "tak", "tpk", "bdk"):
        value = entry.get(name)
        if value is not None and (not isinstance(value, str) or not _HEX_KEY.fullmatch(value)):
            problems.add(f"{key}.{name}", "must be 16, 32 or 48 hex digits")  # never echo a key
            value = None
        keys[name] = value.upper() if isinstance(value, str) else None
    if keys["bdk"] is not None and len(keys["bdk"]) != 32:
        problems.add(f"{key}.bdk", "must be 32 hex digits (a double-length TDES key)")
    mac, require_signon = entry.get("mac"), entry.get("require_signon")
    if mac is not None and mac not in MAC_ALGORITHMS:
        problems.add(f"{key}.mac", f"must be one of {', '.join(MAC_ALGORITHMS)}, got {mac!r}")
    if require_signon is not None and not isinstance(require_signon, bool):
        problems.add(f"{key}.require_signon", f"must be true or false, got {require_signon!r}")
    operators = _operators(problems, f"{key}.operators", entry.get("operators"))
    merchant_name = entry.get("merchant_name")
    if merchant_name is not None and (not isinstance(merchant_name, str) or not merchant_name.strip()):
        problems.add(f"{key}.merchant_name", f"must be a non-empty string, got {merchant_name!r}")
        merchant_name = None
    if not (isinstance(tid, str) and isinstance(mid, str)):
        return None
    return TerminalConfig(tid, mid, **keys, mac=mac, require_signon=require_signon, operators=operators,
                          merchant_name=merchant_name, **terminal_security(problems, key, entry))  # fmt: skip


def _operators(problems: Problems, key: str, raw: Any) -> tuple[tuple[str, bool], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        problems.add(key, "must be an array of tables ([[terminals.operators]] id = \"01\", can_void = true)")
        return None
    operators = []
    for index, entry in enumerate(raw):
        where = f"{key}[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"id", "can_void"}:
            problems.add(where, "must be a table with id and can_void")
            continue
        operator_id, can_void = entry.get("id"), entry.get("can_void", False)
        if not isinstance(operator_id, str) or not operator_id:
            problems.add(f"{where}.id", f"must be a non-empty string, got {operator_id!r}")
        elif not isinstance(can_void, bool):
            problems.add(f"{where}.can_void", f"must be true or false, got {can_void!r}")
        else:
            operators.append((operator_id, can_void))
    return tuple(operators)


def _rule_day(problems: Problems, table: dict[str, Any], values: dict[str, Any]) -> None:
    """The void window, the business day's cut-off and its time zone."""
    window = table.get("void_window", SAME_BUSINESS_DAY)
    if window != SAME_BUSINESS_DAY and (isinstance(window, bool) or not isinstance(window, int | float) or window <= 0):
        problems.add("rules.void_window", f'must be "{SAME_BUSINESS_DAY}" or hours > 0, got {window!r}')
    else:
        values["void_window"] = window if window == SAME_BUSINESS_DAY else float(window)
    cutoff = table.get("business_day_cutoff", "00:00")
    try:
        values["business_day_cutoff"] = time.fromisoformat(cutoff)
    except (TypeError, ValueError):
        problems.add("rules.business_day_cutoff", f'must be a time such as "23:00", got {cutoff!r}')
    if "timezone" in table:
        try:
            values["timezone"] = ZoneInfo(str(table["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            zone = table["timezone"]
            problems.add("rules.timezone", f"must be an IANA time zone such as Asia/Shanghai, got {zone!r}")


def _rule_cards(problems: Problems, table: dict[str, Any], values: dict[str, Any]) -> None:
    """Zero amounts, card-less voids and the PIN-try limit."""
    for name in ("allow_zero_amount", "void_requires_card"):
        flag = table.get(name, False)
        if not isinstance(flag, bool):
            problems.add(f"rules.{name}", f"must be true or false, got {flag!r}")
        else:
            values[name] = flag
    tries = table.get("pin_tries", DEFAULT_PIN_TRIES)
    if tries is not False and (isinstance(tries, bool) or not isinstance(tries, int) or tries < 1):
        problems.add("rules.pin_tries", f"must be a whole number >= 1 or false (no limit), got {tries!r}")
    else:
        values["pin_tries"] = tries if tries is not False else None


def _rules(problems: Problems, table: dict[str, Any]) -> RuleSettings:
    values: dict[str, Any] = {}
    _rule_day(problems, table, values)
    numbers = ("max_void_age_h", "max_refused_void_attempts", "refund_max_age_days", "preauth_days",
               "completion_tolerance_percent", "tip_limit_percent")  # fmt: skip
    for name in numbers:
        if name in table:
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.add(f"rules.{name}", f"must be a number >= 0, got {value!r}")
            else:
                values[name] = value
    per_day = table.get("max_voids_per_day", False)
    if per_day is not False and (isinstance(per_day, bool) or not isinstance(per_day, int) or per_day < 0):
        problems.add("rules.max_voids_per_day", f"must be a whole number >= 0 or false (unlimited), got {per_day!r}")
    elif per_day is not False:
        values["max_voids_per_day"] = per_day
    _rule_cards(problems, table, values)
    unknown = table.get("unknown_reversal", "approve")
    if unknown not in ("approve", "decline"):
        problems.add("rules.unknown_reversal", f"must be approve or decline, got {unknown!r}")
    else:
        values["unknown_reversal"] = unknown
    return RuleSettings(**values)


def _tls(problems: Problems, server: dict[str, Any]) -> TlsConfig | None:
    cert, key, client_ca = server.get("tls_cert"), server.get("tls_key"), server.get("tls_client_ca")
    if cert is None and key is None and client_ca is None:
        return None
    for name, value in (("tls_cert", cert), ("tls_key", key)):
        if not isinstance(value, str) or not value:
            problems.add(f"server.{name}", "TLS needs both tls_cert and tls_key (PEM file paths)")
    if client_ca is not None and (not isinstance(client_ca, str) or not client_ca):
        problems.add("server.tls_client_ca", f"must be a PEM file path, got {client_ca!r}")
    if not (isinstance(cert, str) and isinstance(key, str)):
        return None
    return TlsConfig(cert, key, client_ca if isinstance(client_ca, str) else None)


def _ledger_settings(problems: Problems, ledger: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    group_commit = ledger.get("group_commit", True)
    if not isinstance(group_commit, bool):
        problems.add("ledger.group_commit", f"must be true or false, got {group_commit!r}")
    else:
        changes["group_commit"] = group_commit
    deadline_s = ledger.get("deadline_s", DEFAULT_LEDGER_DEADLINE_S)
    if isinstance(deadline_s, bool) or not isinstance(deadline_s, int | float) or not 0 < deadline_s <= 120:
        problems.add("ledger.deadline_s", f"must be seconds, 0 < s <= 120, got {deadline_s!r}")
    else:
        changes["ledger_deadline_s"] = float(deadline_s)
    return changes


def _loop_and_sampling(problems: Problems, server: dict[str, Any], log: dict[str, Any]) -> dict[str, Any]:
    """``[server] loop`` and ``workers``, and ``[log] sample_approvals``."""
    changes: dict[str, Any] = {}
    if "loop" in server:
        if server["loop"] in LOOPS:
            changes["loop"] = server["loop"]
        else:
            problems.add("server.loop", f"must be one of {', '.join(LOOPS)}, got {server['loop']!r}")
    if "workers" in server:
        workers = server["workers"]
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            problems.add("server.workers", f"must be 1..{MAX_WORKERS} worker processes, got {workers!r}")
        else:
            changes["workers"] = workers
    if "sample_approvals" in log:
        every = log["sample_approvals"]
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            problems.add("log.sample_approvals", f"must be a whole number >= 1 (1: every approval), got {every!r}")
        else:
            changes["log_sample_approvals"] = every
    return changes


def _scalar_settings(problems: Problems, tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    server, ledger, log = tables["server"], tables["ledger"], tables["log"]
    changes: dict[str, Any] = {}
    for key, attribute, table, name in (
        ("server.host", "host", server, "host"), ("server.dialect", "dialect", server, "dialect"),
        ("ledger.url", "ledger_url", ledger, "url"), ("ledger.pan_key_file", "pan_key_file", ledger, "pan_key_file"),
    ):  # fmt: skip
        if name in table and (value := string_value(problems, key, table[name])) is not None:
            changes[attribute] = value
    if "edge" in server:
        if server["edge"] in ("protocol", "streams"):
            changes["edge"] = server["edge"]
        else:
            problems.add("server.edge", f'must be "protocol" or "streams", got {server["edge"]!r}')
    changes |= _loop_and_sampling(problems, server, log)
    if "port" in server:
        port = server["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65_535:
            problems.add("server.port", f"must be 0..65535, got {port!r}")
        else:
            changes["port"] = port
    changes |= _ledger_settings(problems, ledger)
    for name, attribute, allowed in (
        ("format", "log_format", ("auto", "json", "console")),
        ("level", "log_level", ("debug", "info", "warning", "error")),
    ):
        if name in log:
            if log[name] not in allowed:
                problems.add(f"log.{name}", f"must be one of {', '.join(allowed)}, got {log[name]!r}")
            else:
                changes[attribute] = log[name]
    return changes


def valid_topic_prefix(prefix: str) -> bool:
    """A prefix is one or more topic levels without wildcards and without empty levels."""
    return bool(prefix) and "+" not in prefix and "#" not in prefix and "" not in prefix.split("/")


def _control_secret_file(problems: Problems, control: dict[str, Any]) -> dict[str, Any]:
    """``[control] secret_file`` (``control/secret.py`` reads it): also read by ``iso-host control --config``, so it
    is allowed with control off."""
    if "secret_file" not in control:
        return {}
    return {"control_secret_file": string_value(problems, "control.secret_file", control["secret_file"])}


def _events(problems: Problems, events: dict[str, Any], control: dict[str, Any]) -> dict[str, Any]:
    """``[events]`` (the broker, off without mqtt_url) and ``[control]`` (live control, off unless enabled)."""
    changes: dict[str, Any] = {}
    enabled = control.get("enabled", False)
    if not isinstance(enabled, bool):
        problems.add("control.enabled", f"must be true or false, got {enabled!r}")
        enabled = False
    changes["control_enabled"] = enabled
    changes.update(_control_secret_file(problems, control))
    if "keep_sent_s" in events:
        keep = events["keep_sent_s"]
        if isinstance(keep, bool) or not isinstance(keep, int | float) or keep <= 0:
            problems.add("events.keep_sent_s", f"must be seconds > 0, got {keep!r}")
        else:
            changes["events_keep_sent_s"] = float(keep)
    values: dict[str, str] = {}
    for name in ("mqtt_url", "username", "password", "client_id", "topic_prefix", "ca_file"):
        if name in events and (value := string_value(problems, f"events.{name}", events[name])) is not None:
            values[name] = value
    if "mqtt_url" not in values:
        for name in sorted(set(events) - {"mqtt_url", "keep_sent_s"}):
            problems.add(f"events.{name}", "has no effect without events.mqtt_url (events are off)")
        if enabled:
            problems.add("control.enabled", "live control needs events.mqtt_url (the broker it listens on)")
        return changes
    try:
        broker_address(values["mqtt_url"])
    except ConfigError as error:
        problems.add("events.mqtt_url", str(error).removeprefix("events.mqtt_url: "))
    prefix = values.get("topic_prefix", DEFAULT_PREFIX)
    if not valid_topic_prefix(prefix):
        problems.add("events.topic_prefix", f"must be topic levels without +, # or empty levels, got {prefix!r}")
    if "password" in values and "username" not in values:
        problems.add("events.password", "needs events.username")
    changes["events"] = BrokerSettings(
        url=values["mqtt_url"], username=values.get("username"), password=values.get("password"),
        client_id=values.get("client_id"), topic_prefix=prefix, ca_file=values.get("ca_file"),
    )  # fmt: skip
    return changes


def _terminals(problems: Problems, raw: Any) -> tuple[TerminalConfig, ...]:
    if not isinstance(raw, list) or not raw:
        problems.add("terminals", "must be a non-empty array of tables ([[terminals]])")
        return ()
    parsed = [_terminal(problems, i, entry) for i, entry in enumerate(raw)]
    terminals = tuple(t for t in parsed if t is not None)
    seen: set[str] = set()
    for terminal in terminals:
        if terminal.tid in seen:
            problems.add("terminals", f"tid {terminal.tid!r} is configured twice")
        seen.add(terminal.tid)
    return terminals


def parse_config(document: dict[str, Any], source: str) -> Config:
    """Build a Config from a parsed TOML document.

    Raises:
        ConfigError: one line per bad key, each naming ``source`` and the key.
    """
    problems = Problems(source)
    arrays = ("terminals", "cards", "scenarios")
    for unknown in sorted(set(document) - {*SECTIONS, *arrays}):
        problems.add(unknown, f"unknown section (expected one of {', '.join([*SECTIONS, *arrays])})")
    tables: dict[str, dict[str, Any]] = {}
    for section, allowed in SECTIONS.items():
        table = document.get(section, {})
        if not isinstance(table, dict):
            problems.add(section, "must be a table")
            table = {}
        for unknown in sorted(set(table) - allowed):
            problems.add(f"{section}.{unknown}", f"unknown key (expected one of {', '.join(sorted(allowed))})")
        tables[section] = {k: v for k, v in table.items() if k in allowed}
    config = Config(source=source, limits=_limits(problems, tables["limits"]))
    changes = _scalar_settings(problems, tables)
    if "terminals" in document:
        changes["terminals"] = _terminals(problems, document["terminals"])
    if "cards" in document:
        raw_cards = document["cards"]
        if not isinstance(raw_cards, list):
            problems.add("cards", "must be an array of tables ([[cards]])")
        else:
            cards = (card_entry(problems, index, entry) for index, entry in enumerate(raw_cards))
            changes["cards"] = tuple(card for card in cards if card is not None)
    if "scenarios" in document:
        raw_scenarios = document["scenarios"]
        if not isinstance(raw_scenarios, list):
            problems.add("scenarios", "must be an array of tables ([[scenarios]])")
        else:
            parsed = (scenario_entry(problems, i, e) for i, e in enumerate(raw_scenarios))
            changes["scenarios"] = tuple(s for s in parsed if s is not None)
    changes["tls"] = _tls(problems, tables["server"])
    changes["rules"] = _rules(problems, tables["rules"])
    changes["security"] = security_settings(problems, tables["security"])
    changes["http"] = http_settings(problems, tables["http"])
    changes.update(_events(problems, tables["events"], tables["control"]))
    problems.raise_if_any()
    return replace(config, **changes)


def load_config(path: str | None) -> Config:
    """The defaults, or the file at ``path`` on top of them.

    Raises:
        ConfigError: the file is missing, is not TOML, or has bad keys.
    """
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse_config(document, path)


def with_overrides(config: Config, **overrides: Any) -> Config:
    """Apply command-line flags (those not None) on top of the file."""
    changes = {name: value for name, value in overrides.items() if value is not None}
    if "port" in changes and not 0 <= changes["port"] <= 65_535:
        raise ConfigError(f"--port: must be 0..65535, got {changes['port']}")
    if "workers" in changes and not 1 <= changes["workers"] <= MAX_WORKERS:
        raise ConfigError(f"--workers: must be 1..{MAX_WORKERS} worker processes, got {changes['workers']}")
    return replace(config, **changes)
