"""A dialect's ``[[kinds]]``: how messages are classified, and how a kind names its original."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from iso_host.vocab import Kind
from iso_host.wire.dialect_checks import check_keys, fail, field_reference_ok, string_list

KIND_KEYS: Final = frozenset(
    {"kind", "mti", "match", "required", "card_fields", "card_required", "original_by", "flow", "reply", "download",
     "upload"}
)  # fmt: skip
# The flows a dialect may give a kind of its own without code: the generic ones (core/flows/generic.py), or
# any of the host's kinds' (a QR sale is a sale without a card; an offline sale is a sale the terminal approved).
FLOWS: Final = tuple(kind.value for kind in Kind)
DATA_FLOWS: Final = ("download_status", "download", "download_end", "parameters")  # serve a [downloads] set
# ``auth_code`` names the original by its approval code (a CUP pre-auth, by F38); ``date`` (MMDD) its local day.
ORIGINAL_KEYS: Final = frozenset({"rrn", "stan", "batch", "data_elements", "date", "auth_code"})
NAMING_KEYS: Final = ("rrn", "stan", "data_elements", "auth_code")  # a lookup names its original by one of these
# How a batch upload carries its transactions: in the family's records (CUP F48), or one in the message's own fields
# (F2/F35, F4, F11: iso87's uploads, CUP's chip uploads with field 55).
UPLOAD_FORMS: Final = ("records", "transaction")


@dataclass(frozen=True, slots=True)
class KindRule:
    """Messages with this MTI whose fields match every pattern are of this transaction kind."""

    kind: str
    mti: str
    match: tuple[tuple[str, re.Pattern[str]], ...]
    required: tuple[str, ...]
    card_fields: tuple[str, ...]  # the card may come from any one of these (PAN, track 2)
    card_required: bool = True  # with card_fields: a request without a card is a format error
    original_by: tuple[tuple[tuple[str, str], ...], ...] = ()  # lookups tried in order, e.g. (("rrn", "37"),)
    flow: str | None = None  # the flow of a kind the host has none of its own for: a generic one, or a host kind's
    reply: tuple[tuple[str, str], ...] = ()  # "answer": the reply's fields, as given
    download: str | None = None  # the download kinds: which set of the dialect's [downloads]
    upload: str = UPLOAD_FORMS[0]  # a batch upload: how it carries its transactions (UPLOAD_FORMS)


def _validate_kind(source: str, key: str, entry: Any, fields: dict[str, Any], subfields: dict[str, Any]) -> KindRule:
    if not isinstance(entry, dict):
        raise fail(source, key, "must be a table")
    check_keys(source, key, entry, KIND_KEYS)
    kind, mti, match = entry.get("kind"), entry.get("mti"), entry.get("match", {})
    if not isinstance(kind, str) or not kind:
        raise fail(source, f"{key}.kind", "missing or not a string")
    if not isinstance(mti, str) or not re.fullmatch(r"\d{4}", mti):
        raise fail(source, f"{key}.mti", f"must be 4 digits, got {mti!r}")
    if not isinstance(match, dict):
        raise fail(source, f"{key}.match", "must be a table of field = pattern")
    for list_key in ("required", "card_fields"):
        if not string_list(entry.get(list_key, [])):
            raise fail(source, f"{key}.{list_key}", 'must be an array of field ids such as ["3", "60.1"]')
    patterns = []
    for reference, pattern in match.items():
        if not field_reference_ok(reference, fields, subfields):
            raise fail(source, f"{key}.match.{reference}", "names an undefined field or sub-field")
        try:
            patterns.append((reference, re.compile(pattern)))
        except (re.error, TypeError) as error:
            raise fail(source, f"{key}.match.{reference}", f"bad pattern: {error}") from None
    required, card_fields = tuple(entry.get("required", [])), tuple(entry.get("card_fields", []))
    for reference in (*required, *card_fields):
        if not field_reference_ok(reference, fields, subfields):
            raise fail(source, key, f"required/card_fields names an undefined field {reference!r}")
    card_required = entry.get("card_required", True)
    if not isinstance(card_required, bool):
        raise fail(source, f"{key}.card_required", f"must be true or false, got {card_required!r}")
    original_by = _validate_original_by(source, f"{key}.original_by", entry.get("original_by", []), fields, subfields)
    flow, reply, download = _validate_generic(source, key, entry, fields)
    upload = _validate_upload(source, key, entry, flow or kind)
    return KindRule(
        kind=kind, mti=mti, match=tuple(patterns), required=required, card_fields=card_fields,
        card_required=card_required, original_by=original_by, flow=flow, reply=reply, download=download,
        upload=upload,
    )  # fmt: skip


def _validate_generic(
    source: str, key: str, entry: dict[str, Any], fields: dict[str, Any]
) -> tuple[str | None, tuple[tuple[str, str], ...], str | None]:
    """A kind's generic flow, the fields an "answer" replies with, and the set a download kind serves."""
    flow, reply, download = entry.get("flow"), entry.get("reply", {}), entry.get("download")
    if flow is not None and flow not in FLOWS:
        raise fail(source, f"{key}.flow", f"must be one of {', '.join(FLOWS)}, got {flow!r}")
    if not isinstance(reply, dict) or not all(isinstance(v, str) for v in reply.values()):
        raise fail(source, f"{key}.reply", 'must be a table of field = "value"')
    for field_id in reply:
        if field_id not in fields or field_id == "39":
            raise fail(source, f"{key}.reply.{field_id}", "names an undefined field (39 comes from [reasons])")
    if (download is not None) != (flow in DATA_FLOWS):
        raise fail(source, f"{key}.download", "the download and parameters flows name a set of [downloads], and "
                   "only they do")  # fmt: skip
    return flow, tuple(reply.items()), download


