"""Test cards and scenarios over real TCP: every card status and every scenario action, recorded in the ledger."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from hosting import TEST_PAN, local_now, running_host
from waiting import until

from iso_host.cards import pan_hash
from iso_host.core.scenarios import Scenario
from iso_host.core.test_cards import TestCard
from iso_host.terminal.client import ClientError
from iso_host.vocab import Reason, Status

CARD = "5413330089010012"
_STANS = itertools.count(100, 100)  # every helper connection numbers its requests from a fresh STAN range


async def sale_code(host: object, amount: int, pan: str = CARD, tid: str = "TERM0001") -> str:
    async with await host.connected_client(tid) as client:  # type: ignore[attr-defined]
        client.state.stan = next(_STANS)
        return (await client.request(client.build("sale", local_now(), amount=amount, pan=pan))).fields["39"]


class TestCards:
    @pytest.mark.parametrize(
        ("card", "amount", "code", "reason"),
        [
            pytest.param(TestCard(status="lost"), 100, "41", Reason.LOST_CARD, id="lost"),
            pytest.param(TestCard(status="stolen"), 100, "43", Reason.STOLEN_CARD, id="stolen"),
            pytest.param(TestCard(status="expired"), 100, "54", Reason.EXPIRED_CARD, id="status-expired"),
            pytest.param(TestCard(expiry="2001"), 100, "54", Reason.EXPIRED_CARD, id="expiry-past"),
            pytest.param(TestCard(expiry="9912"), 100, "00", Reason.APPROVED, id="expiry-future"),
            pytest.param(TestCard(limit_minor=5_000), 5_001, "61", Reason.EXCEEDS_LIMIT, id="over-limit"),
            pytest.param(TestCard(balance_minor=1_000), 1_001, "51", Reason.INSUFFICIENT_FUNDS, id="no-funds"),
            pytest.param(TestCard(balance_minor=1_000), 1_000, "00", Reason.APPROVED, id="exact-balance"),
        ],
    )
    async def test_card_answers(self, tmp_path: Path, card: TestCard, amount: int, code: str, reason: Reason) -> None:
        """Each card status and limit gets its response code, and the decline is recorded as one."""
        async with running_host(tmp_path, "iso87binary", test_cards={CARD: card}) as host:
            assert await sale_code(host, amount) == code
            (row,) = await host.records()
        assert row.reason is reason
        assert row.status is (Status.APPROVED if code == "00" else Status.DECLINED)

    async def test_balance_moves_with_sales_voids_and_reversals(self, tmp_path: Path) -> None:
        """Approved sales spend the balance; a void and a reversal give it back."""
        async with running_host(tmp_path, "iso87binary", test_cards={CARD: TestCard(balance_minor=1_000)}) as host:
            async with await host.connected_client() as client:
                first = await client.request(client.build("sale", local_now(), amount=600, pan=CARD))
                assert first.fields["39"] == "00"
                assert await sale_code(host, 600) == "51", "400 left"
                void = client.build("void", local_now(), amount=600, pan=CARD, rrn=first.fields["37"])
                assert (await client.request(void)).fields["39"] == "00"
                second = client.build("sale", local_now(), amount=900, pan=CARD)
                assert (await client.request(second)).fields["39"] == "00", "1,000 again after the void"
                reversal = client.build("reversal", local_now(), amount=900, pan=CARD,
                                        original_stan=int(second.fields["11"]))  # fmt: skip
                assert (await client.request(reversal)).fields["39"] == "00"
            assert await sale_code(host, 1_000) == "00", "the reversal gave the 900 back"


class TestScenarios:
    async def test_respond_is_a_recorded_decline_and_times_runs_out(self, tmp_path: Path) -> None:
        """A forced 05 on amounts ending in .51 fires once (times = 1) and is a DECLINED row."""
        scenario = Scenario(name="cents 51", amount_cents=51, respond="05", times=1)
        async with running_host(tmp_path, "iso87binary", scenarios=[scenario]) as host:
            assert await sale_code(host, 1_051) == "05"
            assert await sale_code(host, 2_051) == "00", "times = 1"
            assert await sale_code(host, 1_052) == "00"
            rows = await host.records()
        assert [(r.status, r.reason, r.response_code) for r in rows] == [
            (Status.DECLINED, Reason.FORCED_DECLINE, "05"),
            (Status.APPROVED, Reason.APPROVED, "00"),
            (Status.APPROVED, Reason.APPROVED, "00"),
        ]

    async def test_match_on_tid_pan_kind_and_mti(self, tmp_path: Path) -> None:
        """A scenario fires only where all its match keys agree."""
        async with running_host(tmp_path, "iso87binary") as host:
            key = host.store.pan_hash_key
            host.server.host.scenarios.add(Scenario(tid="TERM0002", pan_hash=pan_hash(CARD, key), respond="14"))
            host.server.host.scenarios.add(Scenario(kind="echo", mti="0800", respond="91"))
            assert await sale_code(host, 100, tid="TERM0002") == "14"
            assert await sale_code(host, 100, pan=TEST_PAN, tid="TERM0002") == "00"
            assert await sale_code(host, 100) == "00"
            async with await host.connected_client() as client:
                assert (await client.request(client.build("echo", local_now()))).fields["39"] == "91"

    async def test_delay_holds_the_reply_at_least_delay_ms(self, tmp_path: Path) -> None:
        """delay_ms holds the matching reply: it comes, approved, no sooner than delay_ms after the request."""
        held = Scenario(amount_minor=777, delay_ms=300)
        async with running_host(tmp_path, "iso87binary", scenarios=[held]) as host:
            started = time.perf_counter()
            assert await sale_code(host, 777) == "00"
            assert time.perf_counter() - started >= held.delay_ms / 1000  # a lower bound: sound on any machine
            (row,) = await host.records()
        assert (row.amount_minor, row.status) == (777, Status.APPROVED)

    async def test_delay_stalls_one_reply_not_the_others(self, tmp_path: Path) -> None:
        """While delay_ms holds one reply, a sale on another connection (same terminal) is answered."""
        # The delay outlasts every deadline in this test (a request gives up after 30 s): if the held reply
        # stalled the other sale, that sale would time out and fail the test, never pass it by luck.
        held = Scenario(amount_minor=777, delay_ms=600_000)
        async with running_host(tmp_path, "iso87binary", scenarios=[held]) as host:
            slow = asyncio.create_task(sale_code(host, 777))

            async def slow_sale_committed() -> bool:
                return any(record.amount_minor == 777 for record in await host.records())

            try:
                # The ledger commits before the delay starts: from here on the 777 reply is being held.
                await until(slow_sale_committed, what="the 777 sale is in the ledger")
                assert await sale_code(host, 100) == "00"
                assert not slow.done(), "the 777 reply is held for delay_ms, not sent"
            finally:
                slow.cancel()
                await asyncio.gather(slow, return_exceptions=True)
                await host.server.stop(grace_s=0)  # end the held reply now rather than wait out the stop's grace
            amounts = sorted(record.amount_minor for record in await host.records())
        assert amounts == [100, 777]

    async def test_no_reply_commits_but_stays_silent(self, tmp_path: Path) -> None:
        """no_reply: the sale is approved in the ledger, the terminal hears nothing (and will reverse)."""
        async with running_host(tmp_path, "iso87binary", scenarios=[Scenario(amount_minor=888, no_reply=True)]) as host:
            async with await host.connected_client() as client:
                await client.send_raw(client.frame(client.build("sale", local_now(), amount=888, pan=CARD)))
                # A connection's requests are answered in order: had the sale a reply, it would come before the
                # echo's. So the first frame back being the echo's shows the sale got none.
                echo = client.build("echo", local_now())
                first_back = await client.request(echo)
                assert (first_back.mti, first_back.fields["11"]) == ("0810", echo.fields["11"]), "the sale was answered"
                assert first_back.fields["39"] == "00"
            (row,) = await host.records()
        assert row.status is Status.APPROVED

    async def test_close_hangs_up_after_committing(self, tmp_path: Path) -> None:
        """close: the connection drops without a reply; the ledger has the sale."""
        async with running_host(tmp_path, "iso87binary", scenarios=[Scenario(amount_minor=999, close=True)]) as host:
            async with await host.connected_client() as client:
                with pytest.raises(ClientError, match="closed"):
                    await client.request(client.build("sale", local_now(), amount=999, pan=CARD))
            assert len(await host.records()) == 1

    async def test_bad_mac(self, tmp_path: Path) -> None:
        """bad_mac: the reply's MAC does not verify at the terminal."""
        scenarios = [Scenario(amount_minor=321, bad_mac=True)]
        async with running_host(tmp_path, "cup", scenarios=scenarios) as host, await host.connected_client() as client:
            with pytest.raises(ClientError, match="does not verify"):
                await client.request(client.build("sale", local_now(), amount=321, pan=CARD))
            good = await client.request(client.build("sale", local_now(), amount=322, pan=CARD))
            assert good.fields["39"] == "00"
