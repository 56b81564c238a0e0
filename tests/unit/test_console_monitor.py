"""The console's monitor without a socket: rows, each terminal's day, the anomalies it flags, the stream's bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from waiting import until

from iso_host.console import monitor as monitoring
from iso_host.console.monitor import Monitor
from iso_host.core.outcome import Exchange
from iso_host.vocab import Reason
from iso_host.wire import Message, load_dialect

ISO87 = load_dialect("iso87binary")
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answered(kind: str, reason: Reason, *, tid: str = "TERM0001", stan: str = "000001", code: str = "00",
             detail: str | None = None) -> Exchange:  # fmt: skip
    request = Message("0200", {"2": "6222021234567890", "3": "000000", "4": "000000001500", "11": stan, "41": tid,
                               "42": "MERCHANT0000001", "49": "156"})  # fmt: skip
    response = Message("0210", {"11": stan, "37": "000000000042", "39": code, "41": tid})
    return Exchange.of(ISO87, request, response, reason=reason, response_code=code, kind=kind, mac="verified",
                       detail=detail, batch=1)


def fed(*exchanges: Exchange, clock: Clock | None = None) -> Monitor:
    monitor = Monitor(ISO87, now=NOW.timestamp, monotonic=clock or Clock())
    for exchange in exchanges:
        monitor.exchange(exchange, 0.0042)
    return monitor


def test_a_row_masks_the_card_and_says_what_the_answer_means() -> None:
    monitor = fed(answered("sale", Reason.APPROVED), answered("void", Reason.ALREADY_CANCELLED, code="12"))
    sale, void = reversed(monitor.rows())
    assert sale | {"time": None} == {
        "id": 1, "time": None, "local_time": sale["local_time"], "tid": "TERM0001", "kind": "sale", "mti": "0200",
        "amount": "15.00", "currency": "156", "pan": "622202******7890", "code": "00", "meaning": "Approved",
        "reason": Reason.APPROVED, "latency_ms": 4.2, "stan": "000001", "rrn": "000000000042", "batch": "000001",
    }  # fmt: skip
    assert void["meaning"] == "Already cancelled"


@pytest.mark.parametrize(
    ("filters", "ids"),
    [({}, [3, 2, 1]), ({"tid": "TERM0002"}, [2]), ({"kind": "void"}, [3]), ({"code": "51"}, [2]),
     ({"batch": "1"}, [3, 2, 1]), ({"limit": 1}, [3])],
)  # fmt: skip
def test_rows_filter_newest_first(filters: dict[str, object], ids: list[int]) -> None:
    declined = answered("sale", Reason.INSUFFICIENT_FUNDS, tid="TERM0002", code="51")
    monitor = fed(answered("sale", Reason.APPROVED), declined, answered("void", Reason.APPROVED))
    assert [row["id"] for row in monitor.rows(**filters)] == ids  # type: ignore[arg-type]


def test_a_terminal_s_day() -> None:
    monitor = fed(answered("sale", Reason.APPROVED, stan="000001"), answered("sale", Reason.LOST_CARD, stan="000002"))
    day = monitor.terminals["TERM0001"]
    assert (day.requests, day.approved, day.declined, day.last_stan) == (2, 1, 1, "000002")


@pytest.mark.parametrize(
    ("exchanges", "kinds"),
    [
        pytest.param([answered("sale", Reason.MAC_FAILED, code="A0")], ["mac_failed"], id="mac-failure"),
        pytest.param([answered("sale", Reason.DUPLICATE, code="94")], ["duplicate"], id="duplicate"),
        pytest.param([answered("void", Reason.AMOUNT_MISMATCH, code="13")] * 3, ["amount_mismatch", "refused_voids"],
                     id="void-streak"),
        pytest.param([answered("void", Reason.VOID_WINDOW_EXPIRED, code="12"), answered("void", Reason.APPROVED),
                      answered("void", Reason.VOID_WINDOW_EXPIRED, code="12")], [], id="streak-broken"),
        pytest.param([answered("reversal", Reason.APPROVED, detail="reversal: original not found, nothing to reverse")],
                     ["unknown_original"], id="unknown-original"),
        pytest.param([answered("settlement", Reason.OUT_OF_BALANCE, code="95")], ["out_of_balance"], id="balance"),
        pytest.param([answered("sale", Reason.INSUFFICIENT_FUNDS, code="51")] * 5, ["decline_burst"], id="burst"),
        pytest.param([answered("sale", Reason.APPROVED)] * 5, [], id="approvals"),
    ],
)  # fmt: skip
def test_anomalies(exchanges: list[Exchange], kinds: list[str]) -> None:
    monitor = fed(*exchanges)
    flagged = [a.kind for a in monitor.anomalies]
    assert set(flagged) == set(kinds)
    assert all(a.transactions for a in monitor.anomalies)


def test_declines_spread_out_are_no_burst() -> None:
    clock = Clock()
    monitor = Monitor(ISO87, now=NOW.timestamp, monotonic=clock)
    for _ in range(5):
        monitor.exchange(answered("sale", Reason.INSUFFICIENT_FUNDS, code="51"), 0.001)
        clock.now += monitoring.DECLINE_WINDOW_S / 4 + 1
    assert [a.kind for a in monitor.anomalies] == []


def test_only_the_last_exchanges_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitoring, "KEEP", 3)
    monitor = Monitor(ISO87, now=NOW.timestamp, monotonic=Clock())
    for stan in range(5):
        monitor.exchange(answered("sale", Reason.APPROVED, stan=f"{stan:06d}"), 0.001)
    assert [row["stan"] for row in monitor.rows()] == ["000004", "000003", "000002"]
    assert monitor.find(1) is None
    found = monitor.find(5)
    assert found is not None
    assert found.exchange.request.fields["11"] == "000004"


async def test_the_stream_batches_rows_and_a_slow_reader_loses_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitoring, "FLUSH_S", 0.0)
    monkeypatch.setattr(monitoring, "SUBSCRIBER_BACKLOG", 2)
    monitor = fed()
    queue = monitor.subscribe()
    for batch in range(3):
        monitor.exchange(answered("sale", Reason.APPROVED, stan=f"{batch:06d}"), 0.001)
        monitor.exchange(answered("sale", Reason.APPROVED, stan=f"{batch:06d}"), 0.001)
        await until(lambda: monitor._flush is None, what="the batch flushed")
    received = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [event for event, _ in received] == ["transactions", "transactions"]
    assert [[row["stan"] for row in rows] for _, rows in received] == [["000001"] * 2, ["000002"] * 2]
    monitor.unsubscribe(queue)
    monitor.exchange(answered("sale", Reason.APPROVED), 0.001)
    assert monitor._flush is None, "nobody watches: no rows are built"
