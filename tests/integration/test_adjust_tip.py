"""CUP offline adjust (0220 60.1=32) and tip (0220 60.1=34) over real TCP, on both ledgers: what they change in the
settlement totals (the debit amount, never the count) and in the upload's expected items, their refusals, the
terminal's own actions and batch, and ``ledger verify`` after each.

One adjust and one tip are written by hand as hex from shared CUP.md (MAC'd with the session TAK by the test); the
rest are built from the dialect's templates, as a terminal builds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import test_preauth
from databases import ledger_query
from hosting import TEST_PAN
from test_preauth import BALANCE, CUP, Counter, counter, sealed, settled

from iso_host.ledger.model import Totals
from iso_host.styles import UploadRecord
from iso_host.styles.cup import upload_records_field
from iso_host.terminal.client import ClientState
from iso_host.vocab import Kind, Status
from iso_host.wire import Message

NOT_FOUND, NOT_ADJUSTABLE, SECOND_TIP, OVER_THE_CAP, BATCH_CLOSED, OUT_OF_BALANCE = (
    CUP.response_code(reason) for reason in (
        "ORIGINAL_NOT_FOUND", "NOT_VOIDABLE", "INVALID_TRANSACTION", "EXCEEDS_LIMIT", "BATCH_CLOSED", "OUT_OF_BALANCE",
    )
)  # fmt: skip
HAND_STAN_ADJUST, HAND_STAN_TIP = "000301", "000302"  # far above the STANs the test's client counts up from 1


# fmt: off
def adjust_by_hand(sale_stan: str, amount: str) -> bytes:
    """A CUP offline adjust (0220, F3 000000, 60.1 32) of the sale of batch 000001 with STAN ``sale_stan`` to
    ``amount`` (n12, minor units), naming it by F61 alone, written from shared CUP.md's field table: the frame body
    after the 2-byte length (TPDU, header, BCD MTI, bitmap, fields); F64 eight zero bytes until ``sealed``."""
    return bytes.fromhex(
        "6000030000"  # TPDU: 60, destination NII 0003, source NII 0000
        "603100000000"  # header: magstripe application 60, software version 31, status 00, sub-version 000000
        "0220"  # MTI, BCD: financial advice
        "7020048000C08019"  # bitmap: byte 1 70 (2, 3, 4), 2 20 (11), 3 04 (22), 4 80 (25), 5 00, 6 C0 (41, 42),
        #                     7 80 (49), 8 19 (60, 61, 64)
        "16" "4761739001010010"  # F2 PAN: LLVAR, 1-byte BCD length in digits (16)
        "000000"  # F3 processing code n6 BCD: purchase
        f"{amount}"  # F4 amount n12 BCD: the sale's corrected amount
        f"{HAND_STAN_ADJUST}"  # F11 STAN n6 BCD
        "0120"  # F22 POS entry mode n3, left-aligned: 012 + pad nibble
        "00"  # F25 condition code n2: normal
        "5445524D30303031"  # F41 "TERM0001" ans8
        "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001" ans15
        "313536"  # F49 "156" an3
        "0011" "320000010000"  # F60 LLLVAR n (11 digits): 60.1 32, 60.2 000001, 60.3 000, pad nibble
        f"0012000001{sale_stan}"  # F61 LLLVAR n (12 digits): 61.1 original batch 000001, 61.2 original STAN
        "0000000000000000"  # F64 MAC b8, sealed by the test
    )
# fmt: on


# fmt: off
def tip_by_hand(sale_rrn: str, tip: str) -> bytes:
    """A CUP tip (0220, F3 000000, 60.1 34) of ``tip`` (n12) on the sale whose RRN is ``sale_rrn``, naming it by F37
    alone (no F61), written from shared CUP.md like ``adjust_by_hand``."""
    return bytes.fromhex(
        "6000030000"  # TPDU
        "603100000000"  # header
        "0220"  # MTI, BCD: financial advice
        "7020048008C08011"  # bitmap: byte 1 70 (2, 3, 4), 2 20 (11), 3 04 (22), 4 80 (25), 5 08 (37), 6 C0 (41, 42),
        #                     7 80 (49), 8 11 (60, 64)
        "16" "4761739001010010"  # F2 PAN
        "000000"  # F3 processing code: purchase
        f"{tip}"  # F4 amount n12 BCD: the tip alone
        f"{HAND_STAN_TIP}"  # F11 STAN
        "0120"  # F22 POS entry mode 012
        "00"  # F25 condition code
        f"{sale_rrn.encode('ascii').hex()}"  # F37 RRN an12 ASCII: the sale's
        "5445524D30303031"  # F41 "TERM0001"
        "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001"
        "313536"  # F49 "156"
        "0011" "340000010000"  # F60 LLLVAR n (11 digits): 60.1 34, 60.2 000001, 60.3 000, pad nibble
        "0000000000000000"  # F64 MAC b8, sealed by the test
    )
# fmt: on


async def by_hand(t: Counter, body: bytes) -> Message:
    """Send a hand-written body sealed with the session TAK; the reply, its MAC checked."""
    mac = t.client.mac
    assert mac is not None, "signed on"
    await t.client.send_raw(sealed(body, mac.request_key))
    return await t.client.receive(mac=mac)


async def approved(t: Counter, template: str, amount: int) -> Message:
    """A sale (0200 60.1 22) or what the terminal approved offline and advises now (0220 60.1 30), approved: the
    request with the host's RRN in F37."""
    request = t.client.build(template, t.clock.now, pan=TEST_PAN, amount=amount)
    response = await t.client.request(request)
    assert response.fields["39"] == "00", response
    return Message(request.mti, request.fields | {"37": response.fields["37"]})


