"""Download sets and the generic flows' dialect keys: loading, lookup, and one-line errors."""

from __future__ import annotations

import copy
import hashlib
import tomllib
from pathlib import Path
from typing import Any

import pytest

from iso_host.errors import ConfigError
from iso_host.wire.dialect import parse_dialect, specs_directory
from iso_host.wire.downloads import DownloadSet, load_download_set

SPECS = specs_directory()
CUP_DOCUMENT: dict[str, Any] = tomllib.loads((SPECS / "cup.toml").read_text())


def test_every_shipped_ic_key_has_a_checksum_that_verifies() -> None:
    """DF03 = SHA-1(RID, index, modulus, exponent), as a terminal checks before it stores a key."""
    keys = load_download_set("ic_keys", SPECS / "data" / "cup_ic_keys.toml")
    assert len(keys.records) >= 5
    for record in keys.records:
        tags = dict(record)
        digest = hashlib.sha1(tags["9F06"] + tags["9F22"] + tags["DF02"] + tags["DF04"]).digest()
        assert digest == tags["DF03"], tags["9F22"].hex()


SET = DownloadSet("keys", ("9F06", "9F22", "DF05"), (
    (("9F06", b"\xa0\x00\x00\x03\x33"), ("9F22", b"\x08"), ("DF05", b"20301231"), ("DF02", b"\x01")),
    (("9F06", b"\xa0\x00\x00\x03\x33"), ("9F22", b"\x09"), ("DF05", b"20301231"), ("DF02", b"\x02")),
))  # fmt: skip


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        pytest.param({}, 0, id="nothing-asked-first-record"),
        pytest.param({"9F06": b"\xa0\x00\x00\x03\x33", "9F22": b"\x09"}, 1, id="rid-and-index"),
        pytest.param({"9F06": b"\xa0\x00\x00\x03\x33", "9F22": b"\x07"}, None, id="unknown-index"),
        pytest.param({"9F22": b"\x08", "DF05": b"20301231"}, 0, id="index-and-expiry"),
        pytest.param({"9F22": b"\x08", "DF05": b"20251231"}, None, id="other-expiry"),
    ],
)
def test_find(asked: dict[str, bytes], found: int | None) -> None:
    assert SET.find(asked) == (SET.records[found] if found is not None else None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param('identity = []\n', "identity", id="no-identity"),
        pytest.param('identity = ["9F06"]\n[[records]]\ntags = { "9F06" = "A0Z" }\n', "records[0].tags.9F06",
                     id="not-hex"),
        pytest.param('identity = ["9F06"]\n[[records]]\ntags = { "9f06" = "A0" }\n', "records[0].tags.9f06",
                     id="lower-case-tag"),
        pytest.param("identity = [", "not valid TOML", id="not-toml"),
    ],
)
def test_a_bad_download_file_is_one_line_naming_the_key(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "set.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"set\.toml") as info:
        load_download_set("set", path)
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def _cup_with(change: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(CUP_DOCUMENT)
    kinds = document["kinds"]
    index = next(i for i, k in enumerate(kinds) if k["kind"] == "ic_key_download")
    kinds[index] = {**kinds[index], **change}
    return document


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        pytest.param({"flow": "serve"}, ".flow", "must be one of sale, echo", id="unknown-flow"),
        pytest.param({"download": "capks"}, "downloads", "names download 'capks'", id="unknown-set"),
        pytest.param({"flow": "answer"}, ".download", "only they do", id="answer-with-a-download"),
        pytest.param({"reply": {"39": "00"}}, ".reply.39", "39 comes from [reasons]", id="reply-sets-39"),
        pytest.param({"reply": {"130": "x"}}, ".reply.130", "undefined field", id="reply-undefined-field"),
    ],
)
def test_a_bad_generic_kind_names_its_key(change: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dialect(str(SPECS / "cup.toml"), _cup_with(change))
    assert key in str(info.value)
    assert problem in str(info.value)
