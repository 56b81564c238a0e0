"""Dialect families: what iso87 and cup do differently beyond their field specs, behind one registry.

A dialect names its family (``family = "cup"`` in its spec); every layer asks ``family_of(dialect)`` instead
of testing the family's name, so a new family is one module here and one entry in ``FAMILIES``.
"""

from __future__ import annotations

from typing import Final

from iso_host.styles.base import BatchFieldError, Builder, Family, UploadRecord, UploadStep, one_transaction
from iso_host.styles.cup import CUP
from iso_host.styles.iso87 import ISO87
from iso_host.vocab import DIALECT_FAMILIES
from iso_host.wire import Dialect

FAMILIES: Final[dict[str, Family]] = {family.name: family for family in (ISO87, CUP)}
assert tuple(sorted(FAMILIES)) == tuple(sorted(DIALECT_FAMILIES)), "vocab names the families the registry holds"


def family_of(dialect: Dialect) -> Family:
    return FAMILIES[dialect.family]


__all__ = [
    "FAMILIES",
    "BatchFieldError",
    "Builder",
    "Family",
    "UploadRecord",
    "UploadStep",
    "family_of",
    "one_transaction",
]
