"""The compiled codec against pyiso8583, its reference: the same bytes, the same messages, the same errors.

For every dialect in specs/: random messages (valid ones, and values no spec allows) encode to the same
bytes or fail with the same ValueError in both codecs; what encodes decodes to the same envelope, message
and pads; random mutations of a valid frame (bit flips, truncation, insertions, deletions, length
prefixes that lie) fail with the same error, field, offset and partial message, or decode identically.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iso_host.errors import ConfigError
from iso_host.wire import (
    Dialect,
    Envelope,
    Message,
    WireDecodeError,
    builtin_dialect_names,
    decode,
    encode,
    load_dialect,
)
from iso_host.wire import codec as codec_module
from iso_host.wire.compiled import _PLANS_MAX, compile_spec

DIALECTS = {name: load_dialect(name) for name in builtin_dialect_names()}
NAMES = sorted(DIALECTS)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEX = "0123456789ABCDEF"
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


def test_every_builtin_dialect_is_compiled_and_the_compiled_codec_is_the_default() -> None:
    assert set(NAMES) >= {"cup", "iso87ascii", "iso87ascii-dukpt", "iso87binary", "iso87bcd"}
    for dialect in DIALECTS.values():
        compiled = codec_module.compiled_codec(dialect)
        assert compiled is not None, dialect.name
        assert compiled.covered, dialect.name
    if os.environ.get(codec_module.CODEC_VARIABLE) is None:
        assert codec_module.codec_in_use() == "compiled"


def field_ids(dialect: Dialect) -> list[str]:
    """The fields a message may carry (pyiso8583 drops 1 and 65: the bitmaps are its own)."""
    return sorted((k for k in dialect.spec if k.isdigit() and k not in ("1", "65")), key=int)


def valid_value(spec: dict[str, Any]) -> st.SearchStrategy[str]:
    """A value the field spec can encode (upper-case hex, as a decode gives it back)."""
    max_len, fixed = spec["max_len"], spec["len_type"] == 0
    nibbles = spec.get("len_count", "bytes") == "nibbles"
    if spec["data_enc"] != "b":
        size = max_len // 2 if nibbles else max_len
        lengths = st.just(size) if fixed else st.integers(0, min(size, 40)) | st.just(size)
        return lengths.flatmap(lambda n: st.text(PRINTABLE, min_size=n, max_size=n))
    if nibbles:
        lengths = st.just(max_len) if fixed else st.integers(0, min(max_len, 40)) | st.just(max_len)
        return lengths.flatmap(lambda n: st.text("0123456789" if n % 3 else HEX, min_size=n, max_size=n))
    lengths = st.just(max_len) if fixed else st.integers(0, min(max_len, 40)) | st.just(max_len)
    return lengths.flatmap(lambda n: st.binary(min_size=n, max_size=n).map(lambda b: b.hex().upper()))


ANY_VALUE = st.text(max_size=30) | st.text(HEX + "abcdef ", max_size=21) | st.just("")


@st.composite
def messages(draw: st.DrawFn, dialect: Dialect, *, wild: bool = False) -> tuple[Message, Envelope]:
    """A message of the dialect: valid values, or with ``wild`` now and then values no spec allows."""
    chosen = draw(st.lists(st.sampled_from(field_ids(dialect)), min_size=1, max_size=14, unique=True))
    fields: dict[str, str] = {}
    pads: dict[str, str] = {}
    for field_id in chosen:
        spec = dialect.spec[field_id]
        fields[field_id] = draw(ANY_VALUE if wild and draw(st.integers(0, 4)) == 0 else valid_value(spec))
        if spec.get("left_pad") or spec.get("right_pad"):
            pad = draw(st.sampled_from([None, "0", "F"]))
            if pad is not None:
                pads[field_id] = pad
    if wild and draw(st.booleans()):
        pads[draw(st.sampled_from(field_ids(dialect)))] = draw(st.sampled_from(["0", "F"]))
    digits = st.text("0123456789", min_size=4, max_size=4)
    mti = draw(st.sampled_from(["0200", "0210", "0800", "0420", "0500", "0320"]) | digits)
    if wild and draw(st.integers(0, 9)) == 0:
        mti = draw(st.text(max_size=5))
    envelope = Envelope()
    if dialect.tpdu:
        raw = draw(st.binary(min_size=dialect.envelope_bytes, max_size=dialect.envelope_bytes))
        envelope = Envelope(raw[:5], raw[5:])
    return Message(mti, fields, pads), envelope


def outcome(call: Any) -> tuple[str, Any]:
    """What a codec call gave: its result, or its error with everything a caller reads from it."""
    try:
        return "ok", call()
    except WireDecodeError as error:
        return "decode-error", (str(error), error.field, error.offset, error.envelope, error.partial)
    except Exception as error:  # a ValueError, or the reference's AssertionError on pads
        return type(error).__name__, str(error)


def both_encode(message: Message, envelope: Envelope, dialect: Dialect, *, covered: bool = True) -> tuple[str, Any]:
    """Both codecs' outcome, the same; ``covered``: what pyiso8583 encodes the compiled codec did not hand back."""
    reference = outcome(lambda: encode(message, envelope, dialect, codec="pyiso8583"))
    compiled = outcome(lambda: encode(message, envelope, dialect, codec="compiled"))
    assert compiled == reference
    if covered and reference[0] == "ok":
        own = codec_module.compiled_codec(dialect)
        assert own is not None
        assert own.encode(message.mti, message.fields, message.pads) is not None, "compiled, not fallen back"
    return reference


