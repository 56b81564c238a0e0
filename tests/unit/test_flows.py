"""Flows: pure functions from a request and a context to a Decision. No clock, no ledger, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_host.cards import mask_pan, pan_hash
from iso_host.core.flows import FLOWS, KINDS, Context, Decision, Request
from iso_host.core.flows.base import NO_VIEW, authorization_code
from iso_host.core.flows.echo import echo
from iso_host.core.flows.sale import sale
from iso_host.core.rules import RuleSettings
from iso_host.ledger.model import Card, LedgerView, RecordTransaction, TransactionRecord
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import Message, builtin_dialect_names, load_dialect

NOW = datetime(2025, 1, 1, 12, 30, tzinfo=UTC)
RRN = "000000000042"
PAN = "4761739001010010"
CARD = Card(mask_pan(PAN), pan_hash(PAN, b"test-pan-hash-key"))
DIALECTS = {name: load_dialect(name) for name in builtin_dialect_names()}
CUP = DIALECTS["cup"]

SALE_MESSAGE = Message(
    "0200",
    {"2": PAN, "3": "000000", "4": "000000001234", "11": "000042", "25": "00", "41": "TERM0001",
     "42": "MERCHANT0000001", "49": "156", "60": "22000003000"},
)  # fmt: skip
SALE = Request(
    kind=Kind.SALE,
    mti=SALE_MESSAGE.mti,
    processing_code=SALE_MESSAGE.fields["3"],
    tid="TERM0001",
    mid="MERCHANT0000001",
    batch_number=3,
    stan="000042",
    amount_minor=1234,
    currency="156",
    card=CARD,
)
ECHO = Request(
    kind=Kind.ECHO,
    mti="0820",
    processing_code="",
    tid="TERM0001",
    mid="MERCHANT0000001",
    batch_number=3,
    stan="000043",
    amount_minor=None,
    currency="156",
    card=None,
)


def _context(now: datetime = NOW, rrn: str | None = RRN, dialect: str = "cup") -> Context:
    return Context(now=now, rrn=rrn, dialect=DIALECTS[dialect])


def _record(decision: Decision) -> TransactionRecord:
    [command] = decision.commands
    assert isinstance(command, RecordTransaction)
    return command.transaction


class TestFlowTable:
    """FLOWS routes each kind to its flow."""

    def test_routes(self) -> None:
        """Sale and echo are routed to their flows; sale is financial and echo is not."""
        assert (FLOWS[Kind.SALE], FLOWS[Kind.ECHO]) == (sale, echo)
        assert KINDS[Kind.SALE].financial
        assert not KINDS[Kind.ECHO].financial


class TestSale:
    """sale approves and records the transaction."""

    def test_approved_with_reply_fields(self) -> None:
        """The reply carries local time (F12), date (F13), the RRN (F37) and the approval code (F38)."""
        decision = sale(SALE, NO_VIEW, _context())
        assert decision.reason is Reason.APPROVED
        assert decision.fields == {"12": "123000", "13": "0101", "37": RRN, "38": authorization_code(RRN)}

    def test_records_one_transaction_matching_the_request(self) -> None:
        """One RecordTransaction holds the amount, masked card, STAN, batch and references of the request."""
        decision = sale(SALE, NO_VIEW, _context())
        record = _record(decision)
        assert record == TransactionRecord(
            kind=Kind.SALE,
            tid="TERM0001",
            mid="MERCHANT0000001",
            batch_number=3,
            stan="000042",
            rrn=RRN,
            auth_code=decision.fields["38"],
            amount_minor=1234,
            currency="156",
            card=CARD,
            status=Status.APPROVED,
            response_code="00",
            reason=Reason.APPROVED,
            mti="0200",
            processing_code="000000",
            created_at=NOW,
        )
        assert record.card is not None
        assert record.card.masked_pan == "476173******0010"

    def test_deterministic(self) -> None:
        """The same request and context give an equal Decision, every time."""
        assert sale(SALE, NO_VIEW, _context()) == sale(SALE, NO_VIEW, _context())

    def test_the_record_keeps_the_requests_mti_and_processing_code(self) -> None:
        """The ledger row says which message it came from, as admission read it."""
        record = _record(sale(SALE, NO_VIEW, _context()))
        assert (record.mti, record.processing_code) == ("0200", "000000")

    def test_no_clear_pan_in_the_decision(self) -> None:
        """Nothing the flow returns holds the clear PAN."""
        assert PAN not in repr(sale(SALE, NO_VIEW, _context()))

    @pytest.mark.parametrize(
        ("now", "time", "date"),
        [
            pytest.param(NOW, "123000", "0101", id="new-year-noon"),
            pytest.param(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), "235959", "1231", id="last-second"),
            pytest.param(datetime(2024, 2, 29, 0, 0, 1, tzinfo=UTC), "000001", "0229", id="leap-day"),
        ],
    )
    def test_time_and_date_come_from_context(self, now: datetime, time: str, date: str) -> None:
        """F12 and F13 are the context's now, hhmmss and MMDD; the record keeps the same instant."""
        decision = sale(SALE, NO_VIEW, _context(now=now))
        assert (decision.fields["12"], decision.fields["13"]) == (time, date)
        assert _record(decision).created_at == now

    @pytest.mark.parametrize("dialect", builtin_dialect_names())
    def test_response_code_from_the_dialect(self, dialect: str) -> None:
        """The recorded response code is the dialect's code for APPROVED."""
        decision = sale(SALE, NO_VIEW, _context(dialect=dialect))
        assert _record(decision).response_code == DIALECTS[dialect].response_code(Reason.APPROVED)

    def test_sale_without_card(self) -> None:
        """A request without a card (none required by the dialect) is recorded without one."""
        assert _record(sale(replace(SALE, card=None), NO_VIEW, _context())).card is None

    def test_refuses_a_request_without_rrn(self) -> None:
        """A financial flow without an RRN is a pipeline bug, caught by an assertion."""
        with pytest.raises(AssertionError, match="RRN"):
            sale(SALE, NO_VIEW, _context(rrn=None))

    @pytest.mark.parametrize(
        ("allow_zero", "reason", "status"),
        [(False, Reason.INVALID_AMOUNT, Status.DECLINED), (True, Reason.APPROVED, Status.APPROVED)],
    )
    def test_a_zero_amount_is_invalid_unless_the_rules_allow_it(
        self, allow_zero: bool, reason: Reason, status: Status
    ) -> None:
        """A 0.00 sale is declined INVALID_AMOUNT (13) and recorded so, unless [rules] allow_zero_amount."""
        context = replace(_context(), rules=RuleSettings(allow_zero_amount=allow_zero))
        decision = sale(replace(SALE, amount_minor=0), NO_VIEW, context)
        assert decision.reason is reason
        assert _record(decision).status is status
        assert context.dialect.response_code(decision.reason) == ("13" if not allow_zero else "00")

    def test_a_sale_into_a_settled_batch_is_refused_unrecorded(self) -> None:
        """A sale naming a batch that has settled gets BATCH_OUT_OF_SYNC and writes nothing into it."""
        decision = sale(SALE, LedgerView(request_batch_settled=True), _context())
        assert decision.reason is Reason.BATCH_OUT_OF_SYNC
        assert decision.commands == ()

    @settings(max_examples=200, deadline=None)
    @given(
        amount=st.integers(1, 10**12 - 1),
        stan=st.integers(0, 999_999),
        batch=st.integers(0, 999_999),
        rrn=st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=12, max_size=12),
    )
    def test_record_follows_the_request(self, amount: int, stan: int, batch: int, rrn: str) -> None:
        """For any amount, STAN, batch and RRN, the record repeats them and the approval code is 6 digits."""
        request = replace(SALE, amount_minor=amount, stan=f"{stan:06d}", batch_number=batch)
        decision = sale(request, NO_VIEW, _context(rrn=rrn))
        record = _record(decision)
        assert (record.amount_minor, record.stan, record.batch_number, record.rrn) == (
            amount,
            f"{stan:06d}",
            batch,
            rrn,
        )
        assert record.auth_code == decision.fields["38"]
        assert len(record.auth_code) == 6
        assert record.auth_code.isdigit()


