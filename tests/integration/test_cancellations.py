"""Voids, reversals, refunds and duplicates over real TCP, for both dialect families and both ledgers.

Every rule of DESIGN.md "Void eligibility" is driven in its passing and its failing case. The clock is a
fake one the test moves, so a business day, a cut-off and midnight pass in milliseconds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from databases import store_url
from hosting import TEST_PAN, RunningHost, running_host

from iso_host.cards import pan_hash
from iso_host.config import DEMO_TMK
from iso_host.core.rules import RuleSettings
from iso_host.core.test_cards import CardBook, TestCard
from iso_host.ledger.reports import verify
from iso_host.terminal.client import TerminalClient, pin_block_field
from iso_host.vocab import Status
from iso_host.wire import Message

UTC = ZoneInfo("UTC")
OTHER_PAN = "5413330089010012"
RULES = RuleSettings(timezone=UTC, business_day_cutoff=time(23, 0))


class FakeClock:
    """The host's clock, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Sold:
    request: Message
    response: Message
    at: datetime


class Till:
    """A terminal that knows how its dialect names an original (RRN, F61, F11 + 60.2)."""

    def __init__(self, host: RunningHost, client: TerminalClient, clock: FakeClock, ledger_url: str = "") -> None:
        self.host, self.client, self.clock, self.ledger_url = host, client, clock, ledger_url
        self.cup = host.dialect.name == "cup"

    async def send(self, template: str, **values: Any) -> Message:
        message = self.client.build(template, self.clock.now, **values)
        return await self.client.request(message)

    async def sale(self, amount: int = 1_000, pan: str = TEST_PAN) -> Sold:
        request = self.client.build("sale", self.clock.now, amount=amount, pan=pan)
        response = await self.client.request(request)
        return Sold(request, response, self.clock.now)

    async def void(self, sold: Sold, amount: int | None = None, pan: str = TEST_PAN, operator: str = "001") -> str:
        values = {"amount": sold_amount(sold) if amount is None else amount, "pan": pan, "operator": operator}
        if self.cup:
            values |= {"original_batch": self.client.state.batch, "original_stan": int(sold.request.fields["11"])}
        else:
            values |= {"rrn": sold.response.fields.get("37", "000000000000")}
        return (await self.send("void", **values)).fields["39"]

    async def reverse(self, target: Sold, amount: int | None = None) -> str:
        values: dict[str, Any] = {
            "amount": sold_amount(target) if amount is None else amount, "pan": TEST_PAN,
            "original_stan": int(target.request.fields["11"]),
        }  # fmt: skip
        if self.cup:
            values |= {"original_processing_code": target.request.fields["3"],
                       "original_type": target.request.fields["60"][:2]}  # fmt: skip
        return (await self.send("reversal", **values)).fields["39"]

    async def refund(self, sold: Sold, amount: int) -> str:
        values: dict[str, Any] = {"amount": amount, "pan": TEST_PAN, "rrn": sold.response.fields.get("37", "")}
        if self.cup:
            values["original_date"] = sold.at.strftime("%m%d")
        return (await self.send("refund", **values)).fields["39"]

    def code(self, reason: str) -> str:
        return self.host.dialect.response_code(reason)

    async def status_of(self, sold: Sold) -> Status:
        return next(r.status for r in await self.host.records() if r.rrn == sold.response.fields["37"])


def sold_amount(sold: Sold) -> int:
    return int(sold.request.fields["4"])


@asynccontextmanager
async def till(tmp_path: Path, family: str, backend: str, rules: RuleSettings = RULES,
               operators: dict[str, bool] | None = None, tid: str = "TERM0001") -> AsyncIterator[Till]:  # fmt: skip
    clock = FakeClock(datetime(2026, 3, 10, 10, 0, tzinfo=UTC))
    with store_url(backend, tmp_path) as url:
        async with (
            running_host(tmp_path, family, clock=clock, ledger_url=url, rules=rules, operators=operators) as host,
            await host.connected_client(tid, signon=True) as client,
        ):
            yield Till(host, client, clock, url)


Scenario = Callable[[Till], Coroutine[Any, Any, tuple[str, str]]]


async def void_same_day(t: Till) -> tuple[str, str]:
    sold = await t.sale()
    t.clock.advance(hours=2)
    return await t.void(sold), "APPROVED"


