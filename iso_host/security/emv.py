"""EMV: the BER-TLV of field 55, and the application cryptograms (ARQC, ARPC) computed with pyemv.

Pure functions over bytes handed in: nothing here logs, reads the clock or draws randomness. The rule:
no key, PAN, tag value or ARQC input appears in an error message or a ``repr``; errors name the tag
(and for TLV bytes the offset), and the host maps them onto field 55.

TLV is parsed here rather than by ``pyemv.tlv.decode``, which returns a dict (a repeated tag silently
replaces the first), reads length byte ``80`` (BER's indefinite form, not EMV) as length 0, and keeps
the values it decoded, a PAN in 5A or 57 included, on its ``DecodeError``. ``parse_tlv`` keeps every
item in order with its offset; a constructed tag (70, 77, 71, 72, E1...) keeps its value and its
parsed ``children``; ``tag_values`` flattens the primitives into a mapping and refuses a repeated tag.

Cryptograms follow one ``EmvScheme`` (a cryptogram version): how the ICC master key is derived from the
issuer's IMK-AC, which session key (if any) the ARQC is computed under, the ISO 9797-1 padding, which
bytes of 9F10 are appended to the CDOL1 data (``ARQC_TAGS``), and the ARPC method and key.
``EMV_SCHEMES`` holds the cryptogram versions of ``pyemv.cvn`` and EMV Book 2's own ``emv-csk``.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeVar

from cryptography.utils import CryptographyDeprecationWarning
from pyemv import ac, kd

from iso_host.security.errors import KeyLengthError, SecurityError

MAX_TLV_DEPTH = 4  # 70/77 hold 71/72 hold 86 in practice; the bound keeps hostile input off the recursion limit
MAX_TAG_BYTES = 3  # ISO/IEC 7816-4: a tag field is one, two or three bytes
MAX_LENGTH_BYTES = 2  # EMV Book 3 Annex B: a length field is 1 to 3 bytes (xx, 81 xx, 82 xx xx)
MAX_VALUE_BYTES = 0xFFFF
ICC_KEY_BYTES = 16  # double-length TDES: IMK-AC, the ICC master key and session keys alike

# EMV 4.3 Book 2 section 8.1.1, Table 26: the recommended minimum data for an application cryptogram,
# in CDOL1 order, with each element's length. A scheme appends bytes of 9F10 (EmvScheme.issuer_data).
ARQC_TAGS: tuple[tuple[str, int], ...] = (
    ("9F02", 6),  # Amount, Authorised (n12)
    ("9F03", 6),  # Amount, Other (n12); six zero bytes when the terminal sent none (no cashback)
    ("9F1A", 2),  # Terminal Country Code
    ("95", 5),  # Terminal Verification Results
    ("5F2A", 2),  # Transaction Currency Code
    ("9A", 3),  # Transaction Date (YYMMDD)
    ("9C", 1),  # Transaction Type
    ("9F37", 4),  # Unpredictable Number
    ("82", 2),  # Application Interchange Profile
    ("9F36", 2),  # Application Transaction Counter
)
OPTIONAL_ZERO_TAGS = frozenset({"9F03"})


class EmvDataError(SecurityError):
    """EMV data that cannot be used: a tag missing, of the wrong length, or TLV that does not parse.

    Attributes:
        reason: what is wrong, without the value.
        tag: the tag in upper-case hex (``"9F36"``), or the bytes read so far when the tag itself is bad.
        offset: the byte offset of the bad element in the TLV bytes, or ``None`` for data not read from bytes.
    """

    def __init__(self, reason: str, *, tag: str, offset: int | None = None) -> None:
        where = f"tag {tag}" if offset is None else f"tag {tag} at byte {offset}"
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.tag = tag
        self.offset = offset


class TlvError(EmvDataError):
    """BER-TLV bytes that do not parse, or items that cannot be built; the offset is always set."""

    offset: int

    def __init__(self, reason: str, *, tag: str, offset: int) -> None:
        super().__init__(reason, tag=tag, offset=offset)


@dataclass(frozen=True, slots=True)
class TlvItem:
    """One data object. ``offset`` is where its tag starts in the parsed bytes (absolute, also when nested);
    ``children`` are a constructed tag's items, filled by ``parse_tlv`` and ignored by ``build_tlv``."""

    tag: str
    value: bytes = field(repr=False)  # may be a PAN (5A) or track 2 (57)
    offset: int = field(default=0, compare=False)
    children: tuple[TlvItem, ...] = field(default=(), compare=False)

    @property
    def constructed(self) -> bool:
        """Whether b6 of the tag's first byte is set (its value is itself TLV)."""
        return is_constructed(self.tag)


