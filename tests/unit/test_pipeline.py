"""The pipeline: ``Host.handle(frame)`` against the in-memory ledger. No socket, no database, no sleep.

Frames go in as bytes (built by the terminal client, and one of each family by hand from the spec), answers come
out as bytes and are decoded as a terminal decodes them (the response MAC checked); the ledger's contents after
each exchange are part of what is asserted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from core_tables import (
    AMOUNT,
    BDK,
    DIALECTS,
    MID,
    NOW,
    PAN,
    TAK,
    TID,
    TMK,
    TPK,
    Ticks,
    client,
    host,
    keyed_terminal,
    mac_keys,
    message,
    rules,
    terminal,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from log_audit import remember_secret
from memory_store import MemoryStore, batch_totals

from iso_host.core.outcome import Outcome
from iso_host.core.pipeline import Host
from iso_host.core.test_cards import TestCard
from iso_host.errors import ConflictError, StoreError
from iso_host.events.record import EventSink
from iso_host.ledger.model import AdvanceBatch, LedgerCommand, SettleBatch, TransactionRecord
from iso_host.terminal.client import DEFAULT_KSN, MacKeys, TerminalClient, dukpt_keys, pin_block_field
from iso_host.vocab import Kind, Reason, Status
from iso_host.wire import NEED_DATA, FrameDecoder, Message, decode

NAMES = tuple(sorted(DIALECTS))


class Terminal:
    """One terminal talking to one host through ``handle``: framing, STAN, MAC, and the reply decoded."""

    def __init__(self, dialect_name: str, served_by: Host, mac: MacKeys | None) -> None:
        self.dialect_name = dialect_name
        self.host = served_by
        self.mac = mac
        self.client: TerminalClient = client(dialect_name)
        self.outcomes: list[Outcome] = []

    def build(self, template: str, **values: Any) -> Message:
        return message(self.dialect_name, template, sender=self.client, **values)

    async def send(self, request: Message, mac: MacKeys | None = None) -> Message:
        """Frame (and MAC) the request, hand the frame body to the host, decode the reply and check its MAC."""
        mac = mac or self.mac
        framed = self.client.frame(request, mac if self._maced(request) else None)
        outcome = await self.host.handle(framed[DIALECTS[self.dialect_name].length_header.size_bytes :])
        self.outcomes.append(outcome)
        assert outcome.reply is not None, outcome
        return self.client.decode_response(outcome.reply, mac if self._maced(request) else None)

    async def do(self, template: str, **values: Any) -> Message:
        return await self.send(self.build(template, **values))

    def _maced(self, request: Message) -> bool:
        rule = DIALECTS[self.dialect_name].classify(request)
        return rule is not None and rule.kind in DIALECTS[self.dialect_name].security.mac_kinds


async def opened(store: MemoryStore | None = None) -> MemoryStore:
    """A ledger that knows ``TID``, in batch 1."""
    store = store or MemoryStore()
    await store.register_terminal(TID, MID)
    return store


def terminal_of(dialect_name: str, store: MemoryStore, **host_options: Any) -> Terminal:
    """A MAC-keyed terminal (signed on where the dialect requires it) and its host."""
    served_by = host(dialect_name, store, **host_options)
    return Terminal(dialect_name, served_by, mac_keys(dialect_name))


def rows(store: MemoryStore) -> list[tuple[Kind, Status, Reason]]:
    return [(row.kind, row.status, row.reason) for row in store.ledger.transactions]


def row(store: MemoryStore, rrn: str) -> TransactionRecord:
    [found] = [record for record in store.ledger.transactions if record.rrn == rrn]
    return found


def void_values(sale: Message, sale_reply: Message) -> dict[str, Any]:
    """How the terminal names the sale it voids: by RRN (iso87 F37) or by batch and STAN (CUP F61)."""
    return {"rrn": sale_reply.fields["37"], "original_batch": 1, "original_stan": int(sale.fields["11"])}


def reversal_values(sale: Message) -> dict[str, Any]:
    """A reversal repeats the sale's STAN (and in CUP its F3 and 60.1)."""
    return {"original_stan": int(sale.fields["11"]), "original_processing_code": "000000", "original_type": "22"}


