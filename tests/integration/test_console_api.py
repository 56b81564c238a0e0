"""The web console's JSON API, SSE stream and metrics, against a real ``iso-host serve`` with a real HTTP client.

The sales and voids are iso87binary frames written by hand from ISO 8583:1987 (2-byte length, binary bitmap, ASCII
fields), sent over TCP; what the console shows of them is read over HTTP. Bad input to the API gets a 4xx with a JSON
error naming the field, and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from processes import ISO_HOST
from test_workers import CARD, HostLog, sale, void
from waiting import until_blocking

from iso_host.wire import Message, decode, load_dialect

ISO87 = load_dialect("iso87binary")
CONFIG = f"""
[http]
control = true

[[terminals]]
tid = "TERM0002"
mid = "MERCHANT0000001"

[[cards]]
pan = "{CARD}"
balance = "500.00"
"""


@contextmanager
def serving(tmp_path: Path, *extra: str, config: str = CONFIG) -> Iterator[tuple[tuple[str, int], str, HostLog]]:
    """``iso-host serve`` with its console on a free port: the ISO 8583 address, the console's URL, the log."""
    path = tmp_path / "host.toml"
    path.write_text(config)
    process = subprocess.Popen(
        [*ISO_HOST, "serve", "--port", "0", "--log-format", "json", "--config", str(path), "--http", "127.0.0.1:0",
         *extra],
        cwd=tmp_path, env=dict(os.environ, HOME=str(tmp_path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    log = HostLog(process)
    try:
        until_blocking(lambda: log.find_starting("console on ") is not None, what="the console listening", timeout_s=60)
        listening = log.find_starting("listening on ")
        console = log.find_starting("console on ")
        assert listening is not None
        assert console is not None
        host, port = str(listening["event"]).removeprefix("listening on ").rsplit(":", 1)
        yield (host, int(port)), str(console["event"]).removeprefix("console on "), log
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)
        log.thread.join(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


async def exchange(address: tuple[str, int], body: bytes) -> Message:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(len(body).to_bytes(2, "big") + body)
        size = int.from_bytes(await reader.readexactly(2), "big")
        return decode(await reader.readexactly(size), ISO87)[1]
    finally:
        writer.close()


@asynccontextmanager
async def client(url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=url) as session:
        yield session


async def get(session: aiohttp.ClientSession, path: str) -> Any:
    async with session.get(path) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_sales_and_a_void_appear_field_by_field_masked(tmp_path: Path) -> None:
    with serving(tmp_path) as (address, url, _):
        async with client(url) as session:
            sold = await exchange(address, sale(b"000001", b"000000001500"))
            assert sold.fields["39"] == "00"
            voided = await exchange(address, void(b"000002", b"000000001500", sold.fields["37"].encode()))
            assert voided.fields["39"] == "00"
            rows = (await get(session, "/api/transactions"))["transactions"]
            assert [(r["kind"], r["code"], r["meaning"]) for r in rows][:2] == [
                ("void", "00", "Approved"), ("sale", "00", "Approved")]  # fmt: skip
            assert rows[1]["pan"] == "476173******0010"
            assert rows[1]["amount"] == "15.00"
            assert rows[1]["rrn"] == sold.fields["37"]
            detail = await get(session, f"/api/transactions/{rows[1]['id']}")
            request_fields = {f["id"]: f for f in detail["request"]["fields"]}
            assert request_fields["2"]["value"] == "476173******0010"
            assert request_fields["4"]["name"]  # named from the dialect's spec
            assert {f["id"]: f["value"] for f in detail["response"]["fields"]}["39"] == "00"
            assert CARD not in json.dumps(detail), "no clear PAN leaves the console"
            filtered = (await get(session, "/api/transactions?kind=void"))["transactions"]
            assert [r["kind"] for r in filtered] == ["void"]
            terminals = {t["tid"]: t for t in (await get(session, "/api/terminals"))["terminals"]}
            assert terminals["TERM0002"]["today"] == {"requests": 2, "approved": 2, "declined": 0}
            assert terminals["TERM0002"]["connected"] is False  # each exchange closed its connection
            cards = (await get(session, "/api/cards"))["result"]["cards"]
            assert [(c["pan"], c["balance"]) for c in cards] == [("476173******0010", "500.00")]


async def test_the_stream_delivers_rows_as_sales_arrive(tmp_path: Path) -> None:
    with serving(tmp_path) as (address, url, _):
        async with client(url) as session, session.get("/api/stream") as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert (await stream.content.readline()).startswith(b": connected")
            await exchange(address, sale(b"000011", b"000000000100"))
            event = None
            async with asyncio.timeout(10):
                while (line := await stream.content.readline()) != b"":
                    text = line.decode().strip()
                    if text.startswith("event: "):
                        event = text.removeprefix("event: ")
                    elif text.startswith("data: ") and event == "transactions":
                        rows = json.loads(text.removeprefix("data: "))
                        assert rows[0]["stan"] == "000011"
                        assert rows[0]["pan"] == "476173******0010"
                        break


async def test_a_scenario_added_over_http_declines_the_next_sale_and_removing_it_ends_that(tmp_path: Path) -> None:
    with serving(tmp_path) as (address, url, _):
        async with client(url) as session:
            async with session.post("/api/scenarios", json={"tid": "TERM0002", "respond": "51"}) as response:
                assert response.status == 200, await response.text()
            listed = (await get(session, "/api/scenarios"))["result"]["scenarios"]
            assert [s["respond"] for s in listed] == ["51"]
            assert (await exchange(address, sale(b"000021", b"000000000100"))).fields["39"] == "51"
            async with session.delete("/api/scenarios/0") as response:
                assert response.status == 200, await response.text()
            assert (await exchange(address, sale(b"000022", b"000000000100"))).fields["39"] == "00"
            async with session.post("/api/clock", json={"advance_s": 3600}) as response:
                assert (await response.json())["ok"] is True
            assert (await get(session, "/api/clock"))["offset_s"] == 3600


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        pytest.param("POST", "/api/terminals/NOPE0001/disable", None, 404, "tid", id="unknown-terminal"),
        pytest.param("POST", "/api/scenarios", {"respond": "ABC"}, 400, "scenario.respond", id="malformed-scenario"),
        pytest.param("POST", "/api/scenarios", [1, 2], 400, "body", id="not-an-object"),
        pytest.param("POST", "/api/scenarios", "x" * 70_000, 413, "body", id="oversized-body"),
        pytest.param("DELETE", "/api/scenarios/7", None, 400, "index", id="no-such-scenario"),
        pytest.param("GET", "/api/transactions/999", None, 404, "id", id="unknown-transaction"),
        pytest.param("GET", "/api/transactions?limit=x", None, 400, "limit", id="bad-limit"),
    ],
)  # fmt: skip
async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    tmp_path: Path, method: str, path: str, body: Any, status: int, field: str
) -> None:
    with serving(tmp_path) as (_, url, _):
        async with client(url) as session:
            before = await state(session)
            data = body if isinstance(body, str) else None
            async with session.request(method, path, json=None if data is not None or body is None else body,
                                       data=data) as response:  # fmt: skip
                assert response.status == status, await response.text()
                error = await response.json()
            assert error["field"] == field, error
            assert error["error"]
            assert await state(session) == before


