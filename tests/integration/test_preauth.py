"""CUP's pre-authorisation family over real TCP, on both ledgers: pre-auth, pre-auth void, completion (online and
offline), completion void, the reversal of each, holds on a test card, settlement totals, and ``ledger verify``.

The first pre-auth is written by hand as hex from shared CUP.md (its MAC sealed with the session TAK by the test);
the rest are built from the dialect's templates, as a terminal builds them. The clock is a fake one the test moves,
so that a pre-auth can expire in milliseconds. Every test ends with ``verify``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hosting import TEST_PAN, RunningHost, running_host, terminal_action
from test_cancellations import RULES, UTC, FakeClock
from test_store_contract import record

from iso_host.cli.main import build_parser
from iso_host.core.test_cards import TestCard
from iso_host.errors import ConfigError, ConflictError
from iso_host.ledger import Store
from iso_host.ledger.invariants import Invariant
from iso_host.ledger.model import BatchTotals, ExpectPreauthOpen, OriginalQuery, RecordTransaction, Totals
from iso_host.ledger.reports import verify
from iso_host.security import compute_mac
from iso_host.styles import family_of
from iso_host.terminal.client import TerminalClient
from iso_host.terminal.context import Params, open_session
from iso_host.terminal.session import ACTIONS
from iso_host.vocab import Kind, Status
from iso_host.wire import Message, load_dialect

START = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
BALANCE = 5_000  # the test card's, in minor units
CUP = load_dialect("cup")
ALREADY_CANCELLED, EXPIRED, AMOUNT_MISMATCH, NOT_VOIDABLE, NOT_FOUND, NO_FUNDS = (
    CUP.response_code(reason) for reason in (
        "ALREADY_CANCELLED", "VOID_WINDOW_EXPIRED", "AMOUNT_MISMATCH", "NOT_VOIDABLE", "ORIGINAL_NOT_FOUND",
        "INSUFFICIENT_FUNDS",
    )
)  # fmt: skip


# fmt: off
def preauth_by_hand(stan: str = "000123", amount: str = "000000001000") -> bytes:
    """A CUP pre-authorisation of 10.00 (0100, F3 030000, F25 06, 60.1 10), written from shared CUP.md: the frame
    body (TPDU, header, BCD MTI, bitmap, fields), F64 eight zero bytes until ``sealed``."""
    return bytes.fromhex(
        "6000030000"  # TPDU: 60, destination NII 0003, source NII 0000
        "603100000000"  # header: magstripe application 60, software version 31, status 00, sub-version 000000
        "0100"  # MTI, BCD: authorisation request
        "7024048000C08011"  # bitmap: 2, 3, 4, 11, 14, 22, 25, 41, 42, 49, 60, 64
        "16" "4761739001010010"  # F2 PAN: LLVAR, 1-byte BCD length in digits (16)
        "030000"  # F3 processing code n6 BCD: pre-authorisation
        f"{amount}"  # F4 amount n12 BCD, minor units
        f"{stan}"  # F11 STAN n6 BCD
        "2912"  # F14 expiry YYMM n4 BCD
        "0120"  # F22 POS entry mode n3, left-aligned: 012 + pad nibble
        "06"  # F25 condition code n2: 06 pre-authorisation
        "5445524D30303031"  # F41 "TERM0001" ans8
        "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001" ans15
        "313536"  # F49 "156" an3
        "0011" "100000010000"  # F60 LLLVAR n: 2-byte BCD length in digits (11): 60.1 10, 60.2 000001, 60.3 000, pad
        "0000000000000000"  # F64 MAC b8, sealed by the test
    )
# fmt: on


def sealed(body: bytes, tak: bytes) -> bytes:
    """The body with its MAC: CUP ECB over the bytes from the MTI to the last field before F64, framed."""
    covered = body[CUP.envelope_bytes : -8]
    whole = body[:-8] + compute_mac("cup-ecb", tak, covered)
    return len(whole).to_bytes(2, "big") + whole


@dataclass
class Preauthed:
    request: Message
    response: Message
    at: datetime

    @property
    def stan(self) -> int:
        return int(self.request.fields["11"])

    @property
    def auth_code(self) -> str:
        return self.response.fields["38"]

    @property
    def rrn(self) -> str:
        return self.response.fields["37"]

    @property
    def date(self) -> str:
        return self.response.fields["13"]  # the host's date, which the terminal keeps for the completion


class Counter:
    """A CUP terminal with a test card of BALANCE, at a host whose clock the test moves."""

    def __init__(self, host: RunningHost, client: TerminalClient, clock: FakeClock, url: str) -> None:
        self.host, self.client, self.clock, self.url = host, client, clock, url

    async def send(self, template: str, **values: Any) -> Message:
        return await self.client.request(self.client.build(template, self.clock.now, pan=TEST_PAN, **values))

    async def preauth(self, amount: int = 1_000) -> Preauthed:
        request = self.client.build("preauth", self.clock.now, pan=TEST_PAN, amount=amount)
        response = await self.client.request(request)
        return Preauthed(request, response, self.clock.now)

    async def preauth_void(self, held: Preauthed, amount: int | None = None, *, by_code: bool = False) -> str:
        original = {"original_batch": 0, "original_stan": 0} if by_code else {
            "original_batch": self.client.state.batch, "original_stan": held.stan}  # fmt: skip
        response = await self.send("preauth_void", amount=amount or int(held.request.fields["4"]),
                                   auth_code=held.auth_code, original_date=held.date, **original)  # fmt: skip
        return response.fields["39"]

    async def complete(self, held: Preauthed, amount: int, *, date: str | None = None) -> Message:
        return await self.send("completion", amount=amount, auth_code=held.auth_code,
                               original_date=date or held.date)  # fmt: skip

    async def complete_void(self, completed: Message, completion: Message, amount: int | None = None) -> str:
        response = await self.send(
            "completion_void", amount=amount or int(completion.fields["4"]), rrn=completed.fields["37"],
            original_batch=self.client.state.batch, original_stan=int(completion.fields["11"]),
        )  # fmt: skip
        return response.fields["39"]

    async def reverse(self, original: Message) -> str:
        """The reversal CUP terminals send: 0400 repeating the original's F3, F25 (06) and 60.1, its STAN in F11."""
        response = await self.send(
            "preauth_reversal", amount=int(original.fields["4"]), original_stan=int(original.fields["11"]),
            original_processing_code=original.fields["3"], original_type=original.fields["60"][:2],
        )  # fmt: skip
        return response.fields["39"]

    async def available(self) -> int:
        """What the test card may still spend: the balance inquiry's F54 (balance less the holds)."""
        response = await self.send("balance")
        assert response.fields["39"] == "00", response
        return int(response.fields["54"][-12:])

    async def settle(self, debits: Totals) -> Message:
        """Settle the open batch with these foreign-card totals (the test card's BIN is not UnionPay's 62)."""
        fields = family_of(CUP).totals_fields(BatchTotals(foreign=debits))
        message = self.client.build("settlement", self.clock.now, totals=fields["48"])
        return await self.client.request(message)

    async def rows(self) -> dict[str, tuple[Kind, Status, int]]:
        return {r.rrn: (r.kind, r.status, r.batch_number) for r in await self.host.records()}

    def verified(self) -> None:
        violations = verify(self.url)
        assert violations == [], "\n".join(str(v) for v in violations)


