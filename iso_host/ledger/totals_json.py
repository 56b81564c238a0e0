"""Batch totals as the JSON text the `batches` table keeps (host_totals, terminal_totals). No I/O."""

from __future__ import annotations

import json
from dataclasses import asdict

from iso_host.ledger.model import BatchTotals, Totals


def totals_to_json(totals: BatchTotals) -> str:
    """``{"domestic": {...}, "foreign": {...}}`` with debit/credit counts and amounts in minor units."""
    return json.dumps({"domestic": asdict(totals.domestic), "foreign": asdict(totals.foreign)}, sort_keys=True)


def totals_from_json(text: str) -> BatchTotals:
    """The inverse of ``totals_to_json``.

    Raises:
        ValueError: text that is not such a document.
    """
    document = json.loads(text)
    try:
        return BatchTotals(Totals(**document["domestic"]), Totals(**document["foreign"]))
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a batch totals document: {error}") from None
