"""Wire: framing, dialects and the ISO 8583 codec. Imports nothing of iso-host's above ``errors``."""

from iso_host.wire.codec import WireDecodeError, decode, encode
from iso_host.wire.dialect import Dialect, SecurityPolicy, builtin_dialect_names, load_dialect
from iso_host.wire.dialect_kinds import KindRule
from iso_host.wire.framing import LENGTH_HEADERS, NEED_DATA, FrameDecoder, LengthHeader, encode_frame
from iso_host.wire.message import Envelope, Message, reply_mti

__all__ = [
    "LENGTH_HEADERS",
    "NEED_DATA",
    "Dialect",
    "Envelope",
    "FrameDecoder",
    "KindRule",
    "LengthHeader",
    "Message",
    "SecurityPolicy",
    "WireDecodeError",
    "builtin_dialect_names",
    "decode",
    "encode",
    "encode_frame",
    "load_dialect",
    "reply_mti",
]