def is_constructed(tag: str) -> bool:
    """Whether ``tag`` (upper-case hex) names a constructed data object."""
    return bool(int(tag[:2], 16) & 0x20)


def _read_tag(data: bytes, start: int, end: int) -> tuple[str, int]:
    """The tag starting at ``start`` and the offset after it."""
    first = data[start]
    if first in (0x00, 0xFF):
        msg = f"byte {first:02X} is padding, not a tag"
        raise TlvError(msg, tag=f"{first:02X}", offset=start)
    stop = start + 1
    more = first & 0x1F == 0x1F  # the tag number goes on in the next bytes; the last one has b8 clear
    while more:
        if stop >= end:
            raise TlvError("tag truncated: expected another tag byte", tag=data[start:stop].hex().upper(), offset=start)
        if stop - start == MAX_TAG_BYTES:
            msg = f"tag longer than {MAX_TAG_BYTES} bytes"
            raise TlvError(msg, tag=data[start : stop + 1].hex().upper(), offset=start)
        more = bool(data[stop] & 0x80)
        stop += 1
    return data[start:stop].hex().upper(), stop


def _read_length(data: bytes, tag: str, start: int, end: int) -> tuple[int, int]:
    """The length starting at ``start`` and the offset of the value after it."""
    if start >= end:
        raise TlvError("length missing", tag=tag, offset=start)
    first = data[start]
    if first < 0x80:
        return first, start + 1
    count = first & 0x7F
    if not 1 <= count <= MAX_LENGTH_BYTES:
        msg = f"length byte {first:02X} is not an EMV length form (00-7F, 81 or 82)"
        raise TlvError(msg, tag=tag, offset=start)
    if start + 1 + count > end:
        msg = f"length truncated: {first:02X} needs {count} more byte(s)"
        raise TlvError(msg, tag=tag, offset=start)
    return int.from_bytes(data[start + 1 : start + 1 + count], "big"), start + 1 + count


def _parse(data: bytes, start: int, end: int, depth: int, within: str) -> list[TlvItem]:
    """The items in ``data[start:end]``, templates parsed ``depth`` deep at most."""
    items: list[TlvItem] = []
    position = start
    while position < end:
        tag, length_at = _read_tag(data, position, end)
        length, value_at = _read_length(data, tag, length_at, end)
        if value_at + length > end:
            msg = f"length {length} runs past the end of {within} ({end - value_at} byte(s) left)"
            raise TlvError(msg, tag=tag, offset=length_at)
        children: tuple[TlvItem, ...] = ()
        if is_constructed(tag):
            if depth >= MAX_TLV_DEPTH:
                msg = f"templates nested deeper than {MAX_TLV_DEPTH}"
                raise TlvError(msg, tag=tag, offset=position)
            children = tuple(_parse(data, value_at, value_at + length, depth + 1, f"template {tag}"))
        items.append(TlvItem(tag, data[value_at : value_at + length], position, children))
        position = value_at + length
    assert position == end
    return items


def parse_tlv(data: bytes) -> list[TlvItem]:
    """Parse BER-TLV as EMV uses it (EMV 4.3 Book 3 Annex B), keeping order, repeats and offsets.

    Tags are 1 to 3 bytes; lengths are one byte, or 81/82 followed by one or two bytes; the value of a
    constructed tag is parsed into ``children`` as well. Padding bytes 00/FF between objects are refused:
    field 55 has no reason to carry them.

    Raises:
        TlvError: naming the tag (or the bytes read of a bad tag) and the offset of the element that is wrong:
            the tag's first byte for a bad tag, too deep a template; the length's first byte for a missing,
            malformed or truncated length, or one that runs past the data or its template.
    """
    raw = bytes(data)
    return _parse(raw, 0, len(raw), 0, "the data")


