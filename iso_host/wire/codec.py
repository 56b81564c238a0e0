"""Encode and decode one frame body with a dialect. Pure: bytes in, messages out.

Every caller goes through this pair. Two codecs stand behind it:

- ``compiled`` (the default): ``wire/compiled.py``, compiled once per dialect from the same spec dict,
  for well-formed frames and encodable messages;
- ``pyiso8583``: the reference. It answers whatever the compiled codec does not cover (a dialect with a
  header field, a tertiary bitmap, an undefined field) and every frame or message that fails, so a
  peer's error (type, message, field, byte offset, the partial message) is always pyiso8583's.

``ISO_HOST_CODEC=pyiso8583`` (read at import), ``use_codec("pyiso8583")`` or ``codec="pyiso8583"`` on a
call forces the reference. pyiso8583's errors are re-raised as ``WireDecodeError`` without chaining: its
``s``, ``doc_dec`` and ``doc_enc`` hold the whole message, PAN included.
"""

from __future__ import annotations

import os
from typing import Any, Final

import iso8583  # type: ignore[import-untyped,unused-ignore]

from iso_host.errors import ConfigError, WireError
from iso_host.wire.compiled import PAD_NIBBLES, CompiledCodec, compile_spec
from iso_host.wire.dialect import Dialect
from iso_host.wire.message import Envelope, Message

_NOT_FIELDS: Final = frozenset({"h", "t", "p", "1"})
CODECS: Final = ("compiled", "pyiso8583")
CODEC_VARIABLE: Final = "ISO_HOST_CODEC"
_NO_ENVELOPE: Final = Envelope()  # frozen: one shared by every frame of a dialect without TPDU or header
__all__ = ["CODECS", "PAD_NIBBLES", "WireDecodeError", "codec_in_use", "compiled_codec", "decode", "encode",
           "use_codec"]  # fmt: skip


def _codec_named(name: str, where: str) -> str:
    if name not in CODECS:
        raise ConfigError(f"{where}: unknown codec {name!r}; expected one of {', '.join(CODECS)}")
    return name


_in_use = _codec_named(os.environ.get(CODEC_VARIABLE, "compiled"), CODEC_VARIABLE)
# id(spec) → (spec, its compiled codec or None). Dialects are few; the spec is kept to make the id safe.
_COMPILED: dict[int, tuple[dict[str, dict[str, Any]], CompiledCodec | None]] = {}
_COMPILED_MAX: Final = 64


def use_codec(name: str) -> str:
    """Make ``name`` ("compiled" or "pyiso8583") the codec of every later call; returns the one before."""
    global _in_use  # the process-wide choice, like the environment variable it overrides
    before, _in_use = _in_use, _codec_named(name, "use_codec")
    return before


def codec_in_use() -> str:
    return _in_use


def compiled_codec(dialect: Dialect) -> CompiledCodec | None:
    """The dialect's compiled codec (compiled at its first use), or None for a dialect it does not cover.

    A dialect's spec is never changed after loading; a new spec dict (another dialect) compiles anew.
    """
    spec = dialect.spec
    entry = _COMPILED.get(id(spec))
    if entry is not None and entry[0] is spec:
        return entry[1]
    compiled = compile_spec(spec)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED[id(spec)] = (spec, compiled)
    return compiled
_PAD_KEYS: Final = ("left_pad", "right_pad")


def _pad_key(field_spec: dict[str, Any]) -> str | None:
    return next((key for key in _PAD_KEYS if field_spec.get(key)), None)


def _repadded(error: Any, spec: dict[str, dict[str, Any]], pads: dict[str, str]) -> str | None:
    """The other pad nibble of an odd-length BCD field that failed only for its pad, or None."""
    field_id = error.field
    field_spec = spec.get(field_id)
    key = _pad_key(field_spec) if field_spec is not None else None
    if key is None or field_id in pads or field_spec is None or field_spec.get("len_count") != "nibbles":
        return None
    value = str(error.doc_dec.get(field_id, ""))
    nibble = value[:1] if key == "left_pad" else value[-1:]
    return nibble if nibble in PAD_NIBBLES and nibble != field_spec[key] else None