@pytest.mark.parametrize("dialect_name", NAMES)
class TestSale:
    async def test_approved_and_recorded(self, dialect_name: str) -> None:
        """A sale is answered 00 with an RRN and approval code, and the ledger holds it approved before the reply."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        sale = pos.build("sale")
        reply = await pos.send(sale)
        assert reply.mti == "0210"
        assert reply.fields["39"] == "00"
        assert (reply.fields["11"], reply.fields["41"]) == (sale.fields["11"], TID), "echoed for matching"
        recorded = row(store, reply.fields["37"])
        assert (recorded.kind, recorded.status, recorded.amount_minor, recorded.auth_code) == (
            Kind.SALE, Status.APPROVED, AMOUNT, reply.fields["38"],
        )  # fmt: skip
        assert recorded.card is not None
        assert recorded.card.masked_pan == "476173******0010"

    async def test_a_repeated_stan_is_a_duplicate(self, dialect_name: str) -> None:
        """The same terminal, batch and STAN again is answered 94 and leaves the ledger as it was."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        sale = pos.build("sale")
        first = await pos.send(Message(sale.mti, dict(sale.fields)))
        again = await pos.send(Message(sale.mti, dict(sale.fields)))
        assert (first.fields["39"], again.fields["39"]) == ("00", "94")
        assert rows(store) == [(Kind.SALE, Status.APPROVED, Reason.APPROVED)]
        assert pos.outcomes[-1].reason is Reason.DUPLICATE

    async def test_a_bad_mac_changes_nothing(self, dialect_name: str) -> None:
        """A request whose MAC does not verify is refused without MAC, and nothing reaches the ledger."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        other = MacKeys(mac_keys(dialect_name).algorithm, bytes(reversed(TAK)), bytes(reversed(TAK)))
        reply = await pos.send(pos.build("sale"), mac=other)
        assert reply.fields["39"] == DIALECTS[dialect_name].response_code(Reason.MAC_FAILED)
        assert "64" not in reply.fields, "a reply to an unauthenticated request carries no MAC"
        assert store.ledger.transactions == []
        assert store.last_rrn == 0, "no RRN is spent on a refused request"


@pytest.mark.parametrize("dialect_name", NAMES)
class TestCancellations:
    async def test_a_void_is_approved_once_then_refused(self, dialect_name: str) -> None:
        """The first void cancels the sale; a second one (new STAN) is refused, and recorded as refused."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        sale = pos.build("sale")
        sold = await pos.send(sale)
        voided = await pos.do("void", **void_values(sale, sold))
        again = await pos.do("void", **void_values(sale, sold))
        assert voided.fields["39"] == "00"
        assert again.fields["39"] == DIALECTS[dialect_name].response_code(Reason.ALREADY_CANCELLED)
        assert row(store, sold.fields["37"]).status is Status.VOIDED
        assert rows(store) == [
            (Kind.SALE, Status.VOIDED, Reason.APPROVED),
            (Kind.VOID, Status.APPROVED, Reason.APPROVED),
            (Kind.VOID, Status.DECLINED, Reason.ALREADY_CANCELLED),
        ]

    async def test_a_void_of_an_unknown_original(self, dialect_name: str) -> None:
        """A void naming nothing this terminal sold is 25, recorded as refused and pointing at nothing."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        reply = await pos.do("void", rrn="000000000099", original_batch=1, original_stan=99)
        assert reply.fields["39"] == "25"
        [refused] = store.ledger.transactions
        assert (refused.kind, refused.status, refused.original_rrn) == (Kind.VOID, Status.DECLINED, None)

    async def test_a_reversal_takes_effect_once(self, dialect_name: str) -> None:
        """A reversal reverses the sale; sent again (the terminal never saw the reply) it is 00 and changes nothing."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        sale = pos.build("sale")
        sold = await pos.send(sale)
        first = await pos.do("reversal", **reversal_values(sale))
        before = list(store.ledger.transactions)
        again = await pos.do("reversal", **reversal_values(sale))
        assert (first.fields["39"], again.fields["39"]) == ("00", "00")
        assert row(store, sold.fields["37"]).status is Status.REVERSED
        assert store.ledger.transactions == before
        assert rows(store) == [
            (Kind.SALE, Status.REVERSED, Reason.APPROVED),
            (Kind.REVERSAL, Status.APPROVED, Reason.APPROVED),
        ]

    async def test_a_reversal_of_nothing_is_approved_without_effect(self, dialect_name: str) -> None:
        store = await opened()
        pos = terminal_of(dialect_name, store)
        reply = await pos.do("reversal", original_stan=99, original_processing_code="000000", original_type="22")
        assert reply.fields["39"] == "00"
        assert store.ledger.transactions == []

    async def test_a_reversed_void_gives_the_sale_back(self, dialect_name: str) -> None:
        """Reversing a void (its own STAN, and in CUP its F3 and 60.1) reverses the void and restores the sale."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        sale = pos.build("sale")
        sold = await pos.send(sale)
        void = pos.build("void", **void_values(sale, sold))
        voided = await pos.send(void)
        values = {"original_stan": int(void.fields["11"]), "original_processing_code": "200000", "original_type": "23"}
        reversed_ = await pos.do("reversal", **values)
        assert (voided.fields["39"], reversed_.fields["39"]) == ("00", "00")
        assert rows(store) == [
            (Kind.SALE, Status.APPROVED, Reason.APPROVED),
            (Kind.VOID, Status.REVERSED, Reason.APPROVED),
            (Kind.REVERSAL, Status.APPROVED, Reason.APPROVED),
        ]
        assert store.ledger.transactions[2].original_rrn == voided.fields["37"]

    async def test_refunds_up_to_the_sale_and_no_further(self, dialect_name: str) -> None:
        """Two partial refunds use the sale up (REFUNDED); one more cent is refused as already refunded."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        sold = await pos.do("sale")
        named = {"rrn": sold.fields["37"], "original_date": NOW.strftime("%m%d")}
        over = await pos.do("refund", amount=AMOUNT + 1, **named)
        first = await pos.do("refund", amount=400, **named)
        rest = await pos.do("refund", amount=AMOUNT - 400, **named)
        more = await pos.do("refund", amount=1, **named)
        codes = DIALECTS[dialect_name].response_code
        assert [r.fields["39"] for r in (over, first, rest, more)] == [
            codes(Reason.AMOUNT_MISMATCH), "00", "00", codes(Reason.ALREADY_CANCELLED),
        ]  # fmt: skip
        sale_row = row(store, sold.fields["37"])
        assert (sale_row.status, sale_row.refunded_minor) == (Status.REFUNDED, AMOUNT)