@asynccontextmanager
async def counter(tmp_path: Path, url: str, balance: int = BALANCE) -> AsyncIterator[Counter]:
    clock = FakeClock(START)
    async with (
        running_host(tmp_path, "cup", clock=clock, ledger_url=url, rules=RULES,
                     test_cards={TEST_PAN: TestCard(balance_minor=balance)}) as host,  # fmt: skip
        await host.connected_client("TERM0001", signon=True) as client,
    ):
        yield Counter(host, client, clock, url)


def settled(response: Message) -> bool:
    return response.fields["39"] == "00" and family_of(CUP).balanced(response)


class TestPreauthAndCompletion:
    async def test_a_preauth_by_hand_holds_its_amount_until_completed(self, tmp_path: Path, ledger_url: str) -> None:
        """The hand-written 0100 is approved with an approval code; the hold limits sales and shows in the balance;
        the completion (up to 115 %) takes its amount once; the batch settles with the completion as its debit."""
        async with counter(tmp_path, ledger_url) as t:
            assert t.client.mac is not None
            await t.client.send_raw(sealed(preauth_by_hand(), t.client.mac.request_key))
            response = await t.client.receive(mac=t.client.mac)
            assert (response.mti, response.fields["39"], response.fields["25"]) == ("0110", "00", "06")
            held = Preauthed(Message("0100", {"4": "000000001000", "11": "000123"}), response, t.clock.now)
            assert len(held.auth_code) == 6
            assert await t.available() == BALANCE - 1_000
            sale = await t.send("sale", amount=4_500)
            assert sale.fields["39"] == NO_FUNDS, "the hold leaves 40.00 to spend"
            completed = await t.complete(held, 1_150)
            assert (completed.mti, completed.fields["39"]) == ("0210", "00")
            assert (await t.complete(held, 1_000)).fields["39"] == ALREADY_CANCELLED, "once only"
            assert await t.available() == BALANCE - 1_150, "the hold released, the completion taken"
            rows = await t.rows()
            assert rows[held.rrn] == (Kind.PREAUTH, Status.APPROVED, 1), "its row never changes"
            assert rows[completed.fields["37"]] == (Kind.COMPLETION, Status.APPROVED, 1)
            assert settled(await t.settle(Totals(debit_count=1, debit_minor=1_150))), "pre-auths count nowhere"
            t.verified()

    async def test_named_by_approval_code_and_date(self, tmp_path: Path, ledger_url: str) -> None:
        """Another day's date, another code, more than the tolerance: refused and recorded; the offline completion
        (0220 60.1 24) completes like the online one."""
        async with counter(tmp_path, ledger_url) as t:
            held = await t.preauth(2_000)
            yesterday = (held.at - timedelta(days=1)).strftime("%m%d")
            assert (await t.complete(held, 2_000, date=yesterday)).fields["39"] == NOT_FOUND
            other = await t.send("completion", amount=2_000, auth_code="000000", original_date=held.date)
            assert other.fields["39"] == NOT_FOUND
            assert (await t.complete(held, 2_301)).fields["39"] == AMOUNT_MISMATCH
            offline = t.client.build("completion", t.clock.now, pan=TEST_PAN, amount=2_300, auth_code=held.auth_code,
                                     original_date=held.date)  # fmt: skip
            offline = Message("0220", offline.fields | {"60": "24" + offline.fields["60"][2:]})
            answer = await t.client.request(offline)
            assert (answer.mti, answer.fields["39"]) == ("0230", "00")
            statuses = sorted((kind.value, status.value) for kind, status, _ in (await t.rows()).values())
            assert statuses == [("completion", "APPROVED"), ("completion", "DECLINED"), ("completion", "DECLINED"),
                                ("completion", "DECLINED"), ("preauth", "APPROVED")]  # fmt: skip
            t.verified()

    async def test_a_preauth_outlives_its_batch_and_then_expires(self, tmp_path: Path, ledger_url: str) -> None:
        """A pre-auth of a settled batch is completed in the next; one 30 days old is expired (and holds nothing)."""
        async with counter(tmp_path, ledger_url) as t:
            kept, lapsing = await t.preauth(1_000), await t.preauth(700)
            assert settled(await t.settle(Totals()))
            t.client.state.batch += 1
            t.clock.advance(days=29, hours=23)
            completed = await t.complete(kept, 900)
            assert completed.fields["39"] == "00"
            assert (await t.rows())[completed.fields["37"]][2] == 2, "the completion is in the open batch"
            assert await t.available() == BALANCE - 900 - 700
            t.clock.advance(hours=1)
            assert (await t.complete(lapsing, 700)).fields["39"] == EXPIRED
            assert await t.preauth_void(lapsing) == EXPIRED
            assert await t.available() == BALANCE - 900, "an expired pre-auth holds nothing"
            assert settled(await t.settle(Totals(debit_count=1, debit_minor=900)))
            t.verified()