async def offline_sale(t: Counter, amount: int) -> Message:
    return await approved(t, "offline_sale", amount)


async def sale(t: Counter, amount: int) -> Message:
    return await approved(t, "sale", amount)


async def amend(t: Counter, template: str, named: Message, amount: int, **values: Any) -> str:
    """An adjust or a tip from the dialect's template naming ``named`` by 61.1 + 61.2 and F37; its F39."""
    names = {"rrn": named.fields["37"], "original_batch": t.client.state.batch,
             "original_stan": int(named.fields["11"])} | values  # fmt: skip
    return (await t.send(template, amount=amount, **names)).fields["39"]


async def upload(t: Counter, records: list[tuple[str, int]]) -> list[str]:
    """Upload (STAN, amount) records of the test card and end the upload (CUP 0320 201, then 202)."""
    field = upload_records_field([UploadRecord(stan, TEST_PAN, amount, True) for stan, amount in records])
    answers = [await t.send("batch_upload", records=field)]
    answers.append(await t.send("upload_end", count=len(records), processing_code="202"))
    return [answer.fields["39"] for answer in answers]


def differences(url: str) -> list[tuple[object, ...]]:
    sql = "SELECT stan, difference, host_amount_minor, terminal_amount_minor FROM batch_differences ORDER BY stan"
    return ledger_query(url, sql)