class TestVoidLimits:
    async def test_refused_attempts_run_out(self) -> None:
        """Three refused voids of one sale use its attempts up: the fourth is 65 even with the right amount."""
        store = await opened()
        pos = terminal_of("iso87binary", store)
        sold = await pos.do("sale")
        codes = [(await pos.do("void", rrn=sold.fields["37"], amount=AMOUNT - 1)).fields["39"] for _ in range(3)]
        last = await pos.do("void", rrn=sold.fields["37"])
        assert (codes, last.fields["39"]) == (["64", "64", "64"], "65")
        assert row(store, sold.fields["37"]).status is Status.APPROVED

    async def test_voids_per_day(self) -> None:
        """With max_voids_per_day = 1 the terminal's second void of the business day is 65."""
        store = await opened()
        pos = terminal_of("iso87binary", store, rules=rules(max_voids_per_day=1))
        first, second = await pos.do("sale"), await pos.do("sale")
        voided = await pos.do("void", rrn=first.fields["37"])
        refused = await pos.do("void", rrn=second.fields["37"])
        assert (voided.fields["39"], refused.fields["39"]) == ("00", "65")
        assert row(store, second.fields["37"]).status is Status.APPROVED


class TestKeysAndPins:
    async def test_dukpt_request_and_response_macs(self) -> None:
        """A DUKPT terminal MACs with the KSN's request key and checks the reply with its response key."""
        store = await opened()
        served_by = host("iso87binary", store, terminals={TID: terminal(bdk=BDK)})
        _pin_key, mac = dukpt_keys(BDK, DEFAULT_KSN)
        pos = Terminal("iso87binary", served_by, mac)
        sale = pos.build("sale")
        sale.fields["53"] = DEFAULT_KSN.hex().upper()
        reply = await pos.send(sale)  # decode_response verifies the reply's MAC under the response key
        assert reply.fields["39"] == "00"
        assert "64" in reply.fields

    async def test_cup_sign_on_then_sale(self) -> None:
        """A CUP terminal is refused (58) before it signs on; it signs on, unwraps the keys from F62 with its TMK, and
        its MAC'd sale is approved. The ledger keeps the session, keys wrapped under the TMK only."""
        store = await opened()
        served_by = host("cup", store, terminals={TID: terminal()})
        pos = Terminal("cup", served_by, None)
        refused = await pos.do("sale")
        signon = pos.build("signon")
        signed_on = await pos.send(signon)
        keys = pos.client.accept_signon(signed_on, signon, TMK)
        remember_secret(keys.tpk, keys.tak)
        pos.mac = pos.client.mac
        sold = await pos.do("sale")
        assert [r.fields["39"] for r in (refused, signed_on, sold)] == ["58", "00", "00"]
        session = store.ledger.terminals[TID, MID]
        assert session.signed_on
        assert session.tak_under_tmk is not None
        assert keys.tak.hex().upper() not in session.tak_under_tmk.hex().upper(), "never in clear"
        assert rows(store) == [(Kind.SALE, Status.APPROVED, Reason.APPROVED)]

    async def test_a_wrong_pin_is_a_recorded_decline(self) -> None:
        """A sale whose F52 holds another PIN than the test card's is declined 55, and recorded as declined."""
        store = await opened()
        pos = terminal_of("iso87binary", store, cards={PAN: TestCard(pin="1234")})
        sale = pos.build("sale")
        sale.fields["52"] = pin_block_field(TPK, "9999", PAN, 0)
        reply = await pos.send(sale)
        assert reply.fields["39"] == "55"
        assert rows(store) == [(Kind.SALE, Status.DECLINED, Reason.PIN_INCORRECT)]


