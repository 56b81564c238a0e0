"""Dialects: data files that say how one family of terminals frames, encodes and names its messages.

A dialect is TOML in ``specs/``. Loading validates every key and reports the first problem as one
line naming the file and the key, the way moov-io's spec builder does, so a broken file stops the
host before it binds its port.
"""

from __future__ import annotations

import codecs
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final

from iso_host.errors import ConfigError
from iso_host.vocab import DIALECT_FAMILIES, MAC_ALGORITHMS
from iso_host.wire.dialect_checks import check_keys, fail, field_reference_ok, string_list
from iso_host.wire.dialect_kinds import KindRule, validate_kinds
from iso_host.wire.downloads import DownloadSet, load_download
from iso_host.wire.framing import LENGTH_HEADERS, LengthHeader
from iso_host.wire.message import Message
from iso_host.wire.parameters import ParameterSet

TPDU_BYTES: Final = 5
FIELD_SPEC_KEYS: Final = frozenset(
    {"data_enc", "len_enc", "len_type", "max_len", "desc", "len_count", "left_pad", "right_pad"}
)
TOP_LEVEL_KEYS: Final = frozenset(
    {"name", "description", "framing", "fields", "subfields", "kinds", "response", "reasons", "batch_field",
     "templates", "security", "family", "downloads"}
)
SECURITY_KEYS: Final = frozenset(
    {"mac_algorithm", "mac_policy", "mac_kinds", "require_signon", "signon_key_field", "ksn_field", "pin_block_format"}
)
MAC_POLICIES: Final = ("always", "when-keyed")
TEMPLATE_KEYS: Final = frozenset({"mti", "fields"})
# Values a request template may use; a client fills them in (see ``Dialect.render``).
TEMPLATE_SAMPLE: Final[dict[str, Any]] = {
    "pan": "4761739001010010", "amount": 1234, "stan": 1, "tid": "TERM0001", "mid": "MERCHANT0000001",
    "currency": "840", "batch": 1, "expiry": "2912", "now": datetime(2025, 1, 1, tzinfo=UTC), "operator": "001",
    "rrn": "000000000001", "original_stan": 1, "original_batch": 1, "original_date": "0101",
    "original_processing_code": "000000", "original_type": "22", "processing_code": "920000", "totals": "0" * 62,
    "records": "00", "count": 0, "debit_count": 0, "debit_amount": 0, "credit_count": 0, "credit_amount": 0,
    "auth_code": "123456", "data": "9F0605A000000333", "chip_data": "9F2608A1B2C3D4E5F60718",
    "original_transmitted": "0101120000",  # iso87 F90: the original's F7, MMDDhhmmss
}  # fmt: skip
# How a void, reversal or refund names its original: each lookup is a table of these keys → fields.
RESPONSE_KEYS: Final = frozenset({"echo", "default_currency"})
FRAMING_KEYS: Final = frozenset({"length", "tpdu", "header_bytes"})
# Reasons a flow can return; the dialect maps each to a field 39 response code.
REASONS: Final = (
    "APPROVED", "FORMAT_ERROR", "UNKNOWN_TERMINAL", "UNKNOWN_MERCHANT", "NOT_SIGNED_ON", "MAC_FAILED",
    "PIN_INCORRECT", "DUPLICATE", "ORIGINAL_NOT_FOUND", "ALREADY_CANCELLED", "NOT_VOIDABLE", "BATCH_CLOSED",
    "VOID_WINDOW_EXPIRED", "AMOUNT_MISMATCH", "CARD_MISMATCH", "OPERATOR_NOT_PERMITTED",
    "VOID_LIMIT_EXCEEDED", "OUT_OF_BALANCE", "BATCH_OUT_OF_SYNC", "INVALID_TRANSACTION", "SYSTEM_ERROR",
    "INSUFFICIENT_FUNDS", "EXPIRED_CARD", "LOST_CARD", "STOLEN_CARD", "EXCEEDS_LIMIT", "TERMINAL_DISABLED",
    "INVALID_AMOUNT", "CRYPTOGRAM_FAILED", "CRYPTOGRAM_REPLAYED", "CHIP_PAN_MISMATCH",
    "PIN_TRIES_EXCEEDED",
    "KSN_REPLAYED", "SIGNON_LIMITED",
)  # fmt: skip
# Reasons added after dialect files were in users' hands: a file that predates them gets these codes.
# ISO 8583:1987 field 39 (CUP alike): 13 invalid amount; 05 do not honour (an issuer's answer to a cryptogram that
# fails, or that was seen before); 59 suspected fraud (the chip's PAN is not the card's the terminal sent); 63 security
# violation (a DUKPT KSN counter used again); 65 frequency limit exceeded (sign-ons faster than allowed).
# 75: allowable number of PIN tries exceeded.
REASON_DEFAULTS: Final = {"INVALID_AMOUNT": "13", "CRYPTOGRAM_FAILED": "05", "CRYPTOGRAM_REPLAYED": "05",
                          "PIN_TRIES_EXCEEDED": "75",
                          "CHIP_PAN_MISMATCH": "59", "KSN_REPLAYED": "63", "SIGNON_LIMITED": "65"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """How a dialect authenticates: which MAC, on which kinds, and whether sign-on comes first."""

    mac_algorithm: str | None = None  # None: the dialect carries no MAC at all
    mac_policy: str = "when-keyed"  # "always": every mac_kinds request; "when-keyed": once the terminal has a TAK
    mac_kinds: tuple[str, ...] = ()
    require_signon: bool = False  # financial requests before sign-on get NOT_SIGNED_ON
    signon_key_field: str | None = None  # where the 0810 carries the key block
    ksn_field: str | None = None  # DUKPT key serial number, 10 bytes
    pin_block_format: int = 0  # ISO 9564 format of F52


@dataclass(frozen=True, slots=True)
class Dialect:
    """A loaded, validated dialect."""

    name: str
    source: str
    length_header: LengthHeader
    tpdu: bool
    header_bytes: int
    spec: dict[str, dict[str, Any]]
    subfields: dict[str, tuple[tuple[str, int], ...]]
    kinds: tuple[KindRule, ...]
    response_codes: dict[str, str]
    echo_fields: tuple[str, ...]
    default_currency: str
    batch_field: str | None = None
    templates: dict[str, Message] = field(default_factory=dict)
    security: SecurityPolicy = field(default_factory=SecurityPolicy)
    family: str = "iso87"  # iso_host/styles/: key blocks, operator, settlement and upload layouts
    downloads: dict[str, DownloadSet | ParameterSet] = field(default_factory=dict)  # served by the data kinds
    description: str = ""

    @property
    def envelope_bytes(self) -> int:
        """Bytes between the length header and the MTI (TPDU and fixed header)."""
        return (TPDU_BYTES if self.tpdu else 0) + self.header_bytes

    def response_code(self, reason: str) -> str:
        return self.response_codes[reason]

    def value_of(self, message: Message, reference: str) -> str | None:
        """A field (``"3"``) or positional sub-field (``"60.1"``) of ``message``, or None if absent."""
        head, _, sub = reference.partition(".")
        value = message.fields.get(head)
        if value is None or not sub:
            return value
        start = 0
        for name, length in self.subfields[head]:
            if name == sub:
                part = value[start : start + length]
                return part if len(part) == length else None
            start += length
        raise KeyError(reference)

    def classify(self, message: Message) -> KindRule | None:
        """The first kind whose MTI and patterns all fit, or None for a message the dialect does not know."""
        for rule in self.kinds:
            if rule.mti != message.mti:
                continue
            if all(
                (value := self.value_of(message, reference)) is not None and pattern.fullmatch(value)
                for reference, pattern in rule.match
            ):
                return rule
        return None

    def render(self, template_name: str, values: dict[str, Any]) -> Message:
        """A request built from one of the dialect's templates (used by the terminal client)."""
        template = self.templates[template_name]
        fields = {field_id: text.format(**values) for field_id, text in template.fields.items()}
        return Message(template.mti, {k: v for k, v in fields.items() if v != ""})


def _is_text_codec(name: object) -> bool:
    """A Python codec that turns str into bytes and back (``base64`` or ``zlib`` do not)."""
    if not isinstance(name, str):
        return False
    try:
        return codecs.lookup(name)._is_text_encoding and "0".encode(name).decode(name) == "0"
    except (LookupError, UnicodeError):
        return False


def _is_whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prefix_capacity(len_enc: str, len_type: int) -> int:
    """The largest length a prefix of ``len_type`` bytes can express."""
    if len_enc == "b":
        return int(256**len_type - 1)
    if len_enc == "bcd":
        return int(10 ** (2 * len_type) - 1)
    return int(10**len_type - 1)


def _validate_field(source: str, field_id: str, spec: Any) -> dict[str, Any]:
    key = f"fields.{field_id}"
    if not isinstance(spec, dict):
        raise fail(source, key, "must be a table")
    check_keys(source, key, spec, FIELD_SPEC_KEYS)
    for required in ("data_enc", "len_enc", "len_type", "max_len"):
        if required not in spec:
            raise fail(source, f"{key}.{required}", "missing")
    if spec["data_enc"] != "b" and not _is_text_codec(spec["data_enc"]):
        raise fail(source, f"{key}.data_enc", f"must be 'b' or a Python text codec, got {spec['data_enc']!r}")
    if spec["len_enc"] not in ("b", "bcd") and not _is_text_codec(spec["len_enc"]):
        raise fail(source, f"{key}.len_enc", f"must be 'b', 'bcd' or a Python text codec, got {spec['len_enc']!r}")
    len_type, max_len = spec["len_type"], spec["max_len"]
    if not _is_whole_number(len_type) or not 0 <= len_type <= 4:
        raise fail(source, f"{key}.len_type", f"must be 0..4, got {len_type!r}")
    if not _is_whole_number(max_len) or max_len < 0 or max_len > 9_999:
        raise fail(source, f"{key}.max_len", f"must be 0..9999, got {max_len!r}")
    if max_len == 0 and field_id != "h":
        raise fail(source, f"{key}.max_len", "must be > 0")
    if len_type and max_len > _prefix_capacity(spec["len_enc"], len_type):
        capacity = _prefix_capacity(spec["len_enc"], len_type)
        raise fail(source, f"{key}.max_len", f"must be at most {capacity} for len_type {len_type}, got {max_len}")
    if spec.get("len_count", "bytes") not in ("bytes", "nibbles"):
        raise fail(source, f"{key}.len_count", f"must be 'bytes' or 'nibbles', got {spec['len_count']!r}")
    for pad in ("left_pad", "right_pad"):
        if pad in spec and (not isinstance(spec[pad], str) or len(spec[pad]) != 1):
            raise fail(source, f"{key}.{pad}", f"must be one character, got {spec[pad]!r}")
    return dict(spec)


def _validate_fields(source: str, raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise fail(source, "fields", "must be a table")
    spec: dict[str, dict[str, Any]] = {}
    for field_id, field_spec in raw.items():
        if field_id not in ("h", "t", "p") and not (field_id.isdigit() and 1 <= int(field_id) <= 128):
            raise fail(source, f"fields.{field_id}", "field ids are h, t, p or 1..128")
        spec[field_id] = _validate_field(source, field_id, field_spec)
    for needed in ("h", "t", "p"):
        if needed not in spec:
            raise fail(source, f"fields.{needed}", "missing")
    return spec


def _validate_subfields(source: str, raw: Any, fields: dict[str, Any]) -> dict[str, tuple[tuple[str, int], ...]]:
    if not isinstance(raw, dict):
        raise fail(source, "subfields", "must be a table")
    result: dict[str, tuple[tuple[str, int], ...]] = {}
    for field_id, parts in raw.items():
        key = f"subfields.{field_id}"
        if field_id not in fields:
            raise fail(source, key, "names a field the dialect does not define")
        if not isinstance(parts, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int) and p[1] > 0
            for p in parts
        ):
            raise fail(source, key, 'must be a list of ["name", length] pairs')
        result[field_id] = tuple((name, length) for name, length in parts)
    return result


def _validate_reasons(source: str, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise fail(source, "reasons", "must be a table")
    check_keys(source, "reasons", raw, frozenset(REASONS))
    for reason in REASONS:
        code = raw.get(reason, REASON_DEFAULTS.get(reason))
        if code is None:
            raise fail(source, f"reasons.{reason}", "missing")
        if not isinstance(code, str) or len(code) != 2 or not code.isalnum():
            raise fail(source, f"reasons.{reason}", f"must be a 2-character response code, got {code!r}")
    return REASON_DEFAULTS | dict(raw)


def _validate_templates(source: str, raw: Any, fields: dict[str, Any]) -> dict[str, Message]:
    if not isinstance(raw, dict):
        raise fail(source, "templates", "must be a table")
    templates: dict[str, Message] = {}
    for name, entry in raw.items():
        key = f"templates.{name}"
        if not isinstance(entry, dict):
            raise fail(source, key, "must be a table")
        check_keys(source, key, entry, TEMPLATE_KEYS)
        mti, values = entry.get("mti"), entry.get("fields", {})
        if not isinstance(mti, str) or not re.fullmatch(r"\d{4}", mti):
            raise fail(source, f"{key}.mti", f"must be 4 digits, got {mti!r}")
        if not isinstance(values, dict):
            raise fail(source, f"{key}.fields", "must be a table of field = template text")
        for field_id, text in values.items():
            if field_id not in fields or not isinstance(text, str):
                raise fail(source, f"{key}.fields.{field_id}", "undefined field or value not a string")
            try:
                text.format(**TEMPLATE_SAMPLE)
            except (KeyError, ValueError, IndexError, AttributeError, TypeError) as error:
                raise fail(source, f"{key}.fields.{field_id}", f"bad placeholder: {error}") from None
        templates[name] = Message(mti, dict(values))
    return templates


def _validate_security(source: str, raw: Any, fields: dict[str, Any]) -> SecurityPolicy:
    if not isinstance(raw, dict):
        raise fail(source, "security", "must be a table")
    check_keys(source, "security", raw, SECURITY_KEYS)
    algorithm = raw.get("mac_algorithm")
    if algorithm is not None and algorithm not in MAC_ALGORITHMS:
        names = ", ".join(MAC_ALGORITHMS)
        raise fail(source, "security.mac_algorithm", f"must be one of {names}, got {algorithm!r}")
    if algorithm is not None and "64" not in fields:
        raise fail(source, "security.mac_algorithm", "needs field 64 in [fields]")
    policy = raw.get("mac_policy", "when-keyed")
    if policy not in MAC_POLICIES:
        raise fail(source, "security.mac_policy", f"must be one of {', '.join(MAC_POLICIES)}, got {policy!r}")
    kinds = raw.get("mac_kinds", [])
    if not string_list(kinds):
        raise fail(source, "security.mac_kinds", 'must be an array of kind names such as ["sale"]')
    require_signon = raw.get("require_signon", False)
    if not isinstance(require_signon, bool):
        raise fail(source, "security.require_signon", f"must be true or false, got {require_signon!r}")
    for key in ("signon_key_field", "ksn_field"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or value not in fields):
            raise fail(source, f"security.{key}", f"names a field the dialect does not define: {value!r}")
    pin_format = raw.get("pin_block_format", 0)
    if pin_format not in (0, 3) or isinstance(pin_format, bool):
        raise fail(source, "security.pin_block_format", f"must be 0 or 3 (ISO 9564), got {pin_format!r}")
    return SecurityPolicy(
        mac_algorithm=algorithm, mac_policy=policy, mac_kinds=tuple(kinds), require_signon=require_signon,
        signon_key_field=raw.get("signon_key_field"), ksn_field=raw.get("ksn_field"), pin_block_format=pin_format,
    )  # fmt: skip


def _validate_downloads(
    source: str, raw: Any, kinds: tuple[KindRule, ...]
) -> dict[str, DownloadSet | ParameterSet]:
    """``[downloads]``: set name → data file, relative to the dialect file (or, for a copy of a built-in dialect,
    to the built-in specs); every data kind names one of the sort its flow serves (``parameters``: a parameter
    file; the download flows: a record file)."""
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise fail(source, "downloads", 'must be a table of name = "file.toml"')
    beside = Path(source).parent
    downloads = {
        name: load_download(name, path if (path := beside / relative).is_file() else specs_directory() / relative)
        for name, relative in raw.items()
    }
    for rule in kinds:
        if rule.download is not None and rule.download not in downloads:
            raise fail(source, "downloads", f"kind {rule.kind} names download {rule.download!r}, which is not here")
        wanted = ParameterSet if rule.flow == "parameters" else DownloadSet
        if rule.download is not None and not isinstance(downloads[rule.download], wanted):
            sort = "a parameter file" if wanted is ParameterSet else "a record file"
            raise fail(source, "downloads", f"kind {rule.kind} (flow {rule.flow}) needs {sort} for {rule.download!r}")
    return downloads


def _validate_framing(source: str, raw: Any) -> tuple[LengthHeader, bool, int]:
    if not isinstance(raw, dict):
        raise fail(source, "framing", "must be a table")
    check_keys(source, "framing", raw, FRAMING_KEYS)
    length = raw.get("length")
    if not isinstance(length, str) or length not in LENGTH_HEADERS:
        raise fail(source, "framing.length", f"must be one of {', '.join(LENGTH_HEADERS)}, got {length!r}")
    tpdu = raw.get("tpdu", False)
    header_bytes = raw.get("header_bytes", 0)
    if not isinstance(tpdu, bool):
        raise fail(source, "framing.tpdu", f"must be true or false, got {tpdu!r}")
    if not isinstance(header_bytes, int) or not 0 <= header_bytes <= 64:
        raise fail(source, "framing.header_bytes", f"must be 0..64, got {header_bytes!r}")
    return LENGTH_HEADERS[length], tpdu, header_bytes


def parse_dialect(source: str, document: dict[str, Any]) -> Dialect:
    """Validate a parsed dialect document.

    Raises:
        ConfigError: naming ``source`` and the first bad key.
    """
    check_keys(source, "", document, TOP_LEVEL_KEYS)
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise fail(source, "name", "missing or not a string")
    length_header, tpdu, header_bytes = _validate_framing(source, document.get("framing"))
    fields = _validate_fields(source, document.get("fields"))
    subfields = _validate_subfields(source, document.get("subfields", {}), fields)
    kinds = validate_kinds(source, document.get("kinds"), fields, subfields)
    reasons = _validate_reasons(source, document.get("reasons"))
    response = document.get("response", {})
    if not isinstance(response, dict):
        raise fail(source, "response", "must be a table")
    check_keys(source, "response", response, RESPONSE_KEYS)
    echo = response.get("echo", [])
    if not string_list(echo):
        raise fail(source, "response.echo", 'must be an array of field ids such as ["3", "11"]')
    for field_id in echo:
        if field_id not in fields:
            raise fail(source, "response.echo", f"names undefined field {field_id!r}")
    batch_field = document.get("batch_field")
    if batch_field is not None and not (
        isinstance(batch_field, str) and field_reference_ok(batch_field, fields, subfields)
    ):
        raise fail(source, "batch_field", f"names an undefined field or sub-field: {batch_field!r}")
    templates = _validate_templates(source, document.get("templates", {}), fields)
    security = _validate_security(source, document.get("security", {}), fields)
    downloads = _validate_downloads(source, document.get("downloads", {}), kinds)
    family = document.get("family", "iso87")
    if family not in DIALECT_FAMILIES:
        raise fail(source, "family", f"must be one of {', '.join(DIALECT_FAMILIES)}, got {family!r}")
    currency = response.get("default_currency", "840")
    if not isinstance(currency, str) or not re.fullmatch(r"\d{3}", currency):
        raise fail(source, "response.default_currency", f"must be 3 digits, got {currency!r}")
    return Dialect(
        name=name,
        source=source,
        description=str(document.get("description", "")),
        length_header=length_header,
        tpdu=tpdu,
        header_bytes=header_bytes,
        spec=fields,
        subfields=subfields,
        kinds=kinds,
        response_codes=reasons,
        echo_fields=tuple(echo),
        default_currency=currency,
        batch_field=batch_field,
        templates=templates,
        security=security,
        family=family,
        downloads=downloads,
    )


def specs_directory() -> Path:
    """The copy shipped inside an installed wheel, else ``specs/`` of the checkout (editable installs)."""
    packaged = Path(str(resources.files("iso_host") / "specs"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "specs"


def builtin_dialect_names() -> list[str]:
    return sorted(path.stem for path in specs_directory().glob("*.toml"))


def load_dialect(name_or_path: str) -> Dialect:
    """Load a built-in dialect by name (``cup``) or a dialect file by path.

    Raises:
        ConfigError: the file is missing, is not TOML, or has a bad key.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml" and "/" not in name_or_path:
        path = specs_directory() / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(builtin_dialect_names())
            raise ConfigError(f"dialect {name_or_path!r}: no such built-in dialect (known: {known})")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read dialect file: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    return parse_dialect(str(path), document)