class TestAdjustAndTip:
    async def test_by_hand_they_move_the_debit_amount_not_the_count(self, tmp_path: Path, ledger_url: str) -> None:
        """An offline sale of 10.00 adjusted by hand to 12.00 and then to 11.00 (the newest counts), an online sale
        of 20.00 tipped 4.00 by hand (the 20 % cap exactly): the batch settles at two debits of 35.00, the test card
        paid exactly that, and every row of the sales is unchanged."""
        async with counter(tmp_path, ledger_url) as t:
            offline, online = await offline_sale(t, 1_000), await sale(t, 2_000)
            adjusted = await by_hand(t, adjust_by_hand(offline.fields["11"], "000000001200"))
            assert (adjusted.mti, adjusted.fields["39"], adjusted.fields["11"]) == ("0230", "00", HAND_STAN_ADJUST)
            assert adjusted.fields["37"] not in (offline.fields["37"], online.fields["37"]), "an RRN of its own"
            assert await amend(t, "adjust", offline, 1_100) == "00", "a later adjust replaces the earlier one"
            tipped = await by_hand(t, tip_by_hand(online.fields["37"], "000000000400"))
            assert (tipped.mti, tipped.fields["39"], tipped.fields["4"]) == ("0230", "00", "000000000400")
            assert await t.available() == BALANCE - 1_100 - 2_400
            rows = {r.rrn: r for r in await t.host.records()}
            assert (rows[offline.fields["37"]].amount_minor, rows[online.fields["37"]].amount_minor) == (1_000, 2_000)
            assert rows[adjusted.fields["37"]].kind is Kind.ADJUST
            assert rows[tipped.fields["37"]].original_rrn == online.fields["37"]
            assert not settled(await t.settle(Totals(debit_count=2, debit_minor=3_000))), "the sales' own amounts"
            assert settled(await t.settle(Totals(debit_count=2, debit_minor=3_500)))
            t.verified()

    async def test_the_upload_expects_the_new_amounts(self, tmp_path: Path, ledger_url: str) -> None:
        """Out of balance, the terminal uploads: the adjusted sale at its new amount balances; the tipped one sent
        without its tip is an amount difference against the host's 24.00."""
        async with counter(tmp_path, ledger_url) as t:
            offline, online = await offline_sale(t, 1_000), await sale(t, 2_000)
            assert await amend(t, "adjust", offline, 900) == "00"
            assert await amend(t, "tip", online, 400) == "00"
            response = await t.settle(Totals(debit_count=2, debit_minor=2_900))
            assert (response.fields["39"], response.fields["48"][61]) == (OUT_OF_BALANCE, "2")
            assert await upload(t, [(offline.fields["11"], 900), (online.fields["11"], 2_000)]) == ["00", "00"]
            assert differences(ledger_url) == [(online.fields["11"], "amount_differs", 2_400, 2_000)]
            t.verified()

    async def test_refusals(self, tmp_path: Path, ledger_url: str) -> None:
        """Unknown originals (25), an online sale adjusted (12), a tip over the cap (61), a second tip (12), a void
        of a tipped sale without its tip (64); then, once the batch has settled, an adjust or tip of its sales (25).
        Refusals are recorded as declines and count nowhere."""
        async with counter(tmp_path, ledger_url) as t:
            offline, online = await offline_sale(t, 1_000), await sale(t, 1_000)
            assert await amend(t, "adjust", offline, 1_200, original_stan=999, rrn="") == NOT_FOUND
            assert (await by_hand(t, tip_by_hand("999999999999", "000000000100"))).fields["39"] == NOT_FOUND
            assert await amend(t, "adjust", offline, 1_200, rrn=online.fields["37"]) == NOT_FOUND, "61 and 37 differ"
            assert await amend(t, "adjust", online, 1_200) == NOT_ADJUSTABLE
            assert await amend(t, "tip", online, 201) == OVER_THE_CAP
            assert await amend(t, "tip", online, 200) == "00"
            assert await amend(t, "tip", online, 1) == SECOND_TIP
            void = await t.send("void", amount=1_000, rrn=online.fields["37"], original_batch=1,
                                original_stan=int(online.fields["11"]))  # fmt: skip
            assert void.fields["39"] == CUP.response_code("AMOUNT_MISMATCH"), "the sale is worth 12.00 now"
            declined = [r for r in await t.host.records() if r.status is Status.DECLINED]
            assert sorted(r.kind.value for r in declined) == ["adjust", "adjust", "adjust", "tip", "tip", "tip", "void"]
            assert settled(await t.settle(Totals(debit_count=2, debit_minor=2_200)))
            t.client.state.batch += 1  # a CUP terminal moves to its next batch itself
            assert await amend(t, "tip", offline, 100, original_batch=1) == BATCH_CLOSED
            assert await amend(t, "adjust", offline, 900, original_batch=1) == BATCH_CLOSED
            t.verified()


class TestTerminalActions:
    """`iso-host terminal adjust | tip`: the terminal's own batch carries the new amounts, so its totals agree."""

    act = test_preauth.TestTerminalCommands.act  # an action as `iso-host terminal` runs it (not its tests)

    async def test_adjust_and_tip_settle_balanced(self, tmp_path: Path, ledger_url: str) -> None:
        async with counter(tmp_path, ledger_url) as t:
            state = tmp_path / "terminal.json"
            assert (await self.act(t, state, "signon")).fields["39"] == "00"
            advised = await self.act(t, state, "send", "offline_sale", "--amount", "10.00")
            sold = await self.act(t, state, "sale", "30.00")
            assert (advised.fields["39"], sold.fields["39"]) == ("00", "00")
            assert (await self.act(t, state, "adjust", "12.50", "--stan", advised.fields["11"])).fields["39"] == "00"
            assert (await self.act(t, state, "tip", "5.00", "--rrn", sold.fields["37"])).fields["39"] == "00"
            assert (await self.act(t, state, "adjust", "13.00", "--stan", advised.fields["11"])).fields["39"] == "00"
            assert (await self.act(t, state, "tip", "1.00", "--stan", sold.fields["11"])).fields["39"] == SECOND_TIP
            items = {item["stan"]: item["amount"] for item in ClientState.load(state).items}
            assert (items[advised.fields["11"]], items[sold.fields["11"]]) == (1_300, 3_500)
            assert settled(await self.act(t, state, "settle"))
            t.verified()
