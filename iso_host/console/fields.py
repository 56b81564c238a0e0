"""A decoded message as the console's inspector shows it: one row per field, named, safe to put in a browser.

``describe`` turns a ``Message`` of a dialect into ``FieldRow``s in field-number order: the name from the dialect's
field spec, the dialect's positional sub-fields (CUP 60.1, 61.2 ...), field 55's EMV tags, a family's settlement
totals held in one field (CUP F48), and the sign-on key block as the check values it carries. What must never reach
a screen does not: the PAN is masked 6/4 (F2, F55 tag 5A, and anywhere else it turns up), track data, PIN blocks,
security data and keys are left out with a note saying what was there (``cards.NOT_SHOWN_FIELDS`` is the list the
rest of the host hides). ``response_meaning`` says in words what a dialect's field 39 code stands for. Pure, and
raises for no message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from iso_host.cards import NOT_SHOWN_FIELDS, PAN_MIN_DIGITS, mask_pan
from iso_host.core.flows import KINDS
from iso_host.errors import IsoHostError
from iso_host.money import format_amount
from iso_host.security import TlvError, TlvItem, parse_tlv
from iso_host.security.keys import _CUP_LAYOUTS, _ISO87_LAYOUT
from iso_host.styles import family_of
from iso_host.vocab import Kind, Reason
from iso_host.wire import Dialect, KindRule, Message


@dataclass(frozen=True, slots=True)
class FieldRow:
    """One field (or sub-field, TLV tag, total) as shown: ``value`` is already masked or empty, ``note`` says why."""

    id: str
    name: str
    value: str
    parts: tuple[FieldRow, ...] = ()
    note: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "value": self.value,
                "parts": [part.as_json() for part in self.parts], "note": self.note}  # fmt: skip


TRACK_FIELDS: Final = frozenset({"35", "36", "45"})
PIN_FIELDS: Final = frozenset({"52"})
# Not in NOT_SHOWN_FIELDS (the CLI prints them), but the console shows no security data: F53 carries a DUKPT KSN or
# the PIN block's format, F96 a message security code.
SECURITY_FIELDS: Final = frozenset({"53", "96"})
MAC_FIELDS: Final = frozenset({"64", "128"})
CHIP_FIELD: Final = "55"
PAN_FIELDS: Final = frozenset({"2", "34"})  # F34: the extended PAN
NOT_SHOWN_TRACK: Final = "[not shown: track data]"
NOT_SHOWN_PIN: Final = "[not shown: PIN block]"
NOT_SHOWN_SECURITY: Final = "[not shown: security data]"
NOT_SHOWN: Final = "[not shown]"
KEY_BLOCK: Final = "[key block]"
# What takes the place of a hidden field's value; the rest of cards.NOT_SHOWN_FIELDS are "[not shown]" but for those
# shown safely here: F55 (tag by tag, 5A masked, track data left out) and the MACs (not secret).
HIDDEN_FIELDS: Final[Mapping[str, str]] = (
    dict.fromkeys(NOT_SHOWN_FIELDS - {CHIP_FIELD, *MAC_FIELDS}, NOT_SHOWN)
    | dict.fromkeys(TRACK_FIELDS, NOT_SHOWN_TRACK) | dict.fromkeys(PIN_FIELDS, NOT_SHOWN_PIN)
    | dict.fromkeys(SECURITY_FIELDS, NOT_SHOWN_SECURITY)
)  # fmt: skip
NOT_HEX: Final = "not hexadecimal"

# The sign-on key blocks the host issues (security/keys.py, the one place they are defined), told apart by length:
# 24, 40 and 60 bytes (CUP 001, 003, 004) and 38 (iso87).
_KEY_BLOCK_SLOTS: Final = {sum(slot.size_bytes for slot in slots): slots
                           for slots in (*_CUP_LAYOUTS.values(), _ISO87_LAYOUT)}  # fmt: skip
assert len(_KEY_BLOCK_SLOTS) == len(_CUP_LAYOUTS) + 1, "key block layouts are told apart by their length"

# EMV 4.3 Book 3 Annex A names of the tags field 55 commonly carries.
EMV_TAG_NAMES: Final = {
    "4F": "Application Identifier (AID)", "50": "Application Label", "57": "Track 2 Equivalent Data",
    "5A": "Application PAN", "5F20": "Cardholder Name", "5F24": "Application Expiration Date",
    "5F2A": "Transaction Currency Code", "5F34": "PAN Sequence Number", "71": "Issuer Script Template 1",
    "72": "Issuer Script Template 2", "82": "Application Interchange Profile", "84": "Dedicated File Name",
    "86": "Issuer Script Command", "8A": "Authorisation Response Code", "91": "Issuer Authentication Data",
    "95": "Terminal Verification Results", "9A": "Transaction Date", "9B": "Transaction Status Information",
    "9C": "Transaction Type", "9F02": "Amount, Authorised", "9F03": "Amount, Other",
    "9F06": "Application Identifier (terminal)", "9F09": "Application Version Number",
    "9F10": "Issuer Application Data", "9F18": "Issuer Script Identifier", "9F1A": "Terminal Country Code",
    "9F1E": "Interface Device Serial Number", "9F26": "Application Cryptogram", "9F27": "Cryptogram Information Data",
    "9F33": "Terminal Capabilities", "9F34": "Cardholder Verification Method Results", "9F35": "Terminal Type",
    "9F36": "Application Transaction Counter", "9F37": "Unpredictable Number", "9F41": "Transaction Sequence Counter",
    "9F53": "Transaction Category Code", "9F63": "Card Product Identification", "9F74": "Issuer Authorisation Code",
    "DF31": "Issuer Script Results",
}  # fmt: skip
# Tags whose value is never shown: track data in its chip forms, the chip's PIN data, the cardholder's name.
EMV_HIDDEN_TAGS: Final = {
    "56": NOT_SHOWN_TRACK, "57": NOT_SHOWN_TRACK, "9F1F": NOT_SHOWN_TRACK, "9F20": NOT_SHOWN_TRACK,
    "9F6B": NOT_SHOWN_TRACK, "99": NOT_SHOWN_PIN, "5F20": "[not shown: cardholder name]",
}  # fmt: skip
EMV_PAN_TAG: Final = "5A"

# What each reason means, in the words the console uses for a response code (one dialect code may stand for several).
REASON_TEXT: Final[Mapping[Reason, str]] = {
    Reason.APPROVED: "Approved", Reason.FORMAT_ERROR: "Format error", Reason.UNKNOWN_TERMINAL: "Unknown terminal",
    Reason.UNKNOWN_MERCHANT: "Unknown merchant", Reason.TERMINAL_DISABLED: "Terminal disabled",
    Reason.NOT_SIGNED_ON: "Not signed on", Reason.MAC_FAILED: "MAC check failed", Reason.PIN_INCORRECT: "Wrong PIN",
    Reason.PIN_TRIES_EXCEEDED: "PIN tries exceeded", Reason.DUPLICATE: "Duplicate transaction",
    Reason.KSN_REPLAYED: "DUKPT KSN used again", Reason.SIGNON_LIMITED: "Too many sign-ons",
    Reason.ORIGINAL_NOT_FOUND: "Original not found", Reason.ALREADY_CANCELLED: "Already cancelled",
    Reason.NOT_VOIDABLE: "Not voidable", Reason.BATCH_CLOSED: "Batch closed",
    Reason.VOID_WINDOW_EXPIRED: "Void window expired", Reason.AMOUNT_MISMATCH: "Amount differs from the original",
    Reason.CARD_MISMATCH: "Card differs from the original", Reason.OPERATOR_NOT_PERMITTED: "Operator not permitted",
    Reason.VOID_LIMIT_EXCEEDED: "Void limit exceeded", Reason.OUT_OF_BALANCE: "Out of balance",
    Reason.BATCH_OUT_OF_SYNC: "Batch out of sync", Reason.INVALID_AMOUNT: "Invalid amount",
    Reason.INSUFFICIENT_FUNDS: "Insufficient funds", Reason.EXPIRED_CARD: "Expired card",
    Reason.LOST_CARD: "Lost card", Reason.STOLEN_CARD: "Stolen card", Reason.EXCEEDS_LIMIT: "Exceeds amount limit",
    Reason.CRYPTOGRAM_FAILED: "Cryptogram failed", Reason.CRYPTOGRAM_REPLAYED: "Cryptogram replayed",
    Reason.CHIP_PAN_MISMATCH: "Chip PAN differs from the card", Reason.FORCED_DECLINE: "Declined by a scenario",
    Reason.INVALID_TRANSACTION: "Invalid transaction", Reason.SYSTEM_ERROR: "System error",
}  # fmt: skip
assert set(REASON_TEXT) == set(Reason), "every reason has its words"

_TOTALS_PARTS: Final = (("debit_minor", "debit amount", True), ("debit_count", "debit count", False),
                        ("credit_minor", "credit amount", True), ("credit_count", "credit count", False))  # fmt: skip


def response_meaning(code: str | None, dialect: Dialect) -> str | None:
    """What a field 39 code means in ``dialect``, from its ``[reasons]``: ``"00"`` → ``"Approved"``; a code several
    reasons share names them all (``"Already cancelled or batch closed"``); ``"Unknown code XX"`` for a code the
    dialect does not give; None for None."""
    if code is None:
        return None
    # The approval code means approved: CUP also answers an out-of-balance settlement with it (its F48 says so).
    if dialect.response_codes.get(Reason.APPROVED) == code:
        return REASON_TEXT[Reason.APPROVED]
    texts = [REASON_TEXT[reason] for reason in Reason if dialect.response_codes.get(reason) == code]
    if not texts:
        return f"Unknown code {code}"
    rest = [text if text[:2].isupper() else text[0].lower() + text[1:] for text in texts[1:]]
    if not rest:
        return texts[0]
    return ", ".join([texts[0], *rest[:-1]]) + f" or {rest[-1]}"


def describe(message: Message, dialect: Dialect) -> tuple[FieldRow, ...]:
    """Every field of ``message`` as a row, in field-number order (the MTI is not one); never raises."""
    family = family_of(dialect)
    rule = kind_rule(message, dialect)
    kind = _kind(rule)
    try:
        fields = family.redact(message.fields, rule.kind if rule is not None else None)
    except (IsoHostError, ValueError, LookupError):
        fields = dict(message.fields)
    secrets = _secrets(message.fields)
    key_field = dialect.security.signon_key_field
    key_block = key_field in fields and (
        (kind is not None and KINDS[kind].issues_keys) or (rule is None and message.mti[:2] == "08")
    )
    totals_parts = _totals_parts(Message(message.mti, fields), dialect) if kind is Kind.SETTLEMENT else {}
    rows: list[FieldRow] = []
    for field_id in sorted(fields, key=_field_order):
        value = fields[field_id]
        if key_block and field_id == key_field:
            row = FieldRow(field_id, _name(dialect, field_id), "", note=_key_block_note(value))
        else:
            row = _row(field_id, value, dialect, secrets, totals_parts.get(field_id, ()))
        rows.append(_scrub(row, secrets))
    return tuple(rows)


def described(message: Message, dialect: Dialect) -> list[dict[str, object]]:
    """``describe`` as JSON rows: the console's inspector, the debug log's lines."""
    return [row.as_json() for row in describe(message, dialect)]


def kind_rule(message: Message, dialect: Dialect) -> KindRule | None:
    """The kind rule of a request, or of the request a response answers (its fields echo what classifies it)."""
    rule = dialect.classify(message)
    mti = message.mti
    if rule is None and len(mti) == 4 and mti.isdigit() and int(mti[2]) % 2 == 1:
        rule = dialect.classify(Message(f"{mti[:2]}{int(mti[2]) - 1}{mti[3]}", message.fields))
    return rule


def _kind(rule: KindRule | None) -> Kind | None:
    if rule is None:
        return None
    try:
        kind = Kind(rule.flow or rule.kind)
    except ValueError:
        return None
    return kind if kind in KINDS else None


def _field_order(field_id: str) -> tuple[int, str]:
    return (int(field_id), "") if field_id.isdigit() else (-1, field_id)


def _name(dialect: Dialect, field_id: str) -> str:
    desc = dialect.spec.get(field_id, {}).get("desc")
    return desc if isinstance(desc, str) and desc else f"Field {field_id}"


_TRACK_PAN: Final = re.compile(rf"\d{{{PAN_MIN_DIGITS},}}")


def _secrets(fields: Mapping[str, str]) -> dict[str, str]:
    """Clear PANs and track data the message carries (12 characters or more), and what shows in their place,
    for the last pass over every shown string."""
    found: dict[str, str] = {}
    for field_id in PAN_FIELDS:
        if (pan := fields.get(field_id)) and len(pan) >= PAN_MIN_DIGITS:
            found[pan] = mask_pan(pan)
    for field_id in TRACK_FIELDS:
        track = fields.get(field_id)
        if not track:
            continue
        if pan_in_track := _TRACK_PAN.search(track):  # track 1 "B4761...^", track 2 "4761...=" or "D"
            found[pan_in_track.group()] = mask_pan(pan_in_track.group())
        if len(track) >= PAN_MIN_DIGITS:
            found[track] = "[track data]"
    chip = _chip_items(fields.get(CHIP_FIELD, ""))
    if not isinstance(chip, str):
        for item in _flatten(chip):
            if item.tag == EMV_PAN_TAG and len(chip_pan := _bcd_digits(item.value)) >= PAN_MIN_DIGITS:
                found[chip_pan] = mask_pan(chip_pan)
    return found


def _scrub(row: FieldRow, secrets: Mapping[str, str]) -> FieldRow:
    """The row with any clear PAN or track data that got into a value or note replaced, longest first."""
    if not secrets:
        return row
    return FieldRow(row.id, row.name, _scrub_text(row.value, secrets), tuple(_scrub(p, secrets) for p in row.parts),
                    _scrub_text(row.note, secrets) if row.note is not None else None)  # fmt: skip


def _scrub_text(text: str, secrets: Mapping[str, str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, secrets[secret])
    return text


def _row(
    field_id: str, value: str, dialect: Dialect, secrets: Mapping[str, str], parts: tuple[FieldRow, ...]
) -> FieldRow:
    name = _name(dialect, field_id)
    if field_id in PAN_FIELDS:
        masked, note = _shown(mask_pan(value), dialect, field_id)
        return FieldRow(field_id, name, masked, note="masked" if note is None else f"masked, {note}")
    if field_id in HIDDEN_FIELDS:
        return FieldRow(field_id, name, "", note=HIDDEN_FIELDS[field_id])
    if field_id in MAC_FIELDS:
        return FieldRow(field_id, name, _shown(value, dialect, field_id)[0], note="MAC")
    if field_id == CHIP_FIELD:
        return _chip_row(field_id, name, value)
    shown, note = _shown(_scrub_text(value, secrets), dialect, field_id)
    return FieldRow(field_id, name, shown, parts or _subfield_rows(field_id, value, dialect), note)


def _is_binary(dialect: Dialect, field_id: str) -> bool:
    """Bytes that pyiso8583 hands over as hex (BCD numerics, counted in nibbles, are digits instead)."""
    spec = dialect.spec.get(field_id, {})
    return spec.get("data_enc") == "b" and spec.get("len_count", "bytes") != "nibbles"


def _shown(value: str, dialect: Dialect, field_id: str) -> tuple[str, str | None]:
    """A plain value as shown: itself (noted "hex" for bytes pyiso8583 gives as hex), or its bytes in hex when it has
    characters a screen cannot show."""
    if value.isprintable():
        return value, "hex" if _is_binary(dialect, field_id) else None
    codec = dialect.spec.get(field_id, {}).get("data_enc")
    try:
        raw = value.encode(codec if isinstance(codec, str) and codec != "b" else "utf-8")
    except (LookupError, UnicodeError):
        raw = value.encode("utf-8", "backslashreplace")
    return raw.hex().upper(), "hex"


_SUBFIELD_NAME: Final = re.compile(r"(?<![-\w.])(\d+)\.(\w+) ([^,;:()]+)")  # "60.1 type", not "60.4-60.7 as"


def _subfield_names(dialect: Dialect, field_id: str) -> dict[str, str]:
    """Sub-field names as the field's description gives them (``"60.1 type, 60.2 batch"``)."""
    names: dict[str, str] = {}
    for parent, sub, words in _SUBFIELD_NAME.findall(_name(dialect, field_id)):
        if parent == field_id and (text := words.strip()):
            names[sub] = text[0].upper() + text[1:]
    return names


