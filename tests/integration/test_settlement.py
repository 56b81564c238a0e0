"""Settlement over real TCP, for both dialect families on both ledgers: a business day that balances, one
that does not (upload, differences, close), a batch number the host does not expect, and the batch being
immutable afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from databases import ledger_query, store_url
from hosting import TEST_PAN, RunningHost, running_host
from test_cancellations import RULES, UTC, FakeClock, Sold, Till

from iso_host.ledger.model import BatchTotals, Totals
from iso_host.styles import UploadRecord, family_of
from iso_host.styles.cup import upload_records_field
from iso_host.vocab import Status
from iso_host.wire import Message

UNIONPAY_PAN = "6225880012345678"


class Terminal(Till):
    """A till that settles: it keeps its own batch, as a real terminal does."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sales: list[Sold] = []

    async def sell(self, amount: int, pan: str = TEST_PAN) -> Sold:
        sold = await self.sale(amount, pan)
        assert sold.response.fields["39"] == "00"
        self.sales.append(sold)
        return sold

    def totals(self, sales: list[Sold], credits: tuple[int, ...] = ()) -> BatchTotals:
        def section(items: list[Sold]) -> Totals:
            return Totals(len(items), sum(int(s.request.fields["4"]) for s in items))

        domestic = [s for s in sales if s.request.fields.get("2", "").startswith("62")]
        foreign = [s for s in sales if not s.request.fields.get("2", "").startswith("62")]
        credit = Totals(credit_count=len(credits), credit_minor=sum(credits))
        return BatchTotals(section(domestic), section(foreign) + credit)

    async def settle(self, totals: BatchTotals, *, batch: int | None = None, after_upload: bool = False) -> Message:
        fields = family_of(self.host.dialect).totals_fields(totals)
        values: dict[str, Any] = {"processing_code": "960000" if after_upload else "920000", "totals": fields.get("48")}
        if not self.cup:
            t = totals.overall
            values |= {"debit_count": t.debit_count, "debit_amount": t.debit_minor, "credit_count": t.credit_count,
                       "credit_amount": t.credit_minor}  # fmt: skip
        message = self.client.build("settlement", self.clock.now, batch=batch or self.client.state.batch, **values)
        message.fields.update(fields)
        return await self.client.request(message)

    async def upload(self, sales: list[tuple[str, str, int]]) -> list[str]:
        """Upload (STAN, PAN, amount) records; returns the response codes."""
        codes = []
        if self.cup:
            for start in range(0, len(sales), 8):
                records = [UploadRecord(stan, pan, amount, not pan.startswith("62"))
                           for stan, pan, amount in sales[start : start + 8]]  # fmt: skip
                response = await self.send("batch_upload", records=upload_records_field(records))
                codes.append(response.fields["39"])
            end = await self.send("upload_end", count=len(sales), processing_code="202")
            codes.append(end.fields["39"])
        else:
            for stan, pan, amount in sales:
                response = await self.send("batch_upload", original_stan=int(stan), pan=pan, amount=amount)
                codes.append(response.fields["39"])
        return codes