def tag_values(items: Iterable[TlvItem]) -> dict[str, bytes]:
    """Flatten parsed items into tag -> value for the primitive tags, templates opened, in order.

    For data where a tag appears once, as in a request's field 55. Issuer scripts (71/72 holding several
    86 commands) are walked through ``TlvItem.children`` instead.

    Raises:
        TlvError: If a primitive tag appears twice (the offset is the second one's).
    """
    values: dict[str, bytes] = {}
    first_at: dict[str, int] = {}
    pending = list(items)[::-1]
    while pending:
        item = pending.pop()
        if item.constructed:
            pending.extend(reversed(item.children))
        elif item.tag in values:
            msg = f"tag appears twice (first at byte {first_at[item.tag]})"
            raise TlvError(msg, tag=item.tag, offset=item.offset)
        else:
            values[item.tag] = item.value
            first_at[item.tag] = item.offset
    return values


def _tag_bytes(tag: str, offset: int) -> bytes:
    """The bytes of ``tag``, which must be hex for exactly one well-formed tag."""
    try:
        raw = bytes.fromhex(tag)
    except ValueError:
        raise TlvError("tag is not hex", tag=tag, offset=offset) from None
    if not raw:
        raise TlvError("tag is empty", tag=tag, offset=offset)
    try:
        _, stop = _read_tag(raw, 0, len(raw))
    except TlvError as error:
        raise TlvError(error.reason, tag=tag, offset=offset) from None
    if stop != len(raw):
        raise TlvError("tag has bytes after its last tag byte", tag=tag, offset=offset)
    return raw


def _length_bytes(length: int) -> bytes:
    """The shortest EMV length field for ``length`` (at most 0xFFFF)."""
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    return bytes([0x82]) + length.to_bytes(2, "big")


def build_tlv(items: Iterable[TlvItem]) -> bytes:
    """Encode items in order, each with the shortest length form; ``children`` are ignored.

    A constructed tag's ``value`` is its inner TLV (build it with ``build_tlv``); it must parse.

    Raises:
        TlvError: If a tag is not one well-formed tag, a value is over 65535 bytes, or a constructed
            value is not TLV; the offset is where the item would start in the output.
    """
    out = bytearray()
    for item in items:
        tag = _tag_bytes(item.tag, len(out))
        name = tag.hex().upper()
        if len(item.value) > MAX_VALUE_BYTES:
            msg = f"value of {len(item.value)} bytes is over EMV's {MAX_VALUE_BYTES}"
            raise TlvError(msg, tag=name, offset=len(out))
        if is_constructed(name):
            try:
                _parse(item.value, 0, len(item.value), 1, f"template {name}")
            except TlvError as error:
                msg = f"constructed value is not TLV: {error}"
                raise TlvError(msg, tag=name, offset=len(out)) from None
        out += tag + _length_bytes(len(item.value)) + item.value
    return bytes(out)


MasterKeyMethod = Literal["option-a", "option-b"]
SessionKeyMethod = Literal["none", "atc", "atc-un"]
Padding = Literal["visa", "emv"]
_PADDING = {"visa": ac.PaddingType.VISA, "emv": ac.PaddingType.EMV}
_WHOLE = (0, None)