class TestVoidsAndReversals:
    async def test_a_preauth_void_releases_the_hold_and_its_reversal_restores_it(
        self, tmp_path: Path, ledger_url: str
    ) -> None:
        async with counter(tmp_path, ledger_url) as t:
            held = await t.preauth(1_500)
            assert await t.preauth_void(held, 1_499) == AMOUNT_MISMATCH
            void = t.client.build("preauth_void", t.clock.now, pan=TEST_PAN, amount=1_500, auth_code=held.auth_code,
                                  original_date=held.date, original_batch=t.client.state.batch,
                                  original_stan=held.stan)  # fmt: skip
            assert (await t.client.request(void)).fields["39"] == "00"
            assert await t.available() == BALANCE
            assert await t.preauth_void(held) == ALREADY_CANCELLED
            assert (await t.complete(held, 1_500)).fields["39"] == ALREADY_CANCELLED
            assert await t.reverse(held.request) == "00", "a voided pre-auth: nothing to undo, approved"
            assert await t.reverse(void) == "00"
            assert await t.available() == BALANCE - 1_500, "the void undone: the hold is back"
            assert await t.preauth_void(held, by_code=True) == "00", "by approval code and date alone"
            assert await t.available() == BALANCE
            t.verified()

    async def test_a_completion_void_reopens_the_preauth(self, tmp_path: Path, ledger_url: str) -> None:
        """Void the completion: its amount comes back, the hold too, and the pre-auth can be completed again. The
        first completion void's reversal then cannot bring its completion back (the pre-auth is completed again);
        the second completion's reversal can. Gross totals: the voided completion stays a debit, its void is a
        credit, the reversed one counts nowhere."""
        async with counter(tmp_path, ledger_url) as t:
            held = await t.preauth(1_000)
            first_request = t.client.build("completion", t.clock.now, pan=TEST_PAN, amount=1_100,
                                           auth_code=held.auth_code, original_date=held.date)  # fmt: skip
            first = await t.client.request(first_request)
            assert first.fields["39"] == "00"
            assert await t.complete_void(first, first_request, 1_000) == AMOUNT_MISMATCH
            void_request = t.client.build(
                "completion_void", t.clock.now, pan=TEST_PAN, amount=1_100, rrn=first.fields["37"],
                original_batch=t.client.state.batch, original_stan=int(first_request.fields["11"]),
            )  # fmt: skip
            assert (await t.client.request(void_request)).fields["39"] == "00"
            assert await t.complete_void(first, first_request) == ALREADY_CANCELLED
            assert await t.available() == BALANCE - 1_000, "the amount back, the pre-auth held again"
            second_request = t.client.build("completion", t.clock.now, pan=TEST_PAN, amount=800,
                                            auth_code=held.auth_code, original_date=held.date)  # fmt: skip
            assert (await t.client.request(second_request)).fields["39"] == "00"
            assert await t.reverse(void_request) == NOT_VOIDABLE, "the pre-auth is completed again"
            assert await t.reverse(second_request) == "00"
            assert await t.reverse(second_request) == "00", "a repeat: the same answer, no second effect"
            assert await t.available() == BALANCE - 1_000, "the second completion undone: held again"
            assert await t.reverse(void_request) == "00", "now the first completion can come back"
            assert await t.available() == BALANCE - 1_100
            rows = (await t.rows()).values()
            assert sorted(status.value for kind, status, _ in rows if kind is Kind.COMPLETION_VOID) == [
                "DECLINED", "DECLINED", "REVERSED"]  # fmt: skip
            assert sorted(status.value for kind, status, _ in rows if kind is Kind.COMPLETION) == [
                "APPROVED", "REVERSED"]  # fmt: skip
            # Gross totals: completion 1 (APPROVED again) and completion 2 (reversed: nowhere); the void reversed.
            assert settled(await t.settle(Totals(debit_count=1, debit_minor=1_100)))
            t.verified()

    async def test_racing_completions_complete_once(self, tmp_path: Path, ledger_url: str) -> None:
        """Ten completions of one pre-auth on ten connections at once: exactly one is approved."""
        async with counter(tmp_path, ledger_url) as t:
            held = await t.preauth(1_000)
            clients = []
            for _ in range(10):
                other = TerminalClient(t.host.dialect, "TERM0001", "MERCHANT0000001", t.client.state)
                other.mac = t.client.mac
                await other.connect(*t.host.address)
                clients.append(other)
            try:
                messages = [c.build("completion", t.clock.now, pan=TEST_PAN, amount=1_000, auth_code=held.auth_code,
                                    original_date=held.date) for c in clients]  # fmt: skip
                answers = await asyncio.gather(*(c.request(m) for c, m in zip(clients, messages, strict=True)))
            finally:
                await asyncio.gather(*(c.close() for c in clients))
            codes = sorted(answer.fields["39"] for answer in answers)
            assert codes == ["00"] + [ALREADY_CANCELLED] * 9
            assert await t.available() == BALANCE - 1_000
            t.verified()


