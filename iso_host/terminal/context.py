"""What every terminal action gets: its parameters (``Params``, from the command line or a session file's step) and
the session (``Session``: one terminal's connection to a host, its state file and the keys in force)."""

from __future__ import annotations

import argparse
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from iso_host.config import hex_key
from iso_host.core.message_auth import has_mac
from iso_host.core.test_cards import DEFAULT_EMV_SCHEME
from iso_host.errors import ConfigError
from iso_host.terminal import reversal
from iso_host.terminal.arguments import check_bdk, check_mac, check_tak, check_timeout
from iso_host.terminal.batch import Item
from iso_host.terminal.client import ClientError, ClientState, MacKeys, NoResponse, TerminalClient
from iso_host.terminal.state_files import default_state_path, legacy_note
from iso_host.tls import client_context
from iso_host.vocab import DEFAULT_MAC_ALGORITHM
from iso_host.wire import Dialect, Message

TEST_PAN: Final = "4761739001010010"
DEFAULT_TIMEOUT_S: Final = 30.0  # a terminal's usual wait for its host
PARAM_NAMES: Final = ("amount", "pan", "expiry", "pin", "stan", "rrn", "operator", "auth_code", "date", "template",
                      "imk", "emv_scheme", "psn")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Params:
    """What one action needs besides the session; built from the command line or from a session file step."""

    amount: str | None = None  # major units, "12.34" (sale, refund)
    pan: str = TEST_PAN
    expiry: str | None = None  # YYMM
    pin: str | None = field(default=None, repr=False)
    stan: str | None = None  # the original (void, reverse, refund): by STAN or by RRN; "last" (batch.LAST): the newest
    rrn: str | None = None  # still approved of the kind the action names (batch.newest_open)
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
    timeout_s: float = DEFAULT_TIMEOUT_S
    mac_algorithm: str | None = None  # --mac: overrides the dialect's
    tak: bytes | None = field(default=None, repr=False)  # --tak: a static MAC key instead of sign-on's
    bdk: bytes | None = field(default=None, repr=False)  # --bdk: a DUKPT terminal
    auto_reversal: bool = True  # reverse a financial request the host did not answer (reversal.py)
    last_request: Message | None = field(default=None, repr=False)  # what was sent last, for --json and --receipt
    mac_verified: bool = False  # the last response carried a MAC, and it verified under the keys in force
    named: Item | None = field(default=None, repr=False)  # the original the action named (void, refund ...)

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
        """Send a request (MAC'd with ``mac`` when given) and keep the state file current. Pending reversals go
        first; a financial request left unanswered is reversed (``reversal.py``).

        Raises:
            ClientError: the host could not be reached, did not answer, or answered what cannot be read or trusted.
        """
        if self.auto_reversal and self.state.pending_reversals:
            await reversal.send_pending(self)
        self.state.save(self.state_path)  # the STAN is spent even if the host never answers
        self.last_request = message
        try:
            response = await self.client.request(message, timeout_s=self.timeout_s, mac=mac)
        except NoResponse as error:
            await self._unanswered(message, error)
            raise
        self.mac_verified = mac is not None and has_mac(response)  # decode_response refused one that did not verify
        self.state.save(self.state_path)
        return response

    async def _unanswered(self, message: Message, error: NoResponse) -> None:
        """No answer to ``message``: reverse it now (a financial request), keeping it to reverse until answered.

        Raises:
            ClientError: the request got no answer, saying what became of its reversal.
        """
        kind = reversal.reversible_kind(self.dialect, message)
        if kind is None:
            return
        item = reversal.record(self.dialect, message, kind, self.state.batch)
        if not self.auto_reversal:
            raise ClientError(f"{error}: the {reversal.describe(item)} may have been approved; not reversed"
                              " (--no-auto-reversal)") from None  # fmt: skip
        reversal.keep(self.state, item)
        self.state.save(self.state_path)
        print(f"{error}: reversing the {reversal.describe(item)}")
        try:
            await self.connect()  # a late answer to the request must not be taken for the reversal's
            await reversal.send_pending(self)
        except ClientError as failed:
            raise ClientError(f"{reversal.describe(item)}: {error}; {failed}") from None
        raise ClientError(f"{reversal.describe(item)}: {error}; reversed") from None

    async def connect(self) -> None:
        """Open a fresh connection (closing any old one); the terminal's state and keys carry over."""
        old = self.client
        await old.close()
        self.client = TerminalClient(old.dialect, old.tid, old.mid, old.state)
        self.client.mac = old.mac
        await self.client.connect(*self.address, ssl_context=self.ssl_context, timeout_s=self.timeout_s)