async def void_after_cutoff(t: Till) -> tuple[str, str]:
    t.clock.now = t.clock.now.replace(hour=22, minute=50)
    sold = await t.sale()
    t.clock.advance(minutes=20)  # 23:10: the next business day
    return await t.void(sold), "VOID_WINDOW_EXPIRED"


async def void_before_cutoff(t: Till) -> tuple[str, str]:
    t.clock.now = t.clock.now.replace(hour=22, minute=30)
    sold = await t.sale()
    t.clock.advance(minutes=20)  # 22:50: still the same business day
    return await t.void(sold), "APPROVED"


async def void_next_morning(t: Till) -> tuple[str, str]:
    sold = await t.sale()
    t.clock.advance(hours=23)
    return await t.void(sold), "VOID_WINDOW_EXPIRED"


async def second_void(t: Till) -> tuple[str, str]:
    sold = await t.sale()
    assert await t.void(sold) == "00"
    return await t.void(sold), "ALREADY_CANCELLED"


async def void_other_amount(t: Till) -> tuple[str, str]:
    sold = await t.sale(amount=1_000)
    return await t.void(sold, amount=999), "AMOUNT_MISMATCH"


async def void_other_card(t: Till) -> tuple[str, str]:
    sold = await t.sale()
    return await t.void(sold, pan=OTHER_PAN), "CARD_MISMATCH"


async def void_after_refused_attempts(t: Till) -> tuple[str, str]:
    sold = await t.sale(amount=1_000)
    for _ in range(3):
        assert await t.void(sold, amount=1) == t.code("AMOUNT_MISMATCH")
    return await t.void(sold), "VOID_LIMIT_EXCEEDED"


async def void_of_reversed_sale(t: Till) -> tuple[str, str]:
    sold = await t.sale()
    assert await t.reverse(sold) == "00"
    return await t.void(sold), "ALREADY_CANCELLED"


async def refund_beyond_remaining(t: Till) -> tuple[str, str]:
    sold = await t.sale(amount=1_000)
    assert await t.refund(sold, 600) == "00"
    return await t.refund(sold, 500), "AMOUNT_MISMATCH"


async def refund_the_rest(t: Till) -> tuple[str, str]:
    sold = await t.sale(amount=1_000)
    assert await t.refund(sold, 600) == "00"
    assert await t.status_of(sold) is Status.PARTIALLY_REFUNDED
    answer = await t.refund(sold, 400)
    assert await t.status_of(sold) is Status.REFUNDED
    return answer, "APPROVED"


async def refund_too_old(t: Till) -> tuple[str, str]:
    sold = await t.sale()
    t.clock.advance(days=31)
    return await t.refund(sold, 100), "VOID_WINDOW_EXPIRED"


async def refund_of_voided_sale(t: Till) -> tuple[str, str]:
    sold = await t.sale()
    assert await t.void(sold) == "00"
    return await t.refund(sold, 100), "ALREADY_CANCELLED"


async def void_of_refunded_sale(t: Till) -> tuple[str, str]:
    sold = await t.sale(amount=1_000)
    assert await t.refund(sold, 100) == "00"
    return await t.void(sold), "ALREADY_CANCELLED"


