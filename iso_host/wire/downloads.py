"""Data a host serves from files a dialect's ``[downloads]`` table names: records of TLV data objects served in
chunks (IC public keys, IC parameters), or terminal parameters served whole (``wire/parameters.py``). Loading only;
the flows serve them.

Record file format: ``identity`` (the tags that name a record in a status list and in a download request, e.g.
``["9F06", "9F22"]``) and ``[[records]]``, each with ``tags = { "9F06" = "A000000333", ... }`` (hex values, in
the order they are served). A file with ``[[parameters]]`` is a parameter file instead.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from iso_host.errors import ConfigError
from iso_host.wire.parameters import ParameterSet, parameter_set

MAX_FIELD_BYTES: Final = 512  # what a download answer may carry: CUP F62 is LLLVAR b..512
_TAG: Final = re.compile(r"[0-9A-F]{2,6}")
_HEX: Final = re.compile(r"(?:[0-9A-Fa-f]{2})*")

Record = tuple[tuple[str, bytes], ...]  # (tag, value) in serving order


@dataclass(frozen=True, slots=True)
class DownloadSet:
    """One named set of records."""

    name: str
    identity: tuple[str, ...]
    records: tuple[Record, ...]

    def identity_of(self, record: Record) -> Record:
        """The record's identity tags, in the set's identity order."""
        values = dict(record)
        return tuple((tag, values[tag]) for tag in self.identity if tag in values)

    def find(self, asked: dict[str, bytes]) -> Record | None:
        """The first record whose identity tags equal the ones ``asked`` carries (say RID and index, without the
        expiry a status list also shows); the set's first record when the request asks with none of them."""
        if not any(tag in asked for tag in self.identity):
            return self.records[0] if self.records else None
        return next((r for r in self.records if all(asked[t] == v for t, v in self.identity_of(r) if t in asked)), None)


def _record(path: Path, key: str, raw: Any) -> Record:
    tags = raw.get("tags") if isinstance(raw, dict) else None
    if not isinstance(tags, dict) or not tags:
        raise ConfigError(f"{path}: {key}.tags: must be a table of TAG = \"hex\"")
    record = []
    for tag, value in tags.items():
        clean = "".join(value.split()) if isinstance(value, str) else None
        if not _TAG.fullmatch(tag) or clean is None or not _HEX.fullmatch(clean):
            raise ConfigError(f"{path}: {key}.tags.{tag}: expected an upper-case hex tag and hex bytes")
        record.append((tag, bytes.fromhex(clean)))
    return tuple(record)


def _document(name: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read download file {name!r}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _download_set(name: str, path: Path, document: dict[str, Any]) -> DownloadSet:
    identity = document.get("identity")
    tags_ok = isinstance(identity, list) and all(isinstance(t, str) and _TAG.fullmatch(t) for t in identity)
    if not identity or not tags_ok:
        raise ConfigError(f"{path}: identity: must be an array of tags such as [\"9F06\", \"9F22\"]")
    records = document.get("records", [])
    if not isinstance(records, list):
        raise ConfigError(f"{path}: records: must be an array of tables")
    return DownloadSet(name, tuple(identity), tuple(_record(path, f"records[{i}]", r) for i, r in enumerate(records)))


def load_download_set(name: str, path: Path) -> DownloadSet:
    """Read one record file.

    Raises:
        ConfigError: naming the file and the key that is wrong.
    """
    return _download_set(name, path, _document(name, path))


def load_download(name: str, path: Path) -> DownloadSet | ParameterSet:
    """Read one download file: a parameter file when it has ``[[parameters]]``, else a record file.

    Raises:
        ConfigError: naming the file and the key that is wrong.
    """
    document = _document(name, path)
    if "parameters" in document:
        return parameter_set(name, path, document, MAX_FIELD_BYTES)
    return _download_set(name, path, document)
