"""A codec compiled from a dialect's pyiso8583 field specs: the same bytes and values, several times faster.

``compile_spec`` turns the spec dict pyiso8583 reads (the one ``Dialect.spec`` holds) into one small
closure per field: fixed or LL/LLL/LLLL-prefixed (ASCII or any Python text codec, BCD, binary; counting
bytes or nibbles), data as text, hex or BCD with its pad nibble, the primary and secondary bitmaps
(binary or hex text), the MTI (binary or text). Each closure does exactly what pyiso8583 does for that
field, without its per-field dict bookkeeping. Plain fixed fields (text, hex, even-digit BCD) are read in
the decode loop itself; encoding a message without pads runs a function generated for its set of fields
(constant bitmap, fixed fields written inline: ``CompiledCodec._plan``).

What it does not cover it does not guess at: ``decode`` and ``encode`` return None and the caller
(``wire/codec.py``) runs pyiso8583 instead, which then gives the answer or the error. That is:

- a whole dialect with a message header field ``h`` (``max_len`` > 0): no compiled codec;
- a field whose spec has both ``left_pad`` and ``right_pad``: a message carrying it;
- a tertiary bitmap (bit 65 set), a field the dialect does not define, a key pyiso8583 would drop or
  reject (``"1"``, ``"65"``, ``"02"``, non-numeric keys);
- every malformed frame and every value that cannot be encoded. The error a peer sees therefore comes
  from pyiso8583 itself (same type, message, field and offset); only well-formed traffic is compiled.

An odd-length BCD field padded with the other nibble (``F`` for ``0`` or back) is read here as the
reference reads it after its retry: the nibble is stripped and remembered in ``pads``.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from typing import Any, Final

PAD_NIBBLES: Final = ("0", "F")  # the pads an odd BCD field may carry whatever its spec says (codec.py's)

# body, offset, pads (filled in when a field carries the other pad nibble) → value, next offset
FieldDecoder = Callable[[bytes, int, dict[str, str]], tuple[str, int]]
# value, the pad nibble to use instead of the spec's (or None) → length prefix and data
FieldEncoder = Callable[[str, str | None], bytes]


class Uncovered(Exception):  # a signal to fall back, never an error anyone sees
    """Raised inside the compiled closures: let pyiso8583 handle this frame or message."""


_UNCOVERED: Final = Uncovered()


def _pad_of(spec: Mapping[str, Any]) -> tuple[str, str] | None:
    """("left"|"right", nibble) of a field with one pad, None without; Uncovered with both."""
    left, right = spec.get("left_pad", "")[:1], spec.get("right_pad", "")[:1]
    if left and right:
        raise _UNCOVERED
    if left:
        return "left", left
    if right:
        return "right", right
    return None


def _length_reader(spec: Mapping[str, Any]) -> Callable[[bytes], int]:
    """How pyiso8583 reads this field's length prefix (its exact expression, so its exact failures)."""
    len_enc = spec["len_enc"]
    if len_enc == "b":
        return lambda raw: int.from_bytes(raw, "big", signed=False)
    if len_enc == "bcd":
        return lambda raw: int(raw.hex(), 10)
    return lambda raw: int(raw.decode(len_enc))


def _length_writer(spec: Mapping[str, Any]) -> Callable[[int], bytes]:
    """The length prefix pyiso8583 writes for a length, cached per length (only lengths seen are kept)."""
    len_enc, len_type = spec["len_enc"], spec["len_type"]
    cache: dict[int, bytes] = {}

    def write(length: int) -> bytes:
        prefix = cache.get(length)
        if prefix is None:
            if len_enc == "b":
                prefix = length.to_bytes(len_type, "big", signed=False)
            elif len_enc == "bcd":
                digits = f"{length:0{len_type * 2}d}"
                if len(digits) > len_type * 2:
                    raise _UNCOVERED
                prefix = binascii.a2b_hex(digits)
            else:
                prefix = f"{length:0{len_type}d}".encode(len_enc)
                if len(prefix) > len_type:
                    raise _UNCOVERED
            cache[length] = prefix
        return prefix

    return write


