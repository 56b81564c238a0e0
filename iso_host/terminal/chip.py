"""A chip card at the terminal: field 55 with a real ARQC, computed from an issuer master key as the card's chip would
compute it, and the check of the host's answer to it (tag 91, the ARPC) that the card makes at its second GENERATE AC.

The terminal data is a plain domestic purchase: country and currency the dialect's currency code (156 for CUP, 840
for the iso87 dialects: each country's code equals its currency's here), TVR all zero, transaction type 00, today's
date, a random unpredictable number; the card's AIP, its ATC from the terminal's state file and its 9F10 in the
layout of its cryptogram version (``ISSUER_APPLICATION_DATA``). Never 5A or 57: the PAN travels in F2 as before.

The reply's field 55 is read as the card reads it: tag 91 (checked against the ARQC), and the issuer scripts in
templates 71 and 72 (their identifier 9F18 and commands 86), which the terminal reports; it runs none of them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from iso_host.security import (
    EMV_SCHEMES,
    EmvDataError,
    EmvScheme,
    IccKey,
    KeyLengthError,
    TlvError,
    TlvItem,
    build_tlv,
    derive_icc_key,
    generate_arqc,
    parse_tlv,
    verify_arpc,
)
from iso_host.wire import Message

CHIP_ENTRY_MODE: Final = "051"  # F22: read from the chip, PIN entry capable
CHIP_FIELD: Final = "55"
CARD_SEQUENCE_FIELD: Final = "23"
ISSUER_AUTHENTICATION_TAG: Final = "91"
SCRIPT_TEMPLATES: Final = ("71", "72")  # issuer scripts run before / after the second GENERATE AC
SCRIPT_ID_TAG: Final = "9F18"
SCRIPT_COMMAND_TAG: Final = "86"
ARQC_CID: Final = b"\x80"  # 9F27: an ARQC, the card asks to go online
# 9F10 as each cryptogram version lays it out (the bytes each one computes over are EmvScheme.issuer_data):
# EMV CCD format A (length 0F, CCI A5, DKI 01, CVR, then the issuer discretionary data); Visa: length 06, DKI 01,
# CVN (0A, 12, 16), CVR 03 + 3 bytes; M/Chip: KDI 01, CVN (10, 11, 14, 15), CVR 6 bytes, DAC 2, counters 8;
# Interac: pyemv's test value (CVN 85).
ISSUER_APPLICATION_DATA: Final[Mapping[str, str]] = {
    "emv-csk": "0FA501A00000000000000000000000000F" + "00" * 15,
    "visa-cvn10": "06010A03A00000",
    "visa-cvn18": "06011203A00000",
    "visa-cvn22": "06011603A00000",
    "mastercard-cvn16": "0110A00003220000" "0000" "00000000000000FF",
    "mastercard-cvn17": "0111A00003220000" "0000" "00000000000000FF",
    "mastercard-cvn20": "0114A00003220000" "0000" "00000000000000FF",
    "mastercard-cvn21": "0115A00003220000" "0000" "00000000000000FF",
    "interac-cvn133": "1501850440B100000000B00000000000000000000000",
}
assert set(ISSUER_APPLICATION_DATA) == set(EMV_SCHEMES), "every cryptogram version has its 9F10"
TERMINAL_VERIFICATION_RESULTS: Final = bytes(5)
APPLICATION_INTERCHANGE_PROFILE: Final = bytes.fromhex("5800")  # SDA, cardholder verification, terminal risk mgmt
PURCHASE: Final = b"\x00"  # 9C


class ChipError(ValueError):
    """A chip card that cannot be used as given: a bad key, PAN or sequence number (never echoed)."""


@dataclass(frozen=True, slots=True)
class ChipCard:
    """The card's chip: its ICC key, derived from the issuer master key, the PAN and the PAN sequence number."""

    icc_key: IccKey
    pan_sequence: str  # two digits; F23 is "0" + these

    @classmethod
    def derive(cls, imk: bytes, *, pan: str, pan_sequence: str, scheme: str) -> ChipCard:
        """Raises ChipError for an IMK that is not 16 bytes, a PAN or a sequence number the derivation refuses."""
        if scheme not in EMV_SCHEMES:
            msg = f"--emv-scheme: must be one of {', '.join(EMV_SCHEMES)}, got {scheme!r}"
            raise ChipError(msg)
        try:
            key = derive_icc_key(imk, pan=pan, pan_sequence=pan_sequence, scheme=EMV_SCHEMES[scheme])
        except KeyLengthError:
            raise ChipError("--imk: must be 32 hex digits (a double-length IMK-AC)") from None
        except EmvDataError as error:
            name = "--psn" if error.tag == "5F34" else "--pan"
            raise ChipError(f"{name}: {error.reason}") from None
        return cls(key, pan_sequence)

    @property
    def scheme(self) -> EmvScheme:
        return self.icc_key.scheme