@dataclass(frozen=True, slots=True)
class EmvScheme:
    """How one cryptogram version computes the ARQC and the ARPC.

    Attributes:
        name: the name a configuration uses (a key of ``EMV_SCHEMES``).
        master_key: ICC master key derivation, EMV Book 2 A1.4.1 option A or A1.4.2 option B (B equals A
            for PANs of 16 digits or fewer).
        session_key: ``none``, the ICC master key itself; ``atc``, EMV common session key derivation (Book 2
            A1.3.1) with R = ATC || 00 00 00 00 00 00; ``atc-un``, the same with R = ATC || 00 00 || UN.
        padding: ISO 9797-1 padding of the ARQC input, ``visa`` method 1 (zeros) or ``emv`` method 2 (80, zeros).
        issuer_data: byte ranges (start, stop; ``None`` to the end) of 9F10 appended to the ``ARQC_TAGS`` data.
        arpc_method: 1, an 8-byte ARPC over ARQC xor ARC; 2, a 4-byte MAC over ARQC || CSU || proprietary data.
        arpc_key: the key the ARPC is computed under, ``session`` or the ICC ``master`` key.
    """

    name: str
    master_key: MasterKeyMethod
    session_key: SessionKeyMethod
    padding: Padding
    issuer_data: tuple[tuple[int, int | None], ...]
    arpc_method: Literal[1, 2]
    arpc_key: Literal["session", "master"]


# The parameters of pyemv's pyemv.cvn classes (pyemv 1.5), and EMV Book 2's own common-session-key scheme.
# 9F10 layouts: Visa 06 DKI CVN CVR(4: 03 + 3 bytes) ...; M/Chip KDI CVN CVR(6) DAC(2) counters(8).
# Visa CVN 22 differs from CVN 18 in its script (secure messaging) keys only.
_SCHEMES = (
    EmvScheme("emv-csk", "option-a", "atc", "emv", (), 1, "session"),
    EmvScheme("visa-cvn10", "option-a", "none", "visa", ((3, 7),), 1, "master"),
    EmvScheme("visa-cvn18", "option-b", "atc", "emv", (_WHOLE,), 2, "session"),
    EmvScheme("visa-cvn22", "option-b", "atc", "emv", (_WHOLE,), 2, "session"),
    EmvScheme("mastercard-cvn16", "option-a", "atc-un", "emv", ((2, 8),), 1, "master"),
    EmvScheme("mastercard-cvn17", "option-a", "atc-un", "emv", ((2, 8), (10, 18)), 1, "master"),
    EmvScheme("mastercard-cvn20", "option-a", "atc", "emv", ((2, 8),), 1, "session"),
    EmvScheme("mastercard-cvn21", "option-a", "atc", "emv", ((2, 8), (10, 18)), 1, "session"),
    EmvScheme("interac-cvn133", "option-a", "atc-un", "emv", (_WHOLE,), 1, "session"),
)
EMV_SCHEMES: Mapping[str, EmvScheme] = MappingProxyType({scheme.name: scheme for scheme in _SCHEMES})
assert len(EMV_SCHEMES) == len(_SCHEMES), "scheme names are unique"


@dataclass(frozen=True, slots=True)
class IccKey:
    """A card's application cryptogram master key (ICC MK-AC, the UDK) and the scheme it computes with.

    Raises:
        KeyLengthError: If the key is not 16 bytes.
    """

    scheme: EmvScheme
    master_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.master_key) != ICC_KEY_BYTES:
            msg = f"ICC master key must be {ICC_KEY_BYTES} bytes, got {len(self.master_key)}"
            raise KeyLengthError(msg)


_Result = TypeVar("_Result")