SCENARIOS: list[Any] = [
    pytest.param(void_same_day, id="void-same-day"),
    pytest.param(void_before_cutoff, id="void-before-cutoff"),
    pytest.param(void_after_cutoff, id="void-after-cutoff"),
    pytest.param(void_next_morning, id="void-next-morning"),
    pytest.param(second_void, id="second-void"),
    pytest.param(void_other_amount, id="void-other-amount"),
    pytest.param(void_other_card, id="void-other-card"),
    pytest.param(void_after_refused_attempts, id="void-after-3-refused"),
    pytest.param(void_of_reversed_sale, id="void-of-reversed-sale"),
    pytest.param(void_of_refunded_sale, id="void-of-refunded-sale"),
    pytest.param(refund_beyond_remaining, id="refund-beyond-remaining"),
    pytest.param(refund_the_rest, id="refund-the-rest"),
    pytest.param(refund_too_old, id="refund-too-old"),
    pytest.param(refund_of_voided_sale, id="refund-of-voided-sale"),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_rule(tmp_path: Path, family: str, backend: str, scenario: Scenario) -> None:
    """Each rule answers with its reason's response code, in each dialect family, on each ledger."""
    async with till(tmp_path, family, backend) as t:
        answer, reason = await scenario(t)
        assert answer == t.code(reason), f"{scenario.__name__}: expected {reason}"
        await assert_invariants(t.ledger_url)


async def assert_invariants(ledger_url: str) -> None:
    """DESIGN.md's ledger invariants hold, as ``iso-host ledger verify`` checks them (iso_host/ledger/invariants.py,
    through reports.verify): cancelled at most once, status matching its voids and reversals, refunds adding up,
    settled batches unchanged, stored totals matching, no DECLINED row answered 00. The checks read one snapshot
    synchronously, so they run in a thread while the host goes on serving on this loop."""
    violations = await asyncio.to_thread(verify, ledger_url)
    assert violations == [], "\n".join(str(violation) for violation in violations)


class TestVoid:
    async def test_void_marks_the_sale_voided(self, tmp_path: Path, family: str, backend: str) -> None:
        """An approved void turns its sale VOIDED and is itself an approved, linked row."""
        async with till(tmp_path, family, backend) as t:
            sold = await t.sale()
            assert await t.void(sold) == "00"
            records = await t.host.records()
        sale, void = records
        assert sale.status is Status.VOIDED
        assert (void.kind.value, void.status, void.original_rrn) == ("void", Status.APPROVED, sale.rrn)

    async def test_void_of_declined_sale(self, tmp_path: Path, family: str, backend: str) -> None:
        """A sale declined for a wrong PIN cannot be voided (NOT_VOIDABLE)."""
        async with till(tmp_path, family, backend) as t:
            t.host.server.host.cards = t.host.server.host.admission.cards = CardBook(
                [(TEST_PAN, TestCard(pin="1234"))], lambda pan: pan_hash(pan, t.host.store.pan_hash_key)
            )
            request = t.client.build("sale", t.clock.now, amount=1_000, pan=TEST_PAN)
            keys = t.client.state.keys(bytes.fromhex(DEMO_TMK))
            assert keys is not None, "the till signed on"
            request.fields["52"] = pin_block_field(keys[0], "9999", TEST_PAN, 0)
            response = await t.client.request(request)
            assert response.fields["39"] == "55"
            assert await t.void(Sold(request, response, t.clock.now)) == t.code("NOT_VOIDABLE")

    async def test_another_terminals_sale_looks_not_found(self, tmp_path: Path, family: str, backend: str) -> None:
        """A terminal never learns of another terminal's transactions: their void is ORIGINAL_NOT_FOUND."""
        async with till(tmp_path, family, backend) as t:
            sold = await t.sale()
            async with await t.host.connected_client("TERM0002", signon=True) as other_client:
                other = Till(t.host, other_client, t.clock)
                other.client.state.batch = t.client.state.batch
                assert await other.void(sold) == t.code("ORIGINAL_NOT_FOUND")
            assert await t.status_of(sold) is Status.APPROVED

    async def test_void_in_a_settled_batch(self, tmp_path: Path, family: str, backend: str) -> None:
        """Once the original's batch is settled it is immutable: BATCH_CLOSED."""
        async with till(tmp_path, family, backend) as t:
            sold = await t.sale()
            settle_batch_directly(t.ledger_url, "TERM0001", t.client.state.batch)
            assert await t.void(sold) == t.code("BATCH_CLOSED")
            assert await t.reverse(sold) == t.code("BATCH_CLOSED")

    async def test_operator_not_permitted(self, tmp_path: Path, backend: str) -> None:
        """Where the dialect carries an operator (CUP F63), only operators allowed to void may."""
        async with till(tmp_path, "cup", backend, operators={"001": True, "002": False}) as t:
            sold = await t.sale()
            assert await t.void(sold, operator="002") == t.code("OPERATOR_NOT_PERMITTED")
            assert await t.void(sold, operator="003") == t.code("OPERATOR_NOT_PERMITTED")
            assert await t.void(sold, operator="001") == "00"

    async def test_voids_per_day_limit(self, tmp_path: Path, family: str, backend: str) -> None:
        """With max_voids_per_day = 1 the second void of the business day is refused."""
        async with till(tmp_path, family, backend, rules=replace(RULES, max_voids_per_day=1)) as t:
            first, second = await t.sale(), await t.sale()
            assert await t.void(first) == "00"
            assert await t.void(second) == t.code("VOID_LIMIT_EXCEEDED")

    async def test_hours_window(self, tmp_path: Path, family: str, backend: str) -> None:
        """With a void window of 1 hour, a void after 61 minutes is refused."""
        async with till(tmp_path, family, backend, rules=replace(RULES, void_window=1.0)) as t:
            sold = await t.sale()
            t.clock.advance(minutes=61)
            assert await t.void(sold) == t.code("VOID_WINDOW_EXPIRED")


class TestReversal:
    async def test_repeated_three_times(self, tmp_path: Path, family: str, backend: str) -> None:
        """A reversal sent three times has one effect and gets the same answer each time."""
        async with till(tmp_path, family, backend) as t:
            sold = await t.sale()
            answers = [await t.reverse(sold) for _ in range(3)]
            assert answers == ["00", "00", "00"]
            assert await t.status_of(sold) is Status.REVERSED
            reversals = [r for r in await t.host.records() if r.kind.value == "reversal"]
            assert len(reversals) == 1

    async def test_unknown_original(self, tmp_path: Path, family: str, backend: str) -> None:
        """A reversal of nothing is approved without effect by default, refused when configured so."""
        async with till(tmp_path, family, backend) as t:
            ghost = Sold(t.client.build("sale", t.clock.now, amount=5, pan=TEST_PAN), Message("0210"), t.clock.now)
            assert await t.reverse(ghost) == "00"
            assert await t.host.records() == []
        async with till(tmp_path / "decline", family, backend, rules=replace(RULES, unknown_reversal="decline")) as t:
            ghost = Sold(t.client.build("sale", t.clock.now, amount=5, pan=TEST_PAN), Message("0210"), t.clock.now)
            assert await t.reverse(ghost) == t.code("ORIGINAL_NOT_FOUND")

    async def test_reversal_of_a_void_restores_the_sale(self, tmp_path: Path, family: str, backend: str) -> None:
        """Reversing a void puts its sale back to APPROVED (and it can be voided again)."""
        async with till(tmp_path, family, backend) as t:
            sold = await t.sale()
            void_request = t.client.build("void", t.clock.now, **void_values(t, sold))
            void_response = await t.client.request(void_request)
            assert void_response.fields["39"] == "00"
            assert await t.status_of(sold) is Status.VOIDED
            assert await t.reverse(Sold(void_request, void_response, t.clock.now)) == "00"
            assert await t.status_of(sold) is Status.APPROVED

    async def test_amount_mismatch(self, tmp_path: Path, family: str, backend: str) -> None:
        """A reversal for another amount than its original's is refused and changes nothing."""
        async with till(tmp_path, family, backend) as t:
            sold = await t.sale(amount=1_000)
            assert await t.reverse(sold, amount=10) == t.code("AMOUNT_MISMATCH")
            assert await t.status_of(sold) is Status.APPROVED


class TestDuplicate:
    async def test_same_stan_twice(self, tmp_path: Path, family: str, backend: str) -> None:
        """The same financial request sent twice (same TID, MID, batch, STAN) is refused as a duplicate."""
        async with till(tmp_path, family, backend) as t:
            request = t.client.build("sale", t.clock.now, amount=700, pan=TEST_PAN)
            first = await t.client.request(request)
            again = await t.client.request(Message(request.mti, dict(request.fields)))
            assert (first.fields["39"], again.fields["39"]) == ("00", t.code("DUPLICATE"))
            assert len(await t.host.records()) == 1


def void_values(t: Till, sold: Sold) -> dict[str, Any]:
    values: dict[str, Any] = {"amount": sold_amount(sold), "pan": TEST_PAN}
    if t.cup:
        return values | {"original_batch": t.client.state.batch, "original_stan": int(sold.request.fields["11"])}
    return values | {"rrn": sold.response.fields["37"]}


def settle_batch_directly(ledger_url: str, tid: str, batch: int) -> None:
    """Mark a batch settled in the ledger, as settlement will (settlement itself is a later feature)."""
    sql = "INSERT INTO batches (tid, mid, batch_number, status, opened_at) VALUES (%s, %s, %s, 'settled', '')"
    parameters = (tid, "MERCHANT0000001", batch)
    if ledger_url.startswith("sqlite:///"):
        with sqlite3.connect(ledger_url.removeprefix("sqlite:///"), timeout=10) as connection:
            connection.execute(sql.replace("%s", "?"), parameters)
    else:
        with psycopg.connect(ledger_url, autocommit=True) as connection:
            connection.execute(sql, parameters)
