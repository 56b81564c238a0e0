"""The limits' arithmetic as tables (open files against max_connections, which connections are one peer's), and the
throttled log lines."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from iso_host.gate import ThrottledLog
from iso_host.limits import MIN_CONNECTIONS, RESERVED_FILES, Limits, fit_open_files, peer_key
from iso_host.log import get_logger

NEEDED = Limits().max_connections + RESERVED_FILES
UNLIMITED = -1


@pytest.mark.parametrize(
    ("soft", "hard", "set_soft", "max_connections"),
    [
        pytest.param(NEEDED, NEEDED, None, 10_000, id="enough already"),
        pytest.param(UNLIMITED, UNLIMITED, None, 10_000, id="unlimited"),
        pytest.param(1_024, 1_048_576, NEEDED, 10_000, id="soft raised to what is needed"),
        pytest.param(1_024, UNLIMITED, NEEDED, 10_000, id="soft raised under an unlimited hard limit"),
        pytest.param(1_024, 4_096, 4_096, 4_096 - RESERVED_FILES, id="hard too low: soft to hard, fewer connections"),
        pytest.param(600, 600, None, 600 - RESERVED_FILES, id="soft = hard too low: fewer connections"),
    ],
)
def test_fit_open_files(soft: int, hard: int, set_soft: int | None, max_connections: int) -> None:
    plan = fit_open_files(Limits(), soft, hard, unlimited=UNLIMITED)
    assert (plan.soft, plan.limits.max_connections, plan.needed) == (set_soft, max_connections, NEEDED)
    assert plan.lowered_from == (None if max_connections == 10_000 else 10_000)


def test_fit_open_files_refuses_a_limit_that_leaves_almost_nothing() -> None:
    limit = RESERVED_FILES + MIN_CONNECTIONS - 1
    with pytest.raises(ValueError, match=rf"open-file limit \(ulimit -n\) is {limit}: .* raise it to {NEEDED}"):
        fit_open_files(Limits(), limit, limit)
    assert fit_open_files(Limits(), limit + 1, limit + 1).limits.max_connections == MIN_CONNECTIONS


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("?", "?"),
    ],
)
def test_peer_key(address: str, key: str) -> None:
    """One peer is an IPv4 address or an IPv6 /64: addresses inside one /64 share a count."""
    assert peer_key(address) == key


async def test_throttled_log_one_line_per_interval_with_a_count() -> None:
    """The first event is a line at once; the next ones within the interval are one line with their count, written
    when the interval ends (here: flush); after the interval the next event is a line at once again."""
    now = [0.0]
    with capture_logs() as logs:
        throttled = ThrottledLog(get_logger(), 10.0, clock=lambda: now[0])
        for peer in ("a", "b", "c"):
            throttled.note("tls_handshake_failed", "timeout", peer=peer)
        throttled.note("tls_handshake_failed", "HTTP_REQUEST", peer="d")  # another kind: its own line
        throttled.flush()
        now[0] = 10.0
        throttled.note("tls_handshake_failed", "timeout", peer="e")
        throttled.flush()  # nothing left to write
    lines = [(entry["why"], entry["count"], entry["peer"]) for entry in logs]
    assert lines == [("timeout", 1, "a"), ("HTTP_REQUEST", 1, "d"), ("timeout", 2, "c"), ("timeout", 1, "e")]