def _value_reader(field_id: str, spec: Mapping[str, Any]) -> Callable[[bytes, int, dict[str, str]], str]:
    """Field data → value: text decoded, binary as upper-case hex, an odd nibble count's pad stripped."""
    data_enc = spec["data_enc"]
    if data_enc != "b":
        return lambda data, nibbles, pads: data.decode(data_enc)
    if spec.get("len_count", "bytes") != "nibbles":
        return lambda data, nibbles, pads: data.hex().upper()
    pad = _pad_of(spec)

    def read(data: bytes, nibbles: int, pads: dict[str, str]) -> str:
        value = data.hex().upper()
        if not nibbles & 1:
            return value
        if pad is None:
            raise _UNCOVERED
        side, nibble = pad
        found = value[:1] if side == "left" else value[-1:]
        if found != nibble:
            if found not in PAD_NIBBLES:
                raise _UNCOVERED
            pads[field_id] = found  # the reference's retry with the other nibble
        return value[1:] if side == "left" else value[:-1]

    return read


def _plain_fixed(spec: Mapping[str, Any]) -> tuple[int, str | None]:
    """(byte size, text codec or None for hex) of a fixed field read in one step; (0, None) for the others."""
    max_len, nibble_count, data_enc = spec["max_len"], spec.get("len_count", "bytes") == "nibbles", spec["data_enc"]
    if spec["len_type"] or not max_len or (nibble_count and data_enc == "b" and max_len & 1):
        return 0, None
    return (max_len + 1) // 2 if nibble_count else max_len, None if data_enc == "b" else data_enc


