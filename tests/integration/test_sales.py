"""Sales over real TCP in each dialect, with real framing and a real SQLite ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hosting import MID, TEST_PAN, TID, local_now, running_host

from iso_host.wire import encode_frame


class TestSale:
    async def test_sale_is_approved_and_recorded(self, tmp_path: Path, dialect_name: str) -> None:
        """A sale is answered 00 with an RRN and approval code, and the ledger holds it masked."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client() as client:
                request = client.build("sale", local_now(), amount=1234, pan=TEST_PAN)
                response = await client.request(request)
            assert response.mti == "0210"
            assert response.fields["39"] == "00"
            for echoed in ("3", "4", "11", "41", "42"):
                assert response.fields[echoed] == request.fields[echoed]
            assert len(response.fields["37"]) == 12
            assert len(response.fields["38"]) == 6
            rows = host.ledger_rows()
        assert len(rows) == 1
        row = rows[0]
        assert (row["tid"], row["mid"], row["amount_minor"], row["status"]) == (TID, MID, 1234, "APPROVED")
        assert row["rrn"] == response.fields["37"]
        assert row["masked_pan"] == "476173******0010"
        assert TEST_PAN not in repr(tuple(row))

    async def test_rrns_are_unique(self, tmp_path: Path) -> None:
        """Every approved sale gets its own RRN, and each one is a committed ledger row."""
        async with running_host(tmp_path, "iso87binary") as host:
            async with await host.connected_client() as client:
                responses = [
                    await client.request(client.build("sale", local_now(), amount=100 + i, pan=TEST_PAN))
                    for i in range(25)
                ]
            rows = host.ledger_rows()
        rrns = [r.fields["37"] for r in responses]
        assert len(set(rrns)) == 25
        assert sorted(rrns) == sorted(row["rrn"] for row in rows)

    async def test_echo_is_answered_and_not_recorded(self, tmp_path: Path, dialect_name: str) -> None:
        """A network test gets 00 and leaves the ledger empty."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client() as client:
                response = await client.request(client.build("echo", local_now()))
            assert response.fields["39"] == "00"
            assert response.mti in ("0810", "0830")
            assert host.ledger_rows() == []

    async def test_track2_only_sale(self, tmp_path: Path) -> None:
        """A swiped sale with track 2 and no F2 is recorded under the PAN read from track 2."""
        async with running_host(tmp_path, "iso87binary") as host:
            async with await host.connected_client() as client:
                request = client.build("sale", local_now(), amount=500)
                request.fields["35"] = f"{TEST_PAN}=29122010000000000000"
                response = await client.request(request)
            assert response.fields["39"] == "00"
            assert host.ledger_rows()[0]["masked_pan"] == "476173******0010"


class TestRefusals:
    async def test_unknown_terminal(self, tmp_path: Path, dialect_name: str) -> None:
        """A terminal the host does not know is refused with the dialect's code and nothing is recorded."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client(tid="NOSUCHT1", signon=False) as client:
                response = await client.request(client.build("sale", local_now(), amount=1, pan=TEST_PAN))
            expected = host.dialect.response_code("UNKNOWN_TERMINAL")
            assert response.fields["39"] == expected
            assert host.ledger_rows() == []

    async def test_wrong_merchant(self, tmp_path: Path) -> None:
        """A known TID with another MID is refused as an unknown merchant."""
        async with running_host(tmp_path, "iso87binary") as host:
            async with await host.connected_client(mid="OTHERMERCHANT01") as client:
                response = await client.request(client.build("sale", local_now(), amount=1, pan=TEST_PAN))
            assert response.fields["39"] == "03"
            assert host.ledger_rows() == []

    async def test_missing_mandatory_field(self, tmp_path: Path, dialect_name: str) -> None:
        """A sale without an amount gets FORMAT_ERROR (30) and nothing is recorded."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client() as client:
                request = client.build("sale", local_now(), amount=1, pan=TEST_PAN)
                del request.fields["4"]
                response = await client.request(request)
            assert response.fields["39"] == "30"
            assert host.ledger_rows() == []

    async def test_sale_without_card(self, tmp_path: Path) -> None:
        """A sale with neither F2 nor F35 is a format error."""
        async with running_host(tmp_path, "iso87binary") as host:
            async with await host.connected_client() as client:
                response = await client.request(client.build("sale", local_now(), amount=1))
            assert response.fields["39"] == "30"
            assert host.ledger_rows() == []

    async def test_unclassified_message(self, tmp_path: Path) -> None:
        """A message the dialect does not classify gets the invalid-transaction code."""
        async with running_host(tmp_path, "iso87binary") as host:
            async with await host.connected_client() as client:
                request = client.build("sale", local_now(), amount=1, pan=TEST_PAN)
                request.fields["3"] = "990000"
                response = await client.request(request)
            assert response.fields["39"] == "12"
            assert host.ledger_rows() == []


class TestFraming:
    async def test_frame_split_byte_by_byte(self, tmp_path: Path, dialect_name: str) -> None:
        """A frame that arrives one byte per TCP segment is answered like a whole one."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client() as client:
                data = client.frame(client.build("sale", local_now(), amount=77, pan=TEST_PAN))
                for index in range(len(data)):
                    await client.send_raw(data[index : index + 1])
                    await asyncio.sleep(0)
                response = await client.receive()
            assert response.fields["39"] == "00"
            assert len(host.ledger_rows()) == 1

    async def test_many_frames_in_one_segment(self, tmp_path: Path, dialect_name: str) -> None:
        """Twenty frames written at once get twenty answers, in order."""
        async with running_host(tmp_path, dialect_name) as host:
            async with await host.connected_client() as client:
                requests = [client.build("sale", local_now(), amount=i + 1, pan=TEST_PAN) for i in range(20)]
                await client.send_raw(b"".join(client.frame(r) for r in requests))
                responses = [await client.receive() for _ in requests]
            assert [r.fields["11"] for r in responses] == [r.fields["11"] for r in requests]
            assert all(r.fields["39"] == "00" for r in responses)
            assert len(host.ledger_rows()) == 20

    async def test_keepalive_frames_are_ignored(self, tmp_path: Path) -> None:
        """Zero-length frames between requests are consumed silently."""
        async with running_host(tmp_path, "iso87binary") as host:
            async with await host.connected_client() as client:
                request = client.frame(client.build("echo", local_now()))
                await client.send_raw(encode_frame(host.dialect.length_header, b"") * 3 + request)
                response = await client.receive()
            assert response.fields["39"] == "00"
