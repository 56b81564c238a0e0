"""MACs on encoded messages: which bytes a MAC covers, reading the one received, sealing a response.

The MAC field is the last field of the message (F64, or F128 when a secondary bitmap is present), so the
MAC input is the message body from the MTI up to that field: without length header, TPDU or CUP header.
Shared by the host and the terminal client. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from typing import Final

from iso_host.security import compute_mac, verify_mac
from iso_host.wire import Dialect, Message

MAC_PLACEHOLDER: Final = "0" * 16  # 8 zero bytes as hex; replaced by the MAC after encoding
MAC_FIELDS: Final = ("64", "128")


def mac_field_of(message: Message) -> str:
    """The field a MAC goes in: F128 when any field above 64 is present, else F64."""
    return "128" if any(int(field_id) > 64 for field_id in message.fields) else "64"


def _encoded_mac_bytes(dialect: Dialect, field_id: str) -> int:
    spec = dialect.spec[field_id]
    assert spec["len_type"] == 0, "a MAC field has a fixed length"
    return int(spec["max_len"])


def _to_wire(dialect: Dialect, field_id: str, mac: bytes) -> bytes:
    """The MAC as the field's bytes: raw for binary fields, hex text for character fields."""
    if dialect.spec[field_id]["data_enc"] == "b":
        return mac
    return mac.hex().upper().encode("ascii")


def _from_wire(dialect: Dialect, field_id: str, raw: bytes) -> bytes | None:
    if dialect.spec[field_id]["data_enc"] == "b":
        return raw
    text = raw.decode("ascii", errors="replace")
    if not text.isalnum() or text != text.upper():
        return None  # only the uppercase hex a MAC is sealed with: any other byte is a different MAC
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def has_mac(message: Message) -> bool:
    """Whether the message carries a MAC in its last field. Without F64 and F128 (most requests when MACs are off)
    the answer needs no scan of the fields."""
    fields = message.fields
    if "128" in fields:
        return True  # F128 is the last field there is: the MAC field whatever else is present
    return "64" in fields and mac_field_of(message) == "64"


def verify_message_mac(body: bytes, message: Message, dialect: Dialect, algorithm: str, key: bytes) -> bool:
    """Check the MAC at the end of ``body`` (the encoded message after the envelope), in constant time."""
    field_id = mac_field_of(message)
    if field_id not in message.fields:
        return False
    size = _encoded_mac_bytes(dialect, field_id)
    received = _from_wire(dialect, field_id, body[-size:])
    if received is None:
        return False
    return verify_mac(algorithm, key, body[:-size], received)


def seal(body: bytes, message: Message, dialect: Dialect, algorithm: str, key: bytes) -> bytes:
    """Replace the placeholder MAC at the end of an encoded ``body`` with the real one."""
    field_id = mac_field_of(message)
    assert message.fields.get(field_id) == MAC_PLACEHOLDER, "encode with MAC_PLACEHOLDER in the MAC field"
    size = _encoded_mac_bytes(dialect, field_id)
    mac = compute_mac(algorithm, key, body[:-size])
    sealed = body[:-size] + _to_wire(dialect, field_id, mac)
    assert len(sealed) == len(body)
    return sealed