def _plain_encoding(spec: Mapping[str, Any]) -> tuple[int, str | None]:
    """(byte size, text codec or None for hex) of a fixed field written in one step; (0, None) for the others.

    Text counted in bytes, hex counted in bytes, or BCD of an even digit count without a pad: its value's
    bytes must be exactly ``size`` long, which is pyiso8583's length check for these.
    """
    max_len, nibble_count, data_enc = spec["max_len"], spec.get("len_count", "bytes") == "nibbles", spec["data_enc"]
    if spec["len_type"] or not max_len or spec.get("left_pad") or spec.get("right_pad"):
        return 0, None
    if data_enc != "b":
        return (0, None) if nibble_count else (max_len, data_enc)
    if nibble_count:
        return (0, None) if max_len & 1 else (max_len // 2, None)
    return max_len, None


def field_decoder(field_id: str, spec: Mapping[str, Any]) -> FieldDecoder:
    """pyiso8583's ``_decode_field`` for one field spec."""
    len_type, max_len = spec["len_type"], spec["max_len"]
    nibble_count = spec.get("len_count", "bytes") == "nibbles"
    read_value = _value_reader(field_id, spec)
    data_enc = spec["data_enc"]
    if len_type == 0 and max_len and not (nibble_count and data_enc == "b" and max_len & 1):
        # The common fixed fields, read in one step: text, hex, or BCD of an even digit count.
        size = (max_len + 1) // 2 if nibble_count else max_len
        if data_enc == "b":

            def fixed_hex(body: bytes, offset: int, pads: dict[str, str]) -> tuple[str, int]:
                end = offset + size
                data = body[offset:end]
                if len(data) != size:
                    raise _UNCOVERED
                return data.hex().upper(), end

            return fixed_hex

        def fixed_text(body: bytes, offset: int, pads: dict[str, str]) -> tuple[str, int]:
            end = offset + size
            data = body[offset:end]
            if len(data) != size:
                raise _UNCOVERED
            return data.decode(data_enc), end

        return fixed_text
    if len_type == 0:
        size = (max_len + 1) // 2 if nibble_count else max_len

        def fixed(body: bytes, offset: int, pads: dict[str, str]) -> tuple[str, int]:
            if max_len == 0:
                return "", offset
            end = offset + size
            data = body[offset:end]
            if len(data) != size:
                raise _UNCOVERED
            return read_value(data, max_len, pads), end

        return fixed
    read_length = _length_reader(spec)

    def variable(body: bytes, offset: int, pads: dict[str, str]) -> tuple[str, int]:
        start = offset + len_type
        raw = body[offset:start]
        if len(raw) != len_type:
            raise _UNCOVERED
        length = read_length(raw)
        if length > max_len:
            raise _UNCOVERED
        if length == 0:
            return "", start
        size = (length + 1) // 2 if nibble_count else length
        end = start + size
        data = body[start:end]
        if len(data) != size:
            raise _UNCOVERED
        return read_value(data, length, pads), end

    return variable


def field_encoder(spec: Mapping[str, Any]) -> FieldEncoder:
    """pyiso8583's ``_encode_field`` for one field spec (``pad``: the nibble a decoded request carried)."""
    data_enc, len_type, max_len = spec["data_enc"], spec["len_type"], spec["max_len"]
    nibble_count = spec.get("len_count", "bytes") == "nibbles"
    pad_side = _pad_of(spec)
    write_length = _length_writer(spec) if len_type else None
    if data_enc != "b" and not nibble_count:
        # Text counted in bytes, the most common field: no pad, no nibbles.
        if write_length is None:

            def fixed_text(value: str, pad: str | None) -> bytes:
                data = value.encode(data_enc)
                if len(data) != max_len or pad is not None:
                    raise _UNCOVERED
                return data

            return fixed_text
        prefixed = write_length

        def variable_text(value: str, pad: str | None) -> bytes:
            data = value.encode(data_enc)
            if len(data) > max_len or pad is not None:
                raise _UNCOVERED
            return prefixed(len(data)) + data

        return variable_text

    def encode(value: str, pad: str | None) -> bytes:
        if pad is not None and pad_side is None:
            raise _UNCOVERED  # the reference has no pad to replace (and asserts)
        if data_enc == "b":
            if nibble_count and len(value) & 1:
                if pad_side is None:
                    raise _UNCOVERED
                nibble = pad_side[1] if pad is None else pad[:1]
                if not nibble:
                    raise _UNCOVERED
                data = binascii.a2b_hex(nibble + value if pad_side[0] == "left" else value + nibble)
            else:
                data = binascii.a2b_hex(value)
            length = len(value) if nibble_count else len(data)
        else:
            data = value.encode(data_enc)
            length = len(data) * 2 if nibble_count else len(data)
        if write_length is None:
            if length != max_len:
                raise _UNCOVERED
            return data
        if length > max_len:
            raise _UNCOVERED
        return write_length(length) + data

    return encode


def _bitmap_table(base: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Per bitmap byte and byte value, the field numbers its set bits name, in order."""
    return tuple(
        tuple(tuple(base + position * 8 + bit for bit in range(1, 9) if value >> (8 - bit) & 1) for value in range(256))
        for position in range(8)
    )


_PLANS_MAX: Final = 256  # generated encoders kept per dialect (one per set of fields a message carries)
_PRIMARY: Final = _bitmap_table(0)
_SECONDARY: Final = _bitmap_table(64)


class CompiledCodec:
    """One dialect's compiled codec. ``decode``/``encode`` return None where pyiso8583 must answer."""

    __slots__ = ("_binary_bitmaps", "_decoders", "_encoders", "_mti_binary", "_mti_enc", "_order", "_plans",
                 "_primary_enc", "_secondary_binary", "_secondary_enc", "covered")  # fmt: skip

    def __init__(self, spec: Mapping[str, Mapping[str, Any]]) -> None:
        if spec["h"]["max_len"] > 0:
            raise _UNCOVERED
        self._mti_binary = spec["t"]["data_enc"] == "b"
        self._mti_enc: str = spec["t"]["data_enc"]
        self._primary_enc: str = spec["p"]["data_enc"]
        secondary = spec.get("1")
        self._secondary_enc: str | None = None if secondary is None else secondary["data_enc"]
        self._binary_bitmaps = self._primary_enc == "b"
        self._secondary_binary = self._secondary_enc == "b"
        # By field number: (field id, the byte size and text codec of a plain fixed field (0, None: not plain;
        # codec None: hex), the field's decoder); (field id, bitmap bit, the same for writing, encoder).
        # By field id: its number.
        decoders: dict[int, tuple[str, int, str | None, FieldDecoder]] = {}
        encoders: dict[int, tuple[str, int, int, str | None, FieldEncoder]] = {}
        order: dict[str, int] = {}
        for field_id, field_spec in spec.items():
            if not (field_id.isdigit() and field_id == str(int(field_id)) and 2 <= int(field_id) <= 128):
                continue
            number = int(field_id)
            if number == 65:
                continue
            try:
                size, text = _plain_fixed(field_spec)
                decoders[number] = (field_id, size, text, field_decoder(field_id, field_spec))
                plain = _plain_encoding(field_spec)
                encoders[number] = (field_id, 1 << (128 - number), *plain, field_encoder(field_spec))
            except Uncovered:
                continue
            order[field_id] = number
        self._decoders = decoders
        self._encoders = encoders
        self._order = order
        self._plans: dict[tuple[str, ...], Callable[[bytes, Mapping[str, str]], bytes]] = {}
        self.covered = frozenset(order)

    def decode(self, body: bytes) -> tuple[str, dict[str, str], dict[str, str]] | None:
        """The MTI, the fields in field order and the pads, or None: pyiso8583 decides."""
        try:
            return self._decode(body)
        except Exception:  # (any failure: the reference decodes it, and raises its own error)
            return None

    def _mti(self, body: bytes) -> tuple[str, int]:
        if self._mti_binary:
            raw = body[:2]
            if len(raw) != 2:
                raise _UNCOVERED
            return raw.hex().upper(), 2
        raw = body[:4]
        if len(raw) != 4:
            raise _UNCOVERED
        return raw.decode(self._mti_enc), 4

    def _decode(self, body: bytes) -> tuple[str, dict[str, str], dict[str, str]]:
        mti, offset = self._mti(body)
        bitmap, offset = self._bitmap(body, offset, self._binary_bitmaps, self._primary_enc)
        numbers: list[int] = []
        for position, byte in enumerate(bitmap):
            if byte:
                numbers.extend(_PRIMARY[position][byte])
        if numbers and numbers[0] == 1:
            del numbers[0]
            if self._secondary_enc is None:
                raise _UNCOVERED
            secondary, offset = self._bitmap(body, offset, self._secondary_binary, self._secondary_enc)
            if secondary[:1] >= b"\x80":  # bit 65: a tertiary bitmap
                raise _UNCOVERED
            for position, byte in enumerate(secondary):
                if byte:
                    numbers.extend(_SECONDARY[position][byte])
        decoders = self._decoders
        fields: dict[str, str] = {}
        pads: dict[str, str] = {}
        for number in numbers:
            field_id, size, text, decode_field = decoders[number]
            if size:  # a plain fixed field, read here rather than through a call
                end = offset + size
                data = body[offset:end]
                if len(data) != size:
                    raise _UNCOVERED
                fields[field_id] = data.hex().upper() if text is None else data.decode(text)
                offset = end
            else:
                fields[field_id], offset = decode_field(body, offset, pads)
        if offset != len(body):
            raise _UNCOVERED
        return mti, fields, pads

    @staticmethod
    def _bitmap(body: bytes, offset: int, binary: bool, encoding: str | None) -> tuple[bytes, int]:
        if binary:
            end = offset + 8
            raw = body[offset:end]
            if len(raw) != 8:
                raise _UNCOVERED
            return raw, end
        end = offset + 16
        raw = body[offset:end]
        if len(raw) != 16 or encoding is None:
            raise _UNCOVERED
        return bytes.fromhex(raw.decode(encoding)), end

    def encode(self, mti: str, fields: Mapping[str, str], pads: Mapping[str, str]) -> bytes | None:
        """The message's bytes as pyiso8583 writes them, or None: pyiso8583 encodes (or raises)."""
        try:
            return self._encode(mti, fields, pads)
        except Exception:  # (any failure: the reference encodes it, and raises its own error)
            return None

    def _encode(self, mti: str, fields: Mapping[str, str], pads: Mapping[str, str]) -> bytes:
        if self._mti_binary:
            head = binascii.a2b_hex(mti)
            if len(head) != 2:
                raise _UNCOVERED
        else:
            head = mti.encode(self._mti_enc)
            if len(head) != 4:
                raise _UNCOVERED
        if not pads:  # the usual case: one generated function per set of fields (a reply of each kind)
            key = tuple(fields)
            plan = self._plans.get(key) or self._plan(key)
            return plan(head, fields)
        encoders = self._encoders
        bits = 0
        parts = [head, b""]
        for number in sorted(map(self._order.__getitem__, fields)):
            field_id, bit, _, _, encode_field = encoders[number]
            bits |= bit
            parts.append(encode_field(fields[field_id], pads.get(field_id)))
        parts[1] = self._bitmaps(bits)
        return b"".join(parts)

    def _bitmaps(self, bits: int) -> bytes:
        """The primary bitmap (and the secondary, when a field above 64 is set) of 128 field bits."""
        primary, secondary = bits >> 64, bits & 0xFFFF_FFFF_FFFF_FFFF
        if not secondary:
            return self._bitmap_bytes(primary, self._binary_bitmaps, self._primary_enc)
        if self._secondary_enc is None:
            raise _UNCOVERED
        primary |= 1 << 63
        secondary_bytes = self._bitmap_bytes(secondary, self._secondary_binary, self._secondary_enc)
        return self._bitmap_bytes(primary, self._binary_bitmaps, self._primary_enc) + secondary_bytes

    def _plan(self, key: tuple[str, ...]) -> Callable[[bytes, Mapping[str, str]], bytes]:
        """A function writing the messages that carry exactly these fields, without pads.

        Generated from the field encoders: the bitmap is a constant, plain fixed fields are written and
        length-checked inline, the others call their encoder. The source holds only generated names; the
        field ids, codecs and encoders are passed in its namespace. Kept per field set, at most _PLANS_MAX.
        """
        numbers = sorted(self._order[field_id] for field_id in key)  # an unknown field: Uncovered via KeyError
        namespace: dict[str, Any] = {"_a2b": binascii.a2b_hex, "_uncovered": _UNCOVERED}
        lines: list[str] = []
        checks: list[str] = []
        bits = 0
        for index, number in enumerate(numbers):
            field_id, bit, size, text, encode_field = self._encoders[number]
            bits |= bit
            namespace[f"k{index}"], namespace[f"t{index}"], namespace[f"e{index}"] = field_id, text, encode_field
            if not size:
                lines.append(f"    v{index} = e{index}(f[k{index}], None)")
                continue
            reader = f"_a2b(f[k{index}])" if text is None else f"f[k{index}].encode(t{index})"
            lines.append(f"    v{index} = {reader}")
            checks.append(f"len(v{index}) != {size:d}")
        namespace["bitmaps"] = self._bitmaps(bits)
        if checks:
            lines.append(f"    if {' or '.join(checks)}:\n        raise _uncovered")
        values = "".join(f"v{index}, " for index in range(len(numbers)))
        lines.append(f"    return b''.join((head, bitmaps, {values}))")
        source = "def plan(head, f):\n" + "\n".join(lines) + "\n"
        exec(compile(source, "<iso_host.wire.compiled plan>", "exec"), namespace)  # noqa: S102 (generated above)
        plan: Callable[[bytes, Mapping[str, str]], bytes] = namespace["plan"]
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    @staticmethod
    def _bitmap_bytes(bits: int, binary: bool, encoding: str) -> bytes:
        if binary:
            return bits.to_bytes(8, "big")
        return f"{bits:016X}".encode(encoding)


def compile_spec(spec: Mapping[str, Mapping[str, Any]]) -> CompiledCodec | None:
    """The compiled codec for a pyiso8583 spec, or None for a dialect it does not cover (a header ``h``)."""
    try:
        return CompiledCodec(spec)
    except (Uncovered, KeyError):
        return None