class TestSettlement:
    async def test_iso87_balanced_settlement_closes_the_batch(self) -> None:
        """Totals that agree close batch 1 in the ledger and move the terminal to batch 2, in memory too."""
        store = await opened()
        pos = terminal_of("iso87binary", store)
        await pos.do("sale")
        totals = {"credit_count": 0, "debit_count": 1, "credit_amount": 0, "debit_amount": AMOUNT}
        reply = await pos.do("settlement", processing_code="920000", **totals)
        assert reply.fields["39"] == "00"
        assert store.ledger.batches[TID, MID, 1].status == "settled"
        assert (await store.register_terminal(TID, MID)).batch_number == 2
        assert pos.host.terminals[TID].batch_number == 2
        second_sale = await pos.do("sale")
        assert row(store, second_sale.fields["37"]).batch_number == 2

    async def test_iso87_out_of_balance_asks_for_an_upload(self) -> None:
        store = await opened()
        pos = terminal_of("iso87binary", store)
        await pos.do("sale")
        totals = {"credit_count": 0, "debit_count": 2, "credit_amount": 0, "debit_amount": 2 * AMOUNT}
        reply = await pos.do("settlement", processing_code="920000", **totals)
        assert reply.fields["39"] == "95"
        assert store.ledger.batches[TID, MID, 1].status == "uploading"
        assert pos.host.terminals[TID].batch_number == 1

    @pytest.mark.parametrize("dialect_name", NAMES)
    async def test_a_repeated_settlement_gets_the_same_answer(self, dialect_name: str) -> None:
        """The terminal missed its reply and settles batch 1 again: the same answer, and nothing changes."""
        store = await opened()
        pos = terminal_of(dialect_name, store)
        await pos.do("sale")
        totals = {"credit_count": 0, "debit_count": 1, "credit_amount": 0, "debit_amount": AMOUNT}
        cup_totals = "0" * 31 + f"{AMOUNT:012d}" + "001" + "0" * 15 + "0"
        values = totals | {"processing_code": "920000", "totals": cup_totals, "batch": 1}
        first = await pos.do("settlement", **values)
        batches = dict(store.ledger.batches)
        again = await pos.do("settlement", **values)
        assert first.fields["39"] == "00"
        assert {k: v for k, v in again.fields.items() if k not in ("11", "12", "13")} == {
            k: v for k, v in first.fields.items() if k not in ("11", "12", "13")
        }
        assert store.ledger.batches == batches
        assert pos.host.terminals[TID].batch_number == 2

    async def test_cup_settlement_upload_and_end(self) -> None:
        """CUP: out of balance is 00 with result 2 in F48; the upload and its end close the batch with the
        difference recorded."""
        store = await opened()
        pos = terminal_of("cup", store)
        sale = pos.build("sale")
        await pos.send(sale)
        wrong = "0" * 31 + f"{2 * AMOUNT:012d}" + "002" + "0" * 15 + "0"  # foreign debits 2 x AMOUNT
        settled = await pos.do("settlement", totals=wrong)
        assert (settled.fields["39"], settled.fields["48"][30], settled.fields["48"][61]) == ("00", "1", "2")
        record = "01" + sale.fields["11"] + f"{int(sale.fields['2']):020d}" + f"{AMOUNT:012d}"
        extra = "01" + "000077" + f"{int(sale.fields['2']):020d}" + f"{AMOUNT:012d}"
        uploaded = await pos.do("batch_upload", records="02" + record + extra)
        ended = await pos.do("upload_end", count=2, processing_code="202")
        assert (uploaded.fields["39"], ended.fields["39"]) == ("00", "00")
        assert store.ledger.batches[TID, MID, 1].status == "settled"
        [(_key, _at, differences)] = store.ledger.differences
        assert [(d.stan, d.difference.value) for d in differences.differences] == [("000077", "missing_on_host")]


