"""Signed live-control commands: HMAC-SHA256 over the topic and the command, with a timestamp and a nonce.

Pure: the machine's time and the nonces come from the edge (the listener, ``iso-host control``). A signed command
is a JSON object of two strings::

    {"payload": "<the command's JSON text, with ts and nonce>", "hmac": "<64 lowercase hex digits>"}

``hmac`` is HMAC-SHA256 under the shared secret of ``iso-host-control/1 LF <topic> LF <payload>`` (UTF-8): the
topic binds the command (a signed ``enable-terminal`` cannot be replayed as a ``disable-terminal``) and the host
(its topic prefix). The payload holds ``ts`` (Unix seconds, by the sender's clock) and ``nonce`` (16 to 64 of
``A-Z a-z 0-9 _ -``, fresh per command). The host refuses a command whose MAC does not verify, whose ``ts`` is
more than ``window_s`` from the machine's time (not the host clock that ``set-clock`` moves), or whose nonce it
has accepted within the window. Nonces are remembered only for verified commands, until their ``ts`` leaves the
window, and at most ``max_nonces`` at once: past that, commands are refused until old ones expire (refusing is
safe; forgetting one early would let it be replayed).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

DOMAIN: Final = b"iso-host-control/1"  # what the MAC input starts with; a new format gets a new one
WINDOW_S: Final = 60  # a command's ts may be this far either side of the host machine's time
MAX_NONCES: Final = 10_000  # verified commands remembered at once (about 1 MB at most)
MIN_SECRET_BYTES: Final = 32
NONCE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
_HMAC_HEX: Final = re.compile(r"[0-9a-f]{64}")
SIGNED_FIELDS: Final = frozenset({"ts", "nonce"})  # in a signed command's payload beside its arguments
MAX_MESSAGE_BYTES: Final = 4 * 65_536  # a command's payload (64 KiB at most) escaped into a string, and the MAC
MAX_TS: Final = 2**40  # Unix seconds far beyond any clock, and still exact as a float


class SignatureRefused(Exception):
    """The command is not carried out; the text is the reply's ``error`` (``signature: ...``)."""

    def __init__(self, problem: str, payload: bytes = b"") -> None:
        super().__init__(f"signature: {problem}")
        self.payload = payload  # the command as sent (for the reply's request_id), or empty


def mac_input(topic: str, payload: str) -> bytes:
    return b"\n".join((DOMAIN, topic.encode("utf-8"), payload.encode("utf-8")))


def digest(secret: bytes, topic: str, payload: str) -> str:
    return hmac.new(secret, mac_input(topic, payload), hashlib.sha256).hexdigest()


def sign(secret: bytes, topic: str, arguments: Mapping[str, Any], *, ts: int, nonce: str) -> bytes:
    """The signed message for ``arguments`` (a command's JSON object) published on ``topic``."""
    assert NONCE.fullmatch(nonce), "a nonce is 16 to 64 of A-Z a-z 0-9 _ -"
    body = {**{k: v for k, v in arguments.items() if k not in SIGNED_FIELDS}, "ts": ts, "nonce": nonce}
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return json.dumps({"payload": payload, "hmac": digest(secret, topic, payload)}, ensure_ascii=False).encode()


