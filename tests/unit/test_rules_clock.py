"""A clock set back (live control's ``set-clock`` into the past) opens no window again: an original recorded after
"now" is inside no void window, refund age or pre-auth lifetime (issue 14, item 6).

Each window rule as a table of (rule table, original's age, settings) -> reason: to the second on both sides of
"now", in both void-window modes. Before the fix a negative age passed every window, so a sale days too old became
voidable again once the host's clock was moved to before it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_tables import NOW, attempt, original, rules, view

from iso_host.core.rules import (
    COMPLETION_RULES,
    COMPLETION_VOID_RULES,
    PREAUTH_VOID_RULES,
    REFUND_RULES,
    VOID_RULES,
    Rule,
    RuleSettings,
    first_failing,
)
from iso_host.ledger.model import LedgerView
from iso_host.vocab import Kind, Reason

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
HOURS_WINDOW = rules(void_window=48.0)
EXPIRED = Reason.VOID_WINDOW_EXPIRED

SALE = {"kind": Kind.SALE}
PREAUTH = {"kind": Kind.PREAUTH, "processing_code": "030000", "mti": "0100"}
COMPLETION = {"kind": Kind.COMPLETION, "original_rrn": "000000000001"}


def recorded(kind: dict[str, object], age: timedelta) -> LedgerView:
    """The view of an approved original of ``kind`` recorded ``age`` before NOW (negative: after NOW)."""
    return view(original(created_at=NOW - age, **kind))


CASES = [
    # (rules, kind of original, its age at NOW, settings, reason)
    *(
        pytest.param(table, kind, age, settings, reason, id=f"{name}-{label}")
        for name, table, kind, settings in (
            ("void-same-day", VOID_RULES, SALE, rules()),
            ("void-48h", VOID_RULES, SALE, HOURS_WINDOW),
            ("completion-void", COMPLETION_VOID_RULES, COMPLETION, rules()),
            ("refund", REFUND_RULES, SALE, rules()),
            ("preauth-void", PREAUTH_VOID_RULES, PREAUTH, rules()),
            ("completion", COMPLETION_RULES, PREAUTH, rules()),
        )
        for label, age, reason in (
            ("recorded-now", timedelta(0), None),
            ("a-second-ago", SECOND, None),
            ("a-second-ahead", -SECOND, EXPIRED),
            ("a-day-ahead", -DAY, EXPIRED),
            ("ten-years-ahead", -3_650 * DAY, EXPIRED),
        )
    ),
    # The attack itself: a sale too old to void, then the clock set back to before it. Whatever "now" says, the
    # original is either too old or from the future: never inside the window.
    pytest.param(VOID_RULES, SALE, 2 * DAY, rules(), EXPIRED, id="void-two-days-old"),
    pytest.param(VOID_RULES, SALE, -2 * DAY, rules(), EXPIRED, id="void-clock-set-two-days-before-it"),
    pytest.param(VOID_RULES, SALE, 49 * 3_600 * SECOND, HOURS_WINDOW, EXPIRED, id="void-48h-one-hour-late"),
    pytest.param(VOID_RULES, SALE, -49 * 3_600 * SECOND, HOURS_WINDOW, EXPIRED, id="void-48h-clock-set-back"),
    pytest.param(REFUND_RULES, SALE, 31 * DAY, rules(), EXPIRED, id="refund-31-days-old"),
    pytest.param(REFUND_RULES, SALE, -31 * DAY, rules(), EXPIRED, id="refund-clock-set-31-days-back"),
    pytest.param(PREAUTH_VOID_RULES, PREAUTH, 31 * DAY, rules(), EXPIRED, id="preauth-expired"),
    pytest.param(COMPLETION_RULES, PREAUTH, -31 * DAY, rules(), EXPIRED, id="completion-clock-set-back"),
]


@pytest.mark.parametrize(("table", "kind", "age", "settings", "reason"), CASES)
def test_a_window_never_holds_an_original_from_the_future(
    table: tuple[Rule, ...], kind: dict[str, object], age: timedelta, settings: RuleSettings, reason: Reason | None
) -> None:
    assert first_failing(table, attempt(), recorded(kind, age), NOW, settings) == reason
