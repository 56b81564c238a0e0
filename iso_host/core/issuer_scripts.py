"""Issuer scripts a scenario adds to a chip reply's field 55: templates 71 (the card runs them before its second
GENERATE AC) and 72 (after it), each the scenario's script commands (tag 86, command APDUs) and an optional script
identifier (9F18) wrapped by the host (EMV 4.3 Book 3 section 10.10, Annex A: 71/72 hold 9F18 then 86 ...).

A scenario's scripts ride on the reply to any request that carried field 55, after tag 91 when the ARQC verified and
alone otherwise: a real issuer sends scripts with an online authorisation, and a script without an ARPC is still
legal (the card runs it or not as its own rules say), which is a case worth testing. Checked when the scenario is
given (config file, live control): hex, EMV TLV, only 9F18 and 86, and together with the largest tag 91 within the
dialect's field 55. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from iso_host.core.flows.base import Decision
from iso_host.security import TlvError, TlvItem, build_tlv, parse_tlv
from iso_host.wire import Dialect

CHIP_FIELD: Final = "55"
SCRIPT_TEMPLATES: Final = ("71", "72")  # in the order they are appended: before, then after the second GENERATE AC
SCRIPT_ID_TAG: Final = "9F18"
SCRIPT_ID_BYTES: Final = 4  # EMV 4.3 Book 3 Annex A: Issuer Script Identifier, b4
COMMAND_TAG: Final = "86"
COMMAND_MIN_BYTES: Final = 4  # CLA INS P1 P2, then Lc and data (EMV 4.3 Book 3 Annex A: Issuer Script Command)
# Tag 91 at its largest: tag, length, ARPC method 2's 4-byte ARPC, 4-byte CSU and 8 bytes of proprietary data.
TAG_91_MAX_BYTES: Final = 2 + 16
HEX_DIGITS: Final = frozenset("0123456789ABCDEFabcdef")


class ScriptError(ValueError):
    """A script a scenario cannot carry; the text is one line without the key's name (the caller adds it)."""


def script_commands(template: str, text: object) -> bytes:
    """Check a scenario's ``script71`` / ``script72`` (hex: an optional 9F18 then one or more 86) and return its
    bytes, the template's contents.

    Raises:
        ScriptError: not hex, not EMV TLV (naming the tag and byte), or another tag than 9F18 first and 86 after.
    """
    assert template in SCRIPT_TEMPLATES
    if not isinstance(text, str) or not text:
        raise ScriptError(f"must be hex: an optional {SCRIPT_ID_TAG} then {COMMAND_TAG} commands, got {text!r}")
    bad = next((index for index, char in enumerate(text) if char not in HEX_DIGITS), None)
    if bad is not None:
        raise ScriptError(f"character {bad} is not a hex digit")
    if len(text) % 2:
        raise ScriptError(f"{len(text)} hex digits are not whole bytes")
    data = bytes.fromhex(text)
    try:
        items = parse_tlv(data)
    except TlvError as error:
        raise ScriptError(f"not EMV TLV: {error}") from None
    for index, item in enumerate(items):
        _check_item(template, index, item)
    if not any(item.tag == COMMAND_TAG for item in items):
        raise ScriptError(f"holds no script command (tag {COMMAND_TAG})")
    return data


def _check_item(template: str, index: int, item: TlvItem) -> None:
    where = f"tag {item.tag} at byte {item.offset}"
    if item.tag in SCRIPT_TEMPLATES:
        contents = f"{SCRIPT_ID_TAG}, {COMMAND_TAG} ..."
        raise ScriptError(f"{where}: give the template's contents ({contents}); the host wraps them in {template}")
    if item.tag == SCRIPT_ID_TAG:
        if index != 0:
            raise ScriptError(f"{where}: the script identifier comes first, once")
        if len(item.value) != SCRIPT_ID_BYTES:
            raise ScriptError(f"{where}: must be {SCRIPT_ID_BYTES} bytes, got {len(item.value)}")
    elif item.tag == COMMAND_TAG:
        if len(item.value) < COMMAND_MIN_BYTES:
            raise ScriptError(f"{where}: a command APDU has at least {COMMAND_MIN_BYTES} bytes (CLA INS P1 P2)")
    else:
        raise ScriptError(f"{where}: a script holds {SCRIPT_ID_TAG} and {COMMAND_TAG} only")


def wrapped(scripts: dict[str, bytes]) -> bytes:
    """The templates for field 55: each given template (71, then 72) around its contents."""
    assert set(scripts) <= set(SCRIPT_TEMPLATES)
    return build_tlv(TlvItem(tag, scripts[tag]) for tag in SCRIPT_TEMPLATES if tag in scripts)


def chip_field_bytes(dialect: Dialect) -> int:
    """How many bytes the dialect's field 55 holds (a character field 55 carries hex text: two digits a byte)."""
    spec = dialect.spec.get(CHIP_FIELD)
    if spec is None:
        return 0
    max_len = int(spec["max_len"])
    if spec["data_enc"] != "b" or spec.get("len_count") == "nibbles":
        return max_len // 2
    return max_len


def overflow(scripts: bytes, dialect: Dialect) -> str | None:
    """Why ``scripts`` cannot ride in the dialect's field 55 after tag 91, or None when they fit."""
    capacity = chip_field_bytes(dialect)
    if len(scripts) + TAG_91_MAX_BYTES <= capacity:
        return None
    return (f"issuer scripts of {len(scripts)} bytes after tag 91 (up to {TAG_91_MAX_BYTES}) overflow field"
            f" {CHIP_FIELD} of dialect {dialect.name} ({capacity} bytes)")  # fmt: skip


def with_issuer_scripts(decision: Decision, scripts: bytes) -> Decision:
    """The decision with ``scripts`` appended to its reply's field 55 (after tag 91, or alone), as upper-case hex:
    a binary field 55 takes it as bytes and a character one as hex text, as for tag 91."""
    if not scripts:
        return decision
    chip_data = decision.fields.get(CHIP_FIELD, "") + scripts.hex().upper()
    return replace(decision, fields={**decision.fields, CHIP_FIELD: chip_data})
