"""The worker <-> core messages (``workers.ipc``): whatever the core answers reaches the worker unchanged, however the
stream cuts the bytes, and a broken stream is an ``IpcError``, never a wrong answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_host.core.outcome import Outcome
from iso_host.errors import WireError
from iso_host.vocab import Reason
from iso_host.workers import ipc

short_text = st.text(max_size=20)
log_value = st.one_of(short_text, st.integers(-(2**31), 2**31), st.booleans(), st.none())
outcomes = st.builds(
    Outcome,
    st.one_of(st.none(), st.binary(max_size=300)),
    close=st.booleans(),
    reason=st.one_of(st.none(), st.sampled_from(Reason)),
    response_code=st.one_of(st.none(), st.text(alphabet="0123456789ABZ", min_size=2, max_size=2)),
    mti=st.one_of(st.none(), st.text(alphabet="0123456789", min_size=4, max_size=4)),
    kind=st.one_of(st.none(), short_text),
    log=st.dictionaries(st.sampled_from(["tid", "stan", "detail", "scenario", "alert", "why"]), short_text),
    error=st.one_of(st.none(), st.builds(lambda r, f, o: WireError(r, field=f, offset=o), short_text, short_text,
                                         st.integers(0, 70_000))),
    delay_s=st.floats(0, 3600, allow_nan=False),
)


def same(a: Outcome, b: Outcome) -> bool:
    def error(o: Outcome) -> tuple[str, str, int] | None:
        return None if o.error is None else (o.error.reason, o.error.field, o.error.offset)

    return (a.reply, a.close, a.reason, a.response_code, a.mti, a.kind, a.log, a.delay_s, error(a)) == (
        b.reply, b.close, b.reason, b.response_code, b.mti, b.kind, b.log, b.delay_s, error(b))  # fmt: skip


@given(st.lists(outcomes, min_size=1, max_size=8), st.data())
def test_answers_arrive_unchanged_however_the_stream_is_cut(answers: list[Outcome], data: st.DataObject) -> None:
    stream = b"".join(ipc.answer(number, outcome) for number, outcome in enumerate(answers, 1))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = ipc.MessageReader()
    payloads: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        payloads += reader.feed(stream[start:end])
    parsed = [ipc.parse_answer(payload) for payload in payloads]
    assert [number for number, _ in parsed] == list(range(1, len(answers) + 1))
    assert all(same(sent, got) for sent, (_, got) in zip(answers, parsed, strict=True))


@given(st.integers(1, 2**32 - 1), st.binary(max_size=2_000), st.one_of(st.none(), st.text(max_size=200)))
def test_requests_arrive_unchanged(number: int, frame: bytes, subject: str | None) -> None:
    (payload,) = ipc.MessageReader().feed(ipc.request(number, frame, subject))
    assert ipc.parse_request(payload) == (number, frame, subject)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        ((ipc.MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"), "announced"),
    ],
)
def test_an_oversized_message_is_refused(stream: bytes, message: str) -> None:
    with pytest.raises(ipc.IpcError, match=message):
        ipc.MessageReader().feed(stream)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00", "shorter than its header"),  # not even a number
        (b"\x00\x00\x00\x01" b"\x00" + bytes(8) + b"\x00\x00\x00\x00" + b"\x05ab", "answer 1"),  # a text cut short
        (b"\x00\x00\x00\x02" b"\x00" + bytes(8) + b"\x00\x00\x00\x03" + b"\xff" * 6 + b"{{{", "answer 2"),  # bad JSON
        (b"\x00\x00\x00\x03" b"\x00" + bytes(8) + b"\x00\x00\x00\x00" + b"\x03NOT" + b"\xff" * 5, "answer 3"),
    ],
)
def test_a_broken_answer_is_an_ipc_error(payload: bytes, message: str) -> None:
    with pytest.raises(ipc.IpcError, match=message):
        ipc.parse_answer(payload)
