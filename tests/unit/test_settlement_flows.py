"""Settlement, batch upload and the end of an upload: tables of (request, batch view) -> (reason, which ledger
commands), and what the commands and the reply's totals fields carry. Pure: no ledger, no clock."""

from __future__ import annotations

from typing import Any

import pytest
from core_tables import BATCH, CARD, HOST_TOTALS, MID, NOW, TID, batch, context, flow, request, view

from iso_host.core.flows import Decision
from iso_host.ledger.model import (
    AdvanceBatch,
    BatchDifference,
    BatchItem,
    BatchTotals,
    BatchView,
    Difference,
    ExpectBatchTotals,
    RecordDifferences,
    RecordUpload,
    SettleBatch,
    Totals,
)
from iso_host.ledger.totals_json import totals_to_json
from iso_host.vocab import Kind, Reason
from iso_host.wire import load_dialect

OTHER_TOTALS = BatchTotals(foreign=Totals(debit_count=2, debit_minor=2_000))
# The batch as it settled, with the totals both sides had then: a repeat of that 0500 must get the same answer.
SETTLED = batch(
    "settled",
    settled_host_totals_json=totals_to_json(HOST_TOTALS),
    settled_terminal_totals_json=totals_to_json(HOST_TOTALS),
)
UPLOADING = batch("uploading")
NEXT = BATCH + 1  # the open batch once BATCH has settled


def decide(kind: Kind, batch_: BatchView, dialect: str = "iso87binary", **request_overrides: Any) -> Decision:
    """What the flow of ``kind`` decides for a request of it against the batch view ``batch_``."""
    return flow(kind)(request(kind, **request_overrides), view(batch=batch_), context(dialect=dialect))


def kinds_of(decision: Decision) -> list[type]:
    return [type(command) for command in decision.commands]


E, S, A, D, U = ExpectBatchTotals, SettleBatch, AdvanceBatch, RecordDifferences, RecordUpload  # for the tables

SETTLEMENT_CASES = [
    pytest.param(batch(), {}, Reason.APPROVED, [E, S, A], id="balanced-closes-and-advances"),
    pytest.param(batch(), {"terminal_totals": OTHER_TOTALS}, Reason.OUT_OF_BALANCE, [E, S], id="out-of-balance"),
    pytest.param(UPLOADING, {"terminal_totals": OTHER_TOTALS}, Reason.OUT_OF_BALANCE, [E, S],
                 id="out-of-balance-again-while-uploading"),
    pytest.param(SETTLED, {"open_batch": NEXT}, Reason.APPROVED, [], id="repeat-with-the-same-totals"),
    pytest.param(SETTLED, {"open_batch": NEXT, "terminal_totals": OTHER_TOTALS}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="repeat-with-other-totals"),
    pytest.param(batch("settled"), {"open_batch": NEXT}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="settled-batch-without-recorded-totals"),
    pytest.param(batch(), {"open_batch": NEXT}, Reason.BATCH_OUT_OF_SYNC, [], id="not-the-batch-held-open"),
    pytest.param(batch(batch_number=NEXT), {"batch_number": NEXT}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="a-batch-ahead-of-the-host"),
    pytest.param(UPLOADING, {"after_upload": True, "terminal_totals": OTHER_TOTALS}, Reason.APPROVED, [E, S, A],
                 id="after-upload-closes-whatever-the-totals"),
]  # fmt: skip


@pytest.mark.parametrize(("batch_", "overrides", "reason", "commands"), SETTLEMENT_CASES)
def test_settlement(batch_: BatchView, overrides: dict[str, Any], reason: Reason, commands: list[type]) -> None:
    """Balanced totals close the batch; others ask for an upload; a batch the host does not hold open is 77."""
    decision = decide(Kind.SETTLEMENT, batch_, **overrides)
    assert decision.reason is reason
    assert kinds_of(decision) == commands
    assert (decision.next_batch == NEXT) is (AdvanceBatch in commands)


