"""The fuzzer's mutation engine: valid frame bodies in, (mutation, mutated body) out. Pure: no I/O, no clock.

A frame body is what follows the length header (TPDU and CUP header included). Every fuzz frame is a
function of (seed, index) alone: ``frame_rng(seed, index)`` seeds the one ``random.Random`` it draws from,
so a reproducer needs nothing but the two numbers and the seed frames. Mutations know the dialect where
it matters: length prefixes are ASCII digits, BCD or binary as the field spec says, the bitmap is binary
or hex text, and BCD nibble corruption only touches BCD fields. After a mutation, a frame that still
decodes and is of a MAC'd kind can be re-MAC'd with the terminal's TAK, so that the mutation reaches past
the MAC check (``seal``); one frame in ``KEEP_MAC_ONE_IN`` keeps its MAC as mutated, to fuzz that check too.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import iso8583  # type: ignore[import-untyped,unused-ignore]

from iso_host.core.message_auth import MAC_PLACEHOLDER, has_mac, mac_field_of, seal
from iso_host.errors import WireError
from iso_host.wire import Dialect, Message, WireDecodeError, decode

MUTATIONS: Final = (
    "bit_flip", "length_lie", "bitmap_toggle", "bcd_nibble", "truncate", "oversize", "field_corrupt", "random_bytes",
)  # fmt: skip
# How often each mutation is drawn, relative to the others that apply to a seed. Oversized frames cost the
# host a close and us a reconnect and teach little after the first few: they are drawn least.
WEIGHTS: Final = {
    "bit_flip": 8, "length_lie": 6, "bitmap_toggle": 4, "bcd_nibble": 6, "truncate": 4, "oversize": 1,
    "field_corrupt": 6, "random_bytes": 3,
}  # fmt: skip
KEEP_MAC_ONE_IN: Final = 10  # one re-MAC-able frame in ten keeps its mutated MAC: the MAC check is fuzzed too
MAX_FLIPPED_BITS: Final = 4
OVERSIZE_FACTOR: Final = 2  # oversized bodies stay under twice the limit: enough to cross it, cheap to send
NON_DECIMAL_NIBBLES: Final = range(0xA, 0x10)
TEXT_JUNK: Final = string.ascii_letters + string.punctuation + " "
assert KEEP_MAC_ONE_IN > 1
assert len(MUTATIONS) == len(set(MUTATIONS))
assert tuple(WEIGHTS) == MUTATIONS


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one field of a seed frame sits, counted from the first byte of the body (envelope included)."""

    field_id: str  # "t" (MTI), "p" (primary bitmap), "1" (secondary bitmap), "2".."128"
    start: int  # the first byte of the length prefix (or of the data for a fixed field)
    prefix_bytes: int
    data_bytes: int

    @property
    def data_start(self) -> int:
        return self.start + self.prefix_bytes

    @property
    def end(self) -> int:
        return self.data_start + self.data_bytes


@dataclass(frozen=True, slots=True)
class SeedFrame:
    """A valid frame body of one kind (a template name) and where its fields are."""

    kind: str
    body: bytes
    slots: tuple[Slot, ...]
    weight: int = 1  # how often it is drawn, relative to the other seeds

    def slot(self, field_id: str) -> Slot | None:
        return next((s for s in self.slots if s.field_id == field_id), None)


@dataclass(frozen=True, slots=True)
class Tak:
    """The MAC key in force for the fuzzed terminal and the algorithm it MACs with."""

    algorithm: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reading:
    """What our codec makes of a frame body."""

    message: Message | None  # None: the body does not decode whole
    mti_read: bool  # the MTI (4 digits) was read, even if a later field failed
    error: str | None = None  # why it did not decode, naming the field and byte offset


@dataclass(frozen=True, slots=True)
class FuzzFrame:
    """One fuzz frame, ready to send: what it came from, what was done to it, what our codec reads in it."""

    index: int
    kind: str  # the seed's template name
    mutation: str
    body: bytes
    reading: Reading
    tak: Tak | None  # the terminal's MAC key when it was built (None: the terminal sends no MACs)
    remaced: bool  # its MAC was recomputed with ``tak`` after the mutation
    decoded_kind: str | None  # the kind the dialect classifies it as, when it decodes
    mac_kind: bool  # that kind is one the dialect MACs