class TestTheStore:
    async def test_the_precondition_refuses_a_second_closing(self, store: Store) -> None:
        """ExpectPreauthOpen is checked by the database inside the commit: once a completion names the pre-auth, a
        decision made from an older view (on another host, say) is refused, and it decides again."""
        await store.register_terminal("TERM0001", "MERCHANT0000001")
        preauth = record("000000000001", "000001", kind=Kind.PREAUTH)
        completion = record("000000000002", "000002", kind=Kind.COMPLETION, original_rrn=preauth.rrn)
        await store.apply([RecordTransaction(preauth)])
        await store.apply([ExpectPreauthOpen(preauth.rrn), RecordTransaction(completion)])
        late = record("000000000003", "000003", kind=Kind.COMPLETION, original_rrn=preauth.rrn)
        with pytest.raises(ConflictError):
            await store.apply([ExpectPreauthOpen(preauth.rrn), RecordTransaction(late)])
        found = await store.find_original(OriginalQuery("TERM0001", "MERCHANT0000001", rrn=preauth.rrn))
        assert found is not None
        assert found.closed_by is Kind.COMPLETION


class TestVerify:
    async def test_a_second_completion_behind_the_stores_back_is_found(self, tmp_path: Path) -> None:
        """`ledger verify`: a pre-auth closed twice breaks preauth-closed-at-most-once."""
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        async with counter(tmp_path, url) as t:
            held = await t.preauth(1_000)
            assert (await t.complete(held, 1_000)).fields["39"] == "00"
            t.verified()
        with sqlite3.connect(tmp_path / "ledger.db") as connection:
            connection.execute(
                "INSERT INTO transactions (kind, tid, mid, batch_number, stan, rrn, auth_code, amount_minor, currency,"
                " status, response_code, reason, mti, processing_code, original_rrn, created_at, updated_at)"
                " SELECT kind, tid, mid, batch_number, '000999', '000000000999', auth_code, amount_minor, currency,"
                " status, response_code, reason, mti, processing_code, original_rrn, created_at, updated_at"
                " FROM transactions WHERE kind = 'completion'"
            )
        assert [(v.invariant, v.subject) for v in verify(url)] == [(Invariant.PREAUTH_CLOSED_AT_MOST_ONCE, held.rrn)]


