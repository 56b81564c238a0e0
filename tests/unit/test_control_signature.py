"""Signed live-control commands (control/signing.py) and the control secret (control/secret.py): the forgeries, the
replays and the stale commands a verifier must refuse, as tables; the nonce book's bound; the secret's file mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iso_host.control.secret import ENV_VAR, load_secret
from iso_host.control.signing import NonceBook, SignatureRefused, Verifier, digest, sign, unsigned
from iso_host.errors import ConfigError

SECRET = b"k" * 32
OTHER_SECRET = b"o" * 32
TOPIC = "lab/control/disable-terminal"
NOW = 1_800_000_000
COMMAND = {"request_id": "qa-1", "tid": "TERM0001"}


def signed(*, secret: bytes = SECRET, topic: str = TOPIC, ts: int = NOW, nonce: str = "n" * 16) -> bytes:
    return sign(secret, topic, COMMAND, ts=ts, nonce=nonce)


def envelope(payload: str, mac: str) -> bytes:
    return json.dumps({"payload": payload, "hmac": mac}).encode()


def tampered() -> bytes:
    document = json.loads(signed())
    return envelope(document["payload"].replace("TERM0001", "TERM0002"), document["hmac"])


def unsigned_fields(**fields: object) -> bytes:
    payload = json.dumps({**COMMAND, **fields})
    return envelope(payload, digest(SECRET, TOPIC, payload))


REFUSED = [
    pytest.param(json.dumps(COMMAND).encode(), "required", id="unsigned"),
    pytest.param(b"not json", "required", id="not-json"),
    pytest.param(json.dumps({"payload": "{}"}).encode(), "required", id="no-hmac"),
    pytest.param(envelope("{}", "ab"), "64 lowercase hex", id="short-hmac"),
    pytest.param(signed(secret=OTHER_SECRET), "does not verify", id="wrong-secret"),
    pytest.param(tampered(), "does not verify", id="payload-changed"),
    pytest.param(signed(topic="lab/control/enable-terminal"), "does not verify", id="another-command's-topic"),
    pytest.param(signed(topic="other-host/control/disable-terminal"), "does not verify", id="another-host's-topic"),
    pytest.param(signed(ts=NOW - 61), "ts is -61 s", id="stale-61s"),
    pytest.param(signed(ts=NOW + 61), r"ts is \+61 s", id="future-61s"),
    pytest.param(signed(ts=0), "allowed: ±60 s", id="epoch"),
    pytest.param(unsigned_fields(nonce="n" * 16), "ts: required", id="no-ts"),
    pytest.param(unsigned_fields(ts=True, nonce="n" * 16), "ts: required", id="ts-boolean"),
    pytest.param(unsigned_fields(ts=2**64, nonce="n" * 16), "ts: required", id="ts-huge"),
    pytest.param(unsigned_fields(ts=NOW), "nonce: required", id="no-nonce"),
    pytest.param(unsigned_fields(ts=NOW, nonce="short"), "nonce: required", id="short-nonce"),
    pytest.param(b"x" * 300_000, "at most", id="too-big"),
]


@pytest.mark.parametrize(("message", "problem"), REFUSED)
def test_a_forged_stale_or_unsigned_command_is_refused(message: bytes, problem: str) -> None:
    verifier = Verifier(SECRET)
    with pytest.raises(SignatureRefused, match=problem) as refused:
        verifier.verify(TOPIC, message, NOW)
    assert str(refused.value).startswith("signature: ")
    assert len(verifier.nonces) == 0, "a refused command leaves no nonce behind"


@pytest.mark.parametrize("skew", [-60, 0, 60])
def test_a_signed_command_inside_the_window_verifies_once(skew: int) -> None:
    verifier = Verifier(SECRET)
    message = signed(ts=NOW + skew)
    payload = json.loads(verifier.verify(TOPIC, message, NOW))
    assert {k: payload[k] for k in COMMAND} == COMMAND
    with pytest.raises(SignatureRefused, match="nonce already used"):
        verifier.verify(TOPIC, message, NOW)  # the same bytes again: a replay


def test_a_nonce_is_forgotten_only_once_its_command_is_stale() -> None:
    verifier = Verifier(SECRET)
    verifier.verify(TOPIC, signed(ts=NOW), NOW)
    with pytest.raises(SignatureRefused, match="nonce already used"):
        verifier.verify(TOPIC, signed(ts=NOW + 30), NOW + 30)  # the same nonce, freshly signed, within the window
    with pytest.raises(SignatureRefused, match="ts is -61 s"):
        verifier.verify(TOPIC, signed(ts=NOW), NOW + 61)  # the replay is stale by the time its nonce is forgotten
    verifier.verify(TOPIC, signed(ts=NOW + 200), NOW + 200)
    assert len(verifier.nonces) == 1, "the first nonce expired"


def test_the_nonce_book_is_bounded_and_refuses_rather_than_forgets() -> None:
    verifier = Verifier(SECRET, nonces=NonceBook(max_nonces=3))
    for n in range(3):
        verifier.verify(TOPIC, signed(nonce=f"nonce-{n:011d}"), NOW)
    with pytest.raises(SignatureRefused, match="over 3 commands within 60 s"):
        verifier.verify(TOPIC, signed(nonce="nonce-99999999999"), NOW)
    verifier.verify(TOPIC, signed(ts=NOW + 61, nonce="nonce-99999999999"), NOW + 121)
    assert len(verifier.nonces) == 1


def test_the_secret_is_not_in_repr() -> None:
    assert "kkkk" not in repr(Verifier(SECRET))


def test_unsigned_tells_the_two_forms_apart() -> None:
    assert unsigned(json.dumps(COMMAND).encode())
    assert not unsigned(signed())


def secret_file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "control.secret"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_secret_file_must_be_private_and_long(tmp_path: Path) -> None:
    good = "a" * 64 + "\n"
    assert load_secret(str(secret_file(tmp_path, good, 0o600)), {}) == b"a" * 64
    with pytest.raises(ConfigError, match=r"open to others \(mode 0644\); chmod 600"):
        load_secret(str(secret_file(tmp_path, good, 0o644)), {})
    with pytest.raises(ConfigError, match="is 8 bytes, at least 32") as short:
        load_secret(str(secret_file(tmp_path, "tooshort", 0o600)), {})
    assert "tooshort" not in str(short.value), "the secret is never shown"
    with pytest.raises(ConfigError, match="cannot read"):
        load_secret(str(tmp_path / "missing"), {})


def test_the_variable_wins_and_nothing_means_no_secret(tmp_path: Path) -> None:
    path = str(secret_file(tmp_path, "a" * 64, 0o600))
    assert load_secret(path, {ENV_VAR: "b" * 40}) == b"b" * 40
    assert load_secret(None, {}) is None
    with pytest.raises(ConfigError, match=f"{ENV_VAR}: the control secret is 3 bytes"):
        load_secret(None, {ENV_VAR: "abc"})
