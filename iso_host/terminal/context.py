"""What every terminal action gets: its parameters (``Params``, from the command line or a session file's step) and
the session (``Session``: one terminal's connection to a host, its state file and the keys in force)."""

from __future__ import annotations

import argparse
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from iso_host.config import hex_key
from iso_host.core.test_cards import DEFAULT_EMV_SCHEME
from iso_host.errors import ConfigError
from iso_host.terminal.client import ClientState, MacKeys, TerminalClient
from iso_host.tls import client_context
from iso_host.vocab import DEFAULT_MAC_ALGORITHM
from iso_host.wire import Dialect, Message

TEST_PAN: Final = "4761739001010010"
PARAM_NAMES: Final = ("amount", "pan", "expiry", "pin", "stan", "rrn", "operator", "auth_code", "date", "template",
                      "imk", "emv_scheme", "psn")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Params:
    """What one action needs besides the session; built from the command line or from a session file step."""

    amount: str | None = None  # major units, "12.34" (sale, refund)
    pan: str = TEST_PAN
    expiry: str | None = None  # YYMM
    pin: str | None = field(default=None, repr=False)
    stan: str | None = None  # the original (void, reverse, refund): by STAN or by RRN
    rrn: str | None = None
    operator: str = "001"  # CUP F63 (void, signon)
    auth_code: str | None = None  # a pre-auth by its approval code (F38), when it is not in this batch
    date: str | None = None  # MMDD: that pre-auth's date (61.3); default today
    imk: str | None = field(default=None, repr=False)  # sale, preauth: a chip card's IMK-AC, hex (--chip --imk)
    emv_scheme: str = DEFAULT_EMV_SCHEME  # with chip: the card's cryptogram version (security.EMV_SCHEMES)
    psn: str = "00"  # with chip: the PAN sequence number, two digits
    template: str | None = None  # send: the dialect's template to send (a QR sale, a status upload ...)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Params:
        return cls(**{name: getattr(args, name) for name in PARAM_NAMES if getattr(args, name, None) is not None})


@dataclass
class Session:
    """One terminal talking to one host: the client, its state file, its address and the keys in force."""

    client: TerminalClient
    state_path: Path
    tmk: bytes = field(repr=False)
    address: tuple[str, int]
    ssl_context: ssl.SSLContext | None = None
    timeout_s: float = 30.0
    mac_algorithm: str | None = None  # --mac: overrides the dialect's
    tak: bytes | None = field(default=None, repr=False)  # --tak: a static MAC key instead of sign-on's
    bdk: bytes | None = field(default=None, repr=False)  # --bdk: a DUKPT terminal

    @property
    def dialect(self) -> Dialect:
        return self.client.dialect

    @property
    def state(self) -> ClientState:
        return self.client.state

    def mac_keys(self) -> MacKeys | None:
        """The MAC keys in force: a static --tak, or the keys from the last sign-on."""
        algorithm = self.mac_algorithm or self.dialect.security.mac_algorithm
        if self.tak:
            return MacKeys(algorithm or DEFAULT_MAC_ALGORITHM, self.tak, self.tak)
        keys = self.state.keys(self.tmk)
        return MacKeys(algorithm, keys[1], keys[1]) if keys is not None and algorithm else None

    async def send(self, message: Message, mac: MacKeys | None) -> Message:
        """Send a request (MAC'd with ``mac`` when given) and keep the state file current."""
        self.state.save(self.state_path)  # the STAN is spent even if the host never answers
        response = await self.client.request(message, timeout_s=self.timeout_s, mac=mac)
        self.state.save(self.state_path)
        return response

    async def connect(self) -> None:
        """Open a fresh connection (closing any old one); the terminal's state and keys carry over."""
        old = self.client
        await old.close()
        self.client = TerminalClient(old.dialect, old.tid, old.mid, old.state)
        self.client.mac = old.mac
        await self.client.connect(*self.address, ssl_context=self.ssl_context, timeout_s=self.timeout_s)


def open_session(args: argparse.Namespace, dialect: Dialect, tid: str, mid: str) -> Session:
    """A session for the terminal flags (--to, --state, --tmk, --tls...); not connected yet."""
    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--to: expected HOST:PORT, got {args.to!r}")
    state_path = Path(args.state or Path.home() / ".iso-host" / f"terminal-{tid}.json")
    tmk = hex_key("--tmk", args.tmk)
    client = TerminalClient(dialect, tid, mid, ClientState.load(state_path, tmk))
    ssl_context = client_context(args.tls_ca, args.tls_cert, args.tls_key) if args.tls else None
    tak, bdk = (bytes.fromhex(text) if (text := getattr(args, name, None)) else None for name in ("tak", "bdk"))
    return Session(client, state_path, tmk, (host, int(port)), ssl_context, args.timeout, getattr(args, "mac", None),
                   tak, bdk)  # fmt: skip
