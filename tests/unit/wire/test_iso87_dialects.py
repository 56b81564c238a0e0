"""The iso87 dialects against the packagers they claim to match: frames laid out by hand as jPOS's ISO87APackager
and ISO87BPackager lay them out, F53 as ISO 8583:1987 defines it (n16), and the files that are copies of others.

Sources: jpos/jPOS, jpos/src/main/java/org/jpos/iso/packager/ISO87APackager.java and ISO87BPackager.java (the
field packager of each field: IFA_NUMERIC, IFA_LLNUM, IFA_LLLCHAR, IFA_BINARY, IF_CHAR; IFB_NUMERIC, IFB_LLNUM,
IFB_LLLCHAR, IFB_BINARY), and pyiso8583's ``iso8583.specs.default`` / ``default_ascii``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Final

import iso8583.specs  # type: ignore[import-untyped,unused-ignore]
import pytest

from iso_host.wire import (
    Dialect,
    Envelope,
    Message,
    WireDecodeError,
    builtin_dialect_names,
    decode,
    encode,
    load_dialect,
)
from iso_host.wire.dialect import specs_directory

ROOT: Final = Path(__file__).resolve().parents[3]
DIALECTS: Final[dict[str, Dialect]] = {name: load_dialect(name) for name in builtin_dialect_names()}
SPEC_KEYS: Final = ("data_enc", "len_enc", "len_type", "max_len")

# fmt: off
# A sale (0200) as jPOS's ISO87APackager packs it, written by hand from the packager's field definitions:
# MTI IFA_NUMERIC(4); bitmap IFA_BITMAP, 16 hex characters; F2 IFA_LLNUM(19): 2 ASCII length digits; F3, F4, F7,
# F11, F22, F25 IFA_NUMERIC; F41, F42, F49 IF_CHAR; F52 IFA_BINARY(8): 16 hex characters; F53 IFA_NUMERIC(16):
# 16 digits, ISO 8583:1987's n16; F60 IFA_LLLCHAR(999): 3 ASCII length digits; F64 IFA_BINARY(8): 16 hex characters.
# Bitmap 7220048000C09811: fields 2 3 4 7 | 11 | 22 | 25 | - | 41 42 | 49 52 53 | 60 64.
ISO87A_SALE: Final = (
    b"0200"
    + b"7220048000C09811"
    + b"16" b"4761739001010010"  # F2 PAN
    + b"000000"  # F3 processing code
    + b"000000001234"  # F4 amount
    + b"0101123005"  # F7 transmission date and time MMDDhhmmss
    + b"000042"  # F11 STAN
    + b"012"  # F22 POS entry mode
    + b"00"  # F25 POS condition code
    + b"TERM0001"  # F41
    + b"MERCHANT0000001"  # F42
    + b"840"  # F49
    + b"0123456789ABCDEF"  # F52 PIN block, as hex
    + b"2001010100000000"  # F53 security related control information, n16
    + b"006" b"000001"  # F60
    + b"1122334455667788"  # F64 MAC, as hex
)

# The same sale as jPOS's ISO87BPackager packs it ("ISO 8583 binary" to most Java users), by hand from the
# packager's field definitions: MTI IFB_NUMERIC(4): 2 bytes BCD; bitmap IFB_BITMAP: 8 bytes; F2 IFB_LLNUM(19):
# 1-byte BCD length counting digits, then BCD, an odd count padded with a 0 nibble on the right; F3, F4, F7, F11,
# F22, F25 IFB_NUMERIC: BCD, an odd count padded with a 0 nibble on the left; F41, F42, F49 IF_CHAR: ASCII;
# F52 IFB_BINARY(8); F53 IFB_NUMERIC(16): 8 bytes BCD; F60 IFB_LLLCHAR(999): 2-byte BCD length, then ASCII;
# F64 IFB_BINARY(8). A 19-digit PAN, so that the pad nibble shows.
ISO87B_SALE: Final = bytes.fromhex(
    "0200"  # MTI
    "7220048000C09811"  # bitmap, the same fields
    "19" "47617390010100101230"  # F2: 19 digits, then the pad nibble 0
    "000000"  # F3
    "000000001234"  # F4
    "0101123005"  # F7
    "000042"  # F11
    "0012"  # F22: 3 digits behind a 0 nibble
    "00"  # F25
) + b"TERM0001" + b"MERCHANT0000001" + b"840" + bytes.fromhex(  # F41, F42, F49
    "0123456789ABCDEF"  # F52, 8 bytes
    "2001010100000000"  # F53, 16 digits in 8 bytes
    "0006"  # F60's BCD length
) + b"000001" + bytes.fromhex("1122334455667788")  # F60, F64
# fmt: on

SALE_FIELDS: Final = {
    "3": "000000", "4": "000000001234", "7": "0101123005", "11": "000042", "22": "012", "25": "00",
    "41": "TERM0001", "42": "MERCHANT0000001", "49": "840", "52": "0123456789ABCDEF", "53": "2001010100000000",
    "60": "000001", "64": "1122334455667788",
}  # fmt: skip


class TestIso87ascii:
    """iso87ascii reads what jPOS's ISO87APackager writes, F53 included."""

    def test_fields_after_f53_decode(self) -> None:
        """F53 takes its 16 digits and no more, so F60 and F64 after it come out whole."""
        envelope, message = decode(ISO87A_SALE, DIALECTS["iso87ascii"])
        assert message == Message("0200", {"2": "4761739001010010", **SALE_FIELDS})
        assert encode(message, envelope, DIALECTS["iso87ascii"]) == ISO87A_SALE  # the hand-written bitmap is right

    def test_the_dukpt_copy_cannot_read_it(self) -> None:
        """iso87ascii-dukpt's 20-character F53 eats 4 characters of F60: what iso87ascii used to do."""
        with pytest.raises(WireDecodeError):
            decode(ISO87A_SALE, DIALECTS["iso87ascii-dukpt"])

    def test_a_ksn_does_not_fit_f53(self) -> None:
        """A 20-hex-digit KSN in F53 cannot be encoded in iso87ascii, and is in iso87ascii-dukpt."""
        sale = Message("0200", {"3": "000000", "53": "FFFF9876543210E00001"})
        with pytest.raises(ValueError, match="field 53"):
            encode(sale, Envelope(), DIALECTS["iso87ascii"])
        encoded = encode(sale, Envelope(), DIALECTS["iso87ascii-dukpt"])
        assert decode(encoded, DIALECTS["iso87ascii-dukpt"])[1] == sale
        assert DIALECTS["iso87ascii"].security.ksn_field is None
        assert DIALECTS["iso87ascii-dukpt"].security.ksn_field == "53"