class TestLedgerFailures:
    async def test_a_store_error_is_96_and_nothing_is_approved(self) -> None:
        """A database that fails the commit: the sale is answered 96 and the ledger holds nothing."""

        class FailingStore(MemoryStore):
            async def apply(self, commands: Any, *, deadline: float | None = None) -> None:
                raise StoreError("ledger commit failed: disk I/O error")

        store = await opened(FailingStore())
        pos = terminal_of("iso87binary", store)
        reply = await pos.send(pos.build("sale"))
        assert reply.fields["39"] == "96"
        assert "38" not in reply.fields
        assert store.ledger.transactions == []

    async def test_a_ledger_past_the_deadline_is_96_and_writes_nothing(self) -> None:
        """The RRN takes longer than the request's deadline: the answer is 96, and the late commit never lands."""
        ticks = Ticks()

        class SlowStore(MemoryStore):
            async def next_rrn(self, *, deadline: float | None = None) -> str:
                rrn = await super().next_rrn(deadline=deadline)
                ticks.advance(6.0)  # the database answered, six seconds later
                return rrn

        store = await opened(SlowStore(monotonic=ticks))
        pos = terminal_of("iso87binary", store, monotonic=ticks, ledger_deadline_s=5.0)
        reply = await pos.send(pos.build("sale"))
        assert reply.fields["39"] == "96"
        assert store.ledger.transactions == []

    async def test_a_lost_race_decides_again(self) -> None:
        """A commit refused for a condition that no longer held is decided again from a fresh view, and commits."""

        class RacedOnce(MemoryStore):
            raced = False

            async def apply(self, commands: Any, *, deadline: float | None = None) -> None:
                if not self.raced:
                    self.raced = True
                    raise ConflictError("transaction 000000000001 is no longer APPROVED")
                await super().apply(commands, deadline=deadline)

        store = await opened(RacedOnce())
        pos = terminal_of("iso87binary", store)
        reply = await pos.send(pos.build("sale"))
        assert reply.fields["39"] == "00"
        assert rows(store) == [(Kind.SALE, Status.APPROVED, Reason.APPROVED)]
        assert reply.fields["37"] == "000000000001", "the RRN is the request's, whatever the attempts"

    async def test_a_sale_into_a_batch_another_host_settled_moves_to_the_open_one(self) -> None:
        """iso87 names no batch: when the ledger refuses batch 1 (settled elsewhere), the sale goes into batch 2."""
        store = await opened()
        settle: list[LedgerCommand] = [
            SettleBatch(TID, MID, 1, "balanced", True, "{}", "{}", NOW),
            AdvanceBatch(TID, MID, 2),
        ]
        await store.apply(settle)
        pos = terminal_of("iso87binary", store)  # its memory still says batch 1
        reply = await pos.do("sale")
        assert reply.fields["39"] == "00"
        assert row(store, reply.fields["37"]).batch_number == 2
        assert pos.host.terminals[TID].batch_number == 2

    async def test_a_cup_sale_naming_a_settled_batch_is_77(self) -> None:
        """CUP names its batch (60.2): a sale into one that has settled is refused 77, and recorded nowhere."""
        store = await opened()
        await store.apply([SettleBatch(TID, MID, 1, "balanced", True, "{}", "{}", NOW), AdvanceBatch(TID, MID, 2)])
        pos = terminal_of("cup", store)
        reply = await pos.do("sale", batch=1)
        assert reply.fields["39"] == "77"
        assert store.ledger.transactions == []


