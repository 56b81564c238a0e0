"""Balance inquiry over real TCP: the kind added by one flow module, one KINDS row and its spec entries."""

from __future__ import annotations

from pathlib import Path

from hosting import TEST_PAN, exchange_bodies, local_now, running_host
from processes import serving, terminal

from iso_host.core.test_cards import TestCard
from iso_host.wire import decode, load_dialect

OTHER_PAN = "6222021234567890"

# fmt: off
# ISO 8583:1987 balance inquiry, 0100 with F3 = 31 (balance inquiry) 00 (default account) 00, written by hand from
# the standard: F2 LLVAR n..19 (ASCII length), F3 n6, F11 n6, F41 ans8, F42 ans15. TERM0002 has no MAC key, so
# no F64. Binary bitmap 6020000000C00000: fields 2, 3, 11, 41, 42.
ISO87BINARY_BALANCE_BY_HAND = (
    b"0100"
    + bytes.fromhex("6020000000C00000")
    + b"16" b"4761739001010010"  # F2
    + b"310000"  # F3
    + b"000321"  # F11
    + b"TERM0002"  # F41
    + b"MERCHANT0000001"  # F42
)
# fmt: on


async def test_a_hand_written_iso87_inquiry_gets_the_balance_in_f54(tmp_path: Path) -> None:
    """0110 with 00 and F54 = account 00, available balance 02, currency 840, credit, 12 digits; nothing recorded."""
    cards = {TEST_PAN: TestCard(balance_minor=12_345)}
    async with running_host(tmp_path, "iso87binary", test_cards=cards) as host:
        (reply,) = await exchange_bodies(host.address, ISO87BINARY_BALANCE_BY_HAND)
        rows = host.ledger_rows()
    _, response = decode(reply, load_dialect("iso87binary"))
    assert response.mti == "0110"
    assert response.fields["39"] == "00"
    assert response.fields["54"] == "0002840C000000012345"
    assert response.fields["11"] == "000321"
    assert rows == [], "a balance inquiry moves nothing and is not a ledger transaction"


async def test_every_dialect_answers_an_inquiry_from_its_template(tmp_path: Path, dialect_name: str) -> None:
    """The terminal's template, signed on and MAC'd where the dialect asks: the balance comes back; a lost card
    is declined as a sale of it would be."""
    cards = {TEST_PAN: TestCard(balance_minor=500), OTHER_PAN: TestCard(status="lost", balance_minor=900)}
    async with running_host(tmp_path, dialect_name, test_cards=cards) as host:
        async with await host.connected_client() as client:
            known = await client.request(client.build("balance", local_now(), pan=TEST_PAN))
            lost = await client.request(client.build("balance", local_now(), pan=OTHER_PAN))
        rows = host.ledger_rows()
    currency = "156" if dialect_name == "cup" else "840"
    assert (known.fields["39"], known.fields["54"]) == ("00", f"0002{currency}C000000000500")
    assert lost.fields["39"] == host.dialect.response_code("LOST_CARD")
    assert "54" not in lost.fields
    assert rows == []


async def test_a_card_without_a_balance_is_approved_without_f54(tmp_path: Path) -> None:
    async with running_host(tmp_path, "cup") as host, await host.connected_client() as client:
        response = await client.request(client.build("balance", local_now(), pan=TEST_PAN))
    assert response.fields["39"] == "00"
    assert "54" not in response.fields


def test_the_terminal_command_asks_for_a_balance(tmp_path: Path) -> None:
    """`iso-host terminal balance` against `iso-host serve --config` with a card's balance: F54, exit 0."""
    config = tmp_path / "host.toml"
    config.write_text('[[terminals]]\ntid = "TERM0001"\nmid = "MERCHANT0000001"\n\n'
                      f'[[cards]]\npan = "{TEST_PAN}"\nbalance = 250.00\n')  # fmt: skip
    with serving(tmp_path, "--config", str(config)) as (address, _):
        result = terminal(tmp_path, address, "balance")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0002840C000000025000" in result.stdout
