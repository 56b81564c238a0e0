"""Operating limits, in one place, each with its unit and the reason for its default.

Also what the limits ask of the process: ``fit_open_files`` weighs ``max_connections`` against the open-file
limit (``ulimit -n``), and ``peer_key`` says which connections count as one peer's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Final


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds the server enforces on every connection."""

    max_frame_bytes: int = 8_192  # a 2-byte header allows 65_535; real messages stay under 2 KiB
    frame_timeout_s: float = 10.0  # a frame's first byte to its last, whatever the pace: a dripped frame is dropped
    # A connection silent this long is closed. Terminals that hold a connection all day send echo tests well inside
    # it (mobile carriers' and firewalls' NAT tables forget a silent flow after a few minutes anyway); those that
    # connect per transaction reconnect at the next one. None (``false``) turns it off.
    idle_timeout_s: float | None = 300.0
    max_connections: int = 10_000  # beyond this new connections are closed at once; lowered to fit ``ulimit -n``
    # One address's share (an IPv6 peer's /64): a merchant's lanes behind one NAT fit, one host cannot take all.
    max_connections_per_peer: int = 256
    tls_handshake_timeout_s: float = 10.0  # a TLS handshake not done by then is dropped (it holds a connection slot)
    log_every_s: float = 10.0  # refusals, failed handshakes, failed accepts: one line per kind per this, with a count
    read_chunk_bytes: int = 65_536  # one socket read; frames larger than this span reads


DEFAULT_LIMITS = Limits()
assert DEFAULT_LIMITS.max_frame_bytes < 256**2, "a 2-byte length header must be able to express it"
assert DEFAULT_LIMITS.max_connections > 0

ACCEPT_BACKLOG: Final = 100  # the listen backlog, and how many sockets asyncio accepts before a handler can refuse one
# Files the host needs besides its connections: stdio, the event loop's epoll and self-pipe, the listening sockets,
# spec and certificate files read at start, a trace file and its rotation.
BASE_FILES: Final = 48
LEDGER_FILES: Final = 16  # SQLite: the database, WAL, shm, lock file and their connections; PostgreSQL: a pool of 8
BROKER_FILES: Final = 4  # the event relay's and the control listener's MQTT connections
RESERVED_FILES: Final = ACCEPT_BACKLOG + BASE_FILES + LEDGER_FILES + BROKER_FILES
MIN_CONNECTIONS: Final = 16  # below this the host refuses to start rather than serve a handful of terminals


@dataclass(frozen=True, slots=True)
class OpenFilePlan:
    """What to do about the open-file limit: the soft limit to set (None: leave it) and the limits to serve with."""

    limits: Limits
    soft: int | None  # raise the soft limit to this
    lowered_from: int | None  # max_connections as configured, when it had to be lowered
    needed: int  # open files that max_connections as configured needs


def fit_open_files(limits: Limits, soft: int, hard: int, *, unlimited: int = -1) -> OpenFilePlan:
    """Fit ``max_connections`` plus ``RESERVED_FILES`` into the open-file limit ``soft`` (at most ``hard``).

    The soft limit is raised as far as needed, up to the hard limit; when even the hard limit is too low,
    ``max_connections`` is lowered to what it leaves (``unlimited`` is ``resource.RLIM_INFINITY``).

    Raises:
        ValueError: the limit leaves room for fewer than ``MIN_CONNECTIONS`` connections.
    """
    needed = limits.max_connections + RESERVED_FILES
    if soft == unlimited or soft >= needed:
        return OpenFilePlan(limits, None, None, needed)
    if hard == unlimited or hard >= needed:
        return OpenFilePlan(limits, needed, None, needed)
    room = hard - RESERVED_FILES
    if room < MIN_CONNECTIONS:
        msg = (f"the open-file limit (ulimit -n) is {hard}: {RESERVED_FILES} are reserved, which leaves room for"
               f" {max(room, 0)} connections, fewer than {MIN_CONNECTIONS}; raise it to {needed}"
               f" (ulimit -n {needed}, or LimitNOFILE={needed} under systemd)")  # fmt: skip
        raise ValueError(msg)
    return OpenFilePlan(replace(limits, max_connections=room), hard if hard > soft else None,
                        limits.max_connections, needed)  # fmt: skip


def peer_key(address: str) -> str:
    """Which connections are one peer's: an IPv4 address, an IPv6 /64 (one subscriber's usual share), else as is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
