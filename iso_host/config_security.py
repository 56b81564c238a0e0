"""``[security]`` and the security keys of ``[[terminals]]``: replay window, sign-on rate, per-terminal MAC policy,
MAC'd kinds and the client certificate a terminal must present (issue 14)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

from iso_host.config_checks import Problems
from iso_host.core.guards import DEFAULT_SIGNONS_PER_MINUTE, SecuritySettings
from iso_host.wire import Dialect

SECURITY_KEYS: Final = frozenset({"replay_window_s", "replay_max_entries", "signons_per_minute"})
TERMINAL_SECURITY_KEYS: Final = frozenset({"mac_policy", "mac_kinds", "tls_subject"})
MAC_POLICIES: Final = ("always", "when-keyed")
MAX_REPLAY_WINDOW_S: Final = 30 * 86_400.0


class _TerminalSecurity(Protocol):
    @property
    def tid(self) -> str: ...
    @property
    def mac_kinds(self) -> tuple[str, ...]: ...


def security_settings(problems: Problems, table: dict[str, Any]) -> SecuritySettings:
    """``[security]``, each bad key one line."""
    values: dict[str, Any] = {}
    window = table.get("replay_window_s")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= MAX_REPLAY_WINDOW_S:
            problems.add("security.replay_window_s", f"must be seconds, 0 (off) to 30 days, got {window!r}")
        else:
            values["replay_window_s"] = float(window)
    entries = table.get("replay_max_entries")
    if entries is not None:
        if isinstance(entries, bool) or not isinstance(entries, int) or entries <= 0:
            problems.add("security.replay_max_entries", f"must be a whole number > 0, got {entries!r}")
        else:
            values["replay_max_entries"] = entries
    per_minute = table.get("signons_per_minute", DEFAULT_SIGNONS_PER_MINUTE)
    if per_minute is False:
        values["signons_per_minute"] = None
    elif isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute <= 0:
        msg = f"must be a whole number > 0 or false (unlimited), got {per_minute!r}"
        problems.add("security.signons_per_minute", msg)
    else:
        values["signons_per_minute"] = per_minute
    return SecuritySettings(**values)


def terminal_security(problems: Problems, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A ``[[terminals]]`` entry's ``mac_policy``, ``mac_kinds`` and ``tls_subject``, as TerminalConfig fields."""
    values: dict[str, Any] = {}
    policy = entry.get("mac_policy")
    if policy is not None and policy not in MAC_POLICIES:
        problems.add(f"{key}.mac_policy", f"must be one of {', '.join(MAC_POLICIES)}, got {policy!r}")
    elif policy is not None:
        values["mac_policy"] = policy
    kinds = entry.get("mac_kinds")
    if kinds is not None:
        if not isinstance(kinds, list) or not all(isinstance(kind, str) and kind for kind in kinds):
            problems.add(f"{key}.mac_kinds", f'must be an array of kind names such as ["settlement"], got {kinds!r}')
        else:
            values["mac_kinds"] = tuple(kinds)
    subject = entry.get("tls_subject")
    if subject is not None:
        if not isinstance(subject, str) or not subject.strip():
            problems.add(f"{key}.tls_subject", f'must be a certificate subject such as "CN=TERM0001", got {subject!r}')
        else:
            values["tls_subject"] = subject
    return values


def check_terminal_kinds(terminals: Iterable[_TerminalSecurity], dialect: Dialect, source: str) -> None:
    """Every kind a terminal adds to the MAC'd ones is a kind of the dialect (``terminals`` as configured).

    Raises:
        ConfigError: one line per unknown kind, naming the terminal.
    """
    problems = Problems(source)
    known = {rule.kind for rule in dialect.kinds}
    for index, terminal in enumerate(terminals):
        for kind in terminal.mac_kinds:
            if kind not in known:
                problems.add(f"terminals[{index}].mac_kinds", f"dialect {dialect.name} has no kind {kind!r}")
    problems.raise_if_any()
