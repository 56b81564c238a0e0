"""Issue 14 items 2, 4 and 14 over real TCP: the attacks, performed, and shown to fail.

A sign-off cannot switch a keyed terminal's MACs off (and the ledger remembers it across a restart until an operator
resets it); a captured MAC'd sale replayed after its batch settled is a duplicate; a DUKPT KSN counter used again is
refused; a flood of sign-ons is cut off at the limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hosting import MID, TEST_PAN, TID, RunningHost, local_now, running_host
from log_audit import remember_secret

from iso_host.clock import HostClock
from iso_host.config import DEMO_TMK
from iso_host.control.commands import execute
from iso_host.control.controls import Controls
from iso_host.core.guards import SecuritySettings
from iso_host.core.scenarios import ScenarioBook
from iso_host.core.terminals import TerminalState
from iso_host.terminal.client import TerminalClient, dukpt_keys
from iso_host.wire import Message

DUKPT_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KSN_ID = "FFFF9876543210E0"  # key set id and device id; the last 21 bits (here 0000nn) count transactions
remember_secret(DUKPT_BDK)


def unmaced_sale(client: TerminalClient, amount: int = 700) -> Message:
    """A sale without MAC (the attacker has no MAC key), its STAN told apart by its amount."""
    client.mac = None
    client.state.stan = amount
    return client.build("sale", local_now(), amount=amount, pan=TEST_PAN)


async def reset_keying(host: RunningHost, tid: str) -> None:
    """The operator's reset through the live-control command, committed as the control listener commits it."""
    controls = Controls(ScenarioBook(), host.host.terminals, HostClock(local_now), str, None)
    reply = execute(controls, "reset-keying", json.dumps({"request_id": "r1", "tid": tid}).encode())
    assert reply.payload["ok"], reply.payload
    await host.store.apply((*reply.ledger, *reply.events))


class TestNoMacDowngrade:
    async def test_a_signoff_does_not_switch_macs_off_until_an_operator_resets(
        self, tmp_path: Path, ledger_url: str
    ) -> None:
        """iso87 (when-keyed): sign on, then the attacker's sign-off with only F41 is a format error (F42 is
        mandatory in 08xx); with F41 and F42 it is approved, but the un-MAC'd sale and void that follow get 63, and
        still do after a restart. Once the operator resets the terminal, an un-MAC'd sale is approved again (the
        dialect's when-keyed policy), also after a restart."""
        async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url) as host:
            async with await host.connected_client(signon=True) as client:
                tid_only = client.build("signoff", local_now())
                del tid_only.fields["42"]
                assert (await client.request(tid_only)).fields["39"] == "30"
                assert (await client.request(client.build("signoff", local_now()))).fields["39"] == "00"
                sale = await client.request(unmaced_sale(client))
                void = client.build("void", local_now(), amount=700, pan=TEST_PAN, rrn="000000000001")
                voided = await client.request(void)
            assert (sale.fields["39"], voided.fields["39"]) == ("63", "63")
            assert await host.records() == []
        async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url) as host:
            assert host.host.terminals[TID].keyed
            async with await host.connected_client(signon=False) as client:
                assert (await client.request(unmaced_sale(client))).fields["39"] == "63"
            await reset_keying(host, TID)
            async with await host.connected_client(signon=False) as client:
                assert (await client.request(unmaced_sale(client, 800))).fields["39"] == "00"
        async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url) as host:
            assert not host.host.terminals[TID].keyed
            async with await host.connected_client(signon=False) as client:
                assert (await client.request(unmaced_sale(client, 900))).fields["39"] == "00"
            assert [r.amount_minor for r in await host.records()] == [800, 900]

    async def test_mac_policy_always_for_one_terminal(self, tmp_path: Path) -> None:
        """A terminal configured with mac_policy = "always" that never signed on: its un-MAC'd sale gets 63, while
        the dialect's other terminals still transact without MAC (when-keyed)."""
        strict = TerminalState("STRICT01", MID, tmk=bytes.fromhex(DEMO_TMK), mac_policy="always")
        async with running_host(tmp_path, "iso87binary", extra_terminals={"STRICT01": strict}) as host:
            async with await host.connected_client("STRICT01", signon=False) as client:
                assert (await client.request(unmaced_sale(client))).fields["39"] == "63"
            async with await host.connected_client("TERM0002", signon=False) as client:
                assert (await client.request(unmaced_sale(client))).fields["39"] == "00"

    async def test_network_management_needs_field_42_in_every_dialect(self, tmp_path: Path, dialect_name: str) -> None:
        """An echo (0800 / 0820) without F42 is a format error, with it an echo."""
        async with running_host(tmp_path, dialect_name) as host, await host.connected_client(signon=False) as client:
            echo = client.build("echo", local_now())
            del echo.fields["42"]
            assert (await client.request(echo)).fields["39"] == "30"
            assert (await client.request(client.build("echo", local_now()))).fields["39"] == "00"