class TestIso87bcd:
    """iso87bcd reads and writes what jPOS's ISO87BPackager writes."""

    def test_decode(self) -> None:
        """BCD MTI and numerics come out as digits without their pad nibbles; F53 is 16 digits, F60 follows it."""
        _envelope, message = decode(ISO87B_SALE, DIALECTS["iso87bcd"])
        assert message == Message("0200", {"2": "4761739001010010123", **SALE_FIELDS})

    def test_encode_lays_out_as_the_packager(self) -> None:
        """The host's own messages come out byte for byte as ISO87BPackager packs them."""
        message = Message("0200", {"2": "4761739001010010123", **SALE_FIELDS})
        assert encode(message, Envelope(), DIALECTS["iso87bcd"]) == ISO87B_SALE

    def test_track2_separator_is_the_nibble_d(self) -> None:
        """IFB_LLNUM track 2: its length counts digits (27, odd: a 0 nibble follows) and '=' is the nibble D."""
        body = bytes.fromhex("0200" "2000000020000000" "000000" "27" "4761739001010010D25121011230")  # fmt: skip
        expected = Message("0200", {"3": "000000", "35": "4761739001010010D2512101123"})  # F3, F35
        assert decode(body, DIALECTS["iso87bcd"])[1] == expected

    @pytest.mark.parametrize("name", ["iso87binary", "iso87ascii"])
    def test_other_iso87_dialects_stop_at_the_mti(self, name: str) -> None:
        """Why iso87bcd exists: to an ASCII-MTI dialect an ISO87BPackager frame has no MTI (bytes 02 00 72 20 are
        not 4 digits), so the host cannot even answer 30 and closes the connection."""
        with pytest.raises(WireDecodeError) as raised:
            decode(ISO87B_SALE, DIALECTS[name])
        assert raised.value.partial is None