def _validate_upload(source: str, key: str, entry: dict[str, Any], flow: str) -> str:
    """How a batch-upload kind carries its transactions (UPLOAD_FORMS); only a batch upload may say."""
    upload = entry.get("upload", UPLOAD_FORMS[0])
    if upload not in UPLOAD_FORMS:
        raise fail(source, f"{key}.upload", f"must be one of {', '.join(UPLOAD_FORMS)}, got {upload!r}")
    if "upload" in entry and flow != Kind.BATCH_UPLOAD.value:
        raise fail(source, f"{key}.upload", "only a batch upload says how it carries its transactions")
    return str(upload)


def _validate_original_by(
    source: str, key: str, raw: Any, fields: dict[str, Any], subfields: dict[str, Any]
) -> tuple[tuple[tuple[str, str], ...], ...]:
    if not isinstance(raw, list) or not all(isinstance(lookup, dict) and lookup for lookup in raw):
        raise fail(source, key, 'must be an array of tables such as [{ rrn = "37" }]')
    lookups = []
    for index, lookup in enumerate(raw):
        check_keys(source, f"{key}[{index}]", lookup, ORIGINAL_KEYS)
        if not any(name in lookup for name in NAMING_KEYS):
            raise fail(source, f"{key}[{index}]", "needs rrn, stan, data_elements or auth_code")
        for name, reference in lookup.items():
            if not isinstance(reference, str) or not field_reference_ok(reference, fields, subfields):
                raise fail(source, f"{key}[{index}].{name}", f"names an undefined field {reference!r}")
        lookups.append(tuple(sorted(lookup.items())))
    return tuple(lookups)


def validate_kinds(source: str, raw: Any, fields: dict[str, Any], subfields: dict[str, Any]) -> tuple[KindRule, ...]:
    if not isinstance(raw, list) or not raw:
        raise fail(source, "kinds", "must be a non-empty array of tables")
    return tuple(_validate_kind(source, f"kinds[{i}]", entry, fields, subfields) for i, entry in enumerate(raw))
