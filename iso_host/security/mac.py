"""Message authentication codes over the bytes a dialect says the MAC covers.

Pure functions: key and data in, MAC out. The rule: a received MAC is only ever compared with
``verify_mac``, which uses a constant-time comparison, and errors name the algorithm and the key
length, never the key.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import CipherContext, algorithms

from iso_host.security.errors import KeyLengthError, SecurityError
from iso_host.security.keys import (
    AES_BLOCK_BYTES,
    AES_KEY_LENGTHS,
    DES_BLOCK_BYTES,
    _des_cipher,
    tdes_cbc_encrypt,
    xor_bytes,
)

MAC_BYTES = 8  # ISO 8583 field 64 / 128
# Keys whose ready cipher contexts are kept (least recently used first out): a host MACs with one key per terminal, and
# a sign-on's new TAK simply takes a new entry. Setting up a DES context (its key schedule) costs more than the MAC.
MAC_CONTEXT_KEYS: Final = 1024
# The key lengths (bytes) each algorithm takes: what a configuration's keys are checked against before the host starts.
MAC_KEY_LENGTHS: dict[str, tuple[int, ...]] = {
    "x9.19": (16,),
    "x9.9": (8,),
    "cup-ecb": (8, 16),
    "aes-cmac": AES_KEY_LENGTHS,
}


def _require_key_length(key: bytes, allowed: tuple[int, ...], key_name: str) -> None:
    """Refuse a key whose length the algorithm does not take."""
    if len(key) not in allowed:
        *head, last = (str(length) for length in allowed)
        expected = f"{', '.join(head)} or {last}" if head else last
        msg = f"{key_name} must be {expected} bytes, got {len(key)}"
        raise KeyLengthError(msg)


def _zero_pad(data: bytes) -> bytes:
    """ISO 9797-1 padding method 1: zeros up to a whole block; empty data becomes one zero block."""
    padded = data + bytes(-len(data) % DES_BLOCK_BYTES) if data else bytes(DES_BLOCK_BYTES)
    assert len(padded) % DES_BLOCK_BYTES == 0
    assert len(padded) >= len(data)
    return padded


@functools.lru_cache(maxsize=MAC_CONTEXT_KEYS)
def _des_ecb(key: bytes, key_name: str) -> tuple[CipherContext, CipherContext]:
    """A (triple) DES ECB encryptor and decryptor under ``key``, set up once and kept: ECB over whole blocks carries
    nothing from one ``update`` to the next, so one context serves every MAC under the key (never finalised)."""
    cipher = _des_cipher(key, None, key_name)
    return cipher.encryptor(), cipher.decryptor()


def _ecb_encrypt(key: bytes, block: bytes, key_name: str) -> bytes:
    return _des_ecb(key, key_name)[0].update(block)


def _ecb_decrypt(key: bytes, block: bytes, key_name: str) -> bytes:
    return _des_ecb(key, key_name)[1].update(block)


def _cbc_mac(key: bytes, padded: bytes, key_name: str) -> bytes:
    """Return the last block of the zero-IV CBC encryption of the padded data (one fresh CBC context: chaining block by
    block in Python over a kept ECB context costs more from about four blocks on)."""
    assert padded, "CBC-MAC needs at least one block"
    return tdes_cbc_encrypt(key, padded, key_name=key_name)[-DES_BLOCK_BYTES:]


def x9_19_mac(key: bytes, data: bytes) -> bytes:
    """ANSI X9.19 retail MAC: ISO 9797-1 MAC algorithm 3, padding method 1.

    Args:
        key: 16 bytes, K||K'; the chain runs under single DES K, the last block gets D(K') E(K).
        data: the bytes covered by the MAC.

    Raises:
        KeyLengthError: If the key is not 16 bytes.
    """
    _require_key_length(key, MAC_KEY_LENGTHS["x9.19"], "X9.19 MAC key")
    left, right = key[:DES_BLOCK_BYTES], key[DES_BLOCK_BYTES:]
    chained = _cbc_mac(left, _zero_pad(data), "X9.19 MAC key")
    return _ecb_encrypt(left, _ecb_decrypt(right, chained, "X9.19 MAC key"), "X9.19 MAC key")


def x9_9_mac(key: bytes, data: bytes) -> bytes:
    """ANSI X9.9 MAC: ISO 9797-1 MAC algorithm 1 (single DES CBC-MAC), padding method 1.

    Raises:
        KeyLengthError: If the key is not 8 bytes.
    """
    _require_key_length(key, MAC_KEY_LENGTHS["x9.9"], "X9.9 MAC key")
    return _cbc_mac(key, _zero_pad(data), "X9.9 MAC key")


def _fold_blocks(padded: bytes) -> bytes:
    """XOR every 8-byte block of the padded data together."""
    folded = bytes(DES_BLOCK_BYTES)
    for offset in range(0, len(padded), DES_BLOCK_BYTES):
        folded = xor_bytes(folded, padded[offset : offset + DES_BLOCK_BYTES])
    return folded


def cup_ecb_mac(key: bytes, data: bytes) -> bytes:
    """China UnionPay POS "ECB" MAC, returned as 8 ASCII uppercase hex characters.

    The padded data is folded by XOR into one block, written as 16 hex characters; the first 8
    are encrypted, XORed with the last 8 and encrypted again, and the first 8 hex characters of
    that are the MAC.

    Args:
        key: the TAK, 8 bytes (single DES) or 16 bytes (triple DES).
        data: the message from the MTI through the last field before field 64.

    Raises:
        KeyLengthError: If the key is not 8 or 16 bytes.
    """
    _require_key_length(key, MAC_KEY_LENGTHS["cup-ecb"], "CUP MAC key")
    hex_ascii = _fold_blocks(_zero_pad(data)).hex().upper().encode("ascii")
    first = _ecb_encrypt(key, hex_ascii[:DES_BLOCK_BYTES], "CUP MAC key")
    second = _ecb_encrypt(key, xor_bytes(first, hex_ascii[DES_BLOCK_BYTES:]), "CUP MAC key")
    mac = second.hex().upper()[:MAC_BYTES].encode("ascii")
    assert len(mac) == MAC_BYTES
    return mac


def aes_cmac(key: bytes, data: bytes, length: int = MAC_BYTES) -> bytes:
    """AES-CMAC (NIST SP 800-38B, RFC 4493), truncated to its leftmost ``length`` bytes.

    Raises:
        KeyLengthError: If the key is not 16, 24 or 32 bytes.
    """
    assert 1 <= length <= AES_BLOCK_BYTES, "an AES-CMAC is 1..16 bytes"
    _require_key_length(key, MAC_KEY_LENGTHS["aes-cmac"], "AES-CMAC key")
    authenticator = _aes_cmac(key).copy()
    authenticator.update(data)
    return authenticator.finalize()[:length]


@functools.lru_cache(maxsize=MAC_CONTEXT_KEYS)
def _aes_cmac(key: bytes) -> cmac.CMAC:
    """An AES-CMAC under ``key`` with nothing fed yet, kept to be copied: its key schedule is done once."""
    return cmac.CMAC(algorithms.AES(key))


MAC_ALGORITHMS: dict[str, Callable[[bytes, bytes], bytes]] = {
    "x9.19": x9_19_mac,
    "x9.9": x9_9_mac,
    "cup-ecb": cup_ecb_mac,
    "aes-cmac": aes_cmac,
}
assert set(MAC_KEY_LENGTHS) == set(MAC_ALGORITHMS)


def compute_mac(algorithm: str, key: bytes, data: bytes) -> bytes:
    """Compute the MAC named by a dialect (a key of ``MAC_ALGORITHMS``).

    Raises:
        SecurityError: If the algorithm is unknown.
        KeyLengthError: If the key length does not suit the algorithm.
    """
    function = MAC_ALGORITHMS.get(algorithm)
    if function is None:
        msg = f"unknown MAC algorithm {algorithm!r}, expected one of {', '.join(sorted(MAC_ALGORITHMS))}"
        raise SecurityError(msg)
    mac = function(key, data)
    assert len(mac) == MAC_BYTES
    return mac


def verify_mac(algorithm: str, key: bytes, data: bytes, received: bytes) -> bool:
    """Tell whether ``received`` is the MAC of ``data``, comparing in constant time.

    A received MAC whose length differs from the algorithm's is simply wrong (``False``).

    Raises:
        SecurityError: If the algorithm is unknown.
        KeyLengthError: If the key length does not suit the algorithm.
    """
    computed = compute_mac(algorithm, key, data)
    if len(received) != len(computed):
        return False
    return hmac.compare_digest(computed, received)
