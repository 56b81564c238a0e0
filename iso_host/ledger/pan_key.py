"""The PAN hash key: kept out of the ledger, so that a copy of the ledger cannot give back the card numbers.

Every row holds the masked PAN (first 6, last 4) and a keyed hash of the PAN; with the key, the six hidden digits
fall to a brute force in a second. So the key lives apart: in ``ISO_HOST_PAN_KEY`` (hex) when set, else in a key
file (``[ledger] pan_key_file``, default ``~/.iso-host/pan-hash.key``, mode 0600), made at random on first start.
The ledger keeps only a check value (``cards.pan_key_check``), so a host started with another key, or none, is
refused at start: several hosts sharing one PostgreSQL ledger must share the key, or their hashes would not match.

A ledger written by an older iso-host still holds its key in ``meta.pan_hash_key``: on first open the key moves
to the key file (existing hashes keep matching) and leaves the ledger.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from iso_host.cards import pan_key_check
from iso_host.errors import ConfigError, StoreError
from iso_host.log import get_logger
from iso_host.private_files import loose_mode, open_private, private_dir

ENV_VARIABLE: Final = "ISO_HOST_PAN_KEY"
DEFAULT_KEY_FILE: Final = Path("~/.iso-host/pan-hash.key")
KEY_BYTES: Final = 32  # a new key: 256 random bits
MIN_KEY_BYTES: Final = 16
LEGACY_META_KEY: Final = "pan_hash_key"  # where iso-host kept the key in the ledger before
CHECK_META_KEY: Final = "pan_hash_key_check"
ROTATE_HINT: Final = "docs/security.md, 'Rotating the PAN hash key'"


@dataclass(frozen=True, slots=True)
class PanKeySource:
    """Where a host finds its PAN hash key: ``ISO_HOST_PAN_KEY`` when set, else ``file`` (None: the default)."""

    file: Path | None = None

    @property
    def key_file(self) -> Path:
        return (self.file or DEFAULT_KEY_FILE).expanduser()


DEFAULT_PAN_KEY: Final = PanKeySource()


@dataclass(frozen=True, slots=True)
class PanKey:
    """The key a store hashes PANs with, what the ledger keeps of it, and whether an old copy must leave the ledger."""

    key: bytes = field(repr=False)
    check: str
    drop_legacy: bool = False


def _from_hex(text: str, where: str) -> bytes:
    """Raises ConfigError naming ``where``, never echoing the text."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: must be at least {2 * MIN_KEY_BYTES} hex digits (e.g. openssl rand -hex 32)")
    return key


def _read_key_file(path: Path) -> bytes | None:
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"PAN hash key file {path}: cannot read: {reason}") from None
    mode = loose_mode(path)
    if mode is not None:
        get_logger().warning("pan_key_file_readable", file=str(path), mode=f"{mode:04o}", hint=f"chmod 600 {path}")
    return _from_hex(text, f"PAN hash key file {path}")


def _write_key_file(path: Path, key: bytes) -> bytes:
    """Write a new key file (0600, its directory 0700); if another process made one meanwhile, that one wins."""
    try:
        private_dir(path.parent)
        descriptor = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        found = _read_key_file(path)
        assert found is not None
        return found
    except OSError as error:
        msg = (f"PAN hash key file {path}: cannot create: {error.strerror}; set [ledger] pan_key_file or"
               f" {ENV_VARIABLE}")  # fmt: skip
        raise ConfigError(msg) from None
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(key.hex() + "\n")
        out.flush()
        os.fsync(out.fileno())
    return key


def settle_pan_key(source: PanKeySource, *, legacy_hex: str | None, stored_check: str | None, ledger: str) -> PanKey:
    """The key for a ledger, given what its ``meta`` holds (an old in-ledger key, a check value, or neither).

    Writes the key file when the ledger is new (a random key) or still holds its key (moved out). Logs one line
    when it writes the file.

    Raises:
        ConfigError: a malformed key or key file, or a key file that cannot be written.
        StoreError: the key found is not the ledger's, or the ledger's key is not found.
    """
    log = get_logger()
    from_env = os.environ.get(ENV_VARIABLE)
    path = source.key_file
    where = ENV_VARIABLE if from_env is not None else f"key file {path}"
    key = _from_hex(from_env, ENV_VARIABLE) if from_env is not None else _read_key_file(path)
    if legacy_hex is not None:
        legacy = _from_hex(legacy_hex, f"ledger {ledger}: meta.{LEGACY_META_KEY}")
        if key is None:
            key = _write_key_file(path, legacy)
            log.warning("pan_key_moved_out_of_ledger", ledger=ledger, file=str(path),
                        hint="back this file up apart from the ledger; without it card matching is lost")  # fmt: skip
        if not hmac.compare_digest(key, legacy):
            msg = (f"ledger {ledger} still holds its PAN hash key, and {where} holds another; start once without"
                   f" {ENV_VARIABLE} and without {path} to move the ledger's key into that file")  # fmt: skip
            raise StoreError(msg)
        return PanKey(key, pan_key_check(key), drop_legacy=True)
    if stored_check is not None:
        if key is None:
            msg = (f"ledger {ledger}: its PAN hashes were made with a key that is not here (no {path}, no"
                   f" {ENV_VARIABLE}); copy the key file from the host that made it, or see {ROTATE_HINT}")  # fmt: skip
            raise StoreError(msg)
        if not hmac.compare_digest(pan_key_check(key), stored_check):
            msg = (f"ledger {ledger}: the PAN hash key in {where} is not the one its PAN hashes were made with"
                   f" (check value differs); every host of a ledger needs the same key ({ROTATE_HINT})")  # fmt: skip
            raise StoreError(msg)
        return PanKey(key, stored_check)
    if key is None:
        key = _write_key_file(path, os.urandom(KEY_BYTES))
        log.warning("pan_key_created", file=str(path), ledger=ledger,
                    hint="back this file up apart from the ledger; hosts sharing the ledger need a copy")  # fmt: skip
    return PanKey(key, pan_key_check(key))