async def state(session: aiohttp.ClientSession) -> Any:
    """What a bad request must leave as it was: the scenarios and the terminals."""
    return ((await get(session, "/api/scenarios"))["result"], (await get(session, "/api/terminals"))["terminals"])


async def test_beyond_loopback_changes_need_the_token_printed_at_start(tmp_path: Path) -> None:
    with serving(tmp_path, "--http", "0.0.0.0:0") as (_, url, log):
        console_line = log.find_starting("console on ")
        assert console_line is not None
        token = str(console_line["token"])
        local = url.replace("0.0.0.0", "127.0.0.1")
        async with client(local) as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with session.post("/api/scenarios", json={"respond": "51"}, headers=headers) as response:
                    assert response.status == 401
                    assert (await response.json())["field"] == "Authorization"
            assert (await get(session, "/api/scenarios"))["result"]["scenarios"] == []
            async with session.post("/api/scenarios", json={"respond": "51"},
                                    headers={"Authorization": f"Bearer {token}"}) as response:  # fmt: skip
                assert response.status == 200, await response.text()


async def test_a_read_only_console_refuses_changes(tmp_path: Path) -> None:
    config = CONFIG.replace("control = true", "control = false")
    with serving(tmp_path, config=config) as (_, url, _):
        async with client(url) as session:
            async with session.post("/api/scenarios", json={"respond": "51"}) as response:
                assert response.status == 403
                assert (await response.json())["field"] == "control"
            assert (await get(session, "/api/info"))["control"] is False