@dataclass(slots=True)
class NonceBook:
    """The nonces of verified commands whose ``ts`` is still inside the window (bounded: ``max_nonces``)."""

    max_nonces: int = MAX_NONCES
    _expiry: dict[str, float] = field(default_factory=dict)
    _heap: list[tuple[float, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._expiry)

    def expire(self, now_s: float) -> None:
        while self._heap and self._heap[0][0] < now_s:
            _, nonce = heapq.heappop(self._heap)
            self._expiry.pop(nonce, None)

    def seen(self, nonce: str) -> bool:
        return nonce in self._expiry

    def full(self) -> bool:
        return len(self._expiry) >= self.max_nonces

    def add(self, nonce: str, expires_s: float) -> None:
        assert nonce not in self._expiry
        assert not self.full()
        self._expiry[nonce] = expires_s
        heapq.heappush(self._heap, (expires_s, nonce))


@dataclass(slots=True)
class Verifier:
    """The host's side: the secret, the window and the nonces seen. ``secret`` never appears in ``repr``."""

    secret: bytes = field(repr=False)
    window_s: float = WINDOW_S
    nonces: NonceBook = field(default_factory=NonceBook)

    def __post_init__(self) -> None:
        assert len(self.secret) >= MIN_SECRET_BYTES, "a control secret is at least 32 bytes"

    def verify(self, topic: str, message: bytes, now_s: float) -> bytes:
        """The command's payload (JSON text, bytes) once ``message`` is a signed command for ``topic`` that is
        fresh and new; its nonce is then remembered.

        Raises:
            SignatureRefused: unsigned, not verifying, stale or from the future, replayed, or too many at once.
        """
        payload, mac = _envelope(message)
        expected = digest(self.secret, topic, payload)
        if not hmac.compare_digest(expected, mac):
            raise SignatureRefused("does not verify (wrong secret, or the command or its topic was changed)",
                                   payload.encode())  # fmt: skip
        ts, nonce = _ts_and_nonce(payload)
        off_s = ts - now_s
        if abs(off_s) > self.window_s:
            problem = f"ts is {off_s:+.0f} s from the host's time (allowed: ±{self.window_s:g} s); check the clocks"
            raise SignatureRefused(problem, payload.encode())
        self.nonces.expire(now_s - self.window_s)
        if self.nonces.seen(nonce):
            raise SignatureRefused("nonce already used (a replayed command)", payload.encode())
        if self.nonces.full():
            raise SignatureRefused(f"over {self.nonces.max_nonces} commands within {self.window_s:g} s; send later",
                                   payload.encode())  # fmt: skip
        self.nonces.add(nonce, ts + self.window_s)
        return payload.encode("utf-8")


def _envelope(message: bytes) -> tuple[str, str]:
    if len(message) > MAX_MESSAGE_BYTES:
        raise SignatureRefused(f"a signed command is at most {MAX_MESSAGE_BYTES} bytes, got {len(message)}")
    try:
        document = json.loads(message.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SignatureRefused("required: the host takes signed commands only (iso-host control --secret-file)",
                               message) from None  # fmt: skip
    if not isinstance(document, dict) or set(document) != {"payload", "hmac"}:
        raise SignatureRefused('required: send {"payload": "<command JSON>", "hmac": "<hex>"} '
                               "(iso-host control --secret-file)", message)  # fmt: skip
    payload, mac = document["payload"], document["hmac"]
    if not isinstance(payload, str) or not isinstance(mac, str) or not _HMAC_HEX.fullmatch(mac):
        raise SignatureRefused("payload must be a string and hmac 64 lowercase hex digits", message)
    return payload, mac


def _ts_and_nonce(payload: str) -> tuple[int, str]:
    """A verified payload's ts and nonce (the sender holds the secret, but may still send them wrong)."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        raise SignatureRefused("the signed payload is not JSON", payload.encode()) from None
    if not isinstance(document, dict):
        raise SignatureRefused("the signed payload must be a JSON object", payload.encode())
    ts, nonce = document.get("ts"), document.get("nonce")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < MAX_TS:
        raise SignatureRefused("ts: required, the sender's time in whole Unix seconds", payload.encode())
    if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
        raise SignatureRefused("nonce: required, 16 to 64 of A-Z a-z 0-9 _ - (fresh per command)", payload.encode())
    return ts, nonce


def unsigned(message: bytes) -> bool:
    """Whether ``message`` is not a signed command (for a host without a secret, which takes only unsigned ones)."""
    try:
        document = json.loads(message.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True
    return not (isinstance(document, dict) and set(document) == {"payload", "hmac"})
