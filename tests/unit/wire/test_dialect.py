"""Dialects: the built-in files load, classify and name sub-fields; broken files name the file and the key."""

from __future__ import annotations

import copy
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from iso_host.errors import ConfigError
from iso_host.wire import LENGTH_HEADERS, Dialect, Message, builtin_dialect_names, load_dialect
from iso_host.wire.dialect import REASONS, parse_dialect, specs_directory

DIALECTS: dict[str, Dialect] = {name: load_dialect(name) for name in builtin_dialect_names()}
DIALECT_NAMES = sorted(DIALECTS)
DELETE = object()  # a mutation value meaning "remove this key"

VALUES: dict[str, Any] = {
    "pan": "4761739001010010", "amount": 1234, "stan": 7, "tid": "TERM0001", "mid": "MERCHANT0000001",
    "currency": "156", "batch": 3, "expiry": "2912", "now": datetime(2025, 1, 1, 12, 30, tzinfo=UTC),
}  # fmt: skip


def _cup_sale(f60: str | None = "22000003000") -> Message:
    """A cup sale request; ``f60`` replaces field 60 (60.1 type, 60.2 batch, 60.3 code), None removes it."""
    fields = {"3": "000000", "4": "000000001234", "11": "000007", "25": "00", "41": "TERM0001", "60": f60}
    return Message("0200", {k: v for k, v in fields.items() if v is not None})


# (dialect, message, expected kind or None)
CLASSIFY = [
    pytest.param("cup", _cup_sale(), "sale", id="cup-sale"),
    pytest.param("cup", _cup_sale(f60=None), None, id="cup-sale-without-60"),
    pytest.param("cup", Message("0200", {"3": "000000", "25": "00", "60": "23000003000"}), None, id="cup-60.1-23"),
    pytest.param("cup", Message("0200", {"3": "200000", "25": "00", "60": "22000003000"}), None, id="cup-f3-refund"),
    pytest.param("cup", Message("0200", {"3": "000000", "25": "06", "60": "22000003000"}), None, id="cup-f25-06"),
    pytest.param("cup", Message("0200", {"3": "000000", "25": "00", "60": "2"}), None, id="cup-60-too-short"),
    pytest.param("cup", Message("0820", {"60": "00000003301"}), "echo", id="cup-0820-echo"),
    pytest.param("cup", Message("0800", {"60": "00000003301"}), "echo", id="cup-0800-echo"),
    pytest.param("cup", Message("0820", {"60": "00000003001"}), None, id="cup-0820-60.3-001"),
    pytest.param("cup", Message("0820", {"60": "00000003"}), None, id="cup-0820-60.3-absent"),
    pytest.param("cup", Message("0400", {"3": "000000", "25": "00", "60": "22000003000"}), "reversal", id="cup-0400"),
    pytest.param("iso87ascii", Message("0200", {"3": "000000"}), "sale", id="ascii-sale"),
    pytest.param("iso87ascii", Message("0200", {"3": "003000"}), "sale", id="ascii-sale-account-type"),
    pytest.param("iso87ascii", Message("0200", {"3": "200000"}), "refund", id="ascii-refund-code"),
    pytest.param("iso87binary", Message("0200", {"3": "020000"}), "void", id="binary-void"),
    pytest.param("iso87binary", Message("0401", {"3": "000000"}), "reversal", id="binary-repeat-reversal"),
    pytest.param("cup", Message("0200", {"3": "200000", "25": "00", "60": "23000001000"}), "void", id="cup-void"),
    pytest.param("cup", Message("0220", {"3": "200000", "60": "25000001000"}), "refund", id="cup-refund"),
    pytest.param("iso87ascii", Message("0200", {"3": "00000"}), None, id="ascii-f3-short"),
    pytest.param("iso87ascii", Message("0200"), None, id="ascii-0200-no-f3"),
    pytest.param("iso87ascii", Message("0800", {"70": "301"}), "echo", id="ascii-echo"),
    pytest.param("iso87ascii", Message("0800", {"70": "001"}), "signon", id="ascii-sign-on"),
    pytest.param("iso87binary", Message("0800", {"70": "002"}), "signoff", id="binary-sign-off"),
    pytest.param("cup", Message("0800", {"60": "00000001003"}), "signon", id="cup-sign-on-double"),
    pytest.param("cup", Message("0800", {"60": "00000001002"}), None, id="cup-sign-off-needs-0820"),
    pytest.param("cup", Message("0820", {"60": "00000001002"}), "signoff", id="cup-sign-off"),
    pytest.param("iso87ascii", Message("0100", {"3": "000000"}), "authorisation", id="ascii-0100"),
    pytest.param("iso87ascii", Message("0100", {"3": "010000"}), None, id="ascii-0100-cash-advance"),
    pytest.param("iso87binary", Message("0200", {"3": "000000"}), "sale", id="binary-sale"),
    pytest.param("iso87binary", Message("0800", {"70": "301"}), "echo", id="binary-echo"),
    pytest.param("iso87binary", Message("0800"), None, id="binary-0800-no-70"),
]  # fmt: skip