def _pyemv(call: Callable[[], _Result]) -> _Result:
    """Run one pyemv call with cryptography's "TripleDES has been moved" warning silenced.

    pyemv 1.5 builds its ciphers from ``cryptography.hazmat.primitives.ciphers.algorithms.TripleDES``, which
    cryptography 43 and later deprecate for ``hazmat.decrepit``: every call would warn (and fail a test run
    with warnings as errors). The filter covers that one category raised from pyemv's modules only.
    ``catch_warnings`` swaps the process-wide filter list, which is safe while only the host's event loop
    thread (or the terminal's) computes cryptograms.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"pyemv\.")
        return call()


def derive_icc_key(issuer_master_key: bytes, *, pan: str, pan_sequence: str, scheme: EmvScheme) -> IccKey:
    """Derive a card's ICC master key (the UDK) from the issuer's IMK-AC, as the scheme says.

    Args:
        issuer_master_key: the 16-byte IMK-AC.
        pan: the PAN's digits (tag 5A without its F padding, or field 2).
        pan_sequence: the two digits of tag 5F34; "00" when the card has none (field 23 is "0" + these).
        scheme: which derivation option (A or B) applies.

    Raises:
        KeyLengthError: If the IMK is not 16 bytes.
        EmvDataError: If the PAN is not 12 to 19 digits (tag 5A) or the sequence not 2 digits (tag 5F34).
    """
    if len(issuer_master_key) != ICC_KEY_BYTES:
        msg = f"issuer master key (IMK-AC) must be {ICC_KEY_BYTES} bytes, got {len(issuer_master_key)}"
        raise KeyLengthError(msg)
    if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
        raise EmvDataError(f"PAN must be 12 to 19 digits, got {len(pan)} character(s)", tag="5A")
    if not (pan_sequence.isascii() and pan_sequence.isdigit() and len(pan_sequence) == 2):
        raise EmvDataError("PAN sequence number must be 2 digits", tag="5F34")
    derive = kd.derive_icc_mk_a if scheme.master_key == "option-a" else kd.derive_icc_mk_b
    return IccKey(scheme, _pyemv(lambda: derive(issuer_master_key, pan, pan_sequence)))


def _tag(tags: Mapping[str, bytes], tag: str, length: int) -> bytes:
    """The value of ``tag``, which must be present and ``length`` bytes long."""
    value = tags.get(tag)
    if value is None:
        if tag in OPTIONAL_ZERO_TAGS:
            return bytes(length)
        raise EmvDataError("missing", tag=tag)
    if len(value) != length:
        raise EmvDataError(f"must be {length} bytes, got {len(value)}", tag=tag)
    return value


def _issuer_data(tags: Mapping[str, bytes], scheme: EmvScheme) -> bytes:
    """The bytes of 9F10 (Issuer Application Data) that the scheme appends to the ARQC input."""
    if not scheme.issuer_data:
        return b""
    value = tags.get("9F10")
    if value is None:
        raise EmvDataError(f"missing; {scheme.name} computes over it", tag="9F10")
    needed = max(stop or 1 for _, stop in scheme.issuer_data)
    if len(value) < needed:
        raise EmvDataError(f"must be at least {needed} bytes for {scheme.name}, got {len(value)}", tag="9F10")
    return b"".join(value[start:stop] for start, stop in scheme.issuer_data)


def arqc_input(tags: Mapping[str, bytes], scheme: EmvScheme) -> bytes:
    """The data an ARQC (or TC, AAC) is computed over: ``ARQC_TAGS`` in order, then the scheme's 9F10 bytes.

    Args:
        tags: tag (upper-case hex) -> value, as ``tag_values(parse_tlv(field_55))`` gives them.
        scheme: which bytes of 9F10 follow the CDOL1 data.

    Raises:
        EmvDataError: If a tag is missing (9F03 alone reads as zeros) or has the wrong length.
    """
    return b"".join(_tag(tags, tag, length) for tag, length in ARQC_TAGS) + _issuer_data(tags, scheme)


def derive_session_key(icc: IccKey, tags: Mapping[str, bytes]) -> bytes:
    """The key the scheme computes the ARQC under: from the ATC (9F36), and the UN (9F37) for ``atc-un``.

    Raises:
        EmvDataError: If 9F36 or 9F37 is needed and missing or of the wrong length.
    """
    method = icc.scheme.session_key
    if method == "none":
        return icc.master_key
    atc = _tag(tags, "9F36", 2)
    diversifier = atc + bytes(6) if method == "atc" else atc + bytes(2) + _tag(tags, "9F37", 4)
    return _pyemv(lambda: kd.derive_common_sk(icc.master_key, diversifier))


def generate_arqc(icc: IccKey, tags: Mapping[str, bytes]) -> bytes:
    """The card's side: the 8-byte cryptogram (tag 9F26) over ``arqc_input``; a TC or AAC is the same sum.

    Raises:
        EmvDataError: If a tag the scheme needs is missing or of the wrong length.
    """
    data = arqc_input(tags, icc.scheme)
    session_key = derive_session_key(icc, tags)
    return _pyemv(lambda: ac.generate_ac(session_key, data, _PADDING[icc.scheme.padding], 8))


def verify_arqc(icc: IccKey, tags: Mapping[str, bytes]) -> bool:
    """The issuer's side: whether 9F26 is the ARQC of these tags, compared in constant time.

    Raises:
        EmvDataError: If 9F26 or a tag the scheme needs is missing or of the wrong length (a format error
            for the host to answer, not a wrong cryptogram).
    """
    received = _tag(tags, "9F26", 8)
    return hmac.compare_digest(generate_arqc(icc, tags), received)


def _check_response(scheme: EmvScheme, response: bytes) -> None:
    """Refuse an ARPC response of the wrong size for the scheme's ARPC method."""
    if scheme.arpc_method == 1 and len(response) != 2:
        raise EmvDataError(f"ARPC method 1 takes a 2-byte ARC, got {len(response)} bytes", tag="91")
    if scheme.arpc_method == 2 and not 4 <= len(response) <= 12:
        msg = f"ARPC method 2 takes a 4-byte CSU and up to 8 bytes of proprietary data, got {len(response)} bytes"
        raise EmvDataError(msg, tag="91")