class TestEvents:
    async def test_a_refused_request_commits_its_event_alone(self) -> None:
        """With events on, a bad MAC writes one event to the outbox and no transaction."""
        store = await opened()
        pos = terminal_of("iso87binary", store, events=EventSink())
        other = MacKeys("x9.19", bytes(reversed(TAK)), bytes(reversed(TAK)))
        await pos.send(pos.build("sale"), mac=other)
        [event] = await store.pending_events(10)
        assert (event.tid, event.kind) == (TID, "sale")
        assert '"reason":"MAC_FAILED"' in event.payload
        assert store.ledger.transactions == []

    async def test_an_approved_sale_and_its_event_commit_together(self) -> None:
        store = await opened()
        pos = terminal_of("iso87binary", store, events=EventSink())
        reply = await pos.do("sale")
        [event] = await store.pending_events(10)
        assert f'"rrn":"{reply.fields["37"]}"' in event.payload
        assert store.commits == 1, "one commit holds the row and its event"


def frame_from_hex(dialect_name: str, text: str) -> bytes:
    """The frame body a server hands the host: hex (``#`` starts a comment) read through the dialect's FrameDecoder,
    length header and all."""
    dialect = DIALECTS[dialect_name]
    decoder = FrameDecoder(dialect.length_header, max_frame_bytes=8_192)
    hex_digits = "".join(line.partition("#")[0] for line in text.splitlines())
    decoder.receive_data(bytes.fromhex("".join(hex_digits.split())))
    frame = decoder.next_frame()
    assert frame is not NEED_DATA
    assert isinstance(frame, bytes)
    assert decoder.next_frame() is NEED_DATA, "exactly one frame"
    return frame