async def test_metrics_health_and_readiness(tmp_path: Path) -> None:
    with serving(tmp_path) as (address, url, _):
        await exchange(address, sale(b"000031", b"000000000100"))
        await exchange(address, b"0200" + bytes.fromhex("7020000000C00000") + b"1X")  # F2's length is not digits
        async with client(url) as session:
            async with session.get("/metrics") as response:
                text = await response.text()
            assert 'iso_host_requests_total{kind="sale",response_code="00"} 1.0' in text
            assert "iso_host_request_latency_seconds_count 2.0" in text
            assert 'iso_host_frames_rejected_total{field="2"} 1.0' in text
            assert "iso_host_ledger_commit_seconds_count" in text
            assert "iso_host_open_connections" in text
            assert (await get(session, "/healthz"))["status"] == "up"
            assert (await get(session, "/readyz"))["ready"] is True


def test_a_console_port_in_use_is_one_line_and_the_host_does_not_start(tmp_path: Path) -> None:
    with serving(tmp_path) as (_, url, _):
        taken = url.removeprefix("http://").rstrip("/")
        done = subprocess.run(
            [*ISO_HOST, "serve", "--port", "0", "--http", taken, "--ledger", f"sqlite:///{tmp_path / 'other.db'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)),
            check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (f"iso-host: http: cannot listen on {taken}: Address already in use"
                           " (--http HOST:PORT elsewhere, or --no-http)\n")
    assert "listening on" not in done.stdout


async def test_workers_report_to_the_core_s_console(tmp_path: Path) -> None:
    with serving(tmp_path, "--workers", "2") as (address, url, _):
        for stan in (b"000041", b"000042", b"000043"):
            assert (await exchange(address, sale(stan, b"000000000100"))).fields["39"] == "00"
        async with client(url) as session:
            rows = (await get(session, "/api/transactions"))["transactions"]
            assert [r["stan"] for r in rows] == ["000043", "000042", "000041"]
            terminals = (await get(session, "/api/terminals"))["terminals"]
            assert terminals[0]["connected"] is None  # connections live in the workers


async def test_a_card_added_over_http_declines_a_sale_over_its_balance_until_removed(tmp_path: Path) -> None:
    with serving(tmp_path) as (address, url, _):
        async with client(url) as session:
            for bad, field_name in (({"pan": "123"}, "card.pan"), ({"pan": CARD, "balance": "x"}, "card.balance"),
                                    ({"pan": CARD, "status": "happy"}, "card.status")):  # fmt: skip
                async with session.post("/api/cards", json=bad) as response:
                    assert response.status == 400
                    assert (await response.json())["field"] == field_name
            async with session.post("/api/cards", json={"pan": CARD, "balance": "1.00"}) as response:
                result = (await response.json())["result"]
            assert result == {"card": "476173******0010", "replaced": True, "cards": 1}
            assert (await exchange(address, sale(b"000051", b"000000000500"))).fields["39"] == "51"
            async with session.delete("/api/cards/0") as response:
                assert (await response.json())["result"] == {"removed": "476173******0010", "cards": 0}
            assert (await exchange(address, sale(b"000052", b"000000000500"))).fields["39"] == "00"
            async with session.delete("/api/cards/0") as response:
                assert response.status == 400
                assert (await response.json())["field"] == "index"