def _subfield_rows(field_id: str, value: str, dialect: Dialect) -> tuple[FieldRow, ...]:
    layout = dialect.subfields.get(field_id)
    if not layout:
        return ()
    names = _subfield_names(dialect, field_id)
    rows: list[FieldRow] = []
    start = 0
    for sub, length in layout:
        part = value[start : start + length]
        if not part:
            break
        shown, note = _shown(part, dialect, field_id)
        if len(part) < length:
            note = f"{note}, short" if note else f"short: {len(part)} of {length}"
        rows.append(FieldRow(f"{field_id}.{sub}", names.get(sub, f"Sub-field {field_id}.{sub}"), shown, note=note))
        start += length
    if rest := value[start:]:
        shown, note = _shown(rest, dialect, field_id)
        rows.append(FieldRow(f"{field_id}.rest", "Further data (the dialect names no sub-field)", shown, note=note))
    return tuple(rows)


def _chip_items(value: str) -> list[TlvItem] | str:
    """Field 55 (hex) parsed, or why it does not parse (the error names a tag and an offset, never a value)."""
    try:
        data = bytes.fromhex(value)
    except ValueError:
        return NOT_HEX
    try:
        return parse_tlv(data)
    except TlvError as error:
        return str(error)


def _flatten(items: Iterable[TlvItem]) -> Iterable[TlvItem]:
    for item in items:
        yield item
        yield from _flatten(item.children)