@dataclass(frozen=True, slots=True)
class ChipRequest:
    """What a chip sale adds to the request (F22, F23, F55), and the tags its ARPC is checked against."""

    fields: dict[str, str]
    tags: dict[str, bytes] = field(repr=False)


def _bcd(digits: str) -> bytes:
    return bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)


def chip_request(
    card: ChipCard, *, amount_minor: int, currency: str, now: datetime, atc: int, unpredictable: bytes | None = None
) -> ChipRequest:
    """F55 as the card and the terminal fill it for an online purchase: the Book 2 data, 9F10, 9F27 ARQC and 9F26
    the ARQC computed under the card's key; F23 the PAN sequence number; F22 chip read."""
    country = _bcd(currency.zfill(4))
    tags = {
        "9F02": _bcd(f"{amount_minor:012d}"),
        "9F03": bytes(6),
        "9F1A": country,
        "95": TERMINAL_VERIFICATION_RESULTS,
        "5F2A": country,
        "9A": _bcd(now.strftime("%y%m%d")),
        "9C": PURCHASE,
        "9F37": unpredictable if unpredictable is not None else secrets.token_bytes(4),
        "82": APPLICATION_INTERCHANGE_PROFILE,
        "9F36": atc.to_bytes(2, "big"),
        "9F10": bytes.fromhex(ISSUER_APPLICATION_DATA[card.scheme.name]),
        "9F27": ARQC_CID,
        "5F34": _bcd(card.pan_sequence),
    }
    tags["9F26"] = generate_arqc(card.icc_key, tags)
    data = build_tlv(TlvItem(tag, value) for tag, value in tags.items())
    fields = {"22": CHIP_ENTRY_MODE, CARD_SEQUENCE_FIELD: "0" + card.pan_sequence, CHIP_FIELD: data.hex().upper()}
    return ChipRequest(fields, tags)


@dataclass(frozen=True, slots=True)
class IssuerScript:
    """One issuer script template of a reply's F55: 71 or 72, its identifier (9F18) if any, its command APDUs (86)."""

    template: str
    script_id: bytes | None
    commands: tuple[bytes, ...]

    def describe(self) -> str:
        """One line for the terminal's outcome: ``issuer script 72 id 11223344: 84240000 04 ..., ...``."""
        named = f" id {self.script_id.hex().upper()}" if self.script_id is not None else ""
        return f"issuer script {self.template}{named}: {', '.join(c.hex().upper() for c in self.commands)}"


def _reply_items(response: Message) -> list[TlvItem]:
    """The response's F55 as parsed data objects (empty without F55).

    Raises:
        ChipError: an F55 that is not EMV TLV.
    """
    raw = response.fields.get(CHIP_FIELD)
    if raw is None:
        return []
    try:
        return parse_tlv(bytes.fromhex(raw))
    except (TlvError, ValueError) as error:
        raise ChipError(f"the response's F55 is not EMV TLV: {error}") from None


def issuer_authentication(response: Message) -> bytes | None:
    """Tag 91 of the response's F55 (beside any issuer scripts), or None when the response carries none.

    Raises:
        ChipError: an F55 that is not EMV TLV, or with tag 91 twice.
    """
    found = [item.value for item in _reply_items(response) if item.tag == ISSUER_AUTHENTICATION_TAG]
    if len(found) > 1:
        raise ChipError(f"the response's F55 carries tag {ISSUER_AUTHENTICATION_TAG} {len(found)} times")
    return found[0] if found else None


def issuer_scripts(response: Message) -> tuple[IssuerScript, ...]:
    """The issuer script templates (71, 72) of the response's F55, in their order.

    Raises:
        ChipError: an F55 that is not EMV TLV, or a template holding other tags than 9F18 and 86.
    """
    scripts = []
    for item in _reply_items(response):
        if item.tag not in SCRIPT_TEMPLATES:
            continue
        strays = [child.tag for child in item.children if child.tag not in (SCRIPT_ID_TAG, SCRIPT_COMMAND_TAG)]
        if strays:
            raise ChipError(f"the response's issuer script {item.tag} holds tag {strays[0]}")
        script_id = next((child.value for child in item.children if child.tag == SCRIPT_ID_TAG), None)
        commands = tuple(child.value for child in item.children if child.tag == SCRIPT_COMMAND_TAG)
        scripts.append(IssuerScript(item.tag, script_id, commands))
    return tuple(scripts)


def arpc_verifies(card: ChipCard, request: ChipRequest, issuer_data: bytes) -> bool:
    """Whether tag 91 answers the request's ARQC, as the card checks it.

    Raises:
        ChipError: a tag 91 of the wrong size for the scheme's ARPC method.
    """
    try:
        return verify_arpc(card.icc_key, request.tags, issuer_data)
    except EmvDataError as error:
        raise ChipError(f"the response's F55 {error}") from None