def seed_frame(dialect: Dialect, kind: str, body: bytes, weight: int = 1) -> SeedFrame:
    """Index the fields of a valid frame body.

    Raises:
        WireError: the body does not decode with the dialect (a seed must be valid).
    """
    decode(body, dialect)  # raises WireDecodeError with field and offset
    _, encoded = iso8583.decode(body[dialect.envelope_bytes :], dialect.spec)
    offset = dialect.envelope_bytes
    slots = []
    for field_id, parts in encoded.items():  # pyiso8583 keeps wire order
        slots.append(Slot(field_id, offset, len(parts["len"]), len(parts["data"])))
        offset = slots[-1].end
    if offset != len(body):
        raise WireError(f"{len(body) - offset} bytes after the last field", field=slots[-1].field_id, offset=offset)
    assert slots[0].field_id == "t"
    assert weight > 0
    return SeedFrame(kind, body, tuple(slots), weight)


def frame_rng(seed: int, index: int) -> random.Random:
    """The generator of frame ``index`` of run ``seed``: a string seed is hashed (SHA-512), so stable everywhere."""
    assert index >= 0
    return random.Random(f"iso-host-fuzz/{seed}/{index}")


def read_frame(dialect: Dialect, body: bytes) -> Reading:
    """Decode a body with the dialect codec, as a host built on it would."""
    try:
        _, message = decode(body, dialect)
    except WireDecodeError as error:
        return Reading(None, error.partial is not None, str(error))
    except WireError as error:
        return Reading(None, mti_read=False, error=str(error))
    mti_ok = len(message.mti) == 4 and message.mti.isdigit()
    return Reading(message if mti_ok else None, mti_ok, None if mti_ok else f"MTI is not 4 digits: {message.mti!r}")


def remac(dialect: Dialect, body: bytes, message: Message, tak: Tak) -> bytes | None:
    """The body with its MAC recomputed under ``tak``; None when it carries no MAC field to fill."""
    if not has_mac(message):
        return None
    sealed_as = Message(message.mti, {**message.fields, mac_field_of(message): MAC_PLACEHOLDER})
    envelope = dialect.envelope_bytes
    return body[:envelope] + seal(body[envelope:], sealed_as, dialect, tak.algorithm, tak.key)


# The mutations. Each takes the seed, the generator and the dialect and returns the mutated body, or None
# when it does not apply to this seed (no LL field, no BCD field...): the caller then picks another.