# specs/iso87binary.toml: binary2 length header, ASCII MTI, binary primary bitmap, ASCII fields; F2 is LLVAR
# (2 ASCII length digits). Bitmap bits 2, 3, 4 (0x70), 11 (0x20), 41, 42 (0xC0): 70 20 00 00 00 C0 00 00.
ISO87_SALE_BY_HAND = """
    004D
    30323030                                   # MTI 0200
    70 20 00 00 00 C0 00 00                    # bitmap: 2 3 4 11 41 42
    3136 34373631373339303031303130303130      # F2  LL=16 4761739001010010
    303030303030                               # F3  000000 purchase
    303030303030303031303030                   # F4  000000001000
    303030303031                               # F11 000001
    5445524D30303031                           # F41 TERM0001
    4D45524348414E5430303030303031             # F42 MERCHANT0000001
"""
# ../shared/CUP.md "Frame": binary2 length, TPDU 60 0003 0000, header 60 31 00 00 00 00, BCD MTI, bitmap;
# F11 n6 BCD, F41/F42 ASCII, F60 LLLVAR n (2-byte BCD length in digits, right-padded): 00 000001 301 = echo.
CUP_ECHO_BY_HAND = """
    0037
    60 0003 0000                               # TPDU: to NII 0003 from 0000
    60 31 00 00 00 00                          # header: magstripe application, version 31
    0820                                       # MTI 0820
    00 20 00 00 00 C0 00 10                    # bitmap: 11 41 42 60
    000001                                     # F11 000001
    5445524D30303031                           # F41 TERM0001
    4D45524348414E5430303030303031             # F42 MERCHANT0000001
    0011 000000013010                          # F60 LLL=11 00 000001 301
"""


class TestFramesByHand:
    """Frames written from the specs byte by byte, not by the project's own encoder."""

    async def test_iso87binary_sale(self) -> None:
        """A terminal without a TAK (iso87 MACs only when keyed) sells; the reply is a 0210 with 00."""
        store = await opened()
        served_by = host("iso87binary", store, terminals={TID: terminal()})
        outcome = await served_by.handle(frame_from_hex("iso87binary", ISO87_SALE_BY_HAND))
        assert outcome.reply is not None
        _envelope, reply = decode(outcome.reply, DIALECTS["iso87binary"])
        assert (reply.mti, reply.fields["39"], reply.fields["4"]) == ("0210", "00", "000000001000")
        assert rows(store) == [(Kind.SALE, Status.APPROVED, Reason.APPROVED)]

    async def test_cup_echo_swaps_the_tpdu(self) -> None:
        """An echo (0820, 60.3 = 301) is answered 0830 00 with the TPDU's addresses swapped: 60 0000 0003."""
        store = await opened()
        served_by = host("cup", store, terminals={TID: keyed_terminal("cup")})
        outcome = await served_by.handle(frame_from_hex("cup", CUP_ECHO_BY_HAND))
        assert outcome.reply is not None
        assert outcome.reply[:11] == bytes.fromhex("6000000003603100000000")
        _envelope, reply = decode(outcome.reply, DIALECTS["cup"])
        assert (reply.mti, reply.fields["39"]) == ("0830", "00")
        assert store.ledger.transactions == []