# (dialect, message, reference, expected value)
VALUE_OF = [
    pytest.param("cup", _cup_sale(), "60.1", "22", id="60.1"),
    pytest.param("cup", _cup_sale(), "60.2", "000003", id="60.2"),
    pytest.param("cup", _cup_sale(), "60.3", "000", id="60.3"),
    pytest.param("cup", _cup_sale(f60="22000003"), "60.3", None, id="60.3-past-the-end"),
    pytest.param("cup", _cup_sale(f60="2200"), "60.2", None, id="60.2-cut-short"),
    pytest.param("cup", _cup_sale(f60=None), "60.2", None, id="60.2-field-absent"),
    pytest.param("cup", _cup_sale(), "60", "22000003000", id="whole-field"),
    pytest.param("cup", _cup_sale(), "2", None, id="absent-field"),
    pytest.param("cup", Message("0400", {"61": "000003000007"}), "61.2", "000007", id="61.2"),
    pytest.param("iso87ascii", Message("0800", {"70": "301"}), "70", "301", id="ascii-field"),
]

# The real file each broken document starts from.
SPEC_FILES = {name: str(specs_directory() / f"{name}.toml") for name in DIALECT_NAMES}


def _document(name: str) -> dict[str, Any]:
    return tomllib.loads(Path(SPEC_FILES[name]).read_text(encoding="utf-8"))