DOMESTIC_ONLY = BatchTotals(domestic=Totals(debit_count=1, debit_minor=1_000))

DETAIL_CASES = [
    pytest.param(batch(), "iso87binary", {}, None, id="balanced-without-detail"),
    pytest.param(batch(), "iso87binary", {"terminal_totals": BatchTotals(foreign=Totals(2, 2_500, 1, 300))},
                 "settlement: totals differ (host 1 debit 10.00, 0 credits 0.00; terminal 2 debits 25.00, 1 credit "
                 "3.00)", id="out-of-balance"),
    pytest.param(batch(), "cup", {"terminal_totals": DOMESTIC_ONLY},
                 "settlement: totals differ (domestic: host 0 debits 0.00, 0 credits 0.00, terminal 1 debit 10.00, 0 "
                 "credits 0.00; foreign: host 1 debit 10.00, 0 credits 0.00, terminal 0 debits 0.00, 0 credits 0.00)",
                 id="cup-sections-differ-with-equal-sums"),
    pytest.param(batch(), "iso87binary", {"open_batch": NEXT},
                 "settlement refused: BATCH_OUT_OF_SYNC (the terminal's batch 1, the host's open batch 2)",
                 id="not-the-batch-held-open"),
    pytest.param(batch("settled"), "iso87binary", {"open_batch": NEXT},
                 "settlement refused: BATCH_OUT_OF_SYNC (batch 1 has settled, the host's open batch is 2)",
                 id="a-settled-batch"),
]  # fmt: skip


@pytest.mark.parametrize(("batch_", "dialect", "overrides", "detail"), DETAIL_CASES)
def test_settlement_detail(batch_: BatchView, dialect: str, overrides: dict[str, Any], detail: str | None) -> None:
    """Totals that differ are shown side by side (per section where only CUP's split differs); no detail when they
    agree."""
    assert decide(Kind.SETTLEMENT, batch_, dialect, **overrides).detail == detail


class TestSettlementCommands:
    def test_balanced(self) -> None:
        """The close is conditional on the totals compared; the batch is settled balanced and the next one opens."""
        decision = decide(Kind.SETTLEMENT, batch())
        expect, settle, advance = decision.commands
        assert expect == ExpectBatchTotals(TID, MID, BATCH, HOST_TOTALS)
        assert settle == SettleBatch(TID, MID, BATCH, "balanced", True, totals_to_json(HOST_TOTALS),
                                     totals_to_json(HOST_TOTALS), NOW)  # fmt: skip
        assert advance == AdvanceBatch(TID, MID, NEXT)

    def test_out_of_balance_keeps_the_batch_open_for_the_upload(self) -> None:
        """Out of balance, the batch is marked uploading (not closed) with both sides' totals."""
        decision = decide(Kind.SETTLEMENT, batch(), terminal_totals=OTHER_TOTALS)
        settle = decision.commands[1]
        assert settle == SettleBatch(TID, MID, BATCH, "out_of_balance", False, totals_to_json(HOST_TOTALS),
                                     totals_to_json(OTHER_TOTALS), NOW)  # fmt: skip
        assert decision.next_batch is None

    @pytest.mark.parametrize(("terminal_totals", "reason"), [(HOST_TOTALS, Reason.APPROVED),
                                                            (OTHER_TOTALS, Reason.OUT_OF_BALANCE)])  # fmt: skip
    def test_iso87_replies_with_the_hosts_totals(self, terminal_totals: BatchTotals, reason: Reason) -> None:
        """iso87 answers with its own counts and amounts in F74 (credits), F76 (debits), F86 and F88."""
        decision = decide(Kind.SETTLEMENT, batch(), terminal_totals=terminal_totals)
        assert decision.reason is reason
        assert {k: decision.fields[k] for k in ("74", "76", "86", "88")} == {
            "74": "0000000000", "76": "0000000001", "86": "0000000000000000", "88": "0000000000001000",
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("terminal_totals", "reason", "results"),
        [
            pytest.param(HOST_TOTALS, Reason.APPROVED, ("1", "1"), id="balanced"),
            pytest.param(OTHER_TOTALS, Reason.OUT_OF_BALANCE, ("1", "2"), id="foreign-differs"),
            pytest.param(BatchTotals(domestic=Totals(1, 5), foreign=HOST_TOTALS.foreign), Reason.OUT_OF_BALANCE,
                         ("2", "1"), id="domestic-differs"),
            # CUP counts are n3: the host compares what the field can carry.
            pytest.param(BatchTotals(foreign=Totals(1_001, 1_000)), Reason.APPROVED, ("1", "1"),
                         id="counts-modulo-1000"),
        ],
    )  # fmt: skip
    def test_cup_replies_with_a_result_digit_per_section(
        self, terminal_totals: BatchTotals, reason: Reason, results: tuple[str, str]
    ) -> None:
        """CUP F48: domestic then foreign, each n12 debit amount, n3 count, n12 credit amount, n3 count, result."""
        host_totals = BatchTotals(foreign=Totals(1, 1_000))
        decision = decide(Kind.SETTLEMENT, batch(host_totals=host_totals), "cup", terminal_totals=terminal_totals)
        assert decision.reason is reason
        assert decision.fields["48"] == "0" * 30 + results[0] + "000000001000001000000000000000" + results[1]

    def test_a_repeat_gets_the_first_answer_again(self) -> None:
        """The terminal missed its reply: the same totals get the same fields, from the totals recorded then."""
        first = decide(Kind.SETTLEMENT, batch())
        repeat = decide(Kind.SETTLEMENT, SETTLED, open_batch=NEXT)
        assert repeat.fields == first.fields
        assert repeat.next_batch is None