class TestTerminalCommands:
    """`iso-host terminal preauth | preauth-void | complete | complete-void | reverse | settle`, as actions."""

    async def act(self, t: Counter, state: Path, *argv: str) -> Message:
        return await terminal_action(t.host.address, "cup", state, *argv)

    async def test_a_day_of_preauths_settles_balanced(self, tmp_path: Path, ledger_url: str) -> None:
        async with counter(tmp_path, ledger_url) as t:
            state = tmp_path / "terminal.json"
            assert (await self.act(t, state, "signon")).fields["39"] == "00"
            first = await self.act(t, state, "preauth", "10.00")
            second = await self.act(t, state, "preauth", "20.00")
            third = await self.act(t, state, "preauth", "5.00")
            assert [r.fields["39"] for r in (first, second, third)] == ["00", "00", "00"]
            assert (await self.act(t, state, "complete", "11.50", "--stan", first.fields["11"])).fields["39"] == "00"
            by_code = await self.act(t, state, "complete", "20.00", "--auth-code", second.fields["38"],
                                     "--date", second.fields["13"])  # fmt: skip
            assert by_code.fields["39"] == "00"
            voided = await self.act(t, state, "complete-void", "--stan", by_code.fields["11"])
            assert voided.fields["39"] == "00"
            assert (await self.act(t, state, "preauth-void", "--stan", third.fields["11"])).fields["39"] == "00"
            assert (await self.act(t, state, "reverse", "--stan", voided.fields["11"])).fields["39"] == "00"
            # The terminal's own totals: completions 11.50 and 20.00 (voided then reversed: APPROVED again).
            assert settled(await self.act(t, state, "settle"))
            t.verified()

    async def test_a_dialect_without_preauth_voids_says_so(self, tmp_path: Path) -> None:
        """iso87 has authorisations and their completions (0220 naming the 0100 in F90), no pre-auth void."""
        args = build_parser().parse_args(["terminal", "--dialect", "iso87binary", "--state", str(tmp_path / "t.json"),
                                          "preauth-void", "--auth-code", "123456"])  # fmt: skip
        session = open_session(args, load_dialect("iso87binary"), args.tid, args.mid)
        with pytest.raises(ConfigError, match="no preauth_void request"):
            await ACTIONS["preauth-void"](session, Params.from_args(args))
