"""Terminal security over real TCP: sign-on, MACs both ways, PINs, DUKPT, keys that survive a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hosting import MID, TEST_PAN, TID, local_now, running_host
from log_audit import remember_secret

from iso_host.config import DEMO_TMK
from iso_host.core.terminals import TerminalState, WorkingKeys
from iso_host.security import derive_ipek
from iso_host.terminal.client import MacKeys, dukpt_keys, pin_block_field

DUKPT_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KSN = bytes.fromhex("FFFF9876543210E00001")
STATIC_TAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
STATIC_TPK = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
CARDS = {TEST_PAN: "1234"}
remember_secret(DUKPT_BDK, STATIC_TAK, STATIC_TPK)


def flipped_mac(mac: MacKeys) -> MacKeys:
    wrong = bytes([mac.request_key[0] ^ 0x02]) + mac.request_key[1:]
    return MacKeys(mac.algorithm, wrong, mac.response_key)


class TestSignOnAndMac:
    async def test_signon_then_maced_sale(self, tmp_path: Path, dialect_name: str) -> None:
        """After sign-on the terminal's sale carries a MAC, is approved, and the response MAC verifies."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client(signon=True) as client:
                assert client.mac is not None
                request = client.build("sale", local_now(), amount=2500, pan=TEST_PAN)
                response = await client.request(request)  # raises if the response MAC is missing or wrong
                assert "64" in request.fields
                assert response.fields["39"] == "00"
                assert "64" in response.fields
            assert len(host.ledger_rows()) == 1

    async def test_wrong_mac_is_refused(self, tmp_path: Path, dialect_name: str) -> None:
        """A MAC computed with the wrong key gets the dialect's MAC failure code and nothing is recorded."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client(signon=True) as client:
                assert client.mac is not None
                request = client.build("sale", local_now(), amount=2500, pan=TEST_PAN)
                await client.send_raw(client.frame(request, flipped_mac(client.mac)))
                response = await client.receive()
            assert response.fields["39"] == host.dialect.response_code("MAC_FAILED")
            assert response.fields["39"] == ("A0" if dialect_name == "cup" else "63")
            assert "64" not in response.fields
            assert host.ledger_rows() == []

    async def test_missing_mac_after_signon_is_refused(self, tmp_path: Path, dialect_name: str) -> None:
        """Once a terminal holds a MAC key, a financial request without MAC is refused."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client(signon=True) as client:
                assert client.mac is not None
                client.mac = None  # the terminal "forgets" to MAC
                request = client.build("sale", local_now(), amount=100, pan=TEST_PAN)
                response = await client.request(request)
                assert "64" not in request.fields
            assert response.fields["39"] == host.dialect.response_code("MAC_FAILED")
            assert host.ledger_rows() == []

    async def test_cup_sale_before_signon(self, tmp_path: Path) -> None:
        """In cup a sale before sign-on gets 58 (sign on first) and nothing is recorded."""
        async with running_host(tmp_path, "cup") as host:
            async with await host.connected_client(signon=False) as client:
                response = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert response.fields["39"] == "58"
            assert host.ledger_rows() == []

    async def test_signoff_ends_the_session(self, tmp_path: Path) -> None:
        """After a cup sign-off (0820 60.3=002) the next sale needs a new sign-on."""
        async with running_host(tmp_path, "cup") as host:
            async with await host.connected_client() as client:
                assert (await client.request(client.build("signoff", local_now()))).fields["39"] == "00"
                response = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert response.fields["39"] == "58"

    async def test_iso87_tmk_only_terminal_needs_no_mac(self, tmp_path: Path) -> None:
        """In iso87 a terminal with only a TMK transacts without sign-on and without MAC (generic tools)."""
        async with running_host(tmp_path, "iso87binary") as host:
            async with await host.connected_client(signon=False) as client:
                response = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert response.fields["39"] == "00"
            assert "64" not in response.fields

    @pytest.mark.parametrize("layout", ["001", "003", "004"])
    async def test_cup_signon_layouts(self, tmp_path: Path, layout: str) -> None:
        """Each CUP key block layout unwraps at the terminal with matching check values and MACs a sale."""
        async with running_host(tmp_path, "cup") as host:
            async with await host.connected_client(signon=False) as client:
                request = client.build("signon", local_now())
                request.fields["60"] = request.fields["60"][:8] + layout
                response = await client.request(request)
                keys = client.accept_signon(response, request, bytes.fromhex(DEMO_TMK))
                assert len(bytes.fromhex(response.fields["62"])) == {"001": 24, "003": 40, "004": 60}[layout]
                assert (keys.tdk is not None) == (layout == "004")
                sale = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert sale.fields["39"] == "00"

    async def test_keys_survive_a_restart(self, tmp_path: Path) -> None:
        """Working keys are kept (wrapped under the TMK) in the ledger: after a restart the old MAC key works."""
        async with running_host(tmp_path, "cup") as host, await host.connected_client() as client:
            mac, state = client.mac, client.state
        async with running_host(tmp_path, "cup") as restarted:
            client = restarted.client()
            client.state, client.mac = state, mac
            await client.connect(*restarted.address)
            async with client:
                response = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert response.fields["39"] == "00"
        with sqlite3.connect(tmp_path / "cup.db") as connection:
            stored = connection.execute("SELECT tak_under_tmk FROM terminals WHERE tid = ?", (TID,)).fetchone()[0]
        assert mac is not None
        assert mac.request_key.hex().upper() not in stored, "the ledger must hold the TAK wrapped, never in clear"


