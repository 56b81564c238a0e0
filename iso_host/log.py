"""Logging: structlog, JSON lines for machines and a console renderer for people, card data redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

from iso_host.cards import mask_pan

# Keys whose values must never reach a log line, whoever puts them there.
DROPPED_KEYS: Final = frozenset(
    {"track2", "track3", "pin_block", "cvv", "key", "tmk", "tak", "tpk", "tdk", "bdk", "mac_key", "clear_key"}
)
PAN_KEYS: Final = frozenset({"pan", "card"})


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


def configure(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once per process.

    Args:
        log_format: ``json``, ``console`` or ``auto`` (console when the stream is a terminal).
        level: minimum level name (``debug``, ``info``, ``warning``, ``error``).
        stream: where lines go; standard output by default.
    """
    output = stream if stream is not None else sys.stdout
    if log_format == "auto":
        log_format = "console" if output.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=output.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    processors = [
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
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )


def announce(event: str, **fields: Any) -> None:
    """Log a line that operators and scripts rely on (``listening on ...``) whatever the log level."""
    if not _ANNOUNCE_PROCESSORS:
        configure()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(_ANNOUNCE_STREAM[0]), processors=_ANNOUNCE_PROCESSORS, wrapper_class=structlog.BoundLogger
    )
    logger.info(event, **fields)


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("iso_host").bind(**bound)
