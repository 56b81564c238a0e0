"""Logging: structlog, JSON lines for machines and a console renderer for people, card data redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

from iso_host.cards import mask_pan
from iso_host.vocab import Kind, Reason

# Keys whose values must never reach a log line, whoever puts them there.
DROPPED_KEYS: Final = frozenset(
    {"track2", "track3", "pin_block", "cvv", "key", "tmk", "tak", "tpk", "tdk", "bdk", "mac_key", "clear_key"}
)
PAN_KEYS: Final = frozenset({"pan", "card"})

DECIDED: Final = "request_decided"  # the edge's one line per answered request
# 1 in this many approvals' request_decided lines at info (all of them at debug). A line costs about what the rest of
# a sale's Python work does (~10 µs alone, ~26 µs in the server); 1 in 100 keeps a live, steady sample of kinds and
# latencies (about 50 lines/s at 5,000 sales/s) for a hundredth of the cost, and every line that needs reading is kept.
DEFAULT_SAMPLE_APPROVALS: Final = 100
# Approvals of these kinds are always logged: sessions and keys (sign-on issues keys: a security event), settlement.
ALWAYS_LOGGED_KINDS: Final = frozenset({Kind.SIGNON, Kind.SIGNOFF, Kind.SETTLEMENT, Kind.UPLOAD_END})
# An approval whose line carries one of these is out of the ordinary and always logged: a retried commit ("detail"),
# a failed event, an alert, a scenario, an adopted batch.
NOTEWORTHY_KEYS: Final = frozenset({"detail", "event_error", "alert", "scenario", "batch_adopted"})


def sampled_out(event: MutableMapping[str, Any]) -> bool:
    """Whether ``event`` is a ``request_decided`` line that sampling may leave out: a plain approval of a kind other
    than ``ALWAYS_LOGGED_KINDS``. Declines, rejections, errors (``frame_rejected``) and every other event: never."""
    return (
        event.get("event") == DECIDED
        and event.get("reason") == Reason.APPROVED
        and event.get("kind") not in ALWAYS_LOGGED_KINDS
        and NOTEWORTHY_KEYS.isdisjoint(event)
    )


class ApprovalSampler:
    """A structlog processor, first in the chain: lets 1 in ``every`` plain approvals through (the first, then every
    ``every``-th, each marked ``sampled=every``) and drops the rest before they cost anything more. ``every`` 1, or a
    debug level, keeps them all."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"sample_approvals must be >= 1, got {every}")
        self.every = every
        self._seen = 0

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self.every == 1 or not sampled_out(event):
            return event
        self._seen += 1
        if self._seen % self.every != 1:
            raise structlog.DropEvent
        event["sampled"] = self.every
        return event


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask PANs to first 6 / last 4 and drop track data, PIN blocks, CVV and key material."""
    for key in DROPPED_KEYS.intersection(event):
        event[key] = "[redacted]"
    for key in PAN_KEYS.intersection(event):
        value = event[key]
        text = value.decode("ascii", errors="replace") if isinstance(value, bytes | bytearray) else str(value)
        digits = "".join(character for character in text if character.isdigit())
        already_masked = isinstance(value, str) and "*" in value
        if not already_masked:
            event[key] = mask_pan(digits) if digits else "[redacted]"
    return event


_ANNOUNCE_PROCESSORS: list[Any] = []
_ANNOUNCE_STREAM: list[TextIO] = []


def configure(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None, *,
    sample_approvals: int = DEFAULT_SAMPLE_APPROVALS,
) -> None:  # fmt: skip
    """Set up structlog once per process.

    Args:
        log_format: ``json``, ``console`` or ``auto`` (console when the stream is a terminal).
        level: minimum level name (``debug``, ``info``, ``warning``, ``error``).
        stream: where lines go; standard output by default.
        sample_approvals: log 1 in this many plain approvals (``ApprovalSampler``); at ``debug`` every one.
    """
    output = stream if stream is not None else sys.stdout
    if log_format == "auto":
        log_format = "console" if output.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=output.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    every = 1 if level.lower() == "debug" else sample_approvals
    processors: list[Any] = [ApprovalSampler(every)] if every > 1 else []
    processors += [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
        renderer,
    ]
    _ANNOUNCE_PROCESSORS[:] = processors
    _ANNOUNCE_STREAM[:] = [output]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write per line, newline included (print() writes the newline apart): with ``serve --workers`` several
        # processes share standard output, and under PYTHONUNBUFFERED every write is a system call of its own, so two
        # writes per line let another process's line land between a line and its newline.
        logger_factory=structlog.WriteLoggerFactory(output),
        cache_logger_on_first_use=False,
    )


def announce(event: str, **fields: Any) -> None:
    """Log a line that operators and scripts rely on (``listening on ...``) whatever the log level."""
    if not _ANNOUNCE_PROCESSORS:
        configure()
    logger = structlog.wrap_logger(
        structlog.WriteLogger(_ANNOUNCE_STREAM[0]), processors=_ANNOUNCE_PROCESSORS, wrapper_class=structlog.BoundLogger
    )
    logger.info(event, **fields)


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("iso_host").bind(**bound)
