"""iso87 completions over TCP on both ledgers: a financial advice (0220) that names an authorisation (0100) in F90 is
its completion, under CUP's completion rules; refusals (unknown authorisation, over the tolerance, a second
completion), the reversal of a completion, and settlement counting completions as debits. The first frames are
written by hand from ISO 8583:1987 in the iso87binary layout; the rest are the terminal's actions."""

from __future__ import annotations

from pathlib import Path

from hosting import exchange_bodies, running_host, terminal_action

from iso_host.ledger.reports import verify
from iso_host.wire import Message, decode, load_dialect

ISO87 = load_dialect("iso87binary")
TERMINAL = b"TERM0002" b"MERCHANT0000001"  # F41, F42; TERM0002 has a TMK and no MAC key: nothing is MAC'd
CARD = b"16" b"4761739001010010"  # F2 LLVAR n..19, ASCII length
CODES = {name: ISO87.response_code(name) for name in ("APPROVED", "ORIGINAL_NOT_FOUND", "AMOUNT_MISMATCH",
                                                      "ALREADY_CANCELLED")}  # fmt: skip


# fmt: off
def authorisation(stan: bytes, amount: bytes, sent: bytes) -> bytes:
    """0100 with F2, F3 000000, F4, F7 (MMDDhhmmss), F11, F41, F42: bitmap 72 20 00 00 00 C0 00 00 (bits 2, 3, 4,
    7 | 11 | 41, 42)."""
    return b"0100" + bytes.fromhex("7220000000C00000") + CARD + b"000000" + amount + sent + stan + TERMINAL


def completion(stan: bytes, amount: bytes, original_stan: bytes, original_sent: bytes) -> bytes:
    """0220 naming its authorisation in F90, by hand from ISO 8583:1987: bit 1 of the primary bitmap announces the
    secondary one (F2 F220... instead of 7220...); the secondary bitmap 00 00 00 40 00 00 00 00 sets bit 90 (the
    26th of 65-128: the second bit of its fourth byte). F90 is n42: the original MTI 0100, its STAN (n6), its F7
    (n10), the acquiring and forwarding institution IDs (n11 each, zeros here)."""
    return (
        b"0220" + bytes.fromhex("F220000000C00000" "0000004000000000") + CARD + b"000000" + amount + b"0310101500"
        + stan + TERMINAL + b"0100" + original_stan + original_sent + b"00000000000" b"00000000000"
    )
# fmt: on


async def ask(address: tuple[str, int], *bodies: bytes) -> list[Message]:
    return [decode(reply, ISO87)[1] for reply in await exchange_bodies(address, *bodies)]


async def test_a_completion_by_hand_and_its_refusals(tmp_path: Path, ledger_url: str) -> None:
    async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url) as host:
        answers = await ask(
            host.address,
            authorisation(b"000501", b"000000001000", b"0310101000"),
            authorisation(b"000502", b"000000001000", b"0310101001"),
            completion(b"000503", b"000000001100", b"000501", b"0310101000"),  # 10 % over: within 15 %
            completion(b"000504", b"000000001000", b"000501", b"0310101000"),  # the same authorisation again
            completion(b"000505", b"000000001000", b"000999", b"0310101000"),  # no such authorisation
            completion(b"000506", b"000000001200", b"000502", b"0310101001"),  # 20 % over
        )
        records = await host.records()
    assert [(a.mti, a.fields["39"]) for a in answers] == [
        ("0110", CODES["APPROVED"]), ("0110", CODES["APPROVED"]), ("0230", CODES["APPROVED"]),
        ("0230", CODES["ALREADY_CANCELLED"]), ("0230", CODES["ORIGINAL_NOT_FOUND"]),
        ("0230", CODES["AMOUNT_MISMATCH"]),
    ]  # fmt: skip
    rows = {r.stan: (r.kind.value, r.status.value, r.amount_minor, r.original_rrn) for r in records}
    first_auth = next(r for r in records if r.stan == "000501")
    assert rows["000503"] == ("completion", "APPROVED", 1_100, first_auth.rrn)
    assert rows["000501"][:2] == ("preauth", "APPROVED"), "the authorisation's own row never changes"
    assert [rows[s][1] for s in ("000504", "000506")] == ["DECLINED", "DECLINED"]
    assert verify(ledger_url) == []


class TestTerminal:
    """`iso-host terminal --dialect iso87binary preauth | complete | reverse | settle`, as actions."""

    async def act(self, address: tuple[str, int], state: Path, *argv: str) -> Message:
        return await terminal_action(address, "iso87binary", state, *argv)

    async def test_completions_reversal_and_settlement(self, tmp_path: Path, ledger_url: str) -> None:
        state = tmp_path / "terminal.json"
        async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url) as host:
            first = await self.act(host.address, state, "preauth", "10.00")
            second = await self.act(host.address, state, "preauth", "20.00")
            completed = await self.act(host.address, state, "complete", "11.00", "--stan", first.fields["11"])
            taken = await self.act(host.address, state, "complete", "20.00", "--auth-code", second.fields["38"])
            reversed_ = await self.act(host.address, state, "reverse", "--stan", taken.fields["11"])
            again = await self.act(host.address, state, "complete", "19.00", "--stan", second.fields["11"])
            settlement = await self.act(host.address, state, "settle")
            records = await host.records()
        assert [r.fields["39"] for r in (first, second, completed, taken, reversed_, again)] == ["00"] * 6
        assert completed.mti == "0230"
        assert (settlement.mti, settlement.fields["39"]) == ("0510", "00"), "balanced: the terminal's totals agree"
        assert (settlement.fields["76"], settlement.fields["88"]) == ("0000000002", "0000000000003000"), (
            "two completions are the debits (11.00 + 19.00); the reversed one counts nowhere"
        )
        kinds = sorted((r.kind.value, r.status.value, r.amount_minor) for r in records if r.kind.value != "preauth")
        assert kinds == [("completion", "APPROVED", 1_100), ("completion", "APPROVED", 1_900),
                         ("completion", "REVERSED", 2_000), ("reversal", "APPROVED", 2_000)]  # fmt: skip
        assert verify(ledger_url) == []
