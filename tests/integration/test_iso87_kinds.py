"""The iso87 kinds beyond sale/void/refund/reversal, over TCP on both ledgers, with frames written by hand from
ISO 8583:1987: an authorisation (0100) held as a pre-auth, a financial advice (0220) recorded as a sale, a
reversal advice (0420) of it, and a key change (0800 F70 = 161)."""

from __future__ import annotations

from pathlib import Path

from hosting import exchange_bodies, running_host

from iso_host.wire import Message, decode, load_dialect

ISO87 = load_dialect("iso87binary")
TERMINAL = b"TERM0002" b"MERCHANT0000001"  # F41, F42; TERM0002 has a TMK and no MAC key: nothing is MAC'd
CARD = b"16" b"4761739001010010"  # F2 LLVAR n..19, ASCII length


# fmt: off
def financial(mti: bytes, stan: bytes, amount: bytes = b"000000001000") -> bytes:
    """0100 / 0220 with F2, F3 000000, F4, F11, F41, F42 (binary bitmap 7020000000C00000)."""
    return mti + bytes.fromhex("7020000000C00000") + CARD + b"000000" + amount + stan + TERMINAL


REVERSAL_ADVICE = (  # 0420 naming its original by F11 (the advice's STAN): F4, F11, F41, F42
    b"0420" + bytes.fromhex("1020000000C00000") + b"000000000500" + b"000402" + TERMINAL
)
KEY_CHANGE = (  # 0800 with F70 = 161; bit 1 announces the secondary bitmap: F7, F11, F41, F42 | F70
    b"0800" + bytes.fromhex("8220000000C00000" "0400000000000000") + b"1202103000" + b"000403" + TERMINAL + b"161"
)
# fmt: on


async def ask(address: tuple[str, int], *bodies: bytes) -> list[Message]:
    return [decode(reply, ISO87)[1] for reply in await exchange_bodies(address, *bodies)]


async def test_authorisation_advice_reversal_advice_and_key_change(tmp_path: Path, ledger_url: str) -> None:
    async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url) as host:
        authorised, advised, reversed_, keys = await ask(
            host.address, financial(b"0100", b"000401"), financial(b"0220", b"000402", b"000000000500"),
            REVERSAL_ADVICE, KEY_CHANGE,
        )  # fmt: skip
        records = sorted(await host.records(), key=lambda r: r.rrn)
    assert (authorised.mti, authorised.fields["39"], len(authorised.fields["38"])) == ("0110", "00", 6)
    assert (advised.mti, advised.fields["39"]) == ("0230", "00")
    assert (reversed_.mti, reversed_.fields["39"]) == ("0430", "00")
    assert (keys.mti, keys.fields["39"]) == ("0810", "00")
    assert len(keys.fields["48"]) == 2 * 38, "a new TPK and TAK with their check values, as at sign-on"
    rows = [(r.kind.value, r.mti, r.amount_minor, r.status.value) for r in records]
    assert rows == [
        ("preauth", "0100", 1000, "APPROVED"),
        ("sale", "0220", 500, "REVERSED"),
        ("reversal", "0420", 500, "APPROVED"),
    ]