HOST_ITEMS = (
    BatchItem("000001", 1_000, CARD.masked_pan, "000000000001"),
    BatchItem("000002", 2_000, CARD.masked_pan, "000000000002"),
    BatchItem("000003", 3_000, CARD.masked_pan, "000000000003"),
)
UPLOADED = (
    BatchItem("000001", 1_000, CARD.masked_pan),  # agrees
    BatchItem("000002", 2_500, CARD.masked_pan),  # amount differs
    BatchItem("000004", 4_000, CARD.masked_pan),  # missing on host
)  # and 000003 is missing on the terminal
DIFFERENCES = (
    BatchDifference("000002", Difference.AMOUNT_DIFFERS, 2_000, 2_500, "000000000002", CARD.masked_pan),
    BatchDifference("000003", Difference.MISSING_ON_TERMINAL, 3_000, None, "000000000003", CARD.masked_pan),
    BatchDifference("000004", Difference.MISSING_ON_HOST, None, 4_000, None, CARD.masked_pan),
)
UPLOAD = ((BatchItem("000001", 1_000, CARD.masked_pan), CARD.pan_hash, True),)
# CUP's chip upload (60.3 203/205): one transaction in its own fields, acknowledged after a balanced settlement.
IC_UPLOAD = next(rule for rule in load_dialect("cup").kinds if rule.kind == "ic_upload")

