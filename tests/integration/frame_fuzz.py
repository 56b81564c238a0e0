"""A host with a SQLite ledger and no sockets, seed frames for each dialect, and the mutations a fuzzer applies.

Used by ``test_pipeline_fuzz.py``. The host is driven through ``Host.handle`` with frame bodies (the bytes
after the length header, TPDU and CUP header included). Terminal TERM0001 is signed on, so that a mutated
frame re-MAC'd with its session TAK reaches past the MAC check; TERM0002 never signs on.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import iso8583
from hypothesis import strategies as st
from log_audit import remember_secret

from iso_host.app import terminal_state
from iso_host.cards import pan_hash
from iso_host.config import DEMO_TMK, TerminalConfig
from iso_host.core.message_auth import mac_field_of
from iso_host.core.pipeline import Host
from iso_host.core.terminals import TerminalState, random_working_keys
from iso_host.core.test_cards import CardBook
from iso_host.ledger import Store, open_store
from iso_host.security import compute_mac
from iso_host.terminal.client import TerminalClient
from iso_host.wire import Dialect, Envelope, Message, WireDecodeError, decode, encode, load_dialect
from iso_host.wire.dialect import TEMPLATE_SAMPLE

TID, OTHER_TID, MID = "TERM0001", "TERM0002", "MERCHANT0000001"
PAN = "4761739001010010"
NOW = datetime(2025, 6, 2, 10, 30, tzinfo=datetime.now().astimezone().tzinfo)
# Template values the client fills in itself (build() sets the STAN; tid, mid, currency and batch are its own).
CLIENT_VALUES: Final = frozenset({"stan", "tid", "mid", "currency", "batch", "now"})
NOT_FIELDS: Final = frozenset({"h", "t", "p", "1"})
HEX_DIGITS: Final = "0123456789ABCDEF"
PRINTABLE: Final = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


# --- Seed frames written by hand from the specifications, not by our encoder --------------------------------
# One field per line, as the specifications lay them out: the formatter would join them.
# fmt: off

# CUP echo test, 0820 with 60.3 = 301 (shared CUP.md "Frame", "Field encodings", "Message identification").
CUP_ECHO_BY_HAND: Final = bytes.fromhex(
    "6000030000"  # TPDU: 60, destination NII 0003, source NII 0000
    "603100000000"  # header: magstripe application 60, software version 31, status 00, sub-version 000000
    "0820"  # MTI, BCD
    "0020000000C00010"  # primary bitmap: 11, 41, 42, 60
    "000001"  # F11 STAN n6 BCD
    "5445524D30303031"  # F41 "TERM0001" ans8
    "4D45524348414E5430303030303031"  # F42 "MERCHANT0000001" ans15
    "0011" "000000013010"  # F60 LLLVAR n, length in digits: 60.1 00, 60.2 batch 000001, 60.3 301, pad 0
)


def cup_void_by_hand(original: str = "000001000002") -> bytes:
    """A CUP sale void, 0200 F3=200000 60.1=23, whose F61 is ``original`` (12 hex digits, as BCD nibbles).

    Layout from shared CUP.md: F2 LLVAR n..19 (BCD length in digits), F3/F4/F11 BCD, F22 n3 left-aligned,
    F25 n2, F41/F42/F49 ASCII, F60/F61 LLLVAR n (2-byte BCD length in digits), F64 b8. The MAC is eight
    zero bytes here: the harness seals it with the session TAK (``FuzzRig.remac``).
    """
    assert len(original) == 12, "61.1 batch n6 + 61.2 STAN n6"
    return bytes.fromhex(
        "6000030000" "603100000000"  # TPDU and header, as in CUP_ECHO_BY_HAND
        "0200"  # MTI
        "7020048000C08019"  # bitmap: 2, 3, 4, 11, 22, 25, 41, 42, 49, 60, 61, 64
        "16" "4761739001010010"  # F2 PAN, 16 digits
        "200000"  # F3 processing code: void
        "000000000100"  # F4 amount 1.00
        "000900"  # F11 STAN
        "0120"  # F22 POS entry mode 012, left-aligned
        "00"  # F25 condition code: normal
        "5445524D30303031" "4D45524348414E5430303030303031"  # F41 TERM0001, F42 MERCHANT0000001
        "313536"  # F49 "156"
        "0011" "230000010000"  # F60: 60.1 type 23 (void), 60.2 batch 000001, 60.3 000, pad 0
        f"0012{original}"  # F61: 61.1 original batch, 61.2 original STAN
        "0000000000000000"  # F64 MAC, sealed later
    )


# ISO 8583:1987 echo test: 0800 with F70 (network management information code) 301; F7 MMDDhhmmss n10,
# F11 n6, F41 ans8, F42 ans15. Bit 1 of the primary bitmap announces the secondary bitmap that holds F70.
_ISO87_ECHO_FIELDS: Final = b"0101120000" b"000001" b"TERM0001" b"MERCHANT0000001" b"301"
_ISO87_ECHO_BITMAPS: Final = "8220000000C00000" "0400000000000000"  # 1, 7, 11, 41, 42 | 70
# ISO 8583:1987 sale (F3 00xxxx) from TERM0002, which has no keys and so sends no MAC: F2 LLVAR n..19.
_ISO87_SALE_FIELDS: Final = b"16" b"4761739001010010" b"000000" b"000000000250" b"000077" b"TERM0002" b"MERCHANT0000001"
_ISO87_SALE_BITMAP: Final = "7020000000C00000"  # 2, 3, 4, 11, 41, 42
# The same echo and sale as jPOS's ISO87BPackager packs them (iso87bcd): BCD MTI, numerics and LL length
# (IFB_NUMERIC, IFB_LLNUM; F70's 3 digits behind a 0 nibble), ASCII F41/F42 (IF_CHAR), binary bitmaps.
_ISO87_BCD_ECHO: Final = (
    bytes.fromhex("0800" + _ISO87_ECHO_BITMAPS + "0101120000" "000001")  # MTI, bitmaps, F7, F11
    + b"TERM0001" b"MERCHANT0000001"  # F41, F42
    + bytes.fromhex("0301")  # F70 301
)
_ISO87_BCD_SALE: Final = (
    bytes.fromhex("0200" + _ISO87_SALE_BITMAP + "16" "4761739001010010" "000000" "000000000250" "000077")
    + b"TERM0002" b"MERCHANT0000001"  # F41, F42
)

# fmt: on


def hand_written(dialect_name: str) -> dict[str, bytes]:
    """Seed frame bodies written as bytes from the specifications, per dialect."""
    if dialect_name == "cup":
        return {"echo-by-hand": CUP_ECHO_BY_HAND, "void-by-hand": cup_void_by_hand()}
    if dialect_name == "iso87ascii":  # ASCII MTI, bitmaps as 16 hex characters each
        return {
            "echo-by-hand": b"0800" + _ISO87_ECHO_BITMAPS.encode("ascii") + _ISO87_ECHO_FIELDS,
            "sale-by-hand": b"0200" + _ISO87_SALE_BITMAP.encode("ascii") + _ISO87_SALE_FIELDS,
        }
    if dialect_name == "iso87bcd":  # BCD MTI and numerics, binary bitmaps
        return {"echo-by-hand": _ISO87_BCD_ECHO, "sale-by-hand": _ISO87_BCD_SALE}
    assert dialect_name == "iso87binary"  # ASCII MTI, binary bitmaps
    return {
        "echo-by-hand": b"0800" + bytes.fromhex(_ISO87_ECHO_BITMAPS) + _ISO87_ECHO_FIELDS,
        "sale-by-hand": b"0200" + bytes.fromhex(_ISO87_SALE_BITMAP) + _ISO87_SALE_FIELDS,
    }


# --- The rig: host, ledger, terminals, seeds ---------------------------------------------------------------


@dataclass
class FuzzRig:
    """One host of one dialect with its ledger, a signed-on terminal and the seed frames."""

    dialect: Dialect
    store: Store
    host: Host
    ledger: sqlite3.Connection  # a second connection: PRAGMA data_version moves when the host commits
    signon_body: bytes
    seeds: dict[str, bytes]

    @classmethod
    async def open(cls, tmp_path: Path, dialect_name: str) -> FuzzRig:
        dialect = load_dialect(dialect_name)
        ledger_path = tmp_path / f"fuzz-{dialect_name}.db"
        store = open_store(f"sqlite:///{ledger_path}")
        await store.open()
        terminals: dict[str, TerminalState] = {}
        for tid in (TID, OTHER_TID):
            configured = TerminalConfig(tid, MID, DEMO_TMK)
            terminals[tid] = terminal_state(configured, await store.register_terminal(tid, MID))
        # Every sign-on hands out the same keys, so that a mutated sign-on does not strand the MAC'd seeds.
        keys = random_working_keys()
        remember_secret(*(key.hex() for key in (keys.tpk, keys.tak, keys.tdk) if key is not None))
        cards = CardBook((), lambda pan: pan_hash(pan, store.pan_hash_key))
        host = Host(
            dialect, store, terminals, lambda: NOW, monotonic=time.monotonic, cards=cards, key_source=lambda: keys
        )
        ledger = sqlite3.connect(ledger_path, isolation_level=None)
        rig = cls(dialect, store, host, ledger, b"", {})
        try:
            await rig._sign_on_and_seed()
        except BaseException:
            await rig.close()
            raise
        return rig

    async def close(self) -> None:
        self.ledger.close()
        await self.store.close()

    def body(self, client: TerminalClient, message: Message) -> bytes:
        """A request as ``Host.handle`` takes it: framed (and MAC'd) by the client, length header removed."""
        return client.frame(message)[self.dialect.length_header.size_bytes :]

    async def _sign_on_and_seed(self) -> None:
        """Sign TERM0001 on, put two sales in the ledger, and build a seed of every template from them."""
        client = TerminalClient(self.dialect, TID, MID)
        signon = client.build("signon", NOW)
        self.signon_body = self.body(client, signon)
        outcome = await self.host.handle(self.signon_body)
        assert outcome.response_code == "00", outcome
        assert outcome.reply is not None
        client.accept_signon(decode(outcome.reply, self.dialect)[1], signon, bytes.fromhex(DEMO_TMK))
        originals = []
        for amount in (100, 250):
            sale = client.build("sale", NOW, pan=PAN, amount=amount)
            outcome = await self.host.handle(self.body(client, sale))
            assert outcome.response_code == "00", outcome
            assert outcome.reply is not None
            originals.append((sale, decode(outcome.reply, self.dialect)[1]))
        (first, first_reply), (_, second_reply) = originals
        values = {k: v for k, v in TEMPLATE_SAMPLE.items() if k not in CLIENT_VALUES} | {
            "pan": PAN, "amount": 100, "rrn": first_reply.fields["37"], "original_stan": int(first.fields["11"]),
            "original_batch": client.state.batch, "original_date": NOW.strftime("%m%d"),
        }  # fmt: skip
        for template in self.dialect.templates:
            self.seeds[template] = self.body(client, client.build(template, NOW, **values))
        refund = client.build("refund", NOW, **(values | {"rrn": second_reply.fields["37"], "amount": 50}))
        self.seeds["refund"] = self.body(client, refund)
        unsigned = TerminalClient(self.dialect, OTHER_TID, MID)
        self.seeds["sale-unsigned-terminal"] = self.body(unsigned, unsigned.build("sale", NOW, pan=PAN, amount=7))
        for name, raw in hand_written(self.dialect.name).items():
            self.seeds[name] = self.remac(raw)

    async def restore_session(self) -> None:
        """Sign TERM0001 on again after a frame signed it off, so later frames still reach past the MAC."""
        if not self.host.terminals[TID].signed_on:
            outcome = await self.host.handle(self.signon_body)
            assert outcome.response_code == "00", outcome

    def ledger_version(self) -> tuple[int, int]:
        """SQLite's data version (it moves with every commit by another connection) and the transaction count."""
        (version,) = self.ledger.execute("PRAGMA data_version").fetchone()
        (count,) = self.ledger.execute("SELECT count(*) FROM transactions").fetchone()
        return int(version), int(count)

    def _mac_parts(self, body: bytes) -> tuple[Message, TerminalState | None, int] | None:
        """The decoded request, the terminal F41 names and the MAC field's size; None if it does not decode."""
        try:
            _, message = decode(body, self.dialect)
        except WireDecodeError:
            return None
        terminal = self.host.terminals.get(message.fields.get("41", ""))
        field_id = mac_field_of(message)
        size = int(self.dialect.spec[field_id]["max_len"]) if field_id in message.fields else 0
        return message, terminal, size

    def _mac_bytes(self, terminal: TerminalState, covered: bytes, mac_field: str) -> bytes:
        algorithm = terminal.mac_algorithm or self.dialect.security.mac_algorithm
        assert algorithm is not None
        assert terminal.keys.tak is not None
        mac = compute_mac(algorithm, terminal.keys.tak, covered)
        return mac if self.dialect.spec[mac_field]["data_enc"] == "b" else mac.hex().upper().encode("ascii")

    def remac(self, body: bytes) -> bytes:
        """Seal the MAC field (the last one) with the TAK of the terminal in F41, when both are there."""
        parts = self._mac_parts(body)
        if parts is None:
            return body
        message, terminal, size = parts
        if size == 0 or terminal is None or terminal.keys.tak is None:
            return body
        return self.seal(body, terminal.tid, mac_field_of(message))

    def seal(self, body: bytes, tid: str, mac_field: str) -> bytes:
        """Overwrite the last bytes of ``body`` with the MAC of the rest, even of a body that does not decode."""
        size = int(self.dialect.spec[mac_field]["max_len"])
        covered = body[self.dialect.envelope_bytes : len(body) - size]
        return body[: len(body) - size] + self._mac_bytes(self.host.terminals[tid], covered, mac_field)

    def mac_verdict(self, body: bytes) -> bool | None:
        """Whether this request's MAC verifies, computed apart from the host; None where no MAC applies.

        False means the host must not approve the request and must leave the ledger alone.
        """
        parts = self._mac_parts(body)
        if parts is None:
            return None
        message, terminal, size = parts
        rule = self.dialect.classify(message)
        security = self.dialect.security
        if rule is None or rule.kind not in security.mac_kinds or terminal is None:
            return None
        if terminal.keys.tak is None:
            return None if security.mac_policy == "when-keyed" and size == 0 else False
        return size > 0 and self._mac_matches(body, message, terminal, size)

    def reply_mac_verifies(self, reply: bytes) -> bool:
        """Whether a reply carries a MAC under the TAK of the terminal its F41 names, as a terminal checks it."""
        parts = self._mac_parts(reply)
        if parts is None:
            return False
        message, terminal, size = parts
        return size > 0 and terminal is not None and self._mac_matches(reply, message, terminal, size)

    def _mac_matches(self, body: bytes, message: Message, terminal: TerminalState, size: int) -> bool:
        if terminal.keys.tak is None:
            return False
        covered = body[self.dialect.envelope_bytes : len(body) - size]
        return body[len(body) - size :] == self._mac_bytes(terminal, covered, mac_field_of(message))


# --- Mutations --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """Where one field sits in a frame body: its length prefix, then its data."""

    field: str
    start: int
    prefix_bytes: int
    data_bytes: int


def spans(body: bytes, dialect: Dialect) -> list[Span]:
    """The fields of ``body`` that pyiso8583 reads, in order (those before a decode error, if any)."""
    skip = dialect.envelope_bytes
    try:
        _, encoded = iso8583.decode(body[skip:], dialect.spec)
    except iso8583.DecodeError as error:
        encoded = error.doc_enc
    except Exception:  # a bitmap naming an undefined field (KeyError): whatever was read is lost
        return []
    result, offset = [], skip
    for field_id, parts in encoded.items():
        prefix, data = len(parts.get("len", b"")), len(parts.get("data", b""))
        result.append(Span(field_id, offset, prefix, data))
        offset += prefix + data
    return result


def _is_bcd(dialect: Dialect, field_id: str) -> bool:
    spec = dialect.spec[field_id]
    return spec["data_enc"] == "b" and (field_id == "t" or spec.get("len_count") == "nibbles")


def flip_bit(data: st.DataObject, body: bytes, _dialect: Dialect) -> bytes:
    if not body:
        return body
    index = data.draw(st.integers(0, len(body) - 1), label="flip byte")
    return body[:index] + bytes([body[index] ^ (1 << data.draw(st.integers(0, 7)))]) + body[index + 1 :]


def replace_byte(data: st.DataObject, body: bytes, _dialect: Dialect) -> bytes:
    if not body:
        return body
    index = data.draw(st.integers(0, len(body) - 1), label="replace byte")
    return body[:index] + bytes([data.draw(st.integers(0, 255))]) + body[index + 1 :]


def truncate(data: st.DataObject, body: bytes, _dialect: Dialect) -> bytes:
    return body[: data.draw(st.integers(0, len(body)), label="truncate at")]


def insert(data: st.DataObject, body: bytes, _dialect: Dialect) -> bytes:
    index = data.draw(st.integers(0, len(body)), label="insert at")
    return body[:index] + data.draw(st.binary(min_size=1, max_size=40)) + body[index:]


def delete(data: st.DataObject, body: bytes, _dialect: Dialect) -> bytes:
    index = data.draw(st.integers(0, len(body)), label="delete at")
    return body[:index] + body[index + data.draw(st.integers(1, 16)) :]


def length_lie(data: st.DataObject, body: bytes, dialect: Dialect) -> bytes:
    """Rewrite one variable field's length prefix: another well-formed number, or any bytes."""
    prefixed = [s for s in spans(body, dialect) if s.prefix_bytes and s.field not in NOT_FIELDS]
    if not prefixed:
        return body
    span = data.draw(st.sampled_from(prefixed), label="lying field")
    bcd = dialect.spec[span.field]["len_enc"] == "bcd"
    digits = span.prefix_bytes * 2 if bcd else span.prefix_bytes
    number = data.draw(st.integers(0, 10**digits - 1))
    well_formed = bytes.fromhex(f"{number:0{digits}d}") if bcd else f"{number:0{digits}d}".encode("ascii")
    prefix = data.draw(st.one_of(st.just(well_formed), st.binary(min_size=span.prefix_bytes,
                                                                 max_size=span.prefix_bytes)))  # fmt: skip
    return body[: span.start] + prefix + body[span.start + span.prefix_bytes :]


def toggle_bitmap_bit(data: st.DataObject, body: bytes, dialect: Dialect) -> bytes:
    """Set or clear one bit of the primary or secondary bitmap, binary or as hex text."""
    bitmaps = [s for s in spans(body, dialect) if s.field in {"p", "1"} and s.data_bytes]
    if not bitmaps:
        return body
    span = data.draw(st.sampled_from(bitmaps), label="bitmap")
    raw = body[span.start : span.start + span.data_bytes]
    as_text = dialect.spec[span.field]["data_enc"] != "b"
    try:
        bits = bytes.fromhex(raw.decode("ascii")) if as_text else raw
    except ValueError:
        return body
    if not bits:
        return body
    bit = data.draw(st.integers(0, len(bits) * 8 - 1), label="bitmap bit")
    toggled = bytearray(bits)
    toggled[bit // 8] ^= 0x80 >> (bit % 8)
    new = bytes(toggled).hex().upper().encode("ascii") if as_text else bytes(toggled)
    return body[: span.start] + new + body[span.start + span.data_bytes :]


def corrupt_bcd_nibble(data: st.DataObject, body: bytes, dialect: Dialect) -> bytes:
    """Put a nibble A..F into a BCD number: the MTI, a numeric field or a BCD length prefix (CUP)."""
    targets = [
        (s.start + (s.prefix_bytes if in_data else 0), s.data_bytes if in_data else s.prefix_bytes)
        for s in spans(body, dialect)
        for in_data in (True, False)
        if (in_data and _is_bcd(dialect, s.field) and s.data_bytes)
        or (not in_data and s.prefix_bytes and dialect.spec[s.field]["len_enc"] == "bcd")
    ]
    if not targets:
        return body
    start, size = data.draw(st.sampled_from(targets), label="BCD number")
    nibble = data.draw(st.integers(0, size * 2 - 1), label="nibble")
    value = data.draw(st.integers(0xA, 0xF))
    index = start + nibble // 2
    byte = (body[index] & 0x0F) | (value << 4) if nibble % 2 == 0 else (body[index] & 0xF0) | value
    return body[:index] + bytes([byte]) + body[index + 1 :]


def _value_strategy(dialect: Dialect, field_id: str, size: int | None) -> st.SearchStrategy[str]:
    """Text for a field or sub-field: hex digits for binary and BCD fields, else printable ASCII, with digits and
    non-digits alike; ``size`` None lets the length run past the field's own."""
    spec = dialect.spec[field_id]
    alphabet: Any = HEX_DIGITS if spec["data_enc"] == "b" else PRINTABLE
    limit = int(spec["max_len"]) * (2 if spec["data_enc"] == "b" and spec.get("len_count") != "nibbles" else 1)
    lengths = st.just(size) if size is not None else st.integers(0, limit + 4)
    return lengths.flatmap(
        lambda n: st.one_of(st.text("0123456789", min_size=n, max_size=n), st.text(alphabet, min_size=n, max_size=n))
    )


def relaxed_encode(message: Message, envelope: Envelope, dialect: Dialect) -> bytes | None:
    """Encode past the dialect's max_len (a field longer than its spec allows), or None if even that fails."""
    spec = {k: dict(v) for k, v in dialect.spec.items()}
    for field_spec in spec.values():
        if field_spec["len_type"]:
            digits = field_spec["len_type"] * (2 if field_spec["len_enc"] == "bcd" else 1)
            field_spec["max_len"] = min(10**digits - 1, 999)
    document: dict[str, Any] = {"t": message.mti, **message.fields}
    if spec["h"]["max_len"]:
        document["h"] = ""
    try:
        encoded, _ = iso8583.encode(document, spec)
    except (iso8583.EncodeError, KeyError, ValueError, TypeError):
        return None
    return bytes(envelope) + bytes(encoded)


def replace_field(data: st.DataObject, body: bytes, dialect: Dialect) -> bytes:
    """Decode, then replace (or drop, or add) one field or positional sub-field such as 61.1, and encode again."""
    try:
        envelope, message = decode(body, dialect)
    except WireDecodeError:
        return body
    # The fields the message has, and the sub-fields the host reads as numbers, are where the bugs live;
    # a field the message lacks is added now and then.
    present = sorted(message.fields, key=int)
    subfields = [f"{head}.{name}" for head, parts in sorted(dialect.subfields.items()) for name, _ in parts]
    absent = sorted((k for k in dialect.spec if k not in NOT_FIELDS and k not in message.fields), key=int)
    pools = [pool for pool in (present, present, subfields, subfields, absent) if pool]
    if not pools:
        return body
    reference = data.draw(st.sampled_from(data.draw(st.sampled_from(pools), label="pool")), label="field")
    head, _, sub = reference.partition(".")
    if not sub and head in message.fields and data.draw(st.booleans(), label="drop"):
        del message.fields[head]
    elif not sub:
        message.fields[head] = data.draw(_value_strategy(dialect, head, None), label="value")
    else:
        layout = dialect.subfields[head]
        start = sum(length for name, length in layout[: [n for n, _ in layout].index(sub)])
        length = dict(layout)[sub]
        exact = data.draw(st.booleans(), label="same length")
        part = data.draw(_value_strategy(dialect, head, length if exact else None), label="sub-field value")
        whole = message.fields.get(head, "0" * sum(n for _, n in layout)).ljust(start, "0")
        message.fields[head] = whole[:start] + part + whole[start + length :]
    try:
        return encode(message, envelope, dialect)
    except ValueError:
        return relaxed_encode(message, envelope, dialect) or body


MUTATIONS: Final[tuple[Callable[[st.DataObject, bytes, Dialect], bytes], ...]] = (
    flip_bit, replace_byte, truncate, insert, delete, length_lie, toggle_bitmap_bit, corrupt_bcd_nibble,
    replace_field,
)  # fmt: skip


def draw_body(data: st.DataObject, rig: FuzzRig) -> tuple[str, bytes]:
    """A frame body: a seed with one or two fields replaced, a seed under one to three mutations of any kind,
    or random bytes (bare, or after a valid prefix). Returns where it came from and the body."""
    dialect = rig.dialect
    sources = ("fields",) * 4 + ("mutant",) * 4 + ("random", "random-after-prefix")
    source = data.draw(st.sampled_from(sources), label="source")
    if source == "random":
        return source, data.draw(st.binary(max_size=400), label="random bytes")
    name = data.draw(st.sampled_from(sorted(rig.seeds)), label="seed")
    body = rig.seeds[name]
    if source == "random-after-prefix":
        keep = dialect.envelope_bytes + data.draw(st.sampled_from((0, 2, 4, 12, 20)), label="prefix bytes")
        return f"{source} of {name}", body[:keep] + data.draw(st.binary(max_size=400), label="random bytes")
    mutations = (replace_field,) if source == "fields" else MUTATIONS
    for _ in range(data.draw(st.sampled_from((1, 1, 1, 2, 3)), label="mutations")):
        body = data.draw(st.sampled_from(mutations), label="mutation")(data, body, dialect)
    return f"{source} of {name}", body