def address_of(text: str) -> tuple[str, int]:
    """``--to HOST:PORT`` (an IPv6 host in brackets or not)."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise ConfigError(f"--to: expected HOST:PORT, such as 127.0.0.1:8583; got {text!r}")
    return host, int(port)


def state_path_of(args: argparse.Namespace, dialect: Dialect, tid: str) -> Path:
    """--state, or this terminal's file for this host and dialect (``state_files.py``); refused when it cannot be a
    file: a directory, or under a path that is a file."""
    if getattr(args, "state", None):
        path = Path(args.state).expanduser()
    else:
        host, port = address_of(args.to)
        path = default_state_path(Path.home(), tid, dialect.name, host, port)
    if path.is_dir():
        raise ConfigError(f"--state: {path} is a directory; name a file in it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--state: {path} cannot be made: {parent} is a file, not a directory")
            break
    return path


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client's TLS context; the certificate flags go together, and only with --tls."""
    cert, key, ca = args.tls_cert, args.tls_key, args.tls_ca
    if not args.tls:
        given = [flag for flag, value in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)) if value]
        if given:
            raise ConfigError(f"{given[0]}: only with --tls")
        return None
    if key and not cert:
        raise ConfigError("--tls-key: only with --tls-cert (the client certificate it is the key of)")
    if cert and not key and not _holds_key(cert):
        raise ConfigError(f"--tls-cert: {cert} holds no private key; give it with --tls-key KEY.pem")
    return client_context(ca, cert, key)


def _holds_key(pem: str) -> bool:
    try:
        return b"PRIVATE KEY-----" in Path(pem).read_bytes()
    except OSError as error:
        raise ConfigError(f"--tls-cert: cannot read {pem}: {error.strerror}") from None


def open_session(args: argparse.Namespace, dialect: Dialect, tid: str, mid: str) -> Session:
    """A session for the terminal flags (--to, --state, --tmk, --tls...); not connected yet.

    Raises:
        ConfigError: a flag that breaks its rule (one line naming it).
        ClientError: a state file that cannot be read.
    """
    host, port = address_of(args.to)
    state_path = state_path_of(args, dialect, tid)
    if not getattr(args, "state", None) and (note := legacy_note(Path.home(), tid, state_path)) is not None:
        print(note, file=sys.stderr)
    tmk = hex_key("--tmk", args.tmk)
    timeout_s = check_timeout(args.timeout)
    mac = check_mac(text) if (text := getattr(args, "mac", None)) else None
    algorithm = mac or dialect.security.mac_algorithm or DEFAULT_MAC_ALGORITHM
    tak = check_tak(text, algorithm) if (text := getattr(args, "tak", None)) else None
    bdk = check_bdk(text) if (text := getattr(args, "bdk", None)) else None
    ssl_context = _tls_context(args)
    state = ClientState.load(state_path, tmk)
    state.tid, state.dialect, state.host = tid, dialect.name, f"{host}:{port}"
    client = TerminalClient(dialect, tid, mid, state)
    return Session(client, state_path, tmk, (host, port), ssl_context, timeout_s, mac, tak, bdk,
                   auto_reversal=not getattr(args, "no_auto_reversal", False))  # fmt: skip