def both_decode(frame: bytes, dialect: Dialect, *, covered: bool = True) -> tuple[str, Any]:
    """Both codecs' outcome, the same; ``covered``: what pyiso8583 decodes the compiled codec decoded itself."""
    reference = outcome(lambda: decode(frame, dialect, codec="pyiso8583"))
    compiled = outcome(lambda: decode(frame, dialect, codec="compiled"))
    assert compiled == reference
    if reference[0] == "ok":  # Message equality covers fields and pads; field order too
        assert list(compiled[1][1].fields) == list(reference[1][1].fields)
        own = codec_module.compiled_codec(dialect)
        assert own is not None
        assert not covered or own.decode(frame[dialect.envelope_bytes :]) is not None, "compiled, not fallen back"
    return reference


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_valid_messages_encode_to_the_same_bytes_and_decode_to_the_same_message(name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[name]
    message, envelope = data.draw(messages(dialect))
    kind, frame = both_encode(message, envelope, dialect)
    if kind != "ok":  # an odd digit count in a field without a pad: both refuse it alike
        return
    kind, decoded = both_decode(frame, dialect)
    assert kind == "ok"
    assert decoded[1].fields == message.fields
    assert decode(frame, dialect, codec="compiled")[0] == envelope


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_messages_no_spec_allows_fail_alike(name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[name]
    message, envelope = data.draw(messages(dialect, wild=True))
    kind, frame = both_encode(message, envelope, dialect)
    if kind == "ok":
        both_decode(frame, dialect)


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` with one to three mutations: flips, cuts, insertions, deletions, overwritten bytes."""
    for _ in range(draw(st.integers(1, 3))):
        if not frame:
            break
        at = draw(st.integers(0, len(frame) - 1))
        how = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "length-lie"]))
        if how == "flip":
            frame = frame[:at] + bytes([frame[at] ^ (1 << draw(st.integers(0, 7)))]) + frame[at + 1 :]
        elif how == "truncate":
            frame = frame[:at]
        elif how == "insert":
            frame = frame[:at] + draw(st.binary(min_size=1, max_size=4)) + frame[at:]
        elif how == "delete":
            frame = frame[:at] + frame[at + draw(st.integers(1, 4)) :]
        elif how == "overwrite":
            frame = frame[:at] + bytes([draw(st.integers(0, 255))]) + frame[at + 1 :]
        else:  # a length prefix (or any byte) that claims one more or one less, in ASCII, BCD or binary
            lie = draw(st.sampled_from([b"9", b"0", b"\x99", b"\x00", b"\xff", b"\x01"]))
            frame = frame[:at] + lie + frame[at + 1 :]
    return frame


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_mutated_frames_fail_at_the_same_field_and_offset(name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[name]
    message, envelope = data.draw(messages(dialect))
    try:
        frame = encode(message, envelope, dialect, codec="pyiso8583")
    except ValueError:
        return
    both_decode(data.draw(mutated(frame)), dialect)


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(frame=st.binary(max_size=60))
def test_random_bytes_fail_alike(name: str, frame: bytes) -> None:
    both_decode(frame, DIALECTS[name])


def test_an_uncovered_dialect_and_field_fall_back_to_the_reference() -> None:
    """A message header (h) is not compiled: the whole dialect goes to pyiso8583; a field with both pads is
    not compiled: messages carrying it go to pyiso8583, the others stay compiled."""
    base = DIALECTS["iso87ascii"]
    header = {"data_enc": "ascii", "len_enc": "ascii", "len_type": 2, "max_len": 10}
    with_header = dataclasses.replace(base, spec={**base.spec, "h": header})
    assert compile_spec(with_header.spec) is None
    message = Message("0800", {"11": "000001", "70": "301"})
    frame = encode(message, Envelope(), with_header)
    assert frame.startswith(b"000800")
    assert decode(frame, with_header) == (Envelope(), message)
    both_pads = {**base.spec["60"], "data_enc": "b", "len_count": "nibbles", "left_pad": "0", "right_pad": "F"}
    odd = dataclasses.replace(base, spec={**base.spec, "60": both_pads})
    compiled = compile_spec(odd.spec)
    assert compiled is not None
    assert "60" not in compiled.covered
    assert "11" in compiled.covered
    for carried in (Message("0800", {"11": "000001", "60": "123"}), message):
        assert both_encode(carried, Envelope(), odd, covered=carried is message)[0] == "ok"
        both_decode(encode(carried, Envelope(), odd), odd, covered=carried is message)


def test_the_reference_can_be_forced_for_the_process() -> None:
    before = codec_module.use_codec("pyiso8583")
    try:
        assert codec_module.codec_in_use() == "pyiso8583"
        message = Message("0800", {"11": "000001", "70": "301"})
        assert decode(encode(message, Envelope(), DIALECTS["iso87ascii"]), DIALECTS["iso87ascii"])[1] == message
    finally:
        codec_module.use_codec(before)
    with pytest.raises(ConfigError, match="unknown codec 'fast'"):
        codec_module.use_codec("fast")


def test_the_environment_variable_chooses_the_codec() -> None:
    script = "from iso_host.wire import codec; print(codec.codec_in_use())"
    for value, expected in (("pyiso8583", "pyiso8583"), ("compiled", "compiled")):
        env = {**os.environ, codec_module.CODEC_VARIABLE: value}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == expected
    env = {**os.environ, codec_module.CODEC_VARIABLE: "fast"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "ISO_HOST_CODEC: unknown codec 'fast'" in result.stderr


def test_encoders_generated_per_field_set_stay_bounded_and_right() -> None:
    """One generated encoder per set of fields, at most _PLANS_MAX of them: past that the cache starts over."""
    dialect = DIALECTS["iso87binary"]
    compiled = codec_module.compiled_codec(dialect)
    assert compiled is not None
    optional = ["7", "12", "13", "14", "22", "25", "37", "38", "39"]
    for index in range(_PLANS_MAX + 40):
        chosen = [field_id for bit, field_id in enumerate(optional) if index >> bit & 1]
        values = {
            "3": "000000",
            "11": f"{index:06d}",
            "41": "TERM0001",
            **{f: dialect.spec[f]["max_len"] * "1" for f in chosen},
        }
        message = Message("0210", values)
        assert both_encode(message, Envelope(), dialect)[0] == "ok"
        assert len(compiled._plans) <= _PLANS_MAX
