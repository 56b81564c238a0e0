"""Card data helpers and log redaction: clear PANs, track data and keys never reach a log line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from iso_host import log
from iso_host.cards import is_valid_pan, mask_pan, pan_from_track2, pan_hash

PAN = "4761739001010010"
TRACK2 = f"{PAN}=29121010000012300000"
KEY = b"pan-hash-key-for-tests"


class TestMaskPan:
    """mask_pan keeps the first 6 and last 4 digits."""

    @pytest.mark.parametrize(
        ("pan", "masked"),
        [
            pytest.param(PAN, "476173******0010", id="16-digits"),
            pytest.param("6212345678901234567", "621234*********4567", id="19-digits"),
            pytest.param("476173900101", "476173**0101", id="12-digits"),
            pytest.param("47617390010", "476173*0010", id="11-digits"),
            pytest.param("4761739001", "**********", id="10-digits-all-masked"),
            pytest.param("4761", "****", id="4-digits-all-masked"),
            pytest.param("", "", id="empty"),
        ],
    )
    def test_mask_pan(self, pan: str, masked: str) -> None:
        """At most 6 + 4 digits show, and a short value shows none."""
        assert mask_pan(pan) == masked
        assert len(mask_pan(pan)) == len(pan)


class TestPanHash:
    """pan_hash is a keyed hash, so the ledger can match cards without storing them."""

    def test_same_key_same_hash(self) -> None:
        """The same PAN under the same key always hashes the same."""
        assert pan_hash(PAN, KEY) == pan_hash(PAN, KEY)

    def test_different_key_different_hash(self) -> None:
        """Another key gives another hash, so a leaked hash cannot be looked up without the key."""
        assert pan_hash(PAN, KEY) != pan_hash(PAN, KEY + b"2")

    def test_different_pan_different_hash(self) -> None:
        """Two cards do not collide."""
        assert pan_hash(PAN, KEY) != pan_hash("4761739001010028", KEY)

    def test_hash_is_hex_and_hides_the_pan(self) -> None:
        """The hash is 64 lowercase hex digits (HMAC-SHA-256) that contain no run of the PAN."""
        digest = pan_hash(PAN, KEY)
        assert len(digest) == 64
        assert set(digest) <= set("0123456789abcdef")
        assert PAN[-4:] + PAN[:6] not in digest


class TestPanFromTrack2:
    """pan_from_track2 reads the PAN in front of the separator."""

    @pytest.mark.parametrize(
        ("track2", "pan"),
        [
            pytest.param(TRACK2, PAN, id="ascii-equals"),
            pytest.param(f"{PAN}D29121010000012300000", PAN, id="bcd-D"),
            pytest.param(f"{PAN}d2912101", PAN, id="bcd-lowercase-d"),
            pytest.param("6212345678901234567=2912", "6212345678901234567", id="19-digits"),
            pytest.param(PAN + "29121010000012300000", None, id="no-separator"),
            pytest.param(f";{PAN}=2912?", None, id="sentinels-not-digits"),
            pytest.param("=2912", None, id="empty-pan"),
            pytest.param("", None, id="empty"),
        ],
    )
    def test_pan_from_track2(self, track2: str, pan: str | None) -> None:
        """'=' (ASCII) and 'D' (BCD) separate the PAN; anything that is not digits gives None."""
        assert pan_from_track2(track2) == pan


class TestIsValidPan:
    """is_valid_pan checks digits and length, not Luhn."""

    @pytest.mark.parametrize(
        ("pan", "valid"),
        [
            pytest.param(PAN, True, id="16-digits"),
            pytest.param("4761739001010011", True, id="bad-luhn-still-valid"),
            pytest.param("476173900101", True, id="12-digits"),
            pytest.param("6212345678901234567", True, id="19-digits"),
            pytest.param("47617390010", False, id="11-digits"),
            pytest.param("62123456789012345678", False, id="20-digits"),
            pytest.param("4761 7390 0101 0010", False, id="spaces"),
            pytest.param("476173******0010", False, id="masked"),
        ],
    )
    def test_is_valid_pan(self, pan: str, valid: bool) -> None:
        """12 to 19 digits are a plausible PAN."""
        assert is_valid_pan(pan) is valid


class TestRedact:
    """The redact processor masks PANs and drops track data, PIN blocks and keys."""

    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            pytest.param({"pan": PAN}, {"pan": "476173******0010"}, id="pan-masked"),
            pytest.param({"card": PAN}, {"card": "476173******0010"}, id="card-masked"),
            pytest.param({"pan": "476173******0010"}, {"pan": "476173******0010"}, id="masked-pan-kept"),
            pytest.param({"track2": TRACK2}, {"track2": "[redacted]"}, id="track2"),
            pytest.param({"track3": "0123"}, {"track3": "[redacted]"}, id="track3"),
            pytest.param({"pin_block": "0412AC89ABCDEF67"}, {"pin_block": "[redacted]"}, id="pin-block"),
            pytest.param({"cvv": "123"}, {"cvv": "[redacted]"}, id="cvv"),
            pytest.param({"tmk": "0123456789ABCDEF"}, {"tmk": "[redacted]"}, id="tmk"),
            pytest.param({"tak": b"\x01" * 16, "tpk": "x", "bdk": "y"}, dict.fromkeys(("tak", "tpk", "bdk"),
                         "[redacted]"), id="working-keys"),
            pytest.param({"stan": "000042", "tid": "TERM0001"}, {"stan": "000042", "tid": "TERM0001"},
                         id="other-keys-untouched"),
        ],
    )  # fmt: skip
    def test_redact(self, event: dict[str, Any], expected: dict[str, Any]) -> None:
        """Sensitive keys are masked or replaced; everything else passes through unchanged."""
        assert log.redact(None, "info", {"event": "request_decided", **event}) == {
            "event": "request_decided",
            **expected,
        }

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(int(PAN), id="integer"),
            pytest.param("4761 7390 0101 0010", id="spaced"),
            pytest.param(PAN.encode(), id="bytes"),
        ],
    )
    def test_pan_in_another_form_is_not_logged_in_clear(self, value: object) -> None:
        """Whatever form a PAN takes under a pan key, its middle digits never reach the log."""
        event = log.redact(None, "info", {"event": "card_read", "pan": value})
        assert "739001" not in str(event["pan"]).replace(" ", "")

    def test_redacted_values_never_reach_the_output(self) -> None:
        """In a logger pipeline, the captured event holds no clear PAN, track or key."""
        capture = LogCapture()
        logger = structlog.wrap_logger(None, processors=[log.redact, capture])
        logger.info("card_read", pan=PAN, track2=TRACK2, pin_block="0412AC89ABCDEF67", tmk="0123456789ABCDEF")
        [entry] = capture.entries
        assert entry["pan"] == "476173******0010"
        assert {entry["track2"], entry["pin_block"], entry["tmk"]} == {"[redacted]"}
        text = repr(entry)
        assert PAN not in text
        assert "0412AC89ABCDEF67" not in text
        assert "0123456789ABCDEF" not in text


@pytest.fixture
def configured_stream() -> Iterator[io.StringIO]:
    """A stream that log.configure writes JSON lines to; the run's audited configuration comes back afterwards."""
    previous = structlog.get_config()
    stream = io.StringIO()
    log.configure("json", "info", stream=stream)
    yield stream
    structlog.configure(**previous)


class TestConfigure:
    """log.configure puts redaction in front of the renderer."""

    def test_json_line_is_redacted(self, configured_stream: io.StringIO) -> None:
        """A JSON line written through the configured pipeline carries the masked PAN only."""
        log.get_logger(conn_id=7).info("request_decided", pan=PAN, track2=TRACK2)
        line = json.loads(configured_stream.getvalue())
        assert (line["event"], line["conn_id"], line["level"]) == ("request_decided", 7, "info")
        assert line["pan"] == "476173******0010"
        assert line["track2"] == "[redacted]"
        assert PAN not in configured_stream.getvalue()

    def test_level_filters(self, configured_stream: io.StringIO) -> None:
        """Below the configured level nothing is written."""
        log.get_logger().debug("frame_received", frame_bytes=10)
        assert configured_stream.getvalue() == ""
