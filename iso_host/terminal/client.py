"""A terminal: framing, STAN, requests from the dialect's templates, sign-on keys, MAC and PIN blocks.

Used by the CLI, the tests and the tools. Its state file (0600, in a 0700 directory) keeps the STAN counter, the
batch number and the working keys as the host sent them, wrapped under the TMK; the batch's card numbers masked and
sealed under a key derived from the TMK (``sealed_pans.py``). Clear keys and PANs exist only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from iso_host.core.message_auth import MAC_PLACEHOLDER, has_mac, mac_field_of, seal, verify_message_mac
from iso_host.errors import IsoHostError, WireError
from iso_host.private_files import write_private
from iso_host.security import (
    CupWorkingKeys,
    SecurityError,
    encode_pin_block,
    encrypt_pin_block,
    mac_request_key,
    mac_response_key,
    pin_key,
    unwrap_key,
    wrap_key,
)
from iso_host.styles import family_of
from iso_host.terminal.sealed_pans import SealError, loaded_items, seal_key, stored_items
from iso_host.terminal.state_files import MAX_ATC, MAX_STAN, document_problem
from iso_host.vocab import DEFAULT_MAC_ALGORITHM
from iso_host.wire import NEED_DATA, Dialect, Envelope, FrameDecoder, Message, decode, encode, encode_frame

DEFAULT_TPDU = bytes.fromhex("6000030000")  # 60 + destination NII 0003 + source NII 0000
DEFAULT_CUP_HEADER = bytes.fromhex("603100000000")  # magstripe application, software version 31
DEFAULT_KSN = bytes.fromhex("FFFF9876543210E00000")  # ANSI X9.24-1 Annex A test KSN, counter 0


TLS_HANDSHAKE_S = 5.0  # a host that has not finished a TLS handshake by then is not going to
PLAINTEXT_HINT = "is the port plaintext?"


class ClientError(IsoHostError):
    """The host could not be reached or answered with something we cannot read or trust."""


class NoResponse(ClientError):
    """A request went out and no answer came back (in time, or before the host hung up): it may have been approved."""


@dataclass
class ClientState:
    """What a terminal keeps between runs. Keys are stored as the host sent them: wrapped under the TMK."""

    stan: int = 0
    batch: int = 1
    ksn_counter: int = 0
    atc: int = 0  # a chip card's application transaction counter (tag 9F36), for --chip sales
    tpk_under_tmk: str | None = field(default=None, repr=False)
    tak_under_tmk: str | None = field(default=None, repr=False)
    items: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the open batch (terminal_batch.py)
    # Requests the host never answered, to reverse (``reversal.py``): sent again before the next command.
    pending_reversals: list[dict[str, Any]] = field(default_factory=list, repr=False)
    tid: str = ""  # whose state this is: shown by ``iso-host terminal status``
    dialect: str = ""
    host: str = ""
    # The key the batch's PANs are sealed under in the file (from the TMK: ``load``); never saved.
    pan_seal_key: bytes | None = field(default=None, repr=False, compare=False)

    def next_stan(self) -> int:
        self.stan = self.stan % MAX_STAN + 1
        return self.stan

    def next_atc(self) -> int:
        """The next ATC, as a card counts its GENERATE ACs: 1, 2, ... FFFF, then 1 again (a test card never locks)."""
        self.atc = self.atc % MAX_ATC + 1
        return self.atc

    def next_ksn(self, base: bytes = DEFAULT_KSN) -> bytes:
        """The next DUKPT KSN: the base with its 21-bit counter advanced."""
        self.ksn_counter += 1
        counter = (int.from_bytes(base, "big") & ~0x1FFFFF) | (self.ksn_counter & 0x1FFFFF)
        return counter.to_bytes(len(base), "big")

    def store_keys(self, tmk: bytes, keys: CupWorkingKeys) -> None:
        self.tpk_under_tmk = wrap_key(tmk, keys.tpk).hex().upper()
        self.tak_under_tmk = wrap_key(tmk, keys.tak).hex().upper()

    def keys(self, tmk: bytes) -> tuple[bytes, bytes] | None:
        """The clear TPK and TAK, or None before sign-on."""
        if self.tpk_under_tmk is None or self.tak_under_tmk is None:
            return None
        return unwrap_key(tmk, bytes.fromhex(self.tpk_under_tmk)), unwrap_key(tmk, bytes.fromhex(self.tak_under_tmk))

    @classmethod
    def load(cls, path: Path, tmk: bytes | None = None) -> ClientState:
        """The state in ``path`` (a fresh one if there is none); with ``tmk`` the batch's PANs open, and later saves
        seal them again. Without it they stay masked (for reading the file only).

        Raises:
            ClientError: an unreadable file, or PANs sealed under another TMK.
        """
        key = seal_key(tmk) if tmk is not None else None
        if not path.exists():
            return cls(pan_seal_key=key)
        where = f"terminal state file (--state) {path}"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ClientError(f"{where}: unreadable ({error.__class__.__name__}); fix it, or start afresh with"
                              " iso-host terminal reset") from None  # fmt: skip
        if (problem := document_problem(document)) is not None:
            raise ClientError(f"{where}: {problem}; fix it, or start afresh with iso-host terminal reset")
        document.pop("pan_seal_key", None)
        state = cls(**document, pan_seal_key=key)
        try:
            state.items = loaded_items(state.items, key)
            state.pending_reversals = loaded_items(state.pending_reversals, key)
        except SealError as error:
            raise ClientError(f"{where}: {error}") from None
        return state

    def save(self, path: Path) -> None:
        """Write the state file (0600; its directory 0700 when new), the batch's PANs masked and sealed.

        Raises:
            ClientError: the batch holds a PAN and the state was loaded without a TMK to seal it under.
        """
        document = asdict(self)
        del document["pan_seal_key"]
        try:
            document["items"] = stored_items(self.items, self.pan_seal_key)
            document["pending_reversals"] = stored_items(self.pending_reversals, self.pan_seal_key)
        except SealError as error:
            raise ClientError(f"{path}: {error}") from None
        try:
            write_private(path, json.dumps(document).encode("utf-8"))
        except OSError as error:
            raise ClientError(f"--state: cannot write the terminal state file {path}: {error.strerror}") from None


def tls_failure(error: BaseException, handshake_s: float) -> str:
    """Why a TLS handshake failed, in words, with its likely cause."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the host's certificate does not verify ({error.verify_message}): --tls-ca names the CA that signed it"
    if isinstance(error, TimeoutError | ConnectionAbortedError):  # asyncio aborts a handshake that takes too long
        return f"the host did not answer TLS within {handshake_s:g} s — {PLAINTEXT_HINT}"
    reason = getattr(error, "reason", None) or ""
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason or "BAD_CERTIFICATE" in reason:
        return f"the host refused the handshake ({reason}): does it want a client certificate (--tls-cert, --tls-key)?"
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return f"the host did not answer TLS ({reason}) — {PLAINTEXT_HINT}"
    if isinstance(error, ssl.SSLError):
        return f"{reason or error}"
    return f"the host closed the connection ({error.__class__.__name__}) — {PLAINTEXT_HINT}"


