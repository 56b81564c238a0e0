"""The MACs' kept cipher contexts (security/mac.py): one set per key, so a new key (a sign-on's TAK) never MACs with an
old key's context, and a key used again after others still gives its own MAC."""

from __future__ import annotations

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from iso_host.security.mac import MAC_CONTEXT_KEYS, compute_mac

DATA = bytes(range(37))


def _des(key: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES((key * 3)[:24]), modes.ECB())
    context = cipher.decryptor() if decrypt else cipher.encryptor()
    return context.update(data) + context.finalize()


def _reference(algorithm: str, key: bytes, data: bytes) -> bytes:
    """Each MAC from scratch, a fresh context per block operation."""
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    if algorithm == "aes-cmac":
        authenticator = cmac.CMAC(algorithms.AES(key))
        authenticator.update(data)
        return authenticator.finalize()[:8]
    if algorithm == "cup-ecb":
        folded = bytes(8)
        for offset in range(0, len(padded), 8):
            folded = bytes(a ^ b for a, b in zip(folded, padded[offset : offset + 8], strict=True))
        text = folded.hex().upper().encode("ascii")
        first = _des(key, text[:8])
        return _des(key, bytes(a ^ b for a, b in zip(first, text[8:], strict=True))).hex().upper()[:8].encode()
    chained = bytes(8)
    single = key[:8]
    for offset in range(0, len(padded), 8):
        chained = _des(single, bytes(a ^ b for a, b in zip(chained, padded[offset : offset + 8], strict=True)))
    if algorithm == "x9.9":
        return chained
    return _des(single, _des(key[8:], chained, decrypt=True))


@pytest.mark.parametrize(
    ("algorithm", "key_bytes"),
    [
        pytest.param("x9.19", 16, id="x9.19"),
        pytest.param("x9.9", 8, id="x9.9"),
        pytest.param("cup-ecb", 8, id="cup-ecb-single"),
        pytest.param("cup-ecb", 16, id="cup-ecb-double"),
        pytest.param("aes-cmac", 16, id="aes-cmac"),
    ],
)  # fmt: skip
def test_each_key_macs_with_its_own_context(algorithm: str, key_bytes: int) -> None:
    """Keys taken in turn (old TAK, new TAK, old again) and more keys than are kept: every MAC is the key's own."""
    keys = [bytes([n]) * key_bytes for n in range(1, 4)]
    for key in (*keys, keys[0], keys[2], keys[0]):
        assert compute_mac(algorithm, key, DATA) == _reference(algorithm, key, DATA)
    many = [n.to_bytes(4, "big") * (key_bytes // 4) for n in range(MAC_CONTEXT_KEYS + 5)]
    for key in (*many, many[0], keys[1]):
        assert compute_mac(algorithm, key, DATA) == _reference(algorithm, key, DATA)
