"""Card data and secrets at rest (issue 14, items 1, 8 and 9), as an operator meets them: `iso-host serve`,
`iso-host terminal` and `iso-host ledger` in processes of their own, on both ledgers. Each test performs the attack
the audit found and shows that it fails.

1. The ledger (file, backup, database) gives no PAN back: the PAN hash key is not in it, so a brute force of the six
   hidden digits has no key to try; a host with another key, or none, is refused at start.
8. The ledger, its WAL, shm and lock, backups, traces and the terminal's state file are 0600, their new directories
   0700; the state file holds no clear PAN; an unredacted trace is warned about.
9. No password of a ledger or broker URL reaches a log line or an error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from databases import base_url, fresh_postgres_database, ledger_query, store_url, with_database
from processes import ISO_HOST, started

from iso_host.cards import mask_pan, pan_hash

TEST_PAN = "4761739001010010"
PASSWORD = "SeCrEt-pw-4711"  # the password whose absence the tests check


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator's shell: HOME at ``home``, no ISO_HOST_PAN_KEY unless given."""
    env = {name: value for name, value in os.environ.items() if name != "ISO_HOST_PAN_KEY"}
    return {**env, "HOME": str(home), **extra}


@contextmanager
def serving(cwd: Path, env: dict[str, str], *args: str) -> Iterator[tuple[str, list[dict[str, object]]]]:
    """`iso-host serve --port 0 ARGS` until its `listening on` line; yields the address and the lines before it."""
    with started(cwd, *args, env=env) as (address, _, lines):
        yield address, lines


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISO_HOST, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def terminal(cwd: Path, env: dict[str, str], address: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = run(cwd, env, "terminal", "--to", address, "--state", str(cwd / "terminal.json"), *args)
    assert result.returncode in (0, 1), result.stderr
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(str(request.param), tmp_path / "data") as url:
        yield url


def brute_force(masked: str, stored_hash: str, keys: list[bytes]) -> str | None:
    """The attack: try every candidate key over the PANs the masked PAN allows. Here the hidden digits are tried
    only near the real ones (2,000 candidates), enough to show whether a key makes the attack work."""
    head, tail = masked[:6], masked[-4:]
    hidden = len(masked) - 10
    middle = int(TEST_PAN[6:-4])
    for key in keys:
        for digits in range(max(0, middle - 1_000), middle + 1_000):
            pan = f"{head}{digits:0{hidden}d}{tail}"
            if pan_hash(pan, key) == stored_hash:
                return pan
    return None


def ledger_bytes(url: str) -> bytes:
    """What a thief of a SQLite ledger gets: the file and its WAL; of a PostgreSQL one: every meta row."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    return repr(ledger_query(url, "SELECT key, value FROM meta")).encode()


def candidate_keys(url: str) -> list[bytes]:
    """Every value in the ledger's meta table, as the attacker would try it: hex-decoded and as text."""
    keys = []
    for _, value in ledger_query(url, "SELECT key, value FROM meta"):
        text = str(value)
        keys.append(text.encode())
        with contextlib.suppress(ValueError):
            keys.append(bytes.fromhex(text))
    return keys


def test_the_ledger_alone_gives_no_card_number_back(tmp_path: Path, ledger: str) -> None:
    """Attack (item 1): take the ledger (or its backup) and brute-force the masked PAN's hidden digits against its
    hash. The key is not in the ledger: no value found there matches; only the key file, kept apart, would."""
    home = tmp_path / "home"
    env = _env(home)
    with serving(tmp_path, env, "--ledger", ledger) as (address, lines):
        created = [line for line in lines if line["event"] == "pan_key_created"]
        assert len(created) == 1, lines
        sale = terminal(tmp_path, env, address, "sale", "12.34", "--pan", TEST_PAN)
        assert sale.returncode == 0, sale.stdout
    key_file = home / ".iso-host" / "pan-hash.key"
    assert created[0]["file"] == str(key_file)
    assert (mode(key_file), mode(key_file.parent)) == (0o600, 0o700)
    key = bytes.fromhex(key_file.read_text().strip())
    [(masked, stored_hash)] = ledger_query(ledger, "SELECT masked_pan, pan_hash FROM transactions WHERE kind = 'sale'")
    assert masked == mask_pan(TEST_PAN)
    stolen = ledger_bytes(ledger)
    assert key.hex().encode() not in stolen.lower()
    assert key not in stolen
    assert brute_force(str(masked), str(stored_hash), candidate_keys(ledger)) is None
    assert brute_force(str(masked), str(stored_hash), [key]) == TEST_PAN  # the attack works, given the key
    if ledger.startswith("sqlite:///"):
        backup = tmp_path / "backup.db"
        assert run(tmp_path, env, "ledger", "backup", str(backup), "--ledger", ledger).returncode == 0
        assert key.hex().encode() not in backup.read_bytes().lower()
        assert mode(backup) == 0o600
    listing = run(tmp_path, env, "ledger", "list", "--json", "--ledger", ledger)
    assert listing.returncode == 0, listing.stderr
    assert str(stored_hash) not in listing.stdout
    assert "pan_hash" not in listing.stdout
    assert json.loads(listing.stdout.splitlines()[0])["masked_pan"] == mask_pan(TEST_PAN)


def test_a_host_with_another_key_or_none_is_refused(tmp_path: Path, ledger: str) -> None:
    """Two hosts share a ledger (PostgreSQL), the second with another key: its hashes would never match the first's.
    It is refused at start with one line, as is a host that has lost the key; neither writes a new key."""
    first = _env(tmp_path / "first", ISO_HOST_PAN_KEY="11" * 32)
    with serving(tmp_path, first, "--ledger", ledger):
        pass
    for env, reason in (
        (_env(tmp_path / "second", ISO_HOST_PAN_KEY="22" * 32), "check value differs"),
        (_env(tmp_path / "third"), "a key that is not here"),
    ):
        refused = run(tmp_path, env, "serve", "--port", "0", "--ledger", ledger)
        assert refused.returncode == 2, refused.stdout
        assert reason in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "listening on" not in refused.stdout
    assert not (tmp_path / "third" / ".iso-host" / "pan-hash.key").exists()
    with serving(tmp_path, first, "--ledger", ledger):  # the right key still starts
        pass


def _make_it_old(url: str, key: bytes) -> None:
    """What an older iso-host left: the key in meta.pan_hash_key and no check value."""
    statements = ("DELETE FROM meta WHERE key = 'pan_hash_key_check'",
                  f"INSERT INTO meta (key, value) VALUES ('pan_hash_key', '{key.hex()}')")  # fmt: skip
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            for sql in statements:
                connection.execute(sql)
    else:
        with psycopg.connect(url, autocommit=True) as connection:
            for sql in statements:
                connection.execute(sql)


def test_an_old_ledger_gives_up_its_key_and_keeps_matching_cards(tmp_path: Path, ledger: str) -> None:
    """A ledger from before holds its key in meta: the first start moves it to the key file (one line), deletes it
    from the ledger, and the hashes already stored keep matching the card."""
    old_key = bytes(range(100, 132))
    env = _env(tmp_path / "home")
    with serving(tmp_path, _env(tmp_path / "old", ISO_HOST_PAN_KEY=old_key.hex()), "--ledger", ledger) as (address, _):
        assert terminal(tmp_path, env, address, "sale", "5.00", "--pan", TEST_PAN).returncode == 0
    _make_it_old(ledger, old_key)
    assert old_key.hex().encode() in ledger_bytes(ledger).lower()
    with serving(tmp_path, env, "--ledger", ledger) as (_, lines):
        moved = [line for line in lines if line["event"] == "pan_key_moved_out_of_ledger"]
    key_file = tmp_path / "home" / ".iso-host" / "pan-hash.key"
    assert len(moved) == 1
    assert moved[0]["file"] == str(key_file)
    assert key_file.read_text().strip() == old_key.hex()
    assert mode(key_file) == 0o600
    assert [row[0] for row in ledger_query(ledger, "SELECT key FROM meta ORDER BY key")] == ["pan_hash_key_check"]
    assert old_key.hex().encode() not in ledger_bytes(ledger).lower()
    [(stored_hash,)] = ledger_query(ledger, "SELECT pan_hash FROM transactions WHERE kind = 'sale'")
    assert stored_hash == pan_hash(TEST_PAN, bytes.fromhex(key_file.read_text()))


def test_files_are_private_and_an_unredacted_trace_is_warned_about(tmp_path: Path) -> None:
    """Attack (item 8): another local user reads the ledger, its WAL, shm and lock, the trace (full PANs, PIN blocks,
    key blocks) or the terminal's state. All are 0600, in directories made 0700; the state file has no clear PAN."""
    home = tmp_path / "home"
    env = _env(home)
    data = tmp_path / "data" / "ledger"
    ledger = f"sqlite:///{data}/l.db"
    trace = tmp_path / "traces" / "t.jsonl"
    trace.parent.mkdir(mode=0o755)
    with serving(tmp_path, env, "--ledger", ledger, "--trace", str(trace)) as (address, lines):
        warned = [line for line in lines if line["event"] == "trace_not_redacted"]
        assert len(warned) == 1
        assert "--trace-redact" in str(warned[0]["hint"])
        for action in (("signon",), ("sale", "12.34", "--pan", TEST_PAN)):
            result = run(tmp_path, env, "terminal", "--to", address, *action)  # the default state file, under HOME
            assert result.returncode == 0, result.stderr
        for name in ("l.db", "l.db-wal", "l.db-shm", "l.db.lock"):
            assert mode(data / name) == 0o600, name
        assert (mode(data), mode(data.parent)) == (0o700, 0o700)
    assert mode(trace) == 0o600
    host, port = address.rsplit(":", 1)
    state = home / ".iso-host" / f"terminal-TERM0001-iso87binary-{host}_{port}.json"
    assert (mode(state), mode(state.parent)) == (0o600, 0o700)
    text = state.read_text()
    assert TEST_PAN not in text
    assert mask_pan(TEST_PAN) in text
    with serving(tmp_path, env, "--ledger", ledger, "--trace", str(trace), "--trace-redact") as (_, lines):
        assert not [line for line in lines if line["event"] == "trace_not_redacted"]


def test_a_sealed_batch_still_uploads_its_card_numbers(tmp_path: Path, ledger: str) -> None:
    """The state file keeps the PAN sealed under the TMK; an out-of-balance settlement still uploads the real PAN
    (the host's upload row carries its masked form and the hash of the card)."""
    env = _env(tmp_path / "home", ISO_HOST_PAN_KEY="5C" * 32)
    with serving(tmp_path, env, "--ledger", ledger) as (address, _):
        assert terminal(tmp_path, env, address, "sale", "12.34", "--pan", TEST_PAN).returncode == 0
        state_file = tmp_path / "terminal.json"
        document = json.loads(state_file.read_text())
        assert TEST_PAN not in state_file.read_text()
        document["items"][0]["amount"] = 1_000  # the terminal remembers another amount: totals differ, it uploads
        state_file.write_text(json.dumps(document))
        settle = terminal(tmp_path, env, address, "settle")
        assert settle.returncode == 0, settle.stdout + settle.stderr
    uploads = ledger_query(ledger, "SELECT masked_pan, pan_hash FROM batch_uploads")
    assert uploads == [(mask_pan(TEST_PAN), pan_hash(TEST_PAN, bytes.fromhex("5C" * 32)))]


def test_no_password_in_the_listening_line_or_any_error(tmp_path: Path) -> None:
    """Attack (item 9): read the host's log, or the errors of the ledger commands, for the PostgreSQL password."""
    env = _env(tmp_path / "home", ISO_HOST_PAN_KEY="5C" * 32)
    with fresh_postgres_database() as url:
        host_part = url.split("://", 1)[1].split("@", 1)[-1]
        with_password = f"postgresql://postgres:{PASSWORD}@{host_part}"
        with serving(tmp_path, env, "--ledger", with_password) as (_, lines):
            listening = lines[-1]
        assert PASSWORD not in json.dumps(lines)
        assert listening["ledger"] == f"postgresql://postgres@{host_part}"
    unreachable = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/ledger?password={PASSWORD}"
    for args in (
        ("serve", "--port", "0", "--ledger", unreachable),
        ("ledger", "list", "--ledger", unreachable),
        ("ledger", "report", "--ledger", unreachable),
        ("ledger", "verify", "--ledger", unreachable),
        ("ledger", "backup", str(tmp_path / "b.db"), "--ledger", unreachable),
        ("ledger", "list", "--ledger", f"postgresq://postgres:{PASSWORD}@127.0.0.1/x"),
        ("serve", "--port", "0", "--ledger", f"postgresq://postgres:{PASSWORD}@127.0.0.1/x"),
    ):
        result = run(tmp_path, env, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.strip(), args
        assert PASSWORD not in result.stdout + result.stderr, args
    config = tmp_path / "broker.toml"
    config.write_text(f'[events]\nmqtt_url = "mqtt://user:{PASSWORD}@127.0.0.1:notaport"\n')
    result = run(tmp_path, env, "serve", "--config", str(config))
    assert result.returncode == 2
    assert "events.mqtt_url" in result.stderr
    assert PASSWORD not in result.stderr


def test_libpq_takes_the_password_from_a_password_file_or_the_environment(tmp_path: Path) -> None:
    """What the README tells operators: a URL without a password, and the password in PGPASSFILE (~/.pgpass) or
    PGPASSWORD. libpq finds it; the host starts with such a URL."""
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:*:{PASSWORD}\n")
    pgpass.chmod(0o600)
    database_url = with_database(base_url(), "postgres")
    for variables in ({"PGPASSFILE": str(pgpass)}, {"PGPASSWORD": PASSWORD}):
        script = "import psycopg, sys; print(psycopg.connect(sys.argv[1]).info.password)"
        shown = subprocess.run([sys.executable, "-c", script, database_url], capture_output=True, text=True,
                               env=_env(tmp_path, **variables), timeout=30, check=True)  # fmt: skip
        assert shown.stdout.strip() == PASSWORD, variables
    with fresh_postgres_database() as url:
        env = _env(tmp_path / "home", ISO_HOST_PAN_KEY="5C" * 32, PGPASSFILE=str(pgpass))
        with serving(tmp_path, env, "--ledger", url) as (_, lines):
            assert PASSWORD not in json.dumps(lines)