class TestAuthorizationCode:
    """authorization_code derives a six-digit code from the RRN."""

    @pytest.mark.parametrize("rrn", [RRN, "000000000000", "999999999999", "ABCDEFGHIJKL"])
    def test_six_digits_and_stable(self, rrn: str) -> None:
        """The code is six digits and the same for the same RRN."""
        code = authorization_code(rrn)
        assert len(code) == 6
        assert code.isdigit()
        assert authorization_code(rrn) == code


class TestEcho:
    """echo answers a link test and records nothing."""

    def test_approved_without_commands(self) -> None:
        """An echo is approved with no ledger command and no extra reply field."""
        decision = echo(ECHO, NO_VIEW, _context(rrn=None))
        assert decision == Decision(Reason.APPROVED)
        assert decision.commands == ()
        assert decision.fields == {}

    def test_deterministic(self) -> None:
        """The same echo gives the same answer at any time."""
        later = datetime(2030, 6, 1, tzinfo=UTC)
        assert echo(ECHO, NO_VIEW, _context(rrn=None)) == echo(ECHO, NO_VIEW, _context(now=later, rrn=None))


class TestContext:
    """Context holds only aware times."""

    def test_refuses_naive_time(self) -> None:
        """A naive datetime is a bug at the edge, caught when the context is built."""
        with pytest.raises(AssertionError, match="aware"):
            Context(now=datetime(2025, 1, 1, 12, 30), rrn=RRN, dialect=CUP)