@asynccontextmanager
async def terminal(tmp_path: Path, family: str, backend: str) -> AsyncIterator[Terminal]:
    clock = FakeClock(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    with store_url(backend, tmp_path) as url:
        async with (
            running_host(tmp_path, family, clock=clock, ledger_url=url, rules=RULES) as host,
            await host.connected_client("TERM0001", signon=True) as client,
        ):
            yield Terminal(host, client, clock, url)


async def batch_row(host: RunningHost, url: str, batch: int) -> dict[str, Any]:
    sql = "SELECT status, result FROM batches WHERE tid = 'TERM0001' AND batch_number = %s"
    rows = ledger_query(url, sql, (batch,))
    return {"status": rows[0][0], "result": rows[0][1]} if rows else {}


def differences(url: str) -> list[tuple[object, ...]]:
    sql = "SELECT stan, difference, host_amount_minor, terminal_amount_minor FROM batch_differences ORDER BY stan"
    return ledger_query(url, sql)


class TestSettlement:
    async def test_a_business_day_that_balances(self, tmp_path: Path, family: str, backend: str) -> None:
        """Sales, a void, a reversal and a refund, then matching totals: the batch closes and the next opens."""
        async with terminal(tmp_path, family, backend) as t:
            kept = await t.sell(1_000, UNIONPAY_PAN)
            voided = await t.sell(2_000)
            reversed_sale = await t.sell(3_000)
            refunded = await t.sell(4_000)
            assert await t.void(voided) == "00"
            assert await t.reverse(reversed_sale) == "00"
            assert await t.refund(refunded, 1_500) == "00"
            # Gross: the voided sale stays a debit, the void and the refund are credits, the reversal nowhere.
            totals = t.totals([kept, voided, refunded], credits=(2_000, 1_500))
            response = await t.settle(totals)
            assert response.fields["39"] == "00"
            if t.cup:
                assert response.fields["48"][30] == "1"
                assert response.fields["48"][61] == "1"
            assert (await batch_row(t.host, t.ledger_url, 1)) == {"status": "settled", "result": "balanced"}
            assert await t.void(kept) == t.code("BATCH_CLOSED"), "a settled batch is immutable"
            assert await t.reverse(refunded) == t.code("BATCH_CLOSED")
            t.client.state.batch = 2  # a CUP terminal moves to its next batch itself
            assert (await t.sale(500)).response.fields["39"] == "00"
            rows = await t.host.records()
            assert rows[-1].batch_number == 2
            assert next(r for r in rows if r.rrn == kept.response.fields["37"]).status is Status.APPROVED

    async def test_out_of_balance_then_upload(self, tmp_path: Path, family: str, backend: str) -> None:
        """The terminal forgot one sale and has one the host never approved: upload, differences, closed."""
        async with terminal(tmp_path, family, backend) as t:
            first, forgotten, third = await t.sell(1_100), await t.sell(2_200), await t.sell(3_300)
            phantom_stan = "900001"
            mine = [first, third]
            totals = t.totals(mine) + BatchTotals(foreign=Totals(1, 7_700))
            response = await t.settle(totals)
            assert response.fields["39"] == t.code("OUT_OF_BALANCE")
            if t.cup:
                assert response.fields["48"][61] == "2"
            assert (await batch_row(t.host, t.ledger_url, 1))["status"] == "uploading"
            records = [(s.request.fields["11"], TEST_PAN, int(s.request.fields["4"])) for s in mine]
            records.append((phantom_stan, TEST_PAN, 7_700))
            codes = await t.upload(records)
            assert set(codes) == {"00"}
            if not t.cup:
                assert (await t.settle(totals, after_upload=True)).fields["39"] == "00"
            assert (await batch_row(t.host, t.ledger_url, 1)) == {"status": "settled", "result": "out_of_balance"}
            assert differences(t.ledger_url) == [
                (forgotten.request.fields["11"], "missing_on_terminal", 2_200, None),
                (phantom_stan, "missing_on_host", None, 7_700),
            ]

    async def test_amount_differs(self, tmp_path: Path, family: str, backend: str) -> None:
        """An uploaded record with another amount than the host's is recorded as such."""
        async with terminal(tmp_path, family, backend) as t:
            sold = await t.sell(1_000)
            response = await t.settle(t.totals([]) + BatchTotals(foreign=Totals(1, 999)))
            assert response.fields["39"] == t.code("OUT_OF_BALANCE")
            await t.upload([(sold.request.fields["11"], TEST_PAN, 999)])
            if not t.cup:
                await t.settle(BatchTotals(foreign=Totals(1, 999)), after_upload=True)
            assert differences(t.ledger_url) == [(sold.request.fields["11"], "amount_differs", 1_000, 999)]

    async def test_wrong_batch_number(self, tmp_path: Path, family: str, backend: str) -> None:
        """Settling a batch the host does not hold open is refused (77) and closes nothing."""
        async with terminal(tmp_path, family, backend) as t:
            sold = await t.sell(1_000)
            response = await t.settle(t.totals([sold]), batch=7)
            assert response.fields["39"] == t.code("BATCH_OUT_OF_SYNC") == "77"
            assert await batch_row(t.host, t.ledger_url, 1) == {}
            assert await batch_row(t.host, t.ledger_url, 7) == {}
            assert (await t.settle(t.totals([sold]))).fields["39"] == "00"
            other_totals = await t.settle(t.totals([sold, sold]), batch=1)
            assert other_totals.fields["39"] == "77", "a settled batch cannot be settled again with other totals"

    async def test_a_settlement_whose_reply_was_lost_is_answered_again(
        self, tmp_path: Path, family: str, backend: str
    ) -> None:
        """Issue 11 defect 5: the terminal missed the 00 of its settlement and sends it again. The repeat, same
        batch and same totals, gets the same answer and changes nothing; the next batch stays open."""
        async with terminal(tmp_path, family, backend) as t:
            sold = await t.sell(1_000)
            first = await t.settle(t.totals([sold]))
            assert first.fields["39"] == "00"
            repeat = await t.settle(t.totals([sold]), batch=1)
            assert repeat.fields["39"] == "00"
            assert repeat.fields.get("48") == first.fields.get("48"), "the same answer, field by field"
            assert await batch_row(t.host, t.ledger_url, 1) == {"status": "settled", "result": "balanced"}
            assert await batch_row(t.host, t.ledger_url, 2) == {}, "the next batch is open, not settled"
            t.client.state.batch = 2  # as the terminal moves on after its 00
            assert (await t.sell(500)).response.fields["39"] == "00", "sales go on into the next batch"


async def test_cup_counts_are_compared_as_the_field_carries_them(tmp_path: Path) -> None:
    """CUP counts are n3: a terminal cannot report 1,005 sales, so counts are compared modulo 1,000."""
    async with terminal(tmp_path, "cup", "sqlite") as t:
        for _ in range(5):
            await t.sell(1)
        response = await t.settle(BatchTotals(foreign=Totals(1_005, 5)))
        assert response.fields["39"] == "00"
        assert response.fields["48"][43:46] == "005", "foreign debit count, n3"