class TestPin:
    async def test_right_and_wrong_pin(self, tmp_path: Path, dialect_name: str) -> None:
        """The right PIN is approved; a wrong one gets 55 and is recorded as a declined sale."""
        async with running_host(tmp_path, dialect_name, cards=CARDS) as host:
            async with await host.connected_client(signon=True) as client:
                tpk = client.state.keys(bytes.fromhex(DEMO_TMK))
                assert tpk is not None
                pin_format = host.dialect.security.pin_block_format
                results = []
                for pin in ("1234", "9999"):
                    request = client.build("sale", local_now(), amount=700, pan=TEST_PAN)
                    request.fields["52"] = pin_block_field(tpk[0], pin, TEST_PAN, pin_format)
                    remember_secret(request.fields["52"])
                    results.append((await client.request(request)).fields["39"])
            assert results == ["00", "55"]
            rows = host.ledger_rows()
            assert [(row["status"], row["reason"]) for row in rows] == [
                ("APPROVED", "APPROVED"), ("DECLINED", "PIN_INCORRECT")
            ], "a declined sale is recorded as declined"

    async def test_malformed_pin_block(self, tmp_path: Path) -> None:
        """A PIN block that does not decode is a format error."""
        async with running_host(tmp_path, "iso87binary", cards=CARDS) as host:
            async with await host.connected_client(signon=True) as client:
                request = client.build("sale", local_now(), amount=700, pan=TEST_PAN)
                request.fields["52"] = "FFFFFFFFFFFFFFFF"
                response = await client.request(request)
            assert response.fields["39"] == "30"
            assert host.ledger_rows() == []


class TestStaticAndDukpt:
    async def test_static_keys_without_signon_in_cup(self, tmp_path: Path) -> None:
        """A cup terminal with static keys and require_signon = false transacts without signing on."""
        lab = TerminalState(
            "LABTERM1", MID, static_keys=WorkingKeys(STATIC_TPK, STATIC_TAK[:8]), require_signon=False
        )
        async with running_host(tmp_path, "cup", extra_terminals={"LABTERM1": lab}) as host:
            async with await host.connected_client("LABTERM1", signon=False) as client:
                client.mac = MacKeys("cup-ecb", STATIC_TAK[:8], STATIC_TAK[:8])
                response = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert response.fields["39"] == "00"

    # iso87ascii-dukpt, not iso87ascii: iso87ascii's F53 is ISO's n16, too short for the 20 hex digits of a KSN.
    @pytest.mark.parametrize("dialect", ["iso87binary", "iso87ascii-dukpt"])
    async def test_dukpt_terminal(self, tmp_path: Path, dialect: str) -> None:
        """A DUKPT terminal sends its KSN; PIN and MAC keys derived per KSN are accepted, a bad MAC is not."""
        terminal = TerminalState("DUKPTT01", MID, bdk=DUKPT_BDK)
        async with running_host(tmp_path, dialect, cards=CARDS, extra_terminals={"DUKPTT01": terminal}) as host:
            async with await host.connected_client("DUKPTT01", signon=False) as client:
                answers = []
                for mac_ok in (True, False):
                    pin_key, mac = dukpt_keys(DUKPT_BDK, KSN)
                    request = client.build("sale", local_now(), amount=900, pan=TEST_PAN)
                    request.fields["53"] = KSN.hex().upper()
                    request.fields["52"] = pin_block_field(pin_key, "1234", TEST_PAN, 0)
                    remember_secret(request.fields["52"], pin_key, mac.request_key)
                    response = await client.request(request, mac=mac if mac_ok else flipped_mac(mac))
                    answers.append(response.fields["39"])
            assert answers == ["00", "63"]
            assert len(host.ledger_rows()) == 1
            assert derive_ipek(DUKPT_BDK, KSN).hex().upper() == "6AC292FAA1315B4D858AB3A3D7D5933A"