def _bit_flip(seed: SeedFrame, rng: random.Random, _dialect: Dialect) -> bytes | None:
    body = bytearray(seed.body)
    for bit in rng.sample(range(len(body) * 8), rng.randint(1, MAX_FLIPPED_BITS)):  # distinct: none undone
        body[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(body)


def prefix_capacity(len_enc: str, len_type: int) -> int:
    """The largest length a prefix of ``len_type`` digits (ASCII) or bytes (BCD, binary) can state."""
    if len_enc == "b":
        return int(256**len_type - 1)
    if len_enc == "bcd":
        return int(10 ** (2 * len_type) - 1)
    return int(10**len_type - 1)


def encode_prefix(len_enc: str, len_type: int, length: int) -> bytes:
    """A length prefix as the field spec writes it: ASCII digits, BCD digits or big-endian binary."""
    assert 0 <= length <= prefix_capacity(len_enc, len_type)
    if len_enc == "b":
        return length.to_bytes(len_type, "big")
    if len_enc == "bcd":
        return bytes.fromhex(f"{length:0{2 * len_type}d}")
    return f"{length:0{len_type}d}".encode(len_enc)


def _length_lie(seed: SeedFrame, rng: random.Random, dialect: Dialect) -> bytes | None:
    variable = [s for s in seed.slots if s.prefix_bytes]
    if not variable:
        return None
    slot = rng.choice(variable)
    spec = dialect.spec[slot.field_id]
    capacity = prefix_capacity(spec["len_enc"], spec["len_type"])
    truth = seed.body[slot.start : slot.data_start]
    lies = {0, 1, int(spec["max_len"]), int(spec["max_len"]) + 1, capacity, rng.randint(0, capacity)}
    for step in (-1, 1):
        told = _told_length(truth, spec["len_enc"])
        if told is not None:
            lies.add(told + step)
    prefixes = {encode_prefix(spec["len_enc"], spec["len_type"], n) for n in lies if 0 <= n <= capacity} - {truth}
    if not prefixes:
        return None
    lie = rng.choice(sorted(prefixes))
    return seed.body[: slot.start] + lie + seed.body[slot.data_start :]


def _told_length(prefix: bytes, len_enc: str) -> int | None:
    if len_enc == "b":
        return int.from_bytes(prefix, "big")
    digits = prefix.hex() if len_enc == "bcd" else prefix.decode(len_enc, errors="replace")
    return int(digits, 10) if digits.isdigit() else None


def _bitmap_toggle(seed: SeedFrame, rng: random.Random, dialect: Dialect) -> bytes | None:
    primary, secondary = seed.slot("p"), seed.slot("1")
    assert primary is not None, "every seed decodes, so it has a bitmap"
    bit = rng.randint(1, 128 if secondary is not None else 64)
    slot = primary if bit <= 64 or secondary is None else secondary
    bit = (bit - 1) % 64
    raw = seed.body[slot.data_start : slot.end]
    if dialect.spec[slot.field_id]["data_enc"] == "b":
        toggled = (int.from_bytes(raw, "big") ^ (1 << (63 - bit))).to_bytes(8, "big")
    else:  # hex text (iso87ascii)
        toggled = f"{int(raw.decode('ascii'), 16) ^ (1 << (63 - bit)):016X}".encode("ascii")
    assert len(toggled) == len(raw)
    return seed.body[: slot.data_start] + toggled + seed.body[slot.end :]


def bcd_regions(seed: SeedFrame, dialect: Dialect) -> list[tuple[int, int]]:
    """(start, end) of every BCD run in a seed: BCD MTI, BCD numeric fields, BCD length prefixes."""
    regions = []
    for slot in seed.slots:
        spec = dialect.spec[slot.field_id]
        if slot.prefix_bytes and spec["len_enc"] == "bcd":
            regions.append((slot.start, slot.data_start))
        numeric = spec.get("len_count") == "nibbles" or slot.field_id == "t"
        if spec["data_enc"] == "b" and numeric and slot.data_bytes:
            regions.append((slot.data_start, slot.end))
    return regions


def _bcd_nibble(seed: SeedFrame, rng: random.Random, dialect: Dialect) -> bytes | None:
    regions = bcd_regions(seed, dialect)
    if not regions:
        return None
    start, end = rng.choice(regions)
    position = rng.randrange(start, end)
    nibble = rng.choice(NON_DECIMAL_NIBBLES)
    body = bytearray(seed.body)
    body[position] = (body[position] & 0x0F) | (nibble << 4) if rng.random() < 0.5 else (body[position] & 0xF0) | nibble
    return bytes(body)


def _truncate(seed: SeedFrame, rng: random.Random, _dialect: Dialect) -> bytes | None:
    if len(seed.body) < 2:
        return None
    return seed.body[: rng.randrange(1, len(seed.body))]  # never empty: an empty frame is a keep-alive


def _typed(dialect: Dialect, slot: Slot) -> bool:
    """A field with a type to break: text, or BCD digits (raw binary such as a PIN block or MAC has none)."""
    spec = dialect.spec[slot.field_id]
    return spec["data_enc"] != "b" or spec.get("len_count") == "nibbles"


def _field_corrupt(seed: SeedFrame, rng: random.Random, dialect: Dialect) -> bytes | None:
    typed = [
        s for s in seed.slots if s.field_id.isdigit() and s.field_id != "1" and s.data_bytes and _typed(dialect, s)
    ]
    if not typed:
        return None
    slot = rng.choice(typed)
    spec = dialect.spec[slot.field_id]
    size = slot.data_bytes
    if spec["data_enc"] == "b":  # BCD digits → bytes with non-decimal nibbles
        junk = bytes(rng.choice(NON_DECIMAL_NIBBLES) << 4 | rng.randrange(16) for _ in range(size))
    elif seed.body[slot.data_start : slot.end].isdigit() and rng.random() < 0.5:  # digits → letters
        junk = "".join(rng.choice(TEXT_JUNK) for _ in range(size)).encode("ascii")
    else:  # text → bytes no text codec of ours decodes, or control characters
        junk = bytes(rng.choice((rng.randrange(0x80, 0x100), rng.randrange(0x20))) for _ in range(size))
    return seed.body[: slot.data_start] + junk + seed.body[slot.end :]


def _random_bytes(seed: SeedFrame, rng: random.Random, dialect: Dialect) -> bytes | None:
    size = rng.randint(1, 2 * len(seed.body))
    if rng.random() < 0.5:  # keep the envelope and MTI, so that the host must answer the rest with a 30
        mti = seed.slot("t")
        assert mti is not None
        head = seed.body[: mti.end]
        return head + rng.randbytes(max(0, size - len(head)))
    return rng.randbytes(size)


Mutate = Callable[[SeedFrame, random.Random, Dialect], "bytes | None"]


class Mutator:
    """Fuzz frames from seed frames: frame ``index`` of run ``seed`` is always the same bytes."""

    def __init__(self, dialect: Dialect, seeds: Sequence[SeedFrame], *, max_frame_bytes: int) -> None:
        assert seeds, "at least one seed frame"
        assert 0 < max_frame_bytes < dialect.length_header.max_length, "oversize needs room above the limit"
        self.dialect = dialect
        self.seeds = tuple(seeds)
        self.max_frame_bytes = max_frame_bytes
        self.table: dict[str, Mutate] = {
            "bit_flip": _bit_flip, "length_lie": _length_lie, "bitmap_toggle": _bitmap_toggle,
            "bcd_nibble": _bcd_nibble, "truncate": _truncate, "oversize": self._oversize,
            "field_corrupt": _field_corrupt, "random_bytes": _random_bytes,
        }  # fmt: skip
        assert tuple(self.table) == MUTATIONS
        # Per seed, the mutations that apply to it (a BCD nibble needs a BCD field, a length lie an LL field).
        probe = random.Random(0)
        self.applicable = {
            id(seed): tuple(name for name, mutate in self.table.items() if mutate(seed, probe, dialect) is not None)
            for seed in self.seeds
        }
        assert all(self.applicable.values())

    @property
    def mutation_names(self) -> tuple[str, ...]:
        """The mutations some seed of this dialect allows, in ``MUTATIONS`` order."""
        names = {name for names in self.applicable.values() for name in names}
        return tuple(name for name in MUTATIONS if name in names)

    def _oversize(self, seed: SeedFrame, rng: random.Random, _dialect: Dialect) -> bytes | None:
        ceiling = min(self.dialect.length_header.max_length, OVERSIZE_FACTOR * self.max_frame_bytes)
        target = rng.randint(self.max_frame_bytes + 1, ceiling)
        return seed.body + rng.randbytes(target - len(seed.body))

    def mutate(self, rng: random.Random) -> tuple[SeedFrame, str, bytes]:
        """One mutation of one seed, both chosen by ``rng``."""
        seed = rng.choices(self.seeds, weights=[s.weight for s in self.seeds])[0]
        names = self.applicable[id(seed)]
        name = rng.choices(names, weights=[WEIGHTS[n] for n in names])[0]
        body = self.table[name](seed, rng, self.dialect)
        if body is None:  # applicable to the probe's draw, not to this one (cannot happen today: kept safe)
            name, body = "bit_flip", _bit_flip(seed, rng, self.dialect)
        assert body is not None
        assert body, "an empty body is a keep-alive, never a fuzz frame"
        return seed, name, body

    def frame(self, seed: int, index: int, tak: Tak | None) -> FuzzFrame:
        """Frame ``index`` of run ``seed``, re-MAC'd with ``tak`` when it still decodes as a MAC'd kind."""
        rng = frame_rng(seed, index)
        origin, name, body = self.mutate(rng)
        keep_mac = rng.randrange(KEEP_MAC_ONE_IN) == 0
        reading = read_frame(self.dialect, body) if len(body) <= self.max_frame_bytes else Reading(None, False)
        message = reading.message
        rule = self.dialect.classify(message) if message is not None else None
        mac_kind = rule is not None and rule.kind in self.dialect.security.mac_kinds
        remaced = False
        if message is not None and mac_kind and tak is not None and not keep_mac:
            sealed = remac(self.dialect, body, message, tak)
            if sealed is not None:
                body, remaced = sealed, True
        return FuzzFrame(index, origin.kind, name, body, reading, tak, remaced, rule.kind if rule else None, mac_kind)


def mutations(dialect: Dialect, seeds: Sequence[SeedFrame], rng: random.Random, *,
              max_frame_bytes: int) -> Iterator[tuple[str, bytes]]:  # fmt: skip
    """(mutation, body) pairs drawn from one generator, without end: the same ``rng`` seed, the same stream."""
    mutator = Mutator(dialect, seeds, max_frame_bytes=max_frame_bytes)
    while True:  # an endless generator by design: the caller takes as many as it wants
        _, name, body = mutator.mutate(rng)
        yield name, body
