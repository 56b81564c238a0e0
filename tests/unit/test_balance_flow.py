"""The balance flow as a table: (test card, processing code, currency) -> (reason, F54)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iso_host.core.flows import KINDS, NO_VIEW, Context, Request
from iso_host.core.rules import RuleSettings
from iso_host.core.test_cards import TestCard
from iso_host.vocab import Kind, Reason
from iso_host.wire import load_dialect

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CONTEXT = Context(now=NOW, rrn=None, dialect=load_dialect("cup"), rules=RuleSettings())


def _inquiry(card: TestCard | None, processing_code: str = "310000", currency: str = "156") -> Request:
    return Request(kind=Kind.BALANCE, mti="0200", processing_code=processing_code, tid="TERM0001",
                   mid="MERCHANT0000001", batch_number=1, stan="000001", amount_minor=None, currency=currency,
                   card=None, test_card=card)  # fmt: skip


CASES = [
    pytest.param(TestCard(balance_minor=12_345), "310000", "156", Reason.APPROVED, "0002156C000000012345",
                 id="balance-default-account"),
    pytest.param(TestCard(balance_minor=100), "311000", "840", Reason.APPROVED, "1002840C000000000100",
                 id="savings-account-from-f3"),
    pytest.param(TestCard(balance_minor=0), "310000", "156", Reason.APPROVED, "0002156C000000000000", id="zero"),
    pytest.param(TestCard(), "310000", "156", Reason.APPROVED, None, id="no-balance-configured"),
    pytest.param(None, "310000", "156", Reason.APPROVED, None, id="card-not-in-the-table"),
    pytest.param(TestCard(status="lost", balance_minor=1), "310000", "156", Reason.LOST_CARD, None, id="lost"),
    pytest.param(TestCard(status="stolen", balance_minor=1), "310000", "156", Reason.STOLEN_CARD, None, id="stolen"),
    pytest.param(TestCard(expiry="2505", balance_minor=1), "310000", "156", Reason.EXPIRED_CARD, None, id="expired"),
    pytest.param(TestCard(expiry="2506", balance_minor=1), "310000", "156", Reason.APPROVED, "0002156C000000000001",
                 id="expires-this-month"),
    pytest.param(TestCard(limit_minor=0, balance_minor=7), "310000", "156", Reason.APPROVED, "0002156C000000000007",
                 id="a-limit-does-not-apply"),
]  # fmt: skip


@pytest.mark.parametrize(("card", "processing_code", "currency", "reason", "f54"), CASES)
def test_balance(card: TestCard | None, processing_code: str, currency: str, reason: Reason, f54: str | None) -> None:
    decision = KINDS[Kind.BALANCE].flow(_inquiry(card, processing_code, currency), NO_VIEW, CONTEXT)
    assert decision.reason is reason
    assert decision.fields.get("54") == f54
    assert decision.commands == (), "nothing is recorded"
    assert decision.balance_changes == (), "nothing moves"


def test_the_kinds_row_asks_for_nothing_from_the_ledger() -> None:
    spec = KINDS[Kind.BALANCE]
    assert (spec.financial, spec.original, spec.batch, spec.stateful) == (False, False, None, False)
