"""The replay, DUKPT-counter and sign-on guards (core/guards.py) and their configuration, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from iso_host.config import parse_config
from iso_host.core.guards import KsnCounters, ReplayGuard, SecuritySettings, SignonLimiter, ksn_parts, replay_key
from iso_host.errors import ConfigError

A, B = replay_key("TERM0001", b"sale-1"), replay_key("TERM0001", b"sale-2")


@pytest.mark.parametrize(
    ("window_s", "max_entries", "steps", "answers"),
    [
        pytest.param(60.0, 10, [(A, 0.0), (A, 59.9)], [True, False], id="again-within"),
        pytest.param(60.0, 10, [(A, 0.0), (A, 60.0)], [True, True], id="again-after"),
        pytest.param(60.0, 10, [(A, 0.0), (B, 1.0), (A, 2.0)], [True, True, False], id="other-request"),
        pytest.param(60.0, 1, [(A, 0.0), (B, 1.0), (A, 2.0)], [True, True, True], id="evicted-when-full"),
        pytest.param(0.0, 10, [(A, 0.0), (A, 0.0)], [True, True], id="off"),
    ],
)
def test_replay_guard(window_s: float, max_entries: int, steps: list[tuple[bytes, float]], answers: list[bool]) -> None:
    guard = ReplayGuard(window_s, max_entries)
    assert [guard.admit(key, now) for key, now in steps] == answers
    assert len(guard) <= max_entries


def test_replay_guard_forgets_what_the_ledger_did_not_record() -> None:
    guard = ReplayGuard(60.0, 10)
    assert guard.admit(A, 0.0)
    guard.forget(A)
    assert guard.admit(A, 1.0)


def test_replay_key_names_the_terminal() -> None:
    assert replay_key("TERM0001", b"x") != replay_key("TERM0002", b"x")


@pytest.mark.parametrize(
    ("counters", "refused"),
    [
        pytest.param([1, 2, 3], [None, None, None], id="rising"),
        pytest.param([2, 2], [None, 2], id="same"),
        pytest.param([5, 3, 6], [None, 5, None], id="lower"),
    ],
)
def test_ksn_counters(counters: list[int], refused: list[int | None]) -> None:
    book = KsnCounters()
    ksns = [bytes.fromhex(f"FFFF9876543210E{counter:05X}") for counter in counters]
    assert [book.advance("DUKPTT01", ksn) for ksn in ksns] == refused


def test_ksn_counters_per_terminal_and_device() -> None:
    book = KsnCounters()
    ksn = bytes.fromhex("FFFF9876543210E00002")
    other_device = bytes.fromhex("FFFF9876543211E00001")
    assert book.advance("DUKPTT01", ksn) is None
    assert book.advance("DUKPTT02", ksn) is None
    assert book.advance("DUKPTT01", other_device) is None
    assert ksn_parts(ksn) == (bytes.fromhex("FFFF9876543210E00000"), 2)


@pytest.mark.parametrize(
    ("per_minute", "times", "answers"),
    [
        pytest.param(2, [0, 1, 2, 3], [(True, False), (True, False), (False, True), (False, False)], id="logged-once"),
        pytest.param(2, [0, 1, 60, 61.5], [(True, False), (True, False), (True, False), (True, False)], id="minute"),
        pytest.param(1, [0, 1, 60, 61], [(True, False), (False, True), (True, False), (False, True)], id="again"),
        pytest.param(None, [0, 0, 0], [(True, False)] * 3, id="unlimited"),
    ],
)
def test_signon_limiter(per_minute: int | None, times: list[float], answers: list[tuple[bool, bool]]) -> None:
    limiter = SignonLimiter(per_minute)
    assert [limiter.admit("TERM0001", now) for now in times] == answers
    assert limiter.admit("TERM0002", times[-1]) == (True, False)


TERMINAL: dict[str, Any] = {"tid": "TERM0001", "mid": "MERCHANT0000001"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param({}, SecuritySettings(), id="defaults"),
        pytest.param({"security": {"replay_window_s": 0, "signons_per_minute": False}},
                     SecuritySettings(replay_window_s=0.0, signons_per_minute=None), id="off"),
        pytest.param({"security": {"replay_window_s": 3600, "replay_max_entries": 10, "signons_per_minute": 3}},
                     SecuritySettings(3600.0, 10, 3), id="set"),
    ],
)  # fmt: skip
def test_security_section(document: dict[str, Any], expected: SecuritySettings) -> None:
    assert parse_config(document, "t.toml").security == expected


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        pytest.param({"security": {"replay_window_s": -1}}, "security.replay_window_s", id="window"),
        pytest.param({"security": {"replay_max_entries": 0}}, "security.replay_max_entries", id="entries"),
        pytest.param({"security": {"signons_per_minute": True}}, "security.signons_per_minute", id="rate"),
        pytest.param({"security": {"nonce": 1}}, "security.nonce: unknown key", id="unknown"),
        pytest.param({"terminals": [TERMINAL | {"mac_policy": "never"}]}, "terminals[0].mac_policy", id="policy"),
        pytest.param({"terminals": [TERMINAL | {"mac_kinds": "settlement"}]}, "terminals[0].mac_kinds", id="kinds"),
        pytest.param({"terminals": [TERMINAL | {"tls_subject": ""}]}, "terminals[0].tls_subject", id="subject"),
    ],
)
def test_bad_security_keys(document: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_config(document, "t.toml")


def test_terminal_security_keys() -> None:
    entry = TERMINAL | {"mac_policy": "always", "mac_kinds": ["settlement", "batch_upload"], "tls_subject": "CN=T1"}
    (terminal,) = parse_config({"terminals": [entry]}, "t.toml").terminals
    assert (terminal.mac_policy, terminal.mac_kinds, terminal.tls_subject) == (
        "always", ("settlement", "batch_upload"), "CN=T1",
    )  # fmt: skip
