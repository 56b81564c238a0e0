"""The sampling of request_decided lines: plain approvals 1 in N at info, everything else always (log.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from iso_host import log

APPROVED_SALE: dict[str, Any] = {"event": log.DECIDED, "kind": "sale", "reason": "APPROVED", "response_code": "00"}


@pytest.mark.parametrize(
    ("event", "sampled"),
    [
        pytest.param(APPROVED_SALE, True, id="approved-sale"),
        pytest.param(APPROVED_SALE | {"kind": "echo"}, True, id="approved-echo"),
        pytest.param(APPROVED_SALE | {"kind": "ic_download"}, True, id="approved-dialect-kind"),
        pytest.param(APPROVED_SALE | {"tid": "TERM0001", "stan": "000001", "rrn": "1"}, True, id="usual-keys"),
        pytest.param(APPROVED_SALE | {"reason": "INSUFFICIENT_FUNDS", "response_code": "51"}, False, id="decline"),
        pytest.param(APPROVED_SALE | {"reason": "MAC_FAILED"}, False, id="security-rejection"),
        pytest.param(APPROVED_SALE | {"reason": "FORMAT_ERROR"}, False, id="format-error"),
        pytest.param(APPROVED_SALE | {"reason": "SYSTEM_ERROR"}, False, id="system-error"),
        pytest.param(APPROVED_SALE | {"reason": None}, False, id="no-reason"),
        pytest.param(APPROVED_SALE | {"kind": "signon"}, False, id="signon-issues-keys"),
        pytest.param(APPROVED_SALE | {"kind": "signoff"}, False, id="signoff"),
        pytest.param(APPROVED_SALE | {"kind": "settlement"}, False, id="settlement"),
        pytest.param(APPROVED_SALE | {"kind": "upload_end"}, False, id="upload-end"),
        pytest.param(APPROVED_SALE | {"detail": "attempt 1: conflict"}, False, id="retried-commit"),
        pytest.param(APPROVED_SALE | {"event_error": "ledger timeout"}, False, id="event-failed"),
        pytest.param(APPROVED_SALE | {"alert": "sign-on limit"}, False, id="alert"),
        pytest.param(APPROVED_SALE | {"scenario": "slow"}, False, id="scenario"),
        pytest.param(APPROVED_SALE | {"batch_adopted": 24}, False, id="batch-adopted"),
        pytest.param(APPROVED_SALE | {"event": "frame_rejected"}, False, id="frame-rejected"),
        pytest.param({"event": "connection_opened"}, False, id="other-event"),
    ],
)  # fmt: skip
def test_sampled_out(event: dict[str, Any], sampled: bool) -> None:
    """Only a plain approval of a high-volume kind may be left out."""
    assert log.sampled_out(dict(event)) is sampled


@pytest.mark.parametrize(
    ("every", "approvals", "kept"),
    [
        pytest.param(1, 5, [0, 1, 2, 3, 4], id="every-1-keeps-all"),
        pytest.param(2, 5, [0, 2, 4], id="every-2"),
        pytest.param(100, 250, [0, 100, 200], id="every-100-first-then-each-100th"),
        pytest.param(100, 1, [0], id="first-approval-always"),
    ],
)  # fmt: skip
def test_sampler_keeps_one_in_every(every: int, approvals: int, kept: list[int]) -> None:
    """The first plain approval, then every ``every``-th; kept lines say how they were sampled."""
    sampler = log.ApprovalSampler(every)
    passed = []
    for index in range(approvals):
        try:
            event = sampler(None, "info", dict(APPROVED_SALE))
        except structlog.DropEvent:
            continue
        passed.append(index)
        assert event.get("sampled") == (every if every > 1 else None)
    assert passed == kept


def test_sampler_never_drops_a_decline_and_does_not_count_it() -> None:
    """Declines pass through untouched and do not move the approvals' count."""
    sampler = log.ApprovalSampler(3)
    decline = APPROVED_SALE | {"reason": "DO_NOT_HONOUR", "response_code": "05"}
    for _ in range(10):
        assert sampler(None, "info", dict(decline)) == decline
    assert sampler(None, "info", dict(APPROVED_SALE))["sampled"] == 3  # still the first approval


def test_sampler_refuses_less_than_one() -> None:
    with pytest.raises(ValueError, match="sample_approvals"):
        log.ApprovalSampler(0)


@pytest.fixture
def restore_config() -> Iterator[None]:
    previous = structlog.get_config()
    yield
    structlog.configure(**previous)


@pytest.mark.parametrize(
    ("level", "every", "expected_lines"),
    [
        pytest.param("info", 10, 3 + 20, id="info-samples"),
        pytest.param("info", 1, 30 + 20, id="info-every-1"),
        pytest.param("debug", 10, 30 + 20, id="debug-logs-all"),
        pytest.param("warning", 10, 0, id="warning-logs-none"),
    ],
)  # fmt: skip
def test_configured_levels(restore_config: None, level: str, every: int, expected_lines: int) -> None:
    """Through ``configure``: 30 approved sales and 20 declines at each level."""
    stream = io.StringIO()
    log.configure("json", level, stream, sample_approvals=every)
    logger = log.get_logger(conn_id=1)
    for stan in range(30):
        logger.info(log.DECIDED, kind="sale", reason="APPROVED", response_code="00", stan=f"{stan:06d}")
    for stan in range(20):
        logger.info(log.DECIDED, kind="sale", reason="INSUFFICIENT_FUNDS", response_code="51", stan=f"{stan:06d}")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == expected_lines
    assert sum(line["reason"] == "INSUFFICIENT_FUNDS" for line in lines) == (0 if level == "warning" else 20)


class _Writes(io.StringIO):
    """A stream that remembers each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_a_line_is_one_write_newline_included(restore_config: None) -> None:
    """``serve --workers`` shares standard output between processes: a line and its newline must leave together, or
    another process's line can land between them (under PYTHONUNBUFFERED each write is a system call)."""
    stream = _Writes()
    log.configure("json", "info", stream)
    log.get_logger().warning("frame_rejected", field="4", offset=18)
    log.announce("listening on 127.0.0.1:8583")
    assert len(stream.calls) == 2
    assert all(call.endswith("}\n") and call.count("\n") == 1 for call in stream.calls)