def _bcd_digits(value: bytes) -> str:
    """A BCD PAN's digits, its F padding dropped."""
    return value.hex().upper().rstrip("F")


def _chip_row(field_id: str, name: str, value: str) -> FieldRow:
    items = _chip_items(value)
    if items == NOT_HEX:
        return FieldRow(field_id, name, f"{len(value)} characters", note=f"malformed EMV TLV: {items}")
    size = f"{len(value) // 2} bytes"
    if isinstance(items, str):
        return FieldRow(field_id, name, size, note=f"malformed EMV TLV: {items}")
    return FieldRow(field_id, name, size, tuple(_tag_row(field_id, item) for item in items), "EMV TLV")


def _tag_row(parent: str, item: TlvItem) -> FieldRow:
    row_id = f"{parent}.{item.tag}"
    name = EMV_TAG_NAMES.get(item.tag, f"Tag {item.tag}")
    if item.tag in EMV_HIDDEN_TAGS:
        return FieldRow(row_id, name, "", note=EMV_HIDDEN_TAGS[item.tag])
    if item.tag == EMV_PAN_TAG:
        return FieldRow(row_id, name, mask_pan(_bcd_digits(item.value)), note="masked")
    if item.constructed:
        return FieldRow(row_id, name, "", tuple(_tag_row(row_id, child) for child in item.children))
    return FieldRow(row_id, name, item.value.hex().upper())


