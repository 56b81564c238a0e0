"""Card data and secrets at rest (issue 14, items 1, 8 and 9), without a host: the terminal's state file keeps no
clear PAN and is private, the PAN key's check value gives nothing away, URLs lose their passwords."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from log_audit import remember_secret

from iso_host.cards import pan_hash, pan_key_check
from iso_host.errors import ConfigError, StoreError
from iso_host.ledger.pan_key import ENV_VARIABLE, PanKeySource, settle_pan_key
from iso_host.private_files import open_private, private_dir, write_private
from iso_host.terminal.client import ClientError, ClientState
from iso_host.urls import redacted_url

TMK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
OTHER_TMK = bytes.fromhex("FFEEDDCCBBAA99887766554433221100")
PAN = "6212345678901234567"
remember_secret(TMK, OTHER_TMK, PAN)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sale(pan: str = PAN) -> dict[str, object]:
    return {"kind": "sale", "stan": "000001", "rrn": "000000000001", "amount": 1234, "pan": pan, "status": "approved"}


class TestStateFile:
    """The upload needs each debit's PAN, so the file keeps it sealed under the TMK, masked for display."""

    def test_the_file_holds_no_clear_pan(self, tmp_path: Path) -> None:
        """Attack: read the state file for the card numbers of the open batch. It shows only the masked PAN."""
        path = tmp_path / "state" / "terminal.json"
        state = ClientState.load(path, TMK)
        state.items.append(_sale())
        state.save(path)
        text = path.read_text(encoding="utf-8")
        assert PAN not in text
        assert PAN[-13:] not in text  # not even the hidden middle digits in some other spelling
        stored = json.loads(text)["items"][0]
        assert stored["pan_masked"] == "621234*********4567"
        assert "pan" not in stored
        assert ClientState.load(path, TMK).items[0]["pan"] == PAN

    def test_the_file_and_its_directory_are_private(self, tmp_path: Path) -> None:
        """Attack: another local user reads the state file. It is 0600, in a directory made 0700."""
        path = tmp_path / "home" / ".iso-host" / "terminal-TERM0001.json"
        ClientState.load(path, TMK).save(path)
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
        assert _mode(path.parent.parent) == 0o700

    def test_another_tmk_does_not_open_the_batch(self, tmp_path: Path) -> None:
        """A state file's PANs open only under the TMK they were sealed with: a clear error otherwise."""
        path = tmp_path / "terminal.json"
        state = ClientState.load(path, TMK)
        state.items.append(_sale())
        state.save(path)
        with pytest.raises(ClientError, match="does not open under this TMK"):
            ClientState.load(path, OTHER_TMK)

    def test_an_edited_sealed_pan_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "terminal.json"
        state = ClientState.load(path, TMK)
        state.items.append(_sale())
        state.save(path)
        document = json.loads(path.read_text(encoding="utf-8"))
        document["items"][0]["pan_masked"] = "621234*********9999"  # the seal covers the masked PAN too
        path.write_text(json.dumps(document), encoding="utf-8")
        with pytest.raises(ClientError, match="does not open"):
            ClientState.load(path, TMK)

    def test_an_old_state_file_still_loads_and_is_sealed_on_save(self, tmp_path: Path) -> None:
        """A state file written before (clear ``pan``) loads; its next save seals the PAN."""
        path = tmp_path / "terminal.json"
        path.write_text(json.dumps({"stan": 7, "batch": 2, "items": [_sale()]}), encoding="utf-8")
        state = ClientState.load(path, TMK)
        assert (state.stan, state.items[0]["pan"]) == (7, PAN)
        state.save(path)
        assert PAN not in path.read_text(encoding="utf-8")
        assert ClientState.load(path, TMK).items[0]["pan"] == PAN

    def test_read_without_the_tmk_shows_the_masked_pan_and_keeps_the_seal(self, tmp_path: Path) -> None:
        path = tmp_path / "terminal.json"
        state = ClientState.load(path, TMK)
        state.items.append(_sale())
        state.save(path)
        reader = ClientState.load(path)
        assert reader.items[0]["pan"] == "621234*********4567"
        reader.save(path)  # saved without the TMK: the sealed PAN is kept as it was
        assert ClientState.load(path, TMK).items[0]["pan"] == PAN

    def test_a_clear_pan_without_a_tmk_is_not_saved(self, tmp_path: Path) -> None:
        state = ClientState()
        state.items.append(_sale())
        with pytest.raises(ClientError, match="no TMK"):
            state.save(tmp_path / "terminal.json")
        assert not (tmp_path / "terminal.json").exists()

    def test_the_seal_key_is_never_saved(self, tmp_path: Path) -> None:
        path = tmp_path / "terminal.json"
        ClientState.load(path, TMK).save(path)
        assert "pan_seal_key" not in json.loads(path.read_text(encoding="utf-8"))