def _toml(name: str) -> dict[str, Any]:
    return tomllib.loads((specs_directory() / f"{name}.toml").read_text(encoding="utf-8"))


def _without(document: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A deep copy of ``document`` without the dotted ``paths``."""
    copy = {k: (dict(v) if isinstance(v, dict) else v) for k, v in document.items()}
    for path in paths:
        head, _, tail = path.partition(".")
        if tail:
            copy[head].pop(tail, None)
        else:
            copy.pop(head, None)
    return copy


class TestCopies:
    """The files that are copies of another say how they differ, and differ only there."""

    def test_iso87ascii_dukpt_is_iso87ascii_but_f53(self) -> None:
        ascii_, dukpt = _toml("iso87ascii"), _toml("iso87ascii-dukpt")
        differing = ("name", "description", "security.ksn_field", "fields")
        assert _without(ascii_, *differing) == _without(dukpt, *differing)
        assert _without(ascii_["fields"], "53") == _without(dukpt["fields"], "53")
        assert (ascii_["fields"]["53"]["max_len"], dukpt["fields"]["53"]["max_len"]) == (16, 20)
        assert "F53" in dukpt["description"]

    def test_iso87bcd_is_iso87binary_but_its_field_specs(self) -> None:
        """Same kinds, templates, reasons, echo and framing; the security less the KSN (n16 BCD cannot hold one)."""
        binary, bcd = _toml("iso87binary"), _toml("iso87bcd")
        differing = ("name", "description", "security.ksn_field", "fields")
        assert _without(binary, *differing) == _without(bcd, *differing)
        assert DIALECTS["iso87bcd"].security.ksn_field is None
        assert DIALECTS["iso87bcd"].length_header is DIALECTS["iso87binary"].length_header


    @pytest.mark.parametrize("name", ["iso87ascii", "iso87ascii-dukpt", "iso87bcd"])
    def test_the_iso87_family_means_the_same(self, name: str) -> None:
        """Every iso87 dialect has iso87binary's kinds, templates, reasons, replies and batch field."""
        shared = ("family", "batch_field", "kinds", "templates", "reasons", "response")
        binary, other = _toml("iso87binary"), _toml(name)
        assert [other.get(key) for key in shared] == [binary.get(key) for key in shared]


class TestAgainstPyiso8583:
    """What docs/dialects.md says about the pyiso8583 specs the iso87 dialects follow."""

    def test_iso87ascii_is_default_ascii(self) -> None:
        ours = DIALECTS["iso87ascii"].spec
        theirs = iso8583.specs.default_ascii
        assert {k: [ours[k][key] for key in SPEC_KEYS] for k in theirs} == {
            k: [theirs[k][key] for key in SPEC_KEYS] for k in theirs
        }

    def test_iso87binary_is_default_but_f53(self) -> None:
        """pyiso8583's default has F53 n16 as 16 ASCII digits; iso87binary carries the DUKPT KSN there, 10 bytes."""
        ours = DIALECTS["iso87binary"].spec
        theirs = iso8583.specs.default
        differing = {k for k in theirs if [ours[k][key] for key in SPEC_KEYS] != [theirs[k][key] for key in SPEC_KEYS]}
        assert differing == {"53"}
        assert [theirs["53"][key] for key in SPEC_KEYS] == ["ascii", "ascii", 0, 16]
        assert [ours["53"][key] for key in SPEC_KEYS] == ["b", "ascii", 0, 10]


class TestDocs:
    """docs/dialects.md and the README's table name every built-in dialect."""

    @pytest.mark.parametrize("name", sorted(DIALECTS))
    def test_every_dialect_is_documented(self, name: str) -> None:
        dialects_md = (ROOT / "docs" / "dialects.md").read_text(encoding="utf-8")
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        assert re.search(rf"^## `{re.escape(name)}`", dialects_md, re.MULTILINE), name
        assert re.search(rf"^\| `{re.escape(name)}` \|", readme, re.MULTILINE), name