def _key_block_note(value: str) -> str:
    """``[key block, KCV TPK 1A2B3C4D, TAK ...]``: the check values a known layout carries; never a key's bytes."""
    try:
        block = bytes.fromhex(value)
    except ValueError:
        return KEY_BLOCK
    slots = _KEY_BLOCK_SLOTS.get(len(block))
    if slots is None:
        return KEY_BLOCK
    checks: list[str] = []
    offset = 0
    for slot in slots:
        check_at = offset + slot.key_bytes + slot.pad_bytes
        checks.append(f"{slot.name} {block[check_at : check_at + slot.check_bytes].hex().upper()}")
        offset += slot.size_bytes
    return f"[key block, KCV {', '.join(checks)}]"


def _totals_parts(message: Message, dialect: Dialect) -> dict[str, tuple[FieldRow, ...]]:
    """A settlement's totals split into parts, where the family carries them all in one field (CUP F48); a family
    with a field per total (iso87 F74/76/86/88) needs none."""
    family = family_of(dialect)
    try:
        totals = family.read_totals(message)
    except (IsoHostError, ValueError, LookupError):
        return {}
    carriers = family.totals_fields(totals)
    if len(carriers) != 1:
        return {}
    (field_id,) = carriers
    rows: list[FieldRow] = []
    for section, numbers in (("domestic", totals.domestic), ("foreign", totals.foreign)):
        for attribute, words, is_amount in _TOTALS_PARTS:
            number: int = getattr(numbers, attribute)
            shown = format_amount(number) if is_amount else str(number)
            rows.append(FieldRow(f"{field_id}.{section}.{attribute}", f"{section.capitalize()} {words}", shown))
    return {field_id: tuple(rows)}
