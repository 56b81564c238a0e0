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
from iso_host.wire.downloads import DownloadSet, load_download, load_download_set
from iso_host.wire.parameters import Parameter, ParameterError, ParameterSet

SPECS = specs_directory()
CUP_DOCUMENT: dict[str, Any] = tomllib.loads((SPECS / "cup.toml").read_text())
CUP_DIALECT = parse_dialect(str(SPECS / "cup.toml"), copy.deepcopy(CUP_DOCUMENT))


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


# Terminal parameters (wire/parameters.py): CUP's POS parameter transfer, 2-digit tags with values of fixed length.
PARAMETERS = ParameterSet("params", (
    Parameter("12", "timeout", "n", 2, "60"),
    Parameter("22", "merchant name", "ans", 8, "SHOP"),
    Parameter("23", "reversal resend count", "n", 1, "3"),
), merchant_name_tag="22")  # fmt: skip


def test_the_shipped_parameter_file_is_the_cup_layout() -> None:
    served = CUP_DIALECT.downloads["terminal_params"]
    assert isinstance(served, ParameterSet)
    assert [(p.tag, p.length) for p in served.parameters][:4] == [("11", 2), ("12", 2), ("13", 1), ("14", 14)]
    assert (served.merchant_name_tag, served.size()) == ("22", 177)
    assert served.encode().startswith(b"1160" b"1260" b"133" b"14127.0.0.1:8583")


@pytest.mark.parametrize(
    ("merchant_name", "encoded"),
    [
        pytest.param(None, b"1260" b"22SHOP    " b"233", id="the-files"),
        pytest.param("CAFE", b"1260" b"22CAFE    " b"233", id="the-terminals-own"),
        pytest.param("LONG NAME SHOP", b"1260" b"22LONG NAM" b"233", id="cut-to-the-length"),
        pytest.param("茶馆茶馆茶", b"1260" + b"22" + "茶馆茶馆".encode("gbk") + b"233", id="gbk-whole-characters"),
    ],
)
def test_encode(merchant_name: str | None, encoded: bytes) -> None:
    assert PARAMETERS.encode(merchant_name) == encoded


def test_decode_reads_by_tag_and_length() -> None:
    got = [(p.tag, value) for p, value in PARAMETERS.decode(b"233" b"22SHOP    " b"1245")]
    assert got == [("23", "3"), ("22", "SHOP"), ("12", "45")]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(b"1260" b"99X", "unknown parameter tag '99' at byte 4", id="unknown-tag"),
        pytest.param(b"1260" b"22SHOP", "parameter 22 is cut short", id="cut-short"),
    ],
)
def test_decode_refuses_what_the_layout_cannot_read(data: bytes, problem: str) -> None:
    with pytest.raises(ParameterError, match=problem):
        PARAMETERS.decode(data)


ENTRY = '[[parameters]]\ntag = "12"\nname = "timeout"\ntype = "n"\nlength = 2\nvalue = "60"\n'


def _long_entries(tags: tuple[str, ...]) -> str:
    """Parameters of 99 digits each: 101 bytes with their tag."""
    return "".join(ENTRY.replace('"12"', f'"{tag}"').replace("= 2", "= 99").replace('"60"', f'"{"6" * 99}"')
                   for tag in tags)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(ENTRY.replace('"60"', '"6"'), "parameters[0].value: must be exactly 2 digits", id="short-digits"),
        pytest.param(ENTRY.replace('"12"', '"1A"'), "parameters[0].tag: must be two digits", id="bad-tag"),
        pytest.param(ENTRY.replace('"n"', '"b"'), "parameters[0].type: must be one of n, ans", id="bad-type"),
        pytest.param(ENTRY.replace("= 2", "= 0"), "parameters[0].length", id="zero-length"),
        pytest.param(ENTRY + "colour = 1\n", "parameters[0].colour: unknown key", id="unknown-key"),
        pytest.param(ENTRY + ENTRY, "parameters[1].tag: tag 12 is given twice", id="twice"),
        pytest.param(ENTRY.replace('"n"', '"ans"').replace('"60"', '"606"'), "parameters[0].value: is 3 bytes",
                     id="text-too-long"),
        pytest.param('merchant_name_tag = "12"\n' + ENTRY, "merchant_name_tag: must name a text (ans) parameter",
                     id="merchant-name-not-text"),
        pytest.param("parameters = []\n", "parameters: must be a non-empty array", id="empty"),
        pytest.param(_long_entries(("12", "13", "14", "15", "16", "17")),
                     "parameters: 606 bytes, more than the 512 the field holds", id="too-big-for-f62"),
    ],
)
def test_a_bad_parameter_file_is_one_line_naming_the_key(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "params.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"params\.toml") as info:
        load_download("params", path)
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_a_parameters_kind_needs_a_parameter_file() -> None:
    document = copy.deepcopy(CUP_DOCUMENT)
    kind = next(k for k in document["kinds"] if k["kind"] == "parameter_download")
    kind["download"] = "ic_keys"
    with pytest.raises(ConfigError, match=r"kind parameter_download \(flow parameters\) needs a parameter file"):
        parse_dialect(str(SPECS / "cup.toml"), document)