class TestPrivateFiles:
    def test_created_files_are_0600_whatever_the_umask(self, tmp_path: Path) -> None:
        old = os.umask(0)
        try:
            private_dir(tmp_path / "a" / "b")
            os.close(open_private(tmp_path / "a" / "b" / "f"))
            write_private(tmp_path / "a" / "c" / "g", b"x")
        finally:
            os.umask(old)
        modes = [_mode(tmp_path / p) for p in ("a", "a/b", "a/b/f", "a/c", "a/c/g")]
        assert modes == [0o700, 0o700, 0o600, 0o700, 0o600]

    def test_a_truncated_regular_file_becomes_0600(self, tmp_path: Path) -> None:
        path = tmp_path / "trace.jsonl"
        path.write_bytes(b"")
        path.chmod(0o644)
        os.close(open_private(path))
        assert _mode(path) == 0o600


class TestPanKeySettling:
    """What a ledger keeps of its PAN hash key, and how a host with the wrong key, or none, is refused."""

    @pytest.fixture(autouse=True)
    def _no_env_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(ENV_VARIABLE, raising=False)

    def test_a_new_ledger_gets_a_new_key_file_and_keeps_only_its_check_value(self, tmp_path: Path) -> None:
        source = PanKeySource(tmp_path / "keys" / "pan.key")
        settled = settle_pan_key(source, legacy_hex=None, stored_check=None, ledger="l.db")
        assert (tmp_path / "keys" / "pan.key").read_text().strip() == settled.key.hex()
        assert _mode(tmp_path / "keys" / "pan.key") == 0o600
        assert _mode(tmp_path / "keys") == 0o700
        assert settled.check == pan_key_check(settled.key)
        assert settled.key.hex() not in settled.check

    def test_the_key_file_is_found_again(self, tmp_path: Path) -> None:
        source = PanKeySource(tmp_path / "pan.key")
        first = settle_pan_key(source, legacy_hex=None, stored_check=None, ledger="l.db")
        again = settle_pan_key(source, legacy_hex=None, stored_check=first.check, ledger="l.db")
        assert again.key == first.key

    def test_a_missing_key_is_refused_not_made_anew(self, tmp_path: Path) -> None:
        """A ledger whose hashes were made with a key that is not here: refused in one line, no new key made."""
        with pytest.raises(StoreError, match=r"not here .*no .*pan\.key, no ISO_HOST_PAN_KEY") as refused:
            settle_pan_key(PanKeySource(tmp_path / "pan.key"), legacy_hex=None, stored_check="00" * 16, ledger="l.db")
        assert "\n" not in str(refused.value)
        assert not (tmp_path / "pan.key").exists()

    def test_another_key_is_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(ENV_VARIABLE, "11" * 32)
        with pytest.raises(StoreError, match="check value differs"):
            settle_pan_key(PanKeySource(), legacy_hex=None, stored_check=pan_key_check(b"\x22" * 32), ledger="l.db")

    def test_a_malformed_env_key_is_refused_without_echo(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(ENV_VARIABLE, "abc-not-hex-SECRET")
        with pytest.raises(ConfigError, match="ISO_HOST_PAN_KEY: must be at least 32 hex digits") as refused:
            settle_pan_key(PanKeySource(), legacy_hex=None, stored_check=None, ledger="l.db")
        assert "SECRET" not in str(refused.value)

    def test_an_old_ledger_key_moves_out_and_hashes_still_match(self, tmp_path: Path) -> None:
        legacy = bytes(range(32))
        settled = settle_pan_key(PanKeySource(tmp_path / "pan.key"), legacy_hex=legacy.hex(), stored_check=None,
                                 ledger="l.db")  # fmt: skip
        assert settled.drop_legacy
        assert settled.key == legacy
        assert pan_hash(PAN, settled.key) == pan_hash(PAN, legacy)
        assert (tmp_path / "pan.key").read_text().strip() == legacy.hex()

    def test_an_old_ledger_key_that_differs_from_the_file_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "pan.key").write_text("33" * 32)
        with pytest.raises(StoreError, match="still holds its PAN hash key"):
            settle_pan_key(PanKeySource(tmp_path / "pan.key"), legacy_hex="44" * 32, stored_check=None, ledger="l.db")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://iso:s3cret@db:5432/ledger", "postgresql://iso@db:5432/ledger"),
        ("postgres://iso:s3cret@db/ledger?sslmode=require&password=s3cret", "postgres://iso@db/ledger?sslmode=require"),
        ("postgresql://db/ledger?sslpassword=s3cret", "postgresql://db/ledger"),
        ("mqtt://user:s3cret@broker:1883", "mqtt://user@broker:1883"),
        ("sqlite:///data/iso-host.db", "sqlite:///data/iso-host.db"),
    ],
)
def test_urls_lose_their_passwords(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
    assert "s3cret" not in redacted_url(url)
