"""The chip's part of a card decision (a sale, a pre-auth): the ARQC a request carries in field 55, verified under the
test card's ICC key, and the issuer authentication data (tag 91) the reply carries back, without which many cards
decline at their second GENERATE AC and the terminal reverses the approved sale. Pure: no clock, no I/O.

Verified only when there is an ARQC: 9F26 present, and 9F27 (the cryptogram information data), when sent, saying
ARQC (its bits 0xC0 are 10). A TC (01) or an AAC (00), as an offline sale carries, is not verified here: the card
decided offline and waits for no answer. Admission checks beforehand that the data the scheme computes over is
there and of the right sizes (a format error otherwise), so verifying here answers only yes or no.

An ARQC that verifies is also a replay when its ATC (9F36) is not above the highest ATC of the card's ARQCs that
verified before (``ChipData.highest_atc``, which admission reads from the card book): a chip counts up at every
GENERATE AC, so only a copy of an earlier cryptogram comes back with a counter already seen. The flow remembers the
new highest counter through ``Decision.chip_counters``, applied to the card book once the decision commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from iso_host.core.flows.base import ChipData
from iso_host.security import (
    EmvDataError,
    EmvScheme,
    TlvItem,
    build_tlv,
    generate_arpc,
    issuer_authentication_data,
    verify_arqc,
)

CID_TYPE_BITS: Final = 0xC0  # EMV 4.3 Book 3 Table 14: b8-b7 of 9F27, the type of cryptogram
CID_ARQC: Final = 0x80  # 00 AAC, 01 TC, 10 ARQC
ISSUER_AUTHENTICATION_TAG: Final = "91"
CSU_APPROVED: Final = bytes.fromhex("00800000")  # VIS 1.5 Card Status Update: byte 2 b8, the issuer approves
CSU_DECLINED: Final = bytes(4)


def asks_online(tags: Mapping[str, bytes]) -> bool:
    """Whether the chip data carries an ARQC: 9F26, and a 9F27 of one byte saying ARQC if there is one."""
    if "9F26" not in tags:
        return False
    cid = tags.get("9F27")
    return cid is None or (len(cid) == 1 and cid[0] & CID_TYPE_BITS == CID_ARQC)


def arqc_verified(chip: ChipData | None) -> bool | None:
    """Whether the request's ARQC verified under the card's ICC key; None when there is none to verify (no field 55,
    no ARQC, a TC or an AAC, a card without an issuer master key)."""
    if chip is None or chip.icc_key is None:
        return None
    tags = chip.values()
    if not asks_online(tags):
        return None
    try:
        return verify_arqc(chip.icc_key, tags)
    except EmvDataError:
        return False  # admission refuses such data first (a format error); were it to pass, it proves nothing


def application_counter(chip: ChipData) -> int:
    """The ATC (9F36) of chip data whose ARQC verified (the ARQC's input holds it: two bytes)."""
    return int.from_bytes(chip.values()["9F36"], "big")


def atc_replayed(chip: ChipData) -> bool:
    """Whether the ATC of an ARQC that verified is not above the highest the host has seen for the card."""
    return chip.highest_atc is not None and application_counter(chip) <= chip.highest_atc


def counter_seen(chip: ChipData | None) -> tuple[tuple[str, int], ...]:
    """What the card book remembers of an ARQC that verified (and is no replay): its card's counter key and ATC."""
    if chip is None or chip.counter_key is None:
        return ()
    return ((chip.counter_key, application_counter(chip)),)


def arpc_response(scheme: EmvScheme, response_code: str) -> bytes:
    """What the ARPC answers with: ARPC method 1, the Authorisation Response Code, field 39's two ASCII characters
    (tag 8A); method 2 (Visa CVN 18 and 22), a Card Status Update saying approved or declined."""
    if scheme.arpc_method == 1:
        return response_code.encode("ascii")
    return CSU_APPROVED if response_code == "00" else CSU_DECLINED


def issuer_authentication(chip: ChipData, response_code: str) -> dict[str, str]:
    """The reply's field 55, tag 91 alone (ARPC || ARC, or ARPC || CSU), as upper-case hex: a binary field 55 takes
    it as bytes and a character one (iso87ascii) as hex text, both from this one value."""
    assert chip.icc_key is not None, "only an ARQC that verified is answered"
    response = arpc_response(chip.icc_key.scheme, response_code)
    arpc = generate_arpc(chip.icc_key, chip.values(), response=response)
    data = build_tlv([TlvItem(ISSUER_AUTHENTICATION_TAG, issuer_authentication_data(arpc, response))])
    return {"55": data.hex().upper()}
