"""A CUP terminal's parameter download (POS参数传递, 0800 60.3 = 360, or 364) over TCP: F62 of the 0810 read by the
tags and lengths of specs/data/cup_terminal_params.toml, a terminal's own merchant name, and the terminal action."""

from __future__ import annotations

from pathlib import Path

import pytest
from hosting import MID, exchange_bodies, running_host, terminal_action

from iso_host.config import DEMO_TMK
from iso_host.core.terminals import TerminalState
from iso_host.wire import Message, decode, load_dialect
from iso_host.wire.downloads import load_download
from iso_host.wire.parameters import ParameterSet

CUP = load_dialect("cup")
SHIPPED = load_download("terminal_params", Path(__file__).parents[2] / "specs" / "data" / "cup_terminal_params.toml")


# fmt: off
def parameter_download(code: str, tid: bytes = b"TERM0001") -> bytes:
    """0800 60.3 = ``code`` written by hand from CUP.md ("Frame", "Field encodings", "Network management"):
    TPDU 60 0003 0000 and header 60 31 00 00 00 00; MTI 0800 in BCD; bitmap 00 20 00 00 00 C0 00 10 (fields 11,
    41, 42, 60); F11 000001 in BCD; F41 and F42 in ASCII; F60 LLLVAR n: the BCD length 0011 (digits), then 60.1 00,
    60.2 batch 000001, 60.3 = code, and a 0 nibble to fill the byte."""
    return (
        bytes.fromhex("6000030000" "603100000000" "0800" "0020000000C00010" "000001")
        + tid + MID.encode("ascii")
        + bytes.fromhex("0011" f"00000001{code}0")
    )
# fmt: on


async def ask(address: tuple[str, int], *bodies: bytes) -> list[Message]:
    return [decode(reply, CUP)[1] for reply in await exchange_bodies(address, *bodies)]


def parameters(answer: Message) -> dict[str, str]:
    assert isinstance(SHIPPED, ParameterSet)
    return {parameter.tag: value for parameter, value in SHIPPED.decode(bytes.fromhex(answer.fields["62"]))}


@pytest.mark.parametrize("code", ["360", "364"])
async def test_the_0810_carries_the_files_parameters(tmp_path: Path, code: str) -> None:
    async with running_host(tmp_path, "cup") as host:
        (answer,) = await ask(host.address, parameter_download(code))
        rows = host.ledger_rows()
    assert (answer.mti, answer.fields["39"], answer.fields["60"]) == ("0810", "00", f"00000001{code}")
    assert isinstance(SHIPPED, ParameterSet)
    assert len(answer.fields["62"]) == 2 * SHIPPED.size() == 2 * 177
    got = parameters(answer)
    assert got == {parameter.tag: parameter.value for parameter in SHIPPED.parameters}
    assert (got["12"], got["19"], got["22"], got["23"], got["27"], got["38"]) == (
        "60", "15", "ISO-HOST TEST MERCHANT", "3", "2", "000000500000"
    )  # fmt: skip
    assert rows == [], "a parameter download is not a transaction"


async def test_a_terminal_with_its_own_merchant_name_gets_it(tmp_path: Path) -> None:
    own = TerminalState("TERM0003", MID, tmk=bytes.fromhex(DEMO_TMK), merchant_name="上海浦东测试商户")
    async with running_host(tmp_path, "cup", extra_terminals={own.tid: own}) as host:
        mine, default = await ask(host.address, parameter_download("360", b"TERM0003"), parameter_download("360"))
    assert parameters(mine)["22"] == "上海浦东测试商户"
    assert bytes.fromhex(mine.fields["62"]).count("上海浦东测试商户".encode("gbk")) == 1, "GBK, as CUP terminals print"
    assert parameters(default)["22"] == "ISO-HOST TEST MERCHANT"


async def test_the_terminal_action_prints_what_it_got(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_host(tmp_path, "cup") as host:
        response = await terminal_action(host.address, "cup", tmp_path / "t.json", "parameter-download")
    printed = capsys.readouterr().out.splitlines()
    assert response.fields["39"] == "00"
    assert "22 merchant name: ISO-HOST TEST MERCHANT" in printed
    assert "38 refund limit per transaction, minor units: 000000500000" in printed
    assert len(printed) == 21