@dataclass(frozen=True, slots=True)
class MacKeys:
    """How a terminal MACs a request and checks the response's MAC."""

    algorithm: str
    request_key: bytes = field(repr=False)
    response_key: bytes = field(repr=False)


def dukpt_keys(bdk: bytes, ksn: bytes) -> tuple[bytes, MacKeys]:
    """The PIN key and MAC keys a DUKPT terminal uses for one KSN (test labs derive them from the BDK)."""
    return pin_key(bdk, ksn), MacKeys(DEFAULT_MAC_ALGORITHM, mac_request_key(bdk, ksn), mac_response_key(bdk, ksn))


def pin_block_field(tpk: bytes, pin: str, pan: str, pin_format: int) -> str:
    """F52: the PIN block for this PAN, encrypted under the PIN key, as hex."""
    return encrypt_pin_block(tpk, encode_pin_block(pin, pan, pin_format)).hex().upper()


class TerminalClient:
    """One connection to a host, speaking one dialect as one terminal."""

    def __init__(self, dialect: Dialect, tid: str, mid: str, state: ClientState | None = None) -> None:
        self.dialect = dialect
        self.tid = tid
        self.mid = mid
        self.state = state or ClientState()
        self.envelope = Envelope(
            DEFAULT_TPDU if dialect.tpdu else b"",
            DEFAULT_CUP_HEADER[: dialect.header_bytes].ljust(dialect.header_bytes, b"\0"),
        )
        self.mac: MacKeys | None = None  # once set, requests of the dialect's MAC'd kinds carry a MAC
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder(dialect.length_header, max_frame_bytes=dialect.length_header.max_length)

    async def connect(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                      timeout_s: float = 10.0) -> None:  # fmt: skip
        """Open the connection; with ``ssl_context`` the TLS handshake follows, within ``TLS_HANDSHAKE_S`` at most.

        Raises:
            ClientError: naming the address and why (refused, no answer, a handshake that failed and the likely cause).
        """
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise ClientError(f"cannot connect to {host}:{port}: no answer within {timeout_s:g} s") from None
        except OSError as error:
            raise ClientError(f"cannot connect to {host}:{port}: {error.strerror or error}") from None
        if ssl_context is not None:
            handshake_s = min(timeout_s, TLS_HANDSHAKE_S)
            try:
                async with asyncio.timeout(handshake_s + 1):
                    await writer.start_tls(ssl_context, server_hostname=host, ssl_handshake_timeout=handshake_s)
            except (OSError, TimeoutError) as error:
                writer.transport.abort()
                raise ClientError(f"{host}:{port}: TLS handshake failed: {tls_failure(error, handshake_s)}") from None
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self._writer.wait_closed()
            self._writer = None

    async def __aenter__(self) -> TerminalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def build(self, template: str, now: datetime, **values: Any) -> Message:
        """A request from the dialect's template, with the next STAN."""
        defaults: dict[str, Any] = {
            "pan": "", "amount": 0, "tid": self.tid, "mid": self.mid, "currency": self.dialect.default_currency,
            "batch": self.state.batch, "expiry": "", "now": now, "operator": "001",
        }  # fmt: skip
        return self.dialect.render(template, {**defaults, **values, "stan": self.state.next_stan()})

    def mac_for(self, message: Message) -> MacKeys | None:
        """The terminal's MAC keys if the dialect MACs this kind of message, else None."""
        rule = self.dialect.classify(message)
        return self.mac if rule is not None and rule.kind in self.dialect.security.mac_kinds else None

    def frame(self, message: Message, mac: MacKeys | None = None) -> bytes:
        """The framed request; with ``mac`` (or the terminal's own, for MAC'd kinds) a MAC is added."""
        mac = mac or self.mac_for(message)
        if mac is None:
            return encode_frame(self.dialect.length_header, encode(message, self.envelope, self.dialect))
        message.fields[mac_field_of(message)] = MAC_PLACEHOLDER
        body = seal(encode(message, Envelope(), self.dialect), message, self.dialect, mac.algorithm, mac.request_key)
        return encode_frame(self.dialect.length_header, bytes(self.envelope) + body)

    async def send_raw(self, data: bytes) -> None:
        if self._writer is None:
            raise ClientError("not connected")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, ssl.SSLError) as error:
            raise ClientError(f"the host closed the connection: {error.__class__.__name__}") from None

    async def receive_frame(self, timeout_s: float = 30.0) -> bytes:
        """The next whole frame from the host (length header removed)."""
        if self._reader is None:
            raise ClientError("not connected")
        try:
            async with asyncio.timeout(timeout_s):
                while (frame := self._decoder.next_frame()) is NEED_DATA:
                    data = await self._reader.read(65_536)
                    if not data:
                        raise NoResponse(f"the host closed the connection without answering (could it not read the"
                                         f" request? this terminal speaks {self.dialect.name})")  # fmt: skip
                    self._decoder.receive_data(data)
        except TimeoutError:
            raise NoResponse(f"no response within {timeout_s:g} s (--timeout)") from None
        except ssl.SSLError as error:
            raise ClientError(f"the host closed the TLS connection: {tls_failure(error, timeout_s)}") from None
        except ConnectionError as error:
            raise NoResponse(f"the host closed the connection: {error.__class__.__name__}") from None
        except WireError as error:
            raise ClientError(f"unreadable response frame: {error}; {self._other_dialect()}") from None
        assert isinstance(frame, bytes)
        return frame

    def decode_response(self, frame: bytes, mac: MacKeys | None = None) -> Message:
        """Decode a response; with ``mac`` an approved response must carry a MAC that verifies.

        Raises:
            ClientError: an undecodable response, or a response MAC that is missing or wrong.
        """
        try:
            _, message = decode(frame, self.dialect)
        except WireError as error:
            raise ClientError(f"unreadable response: {error}; {self._other_dialect()}") from None
        if mac is None:
            return message
        if has_mac(message):
            body = frame[self.dialect.envelope_bytes :]
            if not verify_message_mac(body, message, self.dialect, mac.algorithm, mac.response_key):
                raise ClientError(f"the response MAC (field {mac_field_of(message)}) does not verify")
        elif message.fields.get("39") == "00":
            raise ClientError("the approved response carries no MAC")
        return message

    def _other_dialect(self) -> str:
        return f"the host answered in another dialect? (this terminal speaks {self.dialect.name}: --dialect)"

    async def receive(self, timeout_s: float = 30.0, mac: MacKeys | None = None) -> Message:
        return self.decode_response(await self.receive_frame(timeout_s), mac)

    async def request(self, message: Message, timeout_s: float = 30.0, mac: MacKeys | None = None) -> Message:
        """Send one request (MAC'd with ``mac``, or the terminal's own keys) and wait for its response."""
        mac = mac or self.mac_for(message)
        await self.send_raw(self.frame(message, mac))
        return await self.receive(timeout_s, mac)

    def accept_signon(self, response: Message, request: Message, tmk: bytes) -> CupWorkingKeys:
        """Unwrap the sign-on response's keys, check them against their check values, keep them wrapped.

        Raises:
            ClientError: no key block, or a check value that does not match (wrong TMK).
        """
        key_field = self.dialect.security.signon_key_field
        block = response.fields.get(key_field or "")
        if block is None:
            raise ClientError(f"the sign-on response has no key block in field {key_field}")
        try:
            family = family_of(self.dialect)
            keys = family.accept_keys(tmk, family.key_layout(request, self.dialect), bytes.fromhex(block))
        except (SecurityError, ValueError) as error:
            raise ClientError(f"sign-on key block rejected: {error}") from None
        self.state.store_keys(tmk, keys)
        algorithm = self.dialect.security.mac_algorithm
        self.mac = MacKeys(algorithm, keys.tak, keys.tak) if algorithm else None
        batch = self.dialect.value_of(request, self.dialect.batch_field) if self.dialect.batch_field else None
        if batch is not None and batch.isdigit():
            self.state.batch = int(batch)
        return keys
