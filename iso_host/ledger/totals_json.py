"""Batch totals as the JSON text the `batches` table keeps (host_totals, terminal_totals). Pure: no I/O.

The document is ``{"domestic": {...}, "foreign": {...}}``, each side holding ``debit_count``, ``debit_minor``,
``credit_count`` and ``credit_minor`` as non-negative integers (amounts in minor units). ``{}`` is what the
end of a CUP upload records for the terminal's side: the terminal sent no totals.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, Final

from iso_host.ledger.model import BatchTotals, Totals

TOTALS_KEYS: Final = tuple(f.name for f in fields(Totals))
NO_TOTALS_JSON: Final = "{}"  # the terminal reported no totals
assert TOTALS_KEYS == ("debit_count", "debit_minor", "credit_count", "credit_minor")


def totals_to_json(totals: BatchTotals) -> str:
    """``{"domestic": {...}, "foreign": {...}}`` with debit/credit counts and amounts in minor units."""
    text = json.dumps({"domestic": asdict(totals.domestic), "foreign": asdict(totals.foreign)}, sort_keys=True)
    assert text != NO_TOTALS_JSON
    return text


def _side(document: dict[str, Any], side: str) -> Totals:
    values = document.get(side)
    if not isinstance(values, dict):
        raise ValueError(f"not a batch totals document: {side!r} is missing or not an object")  # noqa: TRY004 - bad data
    if sorted(values) != sorted(TOTALS_KEYS):
        raise ValueError(f"not a batch totals document: {side!r} must have exactly {', '.join(TOTALS_KEYS)}")
    for key in TOTALS_KEYS:
        value = values[key]
        # bool is an int in Python; a JSON true is never a count.
        if type(value) is not int or value < 0:
            raise ValueError(f"not a batch totals document: {side}.{key} must be an integer >= 0, got {value!r}")
    return Totals(**values)


def totals_from_json(text: str) -> BatchTotals:
    """The inverse of ``totals_to_json``.

    Raises:
        ValueError: text that is not such a document (the message names the side and key).
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a batch totals document: not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(document, dict):
        raise ValueError("not a batch totals document: expected an object")  # noqa: TRY004 - bad data, not a bug
    return BatchTotals(_side(document, "domestic"), _side(document, "foreign"))


def optional_totals_from_json(text: str | None) -> BatchTotals | None:
    """Totals a column may leave out: NULL and ``{}`` are None, anything else as ``totals_from_json``.

    Raises:
        ValueError: text that is neither empty nor a batch totals document.
    """
    if text is None or text.strip() == NO_TOTALS_JSON:
        return None
    return totals_from_json(text)