def _mutated(name: str, path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    document = copy.deepcopy(_document(name))
    table: Any = document
    for key in path[:-1]:
        table = table[key]
    if value is DELETE:
        del table[path[-1]]
    else:
        table[path[-1]] = value
    return document


# (dialect file, key path to change, new value or DELETE, the key the error names, words of the problem)
BROKEN = [
    pytest.param("cup", ("bogus",), 1, "bogus", "unknown key", id="unknown-top-level-key"),
    pytest.param("cup", ("name",), DELETE, "name", "missing", id="name-missing"),
    pytest.param("cup", ("framing", "length"), "bogus", "framing.length", "must be one of ascii4, binary2, bcd2",
                 id="framing-length-bogus"),
    pytest.param("cup", ("framing", "tpdu"), "yes", "framing.tpdu", "must be true or false", id="framing-tpdu"),
    pytest.param("cup", ("framing", "header_bytes"), 65, "framing.header_bytes", "must be 0..64",
                 id="framing-header-bytes"),
    pytest.param("iso87ascii", ("fields", "35", "max_len"), 0, "fields.35.max_len", "must be > 0",
                 id="fields-35-max-len-0"),
    pytest.param("cup", ("fields", "35", "max_len"), 0, "fields.35.max_len", "must be > 0",
                 id="cup-fields-35-max-len-0"),
    pytest.param("cup", ("fields", "2", "max_len"), 10_000, "fields.2.max_len", "must be 0..9999",
                 id="fields-2-max-len-too-big"),
    pytest.param("cup", ("fields", "2", "max_len"), DELETE, "fields.2.max_len", "missing",
                 id="fields-2-max-len-missing"),
    pytest.param("iso87binary", ("fields", "2", "data_enc"), "no-such-codec", "fields.2.data_enc",
                 "must be 'b' or a Python text codec, got 'no-such-codec'", id="fields-2-data-enc-unknown"),
    pytest.param("cup", ("fields", "2", "len_enc"), "zzz", "fields.2.len_enc",
                 "must be 'b', 'bcd' or a Python text codec", id="fields-2-len-enc-unknown"),
    pytest.param("cup", ("fields", "2", "len_type"), 9, "fields.2.len_type", "must be 0..4", id="fields-2-len-type"),
    pytest.param("cup", ("fields", "2", "len_count"), "bits", "fields.2.len_count", "must be 'bytes' or 'nibbles'",
                 id="fields-2-len-count"),
    pytest.param("cup", ("fields", "2", "right_pad"), "00", "fields.2.right_pad", "must be one character",
                 id="fields-2-right-pad"),
    pytest.param("cup", ("fields", "2", "colour"), "red", "fields.2.colour", "unknown key", id="fields-2-unknown-key"),
    pytest.param("cup", ("fields", "200"), {}, "fields.200", "field ids are h, t, p or 1..128", id="field-id-200"),
    pytest.param("cup", ("fields", "p"), DELETE, "fields.p", "missing", id="bitmap-spec-missing"),
    pytest.param("cup", ("subfields", "5"), [["1", 2]], "subfields.5", "names a field the dialect does not define",
                 id="subfields-undefined-field"),
    pytest.param("cup", ("subfields", "60"), [["1", 0]], "subfields.60", 'must be a list of ["name", length] pairs',
                 id="subfields-zero-length"),
    pytest.param("cup", ("kinds",), [], "kinds", "must be a non-empty array of tables", id="kinds-empty"),
    pytest.param("cup", ("kinds", 0, "upload"), "transaction", "kinds[0].upload",
                 "only a batch upload says how it carries its transactions", id="kinds-0-upload-on-a-sale"),
    pytest.param("iso87binary", ("kinds", 0, "upload"), "envelopes", "kinds[0].upload",
                 "must be one of records, transaction, got 'envelopes'", id="kinds-upload-unknown-form"),
    pytest.param("cup", ("kinds", 0, "mti"), "20", "kinds[0].mti", "must be 4 digits, got '20'", id="kinds-0-mti-20"),
    pytest.param("cup", ("kinds", 0, "match", "5"), "x", "kinds[0].match.5", "names an undefined field or sub-field",
                 id="kinds-0-match-undefined-field"),
    pytest.param("cup", ("kinds", 1, "match", "60.9"), "x", "kinds[1].match.60.9",
                 "names an undefined field or sub-field", id="kinds-1-match-undefined-sub-field"),
    pytest.param("iso87ascii", ("kinds", 0, "match", "3"), "(", "kinds[0].match.3", "bad pattern",
                 id="kinds-0-match-bad-pattern"),
    pytest.param("cup", ("kinds", 0, "required"), ["3", "5"], "kinds[0]", "undefined field '5'",
                 id="kinds-0-required-undefined"),
    pytest.param("cup", ("kinds", 0, "colour"), "red", "kinds[0].colour", "unknown key", id="kinds-0-unknown-key"),
    pytest.param("cup", ("reasons", "SYSTEM_ERROR"), DELETE, "reasons.SYSTEM_ERROR", "missing",
                 id="reasons-missing-one"),
    pytest.param("iso87ascii", ("reasons", "APPROVED"), "000", "reasons.APPROVED",
                 "must be a 2-character response code, got '000'", id="reasons-code-too-long"),
    pytest.param("cup", ("reasons", "TIMEOUT"), "68", "reasons.TIMEOUT", "unknown key", id="reasons-unknown"),
    pytest.param("cup", ("templates", "sale", "fields", "4"), "{amout:012d}", "templates.sale.fields.4",
                 "bad placeholder: 'amout'", id="templates-placeholder-unknown"),
    pytest.param("cup", ("templates", "sale", "fields", "4"), "{amount:012d", "templates.sale.fields.4",
                 "bad placeholder", id="templates-placeholder-unclosed"),
    pytest.param("cup", ("templates", "sale", "fields", "5"), "x", "templates.sale.fields.5",
                 "undefined field or value not a string", id="templates-undefined-field"),
    pytest.param("cup", ("templates", "echo", "mti"), "82", "templates.echo.mti", "must be 4 digits",
                 id="templates-mti"),
    pytest.param("cup", ("response", "echo"), ["2", "5"], "response.echo", "names undefined field '5'",
                 id="response-echo-undefined"),
    pytest.param("cup", ("response", "default_currency"), "CNY", "response.default_currency", "must be 3 digits",
                 id="response-default-currency"),
    pytest.param("cup", ("batch_field",), "60.9", "batch_field", "names an undefined field or sub-field",
                 id="batch-field-undefined"),
]  # fmt: skip

# (dialect file, key path, a value of the wrong type, the key the error should name)
WRONG_TYPES = [
    pytest.param("cup", ("kinds", 0, "match"), "3=000000", "kinds[0].match", id="kinds-match-string"),
    pytest.param("cup", ("kinds", 0, "required"), 3, "kinds[0]", id="kinds-required-integer"),
    pytest.param("cup", ("kinds", 0, "card_fields"), True, "kinds[0]", id="kinds-card-fields-boolean"),
    pytest.param("cup", ("framing", "length"), ["binary2"], "framing.length", id="framing-length-array"),
    pytest.param("cup", ("templates", "sale", "fields"), "{pan}", "templates.sale.fields", id="template-fields-string"),
    pytest.param("cup", ("templates", "sale", "fields", "14"), "{now.year_}", "templates.sale.fields.14",
                 id="template-placeholder-bad-attribute"),
    pytest.param("cup", ("response",), ["echo"], "response", id="response-array"),
    pytest.param("cup", ("response", "echo"), 2, "response.echo", id="response-echo-integer"),
    pytest.param("cup", ("kinds", 0, "mti"), 200, "kinds[0].mti", id="kinds-mti-integer"),
    pytest.param("cup", ("fields", "2"), "LLVAR", "fields.2", id="field-spec-string"),
    pytest.param("cup", ("subfields",), [], "subfields", id="subfields-array"),
]  # fmt: skip


class TestBuiltinDialects:
    """The dialect files shipped in specs/."""

    def test_names(self) -> None:
        """The built-in dialects are listed by name, sorted."""
        names = builtin_dialect_names()
        assert {"cup", "iso87ascii", "iso87binary"} <= set(names)
        assert names == sorted(names)

    @pytest.mark.parametrize(
        ("name", "length", "tpdu", "header_bytes", "envelope_bytes"),
        [
            pytest.param("cup", "binary2", True, 6, 11, id="cup"),
            pytest.param("iso87ascii", "ascii4", False, 0, 0, id="iso87ascii"),
            pytest.param("iso87binary", "binary2", False, 0, 0, id="iso87binary"),
        ],
    )
    def test_framing(self, name: str, length: str, tpdu: bool, header_bytes: int, envelope_bytes: int) -> None:
        """Each dialect loads with its length header, TPDU and header size."""
        dialect = DIALECTS[name]
        assert dialect.name == name
        assert dialect.length_header is LENGTH_HEADERS[length]
        assert (dialect.tpdu, dialect.header_bytes, dialect.envelope_bytes) == (tpdu, header_bytes, envelope_bytes)

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_every_reason_has_a_response_code(self, name: str) -> None:
        """Every reason a flow can return maps to a two-character field 39 code."""
        codes = DIALECTS[name].response_codes
        assert set(codes) == set(REASONS)
        assert DIALECTS[name].response_code("APPROVED") == "00"

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_load_by_path_equals_load_by_name(self, name: str) -> None:
        """A built-in loads the same by name and by the path of its file, which becomes its source."""
        by_path = load_dialect(SPEC_FILES[name])
        assert by_path == DIALECTS[name]
        assert by_path.source == SPEC_FILES[name]

    @pytest.mark.parametrize(("name", "template", "kind"), [
        pytest.param(name, template, template, id=f"{name}-{template}")
        for name in DIALECT_NAMES for template in ("sale", "echo")
    ])  # fmt: skip
    def test_templates_classify_as_their_kind(self, name: str, template: str, kind: str) -> None:
        """What the client sends from a template is what the host recognises."""
        rule = DIALECTS[name].classify(DIALECTS[name].render(template, VALUES))
        assert rule is not None
        assert rule.kind == kind

    def test_render_leaves_out_empty_fields(self) -> None:
        """A placeholder that renders empty drops the field, so optional values can be omitted."""
        message = DIALECTS["cup"].render("sale", {**VALUES, "expiry": ""})
        assert "14" not in message
        assert message.get("60") == "22000003000"


class TestClassify:
    """Dialect.classify picks the first kind whose MTI and patterns all fit."""

    @pytest.mark.parametrize(("name", "message", "kind"), CLASSIFY)
    def test_classify(self, name: str, message: Message, kind: str | None) -> None:
        """A message is classified by MTI and field or sub-field patterns, or not at all."""
        rule = DIALECTS[name].classify(message)
        assert (rule.kind if rule is not None else None) == kind

    def test_rule_carries_required_and_card_fields(self) -> None:
        """The matched rule tells the pipeline what must be present and where the card is."""
        rule = DIALECTS["cup"].classify(_cup_sale())
        assert rule is not None
        assert rule.mti == "0200"
        assert rule.card_fields == ("2", "35")
        assert "60" in rule.required


class TestValueOf:
    """Dialect.value_of reads a field or a positional sub-field."""

    @pytest.mark.parametrize(("name", "message", "reference", "value"), VALUE_OF)
    def test_value_of(self, name: str, message: Message, reference: str, value: str | None) -> None:
        """Sub-fields are cut by position; absent or cut-short values are None."""
        assert DIALECTS[name].value_of(message, reference) == value

    def test_undefined_sub_field_is_a_key_error(self) -> None:
        """Asking for a sub-field the dialect does not name is a bug in the caller (loading checks references)."""
        with pytest.raises(KeyError, match=r"60\.9"):
            DIALECTS["cup"].value_of(_cup_sale(), "60.9")


class TestParseDialect:
    """Broken dialect documents raise ConfigError naming the file and the key."""

    @pytest.mark.parametrize("name", DIALECT_NAMES)
    def test_unchanged_document_parses(self, name: str) -> None:
        """The starting point of every broken document below is itself valid."""
        assert parse_dialect(SPEC_FILES[name], _document(name)) == DIALECTS[name]

    @pytest.mark.parametrize(("name", "path", "value", "key", "problem"), BROKEN)
    def test_broken_document_names_file_and_key(
        self, name: str, path: tuple[str | int, ...], value: object, key: str, problem: str
    ) -> None:
        """One bad key gives one line: file, key, and what is wrong with it."""
        with pytest.raises(ConfigError) as info:
            parse_dialect(SPEC_FILES[name], _mutated(name, path, value))
        message = str(info.value)
        assert message.startswith(f"{SPEC_FILES[name]}: {key}: ")
        assert problem in message
        assert "\n" not in message

    @pytest.mark.parametrize(("name", "path", "value", "key"), WRONG_TYPES)
    def test_wrongly_typed_value_is_a_config_error(
        self, name: str, path: tuple[str | int, ...], value: object, key: str
    ) -> None:
        """A value of the wrong TOML type is reported like any other bad key, never as a crash."""
        with pytest.raises(ConfigError) as info:
            parse_dialect(SPEC_FILES[name], _mutated(name, path, value))
        assert str(info.value).startswith(f"{SPEC_FILES[name]}: {key}")


class TestLoadDialect:
    """load_dialect finds files and turns read and syntax failures into ConfigError."""

    def test_unknown_name_lists_known_dialects(self) -> None:
        """A name that is not built in is refused with the list of names that are."""
        with pytest.raises(ConfigError, match=r"dialect 'nope': no such built-in dialect \(known: ") as info:
            load_dialect("nope")
        assert str(info.value).endswith(f"(known: {', '.join(builtin_dialect_names())})")

    def test_missing_file(self, tmp_path: Path) -> None:
        """A path that does not exist names the path."""
        path = tmp_path / "acme.toml"
        with pytest.raises(ConfigError, match=r"acme\.toml: cannot read dialect file: No such file"):
            load_dialect(str(path))

    def test_not_toml(self, tmp_path: Path) -> None:
        """A file that is not TOML names the path and says so."""
        path = tmp_path / "acme.toml"
        path.write_text("name = cup\n[framing\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"acme\.toml: not valid TOML"):
            load_dialect(str(path))

    def test_binary_file(self, tmp_path: Path) -> None:
        """A binary file with a .toml name is a ConfigError naming the path, not a UnicodeDecodeError."""
        path = tmp_path / "capture.toml"
        path.write_bytes(b"\xff\xfe\x00\x02\x00binary")
        with pytest.raises(ConfigError, match=r"capture\.toml: "):
            load_dialect(str(path))

    def test_bad_key_in_a_file_names_the_file(self, tmp_path: Path) -> None:
        """A broken file on disk is reported with its own path."""
        path = tmp_path / "acme.toml"
        text = Path(SPEC_FILES["cup"]).read_text(encoding="utf-8").replace('length = "binary2"', 'length = "ebcdic4"')
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: framing\.length: must be one of"):
            load_dialect(str(path))