UPLOAD_CASES = [
    pytest.param(Kind.BATCH_UPLOAD, UPLOADING, {"upload": UPLOAD}, Reason.APPROVED, [U], id="records-kept"),
    pytest.param(Kind.BATCH_UPLOAD, UPLOADING, {"upload": ()}, Reason.APPROVED, [], id="no-records"),
    pytest.param(Kind.BATCH_UPLOAD, batch(), {"upload": UPLOAD}, Reason.APPROVED, [U], id="before-any-settlement"),
    pytest.param(Kind.BATCH_UPLOAD, SETTLED, {"upload": UPLOAD, "open_batch": NEXT}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="into-a-settled-batch"),
    pytest.param(Kind.BATCH_UPLOAD, UPLOADING, {"upload": UPLOAD, "open_batch": NEXT}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="not-the-batch-held-open"),
    pytest.param(Kind.BATCH_UPLOAD, UPLOADING, {"upload": UPLOAD, "rule": IC_UPLOAD}, Reason.APPROVED, [U],
                 id="chip-upload-kept-while-uploading"),
    pytest.param(Kind.BATCH_UPLOAD, SETTLED, {"upload": UPLOAD, "rule": IC_UPLOAD, "open_batch": NEXT},
                 Reason.APPROVED, [], id="chip-upload-after-a-balanced-settlement-acknowledged"),
    pytest.param(Kind.BATCH_UPLOAD, SETTLED, {"upload": UPLOAD, "rule": IC_UPLOAD}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="chip-upload-into-a-settled-open-batch"),
    pytest.param(Kind.UPLOAD_END, batch("uploading", host_items=HOST_ITEMS, uploaded=UPLOADED), {}, Reason.APPROVED,
                 [E, S, A, D], id="end-records-the-differences-and-closes"),
    pytest.param(Kind.UPLOAD_END, batch("uploading", host_items=HOST_ITEMS, uploaded=HOST_ITEMS), {},
                 Reason.APPROVED, [E, S, A], id="end-without-differences-closes-balanced"),
    pytest.param(Kind.UPLOAD_END, SETTLED, {"open_batch": NEXT}, Reason.APPROVED, [], id="end-sent-again"),
    pytest.param(Kind.UPLOAD_END, SETTLED, {}, Reason.BATCH_OUT_OF_SYNC, [], id="end-of-a-settled-open-batch"),
    pytest.param(Kind.UPLOAD_END, UPLOADING, {"open_batch": NEXT}, Reason.BATCH_OUT_OF_SYNC, [],
                 id="end-of-another-batch"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "batch_", "overrides", "reason", "commands"), UPLOAD_CASES)
def test_upload(kind: Kind, batch_: BatchView, overrides: dict[str, Any], reason: Reason,
                commands: list[type]) -> None:  # fmt: skip
    """Records are kept while the batch is open; the end of the upload closes it with the differences found."""
    decision = decide(kind, batch_, "cup", **overrides)
    assert decision.reason is reason
    assert kinds_of(decision) == commands


class TestUploadCommands:
    def test_records_are_kept_as_admitted(self) -> None:
        """The upload command carries the records (masked PAN, PAN hash, foreign card) for the open batch."""
        decision = decide(Kind.BATCH_UPLOAD, UPLOADING, "cup", upload=UPLOAD)
        assert decision.commands == (RecordUpload(TID, MID, BATCH, UPLOAD, NOW),)

    def test_the_end_finds_every_kind_of_difference_in_stan_order(self) -> None:
        """Amount differs, missing on the terminal, missing on the host: each once, by STAN; the batch closes."""
        decision = decide(Kind.UPLOAD_END, batch("uploading", host_items=HOST_ITEMS, uploaded=UPLOADED), "cup")
        _expect, settle, advance, recorded = decision.commands
        assert recorded == RecordDifferences(TID, MID, BATCH, DIFFERENCES, NOW)
        assert isinstance(settle, SettleBatch)
        assert (settle.result, settle.close, settle.terminal_totals_json) == ("out_of_balance", True, "{}")
        assert advance == AdvanceBatch(TID, MID, NEXT)
        assert decision.next_batch == NEXT

    def test_iso87_settlement_after_upload_records_the_differences(self) -> None:
        """iso87 has no end-of-upload message: its 0500 with F3 96xxxx closes the batch with the differences."""
        uploading = batch("uploading", host_items=HOST_ITEMS, uploaded=UPLOADED)
        decision = decide(Kind.SETTLEMENT, uploading, after_upload=True, processing_code="960000")
        assert decision.commands[-1] == RecordDifferences(TID, MID, BATCH, DIFFERENCES, NOW)
