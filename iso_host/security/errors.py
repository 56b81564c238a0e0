"""Errors raised by the security package.

Factored out so every security module can raise them without import loops. The rule here: a
message names what is wrong (which key, which length, which check) and never carries key bytes,
PIN digits or PANs, because callers log these messages.
"""

from __future__ import annotations


class SecurityError(ValueError):
    """Base class: a key, MAC, key block or PIN block could not be used."""


class KeyLengthError(SecurityError):
    """A key, or data to be wrapped, has a length the algorithm does not accept."""


class PinBlockError(SecurityError):
    """A PIN block is malformed, or a PIN or PAN cannot be put into one."""
