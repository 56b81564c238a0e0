"""The fuzzer's mutation engine: every frame follows from (seed, index), and every mutation does what it says."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_audit import remember_secret

from iso_host.errors import WireError
from iso_host.fuzz.mutations import (
    MUTATIONS,
    FuzzFrame,
    Mutator,
    Reading,
    SeedFrame,
    Tak,
    bcd_regions,
    encode_prefix,
    frame_rng,
    mutations,
    read_frame,
    seed_frame,
)  # fmt: skip
from iso_host.fuzz.report import ANSWERED, CLOSED, TIMEOUT, Tally, expects_answer, judge, mac_verifies
from iso_host.terminal.client import MacKeys, TerminalClient
from iso_host.wire import Dialect, load_dialect
from iso_host.wire.dialect import TEMPLATE_SAMPLE

DIALECTS: dict[str, Dialect] = {name: load_dialect(name) for name in ("iso87ascii", "iso87binary", "cup")}
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
MAX_FRAME_BYTES = 8_192
TAK_BYTES = {"x9.19": bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), "cup-ecb": bytes.fromhex("0123456789ABCDEF")}
ZERO_KEYS = {algorithm: bytes(len(key)) for algorithm, key in TAK_BYTES.items()}
remember_secret(*TAK_BYTES.values())

# A CUP echo (0820, 60.3 = 301) written by hand from shared/CUP.md and specs/cup.toml, not by our encoder:
#   TPDU 60 0003 0000 (destination NII 0003), CUP header 60 31 00000000 (application 60, version 31),
#   MTI 0820 in BCD, primary bitmap 0020000000C00010 (fields 11, 41, 42, 60),
#   F11 STAN 000001 (n6, BCD), F41 "TERM0001" (ans8), F42 "MERCHANT0000001" (ans15),
#   F60 LLL in BCD counted in digits: 0011, then "00" "000001" "301" padded right with 0 to 12 digits.
CUP_ECHO = bytes.fromhex(
    "6000030000" "603100000000" "0820" "0020000000C00010" "000001" "5445524D30303031"
    "4D45524348414E54303030303030" "31" "0011" "000000013010"
)  # fmt: skip


def seeds_of(name: str, *, mac: bool = False) -> list[SeedFrame]:
    """One seed per template, built by the terminal client (MAC'd kinds under a zero key when ``mac``)."""
    dialect = DIALECTS[name]
    client = TerminalClient(dialect, "TERM0001", "MERCHANT0000001")
    algorithm = dialect.security.mac_algorithm
    if mac and algorithm is not None:
        client.mac = MacKeys(algorithm, ZERO_KEYS[algorithm], ZERO_KEYS[algorithm])
    values = {k: v for k, v in TEMPLATE_SAMPLE.items() if k not in ("stan", "tid", "mid", "now")}
    header = dialect.length_header.size_bytes
    return [
        seed_frame(dialect, kind, client.frame(client.build(kind, NOW, **values))[header:])
        for kind in dialect.templates
    ]


def mutator_of(name: str, *, mac: bool = False) -> Mutator:
    return Mutator(DIALECTS[name], seeds_of(name, mac=mac), max_frame_bytes=MAX_FRAME_BYTES)


def differing_bytes(before: bytes, after: bytes) -> list[int]:
    assert len(before) == len(after)
    return [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]


class TestSeedFrame:
    def test_hand_written_cup_echo_is_what_the_client_sends(self) -> None:
        """The hand-written CUP echo is byte for byte what the terminal client builds from the template."""
        client = TerminalClient(DIALECTS["cup"], "TERM0001", "MERCHANT0000001")
        framed = client.frame(client.build("echo", NOW))
        assert framed[2:] == CUP_ECHO
        assert int.from_bytes(framed[:2], "big") == len(CUP_ECHO)

    def test_slots_of_the_hand_written_cup_echo(self) -> None:
        """Every field of a seed is located: prefix and data, counted from the first byte after the length header."""
        seed = seed_frame(DIALECTS["cup"], "echo", CUP_ECHO)
        located = [(s.field_id, s.start, s.prefix_bytes, s.data_bytes) for s in seed.slots]
        assert located == [("t", 11, 0, 2), ("p", 13, 0, 8), ("11", 21, 0, 3), ("41", 24, 0, 8), ("42", 32, 0, 15),
                           ("60", 47, 2, 6)]  # fmt: skip
        assert seed.slots[-1].end == len(CUP_ECHO)

    def test_an_invalid_seed_is_refused(self) -> None:
        """A seed must decode: one cut short is refused with the field and offset."""
        with pytest.raises(WireError, match="field 60"):
            seed_frame(DIALECTS["cup"], "echo", CUP_ECHO[:-1])


class TestDeterminism:
    @pytest.mark.parametrize("name", sorted(DIALECTS))
    @settings(max_examples=40, deadline=None)
    @given(seed=st.integers(0, 2**32), index=st.integers(0, 10**7))
    def test_a_frame_follows_from_seed_and_index(self, name: str, seed: int, index: int) -> None:
        """Frame (seed, index) is the same bytes whichever mutator makes it, and in any order."""
        tak = Tak(DIALECTS[name].security.mac_algorithm or "x9.19", TAK_BYTES["x9.19"])
        if tak.algorithm == "cup-ecb":
            tak = Tak("cup-ecb", TAK_BYTES["cup-ecb"])
        first = MUTATORS_MAC[name].frame(seed, index, tak)
        other = mutator_of(name, mac=True)
        other.frame(seed, index + 1, tak)  # another frame first changes nothing
        assert other.frame(seed, index, tak) == first
        assert first.body
        assert len(first.body) <= DIALECTS[name].length_header.max_length
        assert first.mutation in MUTATORS_MAC[name].mutation_names

    def test_frames_differ_between_seeds(self) -> None:
        """Two seeds of a run give different streams."""
        mutator = MUTATORS["iso87binary"]
        first, second = ([mutator.frame(seed, i, None).body for i in range(20)] for seed in (1, 2))
        assert first != second

    def test_the_stream_repeats_from_the_same_generator(self) -> None:
        """``mutations`` draws from the generator it is given: the same seed, the same stream."""
        seeds = seeds_of("cup")
        stream = mutations(DIALECTS["cup"], seeds, random.Random(7), max_frame_bytes=MAX_FRAME_BYTES)
        again = mutations(DIALECTS["cup"], seeds, random.Random(7), max_frame_bytes=MAX_FRAME_BYTES)
        assert [next(stream) for _ in range(50)] == [next(again) for _ in range(50)]

    def test_frame_rng_is_stable(self) -> None:
        """The generator of a frame does not depend on the process (string seeds are hashed with SHA-512)."""
        assert frame_rng(1, 2).random() == frame_rng(1, 2).random()
        assert frame_rng(1, 2).random() != frame_rng(2, 1).random()


MUTATORS = {name: mutator_of(name) for name in DIALECTS}
MUTATORS_MAC = {name: mutator_of(name, mac=True) for name in DIALECTS}
SEED_CASES = [pytest.param(name, seed, id=f"{name}-{seed.kind}") for name in DIALECTS for seed in seeds_of(name)]
DRAWS = range(25)  # generators per seed and mutation


def apply(name: str, mutation: str, seed: SeedFrame, draw: int) -> bytes | None:
    return MUTATORS[name].table[mutation](seed, random.Random(draw), DIALECTS[name])


@pytest.mark.parametrize(("name", "seed"), SEED_CASES)
class TestMutations:
    def test_bit_flip_flips_one_to_four_bits(self, name: str, seed: SeedFrame) -> None:
        """A bit flip changes between one and four bits, nothing else."""
        for draw in DRAWS:
            body = apply(name, "bit_flip", seed, draw)
            assert body is not None
            flipped = sum(bin(a ^ b).count("1") for a, b in zip(seed.body, body, strict=True))
            assert 1 <= flipped <= 4

    def test_length_lie_changes_only_a_length_prefix(self, name: str, seed: SeedFrame) -> None:
        """A length lie rewrites one LL/LLL prefix, in the dialect's encoding, to another number."""
        dialect = DIALECTS[name]
        variable = [s for s in seed.slots if s.prefix_bytes]
        for draw in DRAWS:
            body = apply(name, "length_lie", seed, draw)
            if not variable:
                assert body is None
                continue
            assert body is not None
            changed = differing_bytes(seed.body, body)
            slot = next(s for s in variable if s.start <= changed[0] < s.data_start)
            assert all(slot.start <= i < slot.data_start for i in changed)
            prefix = body[slot.start : slot.data_start]
            spec = dialect.spec[slot.field_id]
            digits = prefix.hex() if spec["len_enc"] == "bcd" else prefix.decode("ascii")
            assert digits.isdigit(), "a lie is a well-formed number, just not the true one"
            assert encode_prefix(spec["len_enc"], spec["len_type"], int(digits)) == prefix

    def test_bitmap_toggle_toggles_one_bitmap_bit(self, name: str, seed: SeedFrame) -> None:
        """A bitmap toggle adds or removes exactly one field in the bitmap, binary or hex text."""
        dialect = DIALECTS[name]
        for draw in DRAWS:
            body = apply(name, "bitmap_toggle", seed, draw)
            assert body is not None
            changed = differing_bytes(seed.body, body)
            slot = next(s for s in seed.slots if s.field_id in ("p", "1") and s.data_start <= changed[0] < s.end)
            assert all(slot.data_start <= i < slot.end for i in changed)
            before, after = seed.body[slot.data_start : slot.end], body[slot.data_start : slot.end]
            if dialect.spec[slot.field_id]["data_enc"] == "b":
                delta = int.from_bytes(before, "big") ^ int.from_bytes(after, "big")
            else:
                delta = int(before, 16) ^ int(after, 16)
            assert bin(delta).count("1") == 1

    def test_bcd_nibble_puts_a_non_decimal_nibble_in_a_bcd_field(self, name: str, seed: SeedFrame) -> None:
        """BCD corruption changes one byte of a BCD run so that it holds a nibble A-F; iso87 has none to corrupt."""
        regions = bcd_regions(seed, DIALECTS[name])
        for draw in DRAWS:
            body = apply(name, "bcd_nibble", seed, draw)
            if not regions:
                assert body is None
                continue
            assert body is not None
            changed = differing_bytes(seed.body, body)
            assert len(changed) == 1
            position = changed[0]
            assert any(start <= position < end for start, end in regions)
            assert max(body[position] >> 4, body[position] & 0x0F) >= 0xA

    def test_truncate_keeps_a_proper_non_empty_prefix(self, name: str, seed: SeedFrame) -> None:
        """Truncation cuts the frame short, never to nothing (an empty frame is a keep-alive)."""
        for draw in DRAWS:
            body = apply(name, "truncate", seed, draw)
            assert body is not None
            assert 0 < len(body) < len(seed.body)
            assert seed.body.startswith(body)

    def test_oversize_crosses_the_frame_limit(self, name: str, seed: SeedFrame) -> None:
        """An oversized frame is the seed with bytes after it, beyond the limit but within the length header."""
        header = DIALECTS[name].length_header
        for draw in DRAWS:
            body = apply(name, "oversize", seed, draw)
            assert body is not None
            assert body.startswith(seed.body)
            assert MAX_FRAME_BYTES < len(body) <= min(header.max_length, 2 * MAX_FRAME_BYTES)

    def test_field_corrupt_puts_wrong_type_bytes_in_one_field(self, name: str, seed: SeedFrame) -> None:
        """Field corruption keeps the prefix and length and fills one field with bytes of the wrong type."""
        dialect = DIALECTS[name]
        for draw in DRAWS:
            body = apply(name, "field_corrupt", seed, draw)
            assert body is not None
            changed = differing_bytes(seed.body, body)
            slot = next(s for s in seed.slots if s.data_start <= changed[0] < s.end)
            assert slot.field_id.isdigit()
            assert all(slot.data_start <= i < slot.end for i in changed)
            data = body[slot.data_start : slot.end]
            if dialect.spec[slot.field_id]["data_enc"] == "b":
                assert any(byte >> 4 >= 0xA for byte in data), "BCD digits replaced by non-decimal nibbles"
            else:
                assert not data.isdigit()
                assert data != seed.body[slot.data_start : slot.end]

    def test_random_bytes_are_bounded(self, name: str, seed: SeedFrame) -> None:
        """Random bytes: never empty, at most twice the seed, sometimes behind the seed's envelope and MTI."""
        mti = seed.slot("t")
        assert mti is not None
        bodies = [apply(name, "random_bytes", seed, draw) for draw in DRAWS]
        assert all(body and len(body) <= max(2 * len(seed.body), mti.end) for body in bodies)
        assert any(body is not None and body.startswith(seed.body[: mti.end]) for body in bodies)


class TestMutator:
    @pytest.mark.parametrize(("name", "expected"), [
        ("iso87ascii", tuple(m for m in MUTATIONS if m != "bcd_nibble")),
        ("iso87binary", tuple(m for m in MUTATIONS if m != "bcd_nibble")),
        ("cup", MUTATIONS),
    ])  # fmt: skip
    def test_mutations_follow_the_dialect(self, name: str, expected: tuple[str, ...]) -> None:
        """BCD corruption is offered only where the dialect has BCD fields."""
        assert MUTATORS[name].mutation_names == expected

    def test_every_mutation_is_drawn(self) -> None:
        """Over a few thousand frames every mutation the dialect allows comes up."""
        drawn = {MUTATORS["cup"].frame(3, i, None).mutation for i in range(2_000)}
        assert drawn == set(MUTATIONS)

    @pytest.mark.parametrize("name", ["iso87binary", "iso87ascii", "cup"])
    def test_remac_reaches_past_the_mac_check(self, name: str) -> None:
        """A mutated frame that still decodes as a MAC'd kind is re-MAC'd: its MAC verifies with the TAK."""
        dialect = DIALECTS[name]
        algorithm = dialect.security.mac_algorithm
        assert algorithm is not None
        tak = Tak(algorithm, TAK_BYTES[algorithm])
        frames = [MUTATORS_MAC[name].frame(11, i, tak) for i in range(1_500)]
        remaced = [f for f in frames if f.remaced]
        assert len(remaced) > 20
        for frame in remaced:
            assert frame.reading.message is not None
            assert frame.mac_kind
            assert mac_verifies(dialect, frame.body, frame.reading.message, tak)
        kept = [f for f in frames if f.mac_kind and not f.remaced and f.reading.message is not None]
        assert kept, "one frame in ten keeps its mutated MAC, to fuzz the MAC check itself"
        assert not any(mac_verifies(dialect, f.body, f.reading.message, tak) for f in kept if f.reading.message)

    def test_without_a_key_nothing_is_remaced(self) -> None:
        """A terminal without a TAK sends frames as mutated."""
        assert not any(MUTATORS["cup"].frame(5, i, None).remaced for i in range(300))


READINGS = [
    pytest.param(CUP_ECHO, True, True, id="decodes"),
    pytest.param(CUP_ECHO[:30], False, True, id="cut-in-f41-mti-read"),
    pytest.param(CUP_ECHO[:12], False, False, id="cut-in-mti"),
    pytest.param(CUP_ECHO[:5], False, False, id="cut-in-tpdu"),
    pytest.param(CUP_ECHO[:11] + b"\xaa\x20" + CUP_ECHO[13:], False, False, id="mti-not-bcd"),
]


class TestVerdicts:
    @pytest.mark.parametrize(("body", "decodes", "mti_read"), READINGS)
    def test_read_frame(self, body: bytes, decodes: bool, mti_read: bool) -> None:
        """Our codec's reading: whole, MTI only, or nothing."""
        reading = read_frame(DIALECTS["cup"], body)
        assert (reading.message is not None) == decodes
        assert reading.mti_read == mti_read
        assert expects_answer(reading, len(body), MAX_FRAME_BYTES) == mti_read

    def test_a_frame_over_the_limit_may_be_closed_on(self) -> None:
        """Over the host's frame limit a close is a fair answer, whatever the frame holds."""
        reading = read_frame(DIALECTS["cup"], CUP_ECHO)
        assert not expects_answer(reading, MAX_FRAME_BYTES + 1, MAX_FRAME_BYTES)

    @pytest.mark.parametrize(("outcome", "mti_read", "approved", "invalid", "finding"), [
        (TIMEOUT, True, False, None, "timeout"),
        (TIMEOUT, False, False, "x", "timeout"),
        (CLOSED, True, False, None, "close_without_answer"),
        (CLOSED, False, False, "x", None),
        (ANSWERED, True, True, None, None),
        (ANSWERED, True, True, "it does not decode", "approved_invalid"),
        (ANSWERED, True, False, "it does not decode", None),
    ])  # fmt: skip
    def test_judge(self, outcome: str, mti_read: bool, approved: bool, invalid: str | None,
                   finding: str | None) -> None:  # fmt: skip
        """Timeouts, closes on frames whose MTI reads and approvals of invalid frames are findings; nothing else."""
        frame = FuzzFrame(0, "sale", "bit_flip", CUP_ECHO, Reading(None, mti_read), None, False, None, False)
        verdict = judge(frame, outcome, approved=approved, invalid=invalid, max_frame_bytes=MAX_FRAME_BYTES)
        assert (verdict[0] if verdict else None) == finding

    def test_tally_counts_each_outcome_once(self) -> None:
        """A tally's answered, closed and timeouts add up to what was sent."""
        tally = Tally()
        for outcome in (ANSWERED, CLOSED, TIMEOUT, ANSWERED):
            tally.count(outcome, found=outcome != ANSWERED, approved=False, remaced=False)
        assert (tally.sent, tally.answered, tally.closed, tally.timeouts, tally.findings) == (4, 2, 1, 1, 2)
