"""Operating limits, in one place, each with its unit and the reason for its default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds the server enforces on every connection."""

    max_frame_bytes: int = 8_192  # a 2-byte header allows 65_535; real messages stay under 2 KiB
    frame_timeout_s: float = 10.0  # a frame that stops half-way is abandoned after this
    idle_timeout_s: float | None = None  # terminals may hold a connection open all day
    max_connections: int = 10_000  # beyond this new connections are closed at once
    read_chunk_bytes: int = 65_536  # one socket read; frames larger than this span reads


DEFAULT_LIMITS = Limits()
assert DEFAULT_LIMITS.max_frame_bytes < 256**2, "a 2-byte length header must be able to express it"
assert DEFAULT_LIMITS.max_connections > 0