def generate_arpc(icc: IccKey, tags: Mapping[str, bytes], *, response: bytes) -> bytes:
    """The issuer's answer to the ARQC in 9F26: 8 bytes (method 1) or 4 bytes (method 2).

    Args:
        icc: the card's key and scheme.
        tags: the request's tags (9F26, and 9F36 / 9F37 when the ARPC key is a session key).
        response: method 1, the 2-byte Authorisation Response Code (Visa and EMV: the two ASCII
            characters of field 39, tag 8A, b"00"; M/Chip: its ARPC response code, such as 0010);
            method 2, the 4-byte Card Status Update then 0 to 8 bytes of proprietary authentication data.

    Raises:
        EmvDataError: If the response has the wrong size for the method, or a tag is missing or wrong.
    """
    scheme = icc.scheme
    _check_response(scheme, response)
    arqc = _tag(tags, "9F26", 8)
    key = derive_session_key(icc, tags) if scheme.arpc_key == "session" else icc.master_key
    if scheme.arpc_method == 1:
        return _pyemv(lambda: ac.generate_arpc_1(key, arqc, response))
    return _pyemv(lambda: ac.generate_arpc_2(key, arqc, response[:4], response[4:]))


def issuer_authentication_data(arpc: bytes, response: bytes) -> bytes:
    """The value of tag 91: ARPC || ARC (method 1), or ARPC || CSU || proprietary data (method 2).

    Raises:
        EmvDataError: If the sizes fit neither method.
    """
    if not ((len(arpc) == 8 and len(response) == 2) or (len(arpc) == 4 and 4 <= len(response) <= 12)):
        msg = f"an ARPC of {len(arpc)} bytes with a response of {len(response)} fits neither ARPC method"
        raise EmvDataError(msg, tag="91")
    return arpc + response


def verify_arpc(icc: IccKey, tags: Mapping[str, bytes], issuer_data: bytes) -> bool:
    """The card's side: whether tag 91's value answers the ARQC in 9F26, compared in constant time.

    Raises:
        EmvDataError: If tag 91 has the wrong size for the scheme's method, or a tag is missing or wrong.
    """
    arpc_bytes, shortest, longest = (8, 10, 10) if icc.scheme.arpc_method == 1 else (4, 8, 16)
    if not shortest <= len(issuer_data) <= longest:
        size = f"{shortest}" if shortest == longest else f"{shortest} to {longest}"
        msg = f"must be {size} bytes for ARPC method {icc.scheme.arpc_method}, got {len(issuer_data)}"
        raise EmvDataError(msg, tag="91")
    arpc, response = issuer_data[:arpc_bytes], issuer_data[arpc_bytes:]
    return hmac.compare_digest(generate_arpc(icc, tags, response=response), arpc)
