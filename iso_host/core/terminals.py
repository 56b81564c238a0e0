"""Terminals as the host knows them: static configuration plus the session that sign-on sets up.

Clear working keys live only in this process's memory; the ledger keeps them wrapped under the TMK.
Key fields are left out of ``repr`` so that no log line or traceback can show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iso_host.security import generate_des_key


@dataclass(frozen=True, slots=True)
class WorkingKeys:
    """A PIN key, a MAC key and (CUP 60.3=004) a track data key."""

    tpk: bytes | None = field(default=None, repr=False)
    tak: bytes | None = field(default=None, repr=False)
    tdk: bytes | None = field(default=None, repr=False)


NO_KEYS = WorkingKeys()


@dataclass(slots=True)
class TerminalState:
    """A configured terminal and what the host remembers about it between messages."""

    tid: str
    mid: str
    batch_number: int = 1
    tmk: bytes | None = field(default=None, repr=False)
    static_keys: WorkingKeys = NO_KEYS  # from the config file (test labs with fixed keys)
    bdk: bytes | None = field(default=None, repr=False)  # DUKPT base derivation key (test-lab shortcut)
    mac_algorithm: str | None = None  # overrides the dialect's
    require_signon: bool | None = None  # overrides the dialect's
    signed_on: bool = False
    session_keys: WorkingKeys = NO_KEYS  # from the last sign-on
    operator: str | None = None
    operators: dict[str, bool] | None = None  # operator id → may void; None: every operator may
    enabled: bool = True  # live control can switch a terminal off; it is refused until switched on again
    merchant_name: str | None = None  # served in a parameter download (config), else the parameter file's
    # Security (issue 14). Keyed: signed on at least once since an operator last reset it (the ledger keeps it), so
    # its MACs stay mandatory after a sign-off. mac_policy "always" makes them mandatory from the start; mac_kinds
    # adds kinds (settlement, batch_upload, ...) to the dialect's MAC'd ones; tls_subject binds it to a client
    # certificate's subject (mutual TLS).
    keyed: bool = False
    mac_policy: str | None = None  # overrides the dialect's ("always" or "when-keyed")
    mac_kinds: frozenset[str] = frozenset()
    tls_subject: str | None = None

    def may_void(self, operator: str | None) -> bool:
        """Whether this operator may void here; without an operator table anyone may."""
        if self.operators is None:
            return True
        return operator is not None and self.operators.get(operator, False)

    @property
    def keys(self) -> WorkingKeys:
        """The keys in force: the session's after sign-on, else the static ones."""
        return self.session_keys if self.signed_on else self.static_keys

    @property
    def has_mac_key(self) -> bool:
        return self.keys.tak is not None or self.bdk is not None

    def mac_mandatory(self, dialect_policy: str) -> bool:
        """Whether a request of a MAC'd kind must carry a MAC even when the terminal holds no MAC key now (it is
        then refused: sign on first): the policy says "always", or the terminal has been keyed."""
        return (self.mac_policy or dialect_policy) == "always" or self.keyed


def random_working_keys() -> WorkingKeys:
    """Fresh double-length DES keys (odd parity) for a sign-on; flows shorten them to the layout's lengths."""
    return WorkingKeys(generate_des_key(16), generate_des_key(16), generate_des_key(16))