class TestMalformedFrames:
    async def test_a_truncated_field_is_a_format_error(self) -> None:
        """The MTI and the fields before the break are read: the reply is 30, and nothing is written."""
        store = await opened()
        served_by = host("iso87binary", store, terminals={TID: terminal()})
        whole = frame_from_hex("iso87binary", ISO87_SALE_BY_HAND)
        outcome = await served_by.handle(whole[:-10])  # F42 cut short
        assert outcome.reply is not None
        assert not outcome.close
        assert outcome.error is not None
        assert outcome.error.field == "42"
        _envelope, reply = decode(outcome.reply, DIALECTS["iso87binary"])
        assert (reply.mti, reply.fields["39"]) == ("0210", "30")
        assert store.ledger.transactions == []
        assert store.last_rrn == 0

    async def test_no_mti_closes(self) -> None:
        """Two bytes cannot be answered (no MTI to reply to): the connection is closed, the ledger untouched."""
        store = await opened()
        served_by = host("iso87binary", store, terminals={TID: terminal()})
        outcome = await served_by.handle(b"02")
        assert (outcome.reply, outcome.close) == (None, True)
        assert store.ledger.transactions == []


Action = tuple[str, int, int]  # (what, which sale, amount)
ACTIONS = st.lists(
    st.tuples(st.sampled_from(["sale", "void", "reversal", "refund", "settlement"]), st.integers(0, 7),
              st.integers(1, 2 * AMOUNT)),
    max_size=14,
)  # fmt: skip


async def play(actions: list[Action]) -> tuple[MemoryStore, list[tuple[str, Message]]]:
    """Run the actions as one iso87binary terminal; returns the ledger and each request's kind with its reply."""
    store = await opened()
    pos = terminal_of("iso87binary", store)
    sales: list[tuple[Message, Message]] = []
    answers: list[tuple[str, Message]] = []
    for what, which, amount in actions:
        if what == "sale":
            sale = pos.build("sale", amount=amount)
            sales.append((sale, await pos.send(sale)))
            answers.append((what, sales[-1][1]))
            continue
        if what == "settlement":
            batch_number = pos.host.terminals[TID].batch_number
            totals = batch_totals(store.ledger, (TID, MID, batch_number)).overall  # the host's own: balanced
            values = {"credit_count": totals.credit_count, "debit_count": totals.debit_count,
                      "credit_amount": totals.credit_minor, "debit_amount": totals.debit_minor}  # fmt: skip
            answers.append((what, await pos.do("settlement", processing_code="920000", batch=batch_number, **values)))
            continue
        if not sales:
            continue
        sale, sold = sales[which % len(sales)]
        named = {"rrn": sold.fields.get("37", "000000000000"), "original_stan": int(sale.fields["11"])}
        cancel_amount = amount if what == "refund" else int(sale.fields["4"])
        answers.append((what, await pos.do(what, amount=cancel_amount, **named)))
    return store, answers


@settings(max_examples=60, deadline=None)
@given(actions=ACTIONS)
def test_every_approval_is_in_the_ledger_and_nothing_is_cancelled_twice(actions: list[Action]) -> None:
    """DESIGN.md's invariants over any sequence of sales, voids, reversals, refunds and settlements: every 00 with
    an RRN is a committed approved row, a sale is cancelled at most once, and refunds add up on their sale."""
    store, answers = asyncio.run(play(actions))
    by_rrn = {record.rrn: record for record in store.ledger.transactions}
    for what, reply in answers:
        if reply.fields["39"] == "00" and "37" in reply.fields:
            recorded = by_rrn[reply.fields["37"]]
            assert (recorded.kind.value, recorded.reason) == (what, Reason.APPROVED)
    for sale in (record for record in by_rrn.values() if record.kind is Kind.SALE):
        children = [record for record in by_rrn.values() if record.original_rrn == sale.rrn]
        in_effect = [c for c in children if c.kind in (Kind.VOID, Kind.REVERSAL) and c.status is Status.APPROVED]
        assert len(in_effect) <= 1, "cancelled at most once"
        expected = {Kind.VOID: Status.VOIDED, Kind.REVERSAL: Status.REVERSED}
        if in_effect:
            assert sale.status is expected[in_effect[0].kind]
        refunds = sum(c.amount_minor for c in children if c.kind is Kind.REFUND and c.status is Status.APPROVED)
        assert sale.refunded_minor == refunds