def _spec_with(spec: dict[str, dict[str, Any]], pads: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The dialect's spec with these fields' pad nibbles replaced."""
    changed = dict(spec)
    for field_id, nibble in pads.items():
        key = _pad_key(spec[field_id])
        assert key is not None
        changed[field_id] = {**spec[field_id], key: nibble}
    return changed


class WireDecodeError(WireError):
    """A frame whose envelope was read but whose message was not.

    Attributes:
        envelope: the TPDU and header, for addressing a reply.
        partial: the MTI and the fields decoded before the failure, or None when even the MTI
            could not be read. It may hold card data: never log it.
    """

    def __init__(
        self, reason: str, *, field: str, offset: int, envelope: Envelope, partial: Message | None
    ) -> None:
        super().__init__(reason, field=field, offset=offset)
        self.envelope = envelope
        self.partial = partial


def _partial_message(doc: dict[str, str], failed_field: str | None) -> Message | None:
    """The MTI and the fields decoded whole before ``failed_field`` (None: every field decoded whole)."""
    mti = doc.get("t", "")
    if len(mti) != 4 or not mti.isdigit() or failed_field == "t":
        return None
    fields = {k: v for k, v in doc.items() if k not in _NOT_FIELDS and k != failed_field}
    return Message(mti, fields)


def _mti_of(body: bytes, dialect: Dialect) -> str:
    if dialect.spec["t"]["data_enc"] == "b":
        return body[:2].hex()
    return body[:4].decode("ascii", errors="replace")


def decode(frame: bytes, dialect: Dialect, *, codec: str | None = None) -> tuple[Envelope, Message]:
    """Split off the envelope and decode the message (``codec``: this call's, else the one in use).

    Raises:
        WireDecodeError: naming the field and the byte offset (counted from the first byte after the
            length header) where decoding failed.
    """
    skip = dialect.envelope_bytes
    if len(frame) < skip:
        raise WireDecodeError(
            f"frame of {len(frame)} bytes is shorter than the {skip}-byte TPDU and header",
            field="header", offset=len(frame), envelope=Envelope(), partial=None,
        )  # fmt: skip
    tpdu_bytes = skip - dialect.header_bytes
    envelope = Envelope(frame[:tpdu_bytes], frame[tpdu_bytes:skip]) if skip else _NO_ENVELOPE
    body = frame[skip:]
    if (codec or _in_use) == "compiled" and (compiled := compiled_codec(dialect)) is not None:
        result = compiled.decode(body)
        if result is not None and len(result[0]) == 4 and result[0].isdigit():
            return envelope, Message(*result)
    pads: dict[str, str] = {}
    try:
        decoded = _decode_any_pad(body, dialect.spec, pads)
    except iso8583.DecodeError as error:
        # After "Extra data after last field" pyiso8583 names the last field, which decoded whole.
        trailing = error.msg.startswith("Extra data")
        partial = _partial_message(error.doc_dec, None if trailing else error.field)
        raise WireDecodeError(
            error.msg, field=error.field, offset=error.pos + skip, envelope=envelope, partial=partial
        ) from None
    except KeyError as error:
        # A bitmap bit for a field the dialect does not define.
        raise WireDecodeError(
            f"bitmap has field {error.args[0]} which dialect {dialect.name} does not define",
            field="p", offset=skip + (2 if dialect.spec["t"]["data_enc"] == "b" else 4),
            envelope=envelope, partial=_partial_message({"t": _mti_of(body, dialect)}, None),
        ) from None  # fmt: skip
    mti = decoded["t"]
    if len(mti) != 4 or not mti.isdigit():
        raise WireDecodeError(f"MTI is not 4 digits: {mti!r}", field="t", offset=skip, envelope=envelope, partial=None)
    fields = {k: v for k, v in decoded.items() if k not in _NOT_FIELDS}
    return envelope, Message(mti, fields, pads)


def _decode_any_pad(body: bytes, spec: dict[str, dict[str, Any]], pads: dict[str, str]) -> dict[str, str]:
    """pyiso8583 knows one pad nibble per field: a field padded with the other is read again with it."""
    while True:
        try:
            decoded, _ = iso8583.decode(body, _spec_with(spec, pads) if pads else spec)
        except iso8583.DecodeError as error:
            nibble = _repadded(error, spec, pads)
            if nibble is None:
                raise
            pads[error.field] = nibble
            continue
        return dict(decoded)


def encode(message: Message, envelope: Envelope, dialect: Dialect, *, codec: str | None = None) -> bytes:
    """Encode a message after its envelope; the bitmap is derived from the fields present.

    Raises:
        ValueError: a field value the dialect cannot encode (a bug in a flow, not a peer error).
    """
    if (codec or _in_use) == "compiled" and (compiled := compiled_codec(dialect)) is not None:
        body = compiled.encode(message.mti, message.fields, message.pads)
        if body is not None:
            return bytes(envelope) + body
    document: dict[str, Any] = {"t": message.mti, **message.fields}
    if dialect.spec["h"]["max_len"]:
        document["h"] = ""
    pads = {k: v for k, v in message.pads.items() if k in message.fields}
    try:
        encoded, _ = iso8583.encode(document, _spec_with(dialect.spec, pads) if pads else dialect.spec)
    except iso8583.EncodeError as error:
        msg = f"cannot encode {message.mti} field {error.field}: {error.msg}"
        raise ValueError(msg) from None
    except KeyError as error:
        msg = f"cannot encode {message.mti}: field {error.args[0]} is not defined by dialect {dialect.name}"
        raise ValueError(msg) from None
    return bytes(envelope) + bytes(encoded)