class TestReplays:
    @pytest.mark.parametrize(("window_s", "answer"), [(86_400.0, "94"), (0.0, "00")], ids=["window", "no-window"])
    async def test_a_captured_sale_replayed_after_settlement(
        self, tmp_path: Path, ledger_url: str, window_s: float, answer: str
    ) -> None:
        """A MAC'd sale captured off the wire is sent again after its batch settled: within the replay window it is
        a duplicate (94) and nothing is recorded; without the window (replay_window_s = 0) it was approved again."""
        security = SecuritySettings(replay_window_s=window_s)
        async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url, security=security) as host:
            async with await host.connected_client(signon=True) as client:
                captured = client.frame(client.build("sale", local_now(), amount=2500, pan=TEST_PAN))
                await client.send_raw(captured)
                assert (await client.receive(mac=client.mac)).fields["39"] == "00"
                settle = client.build("settlement", local_now(), processing_code="920000", debit_count=1,
                                      debit_amount=2500, credit_count=0, credit_amount=0)  # fmt: skip
                assert (await client.request(settle)).fields["39"] == "00"
                await client.send_raw(captured)
                replayed = await client.receive()
            assert replayed.fields["39"] == answer
            assert len(await host.records()) == (1 if answer == "94" else 2)

    async def test_a_settlement_maced_for_one_terminal(self, tmp_path: Path) -> None:
        """A terminal whose config adds settlement to the MAC'd kinds: once keyed, an un-MAC'd (forged) settlement
        gets 63; its own MAC'd settlement is approved."""
        async with running_host(tmp_path, "iso87binary") as host:
            host.host.terminals[TID].mac_kinds = frozenset({"settlement"})
            async with await host.connected_client(signon=True) as client:
                mac = client.mac
                values = {"processing_code": "920000", "debit_count": 0, "debit_amount": 0, "credit_count": 0,
                          "credit_amount": 0}  # fmt: skip
                forged = client.build("settlement", local_now(), **values)
                client.mac = None
                assert (await client.request(forged)).fields["39"] == "63"
                maced = client.build("settlement", local_now(), **values)
                assert mac is not None
                response = await client.request(maced, mac=mac)
                assert "128" in maced.fields  # F74 and up: the MAC goes in F128
            assert response.fields["39"] == "00"

    @pytest.mark.parametrize("dialect", ["iso87binary", "iso87ascii-dukpt"])
    async def test_a_dukpt_ksn_used_again_is_refused(self, tmp_path: Path, dialect: str) -> None:
        """A DUKPT terminal's KSN counter must go up: the same frame again, and a fresh frame under an older KSN
        (both MACs verify), get 63 (KSN_REPLAYED) and are not recorded; the next counter is approved."""
        terminal = TerminalState("DUKPTT01", MID, bdk=DUKPT_BDK)
        async with running_host(tmp_path, dialect, extra_terminals={"DUKPTT01": terminal}) as host:
            async with await host.connected_client("DUKPTT01", signon=False) as client:

                def framed(counter: int) -> bytes:
                    ksn = bytes.fromhex(f"{KSN_ID}{counter:04X}")
                    request = client.build("sale", local_now(), amount=900, pan=TEST_PAN)
                    request.fields["53"] = ksn.hex().upper()
                    return client.frame(request, dukpt_keys(DUKPT_BDK, ksn)[1])

                answers = []
                first = framed(2)
                for frame in (first, first, framed(1), framed(2), framed(3)):
                    await client.send_raw(frame)
                    answers.append((await client.receive()).fields["39"])
            assert answers == ["00", "63", "63", "63", "00"]
            assert len(await host.records()) == 2


class TestSignonFlood:
    async def test_signons_over_the_limit_are_refused(self, tmp_path: Path, ledger_url: str) -> None:
        """20 sign-ons of one terminal in a minute with a limit of 5: the first 5 are approved, the other 15 get 65
        (SIGNON_LIMITED) and issue no keys, so the keys of the 5th still MAC a sale; another terminal signs on."""
        security = SecuritySettings(signons_per_minute=5)
        async with running_host(tmp_path, "iso87binary", ledger_url=ledger_url, security=security) as host:
            async with await host.connected_client(signon=False) as client:
                answers = []
                for _ in range(20):
                    request = client.build("signon", local_now())
                    response = await client.request(request)
                    answers.append(response.fields["39"])
                    if response.fields["39"] == "00":
                        keys = client.accept_signon(response, request, bytes.fromhex(DEMO_TMK))
                        remember_secret(keys.tpk, keys.tak, keys.tdk)
                    else:
                        assert "48" not in response.fields
                sale = await client.request(client.build("sale", local_now(), amount=100, pan=TEST_PAN))
            assert answers == ["00"] * 5 + ["65"] * 15
            assert sale.fields["39"] == "00"
            async with await host.connected_client("TERM0002", signon=True):
                pass
