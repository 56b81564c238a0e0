"""The card numbers of a terminal's batch in its state file: masked for people, sealed for the batch upload.

The upload sends each debit's PAN (CUP F48 n20, iso87 F2), so the terminal keeps it until settlement, as a real
terminal does. The state file holds it encrypted (AES-256-GCM, a fresh nonce each time) under a key derived from the
TMK, as it holds the working keys wrapped under the TMK, next to the masked PAN (first 6, last 4) for display. In
memory the batch's items carry the clear ``pan``; only ``stored_items`` / ``loaded_items`` see the file's form.

A state file written before (an item with a clear ``pan``) still loads; its next save seals it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iso_host.cards import mask_pan
from iso_host.errors import IsoHostError

SEAL_LABEL: Final = b"iso-host terminal state: batch card numbers"
NONCE_BYTES: Final = 12
MASKED, SEALED = "pan_masked", "pan_sealed"


class SealError(IsoHostError):
    """A sealed PAN that does not open under this TMK (another TMK, or an edited file)."""


def seal_key(tmk: bytes) -> bytes:
    """The AES-256 key the state file's PANs are sealed under: an HMAC of a fixed label under the TMK."""
    return hmac.new(tmk, SEAL_LABEL, hashlib.sha256).digest()


def seal_pan(key: bytes, pan: str) -> str:
    """The PAN encrypted and authenticated (the masked PAN as associated data), as hex: nonce then ciphertext."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return (nonce + AESGCM(key).encrypt(nonce, pan.encode("ascii"), mask_pan(pan).encode("ascii"))).hex().upper()


def open_pan(key: bytes, sealed: str, masked: str) -> str:
    """Raises SealError: not sealed under ``key``, or altered."""
    try:
        data = bytes.fromhex(sealed)
        pan = AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], masked.encode("ascii")).decode("ascii")
    except (ValueError, InvalidTag, UnicodeError):
        raise SealError("a card number in the batch does not open under this TMK (--tmk)") from None
    return pan


def stored_items(items: list[dict[str, Any]], key: bytes | None) -> list[dict[str, Any]]:
    """The batch as the state file keeps it: each ``pan`` replaced by its masked and sealed forms.

    Raises:
        SealError: a clear PAN and no key to seal it under.
    """
    stored = []
    for item in items:
        kept = {name: value for name, value in item.items() if name not in ("pan", MASKED, SEALED)}
        pan = str(item.get("pan", ""))
        if SEALED in item and (not pan or pan == item[MASKED]):  # loaded without the TMK: kept as it came
            kept |= {MASKED: item[MASKED], SEALED: item[SEALED]}
        elif pan:
            if key is None:
                raise SealError("the terminal's state has no TMK to seal its batch's card numbers under")
            kept |= {MASKED: mask_pan(pan), SEALED: seal_pan(key, pan)}
        stored.append(kept)
    return stored


def loaded_items(items: list[dict[str, Any]], key: bytes | None) -> list[dict[str, Any]]:
    """The batch from the state file, each ``pan`` in clear again (masked when no key is given: for reading only).

    Raises:
        SealError: a sealed PAN that does not open under ``key``.
    """
    loaded = []
    for item in items:
        if SEALED not in item:  # an old state file's clear PAN, or an item without a card
            loaded.append(dict(item))
        elif key is None:
            loaded.append({**item, "pan": item[MASKED]})
        else:
            clear = {name: value for name, value in item.items() if name not in (MASKED, SEALED)}
            loaded.append({**clear, "pan": open_pan(key, item[SEALED], item[MASKED])})
    return loaded
