"""Decode and encode µs per message for each dialect: the compiled codec beside pyiso8583, same run.

Run from the checkout with the venv active::

    python tools/codec_bench.py                 # every dialect in specs/, 7 runs of 2000 messages each
    python tools/codec_bench.py --dialect cup --runs 11 --number 5000

Per dialect it times decoding a sale request (the dialect's ``sale`` template, as a terminal sends it,
envelope included) and encoding its approval (the request's fields plus F37, F38, F39), through
``iso_host.wire.decode`` / ``encode`` with ``codec="compiled"`` and ``codec="pyiso8583"``, the two
alternating within each run. It prints the median µs per message of the runs and the ratio
(pyiso8583 / compiled: how many times faster). Both codecs are checked to agree on these messages first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from iso_host.wire import Dialect, Envelope, Message, builtin_dialect_names, decode, encode, load_dialect, reply_mti
from iso_host.wire.dialect import TEMPLATE_SAMPLE

CODECS = ("pyiso8583", "compiled")
TPDU = bytes.fromhex("6000030000")
CUP_HEADER = bytes.fromhex("603100000000")


@dataclass(frozen=True)
class Sample:
    """One dialect's request frame, its approval and the envelope both travel in."""

    dialect: Dialect
    frame: bytes
    response: Message
    envelope: Envelope


def sample_of(dialect: Dialect) -> Sample:
    request = dialect.render("sale", TEMPLATE_SAMPLE)
    envelope = Envelope(TPDU, CUP_HEADER[: dialect.header_bytes]) if dialect.tpdu else Envelope()
    frame = encode(request, envelope, dialect, codec="pyiso8583")
    approval = {"37": "000000000001", "38": "123456", "39": "00"}
    response = Message(reply_mti(request.mti), {**request.fields, **approval})
    for codec in CODECS:  # the two agree, or the timing means nothing
        assert decode(frame, dialect, codec=codec) == decode(frame, dialect, codec="pyiso8583")
        assert encode(response, envelope.reply(), dialect, codec=codec) == encode(
            response, envelope.reply(), dialect, codec="pyiso8583"
        )
    return Sample(dialect, frame, response, envelope.reply())


def per_message_us(action: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        action()
    return (time.perf_counter() - started) / number * 1e6


def measure(sample: Sample, runs: int, number: int) -> dict[tuple[str, str], float]:
    """(operation, codec) → median µs per message over ``runs`` runs."""
    times: dict[tuple[str, str], list[float]] = {}
    dialect, frame, response, envelope = sample.dialect, sample.frame, sample.response, sample.envelope
    for _ in range(runs):
        for codec in CODECS:

            def decoding(codec: str = codec) -> object:
                return decode(frame, dialect, codec=codec)

            def encoding(codec: str = codec) -> object:
                return encode(response, envelope, dialect, codec=codec)

            times.setdefault(("decode", codec), []).append(per_message_us(decoding, number))
            times.setdefault(("encode", codec), []).append(per_message_us(encoding, number))
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="compiled codec vs pyiso8583: µs per message, medians")
    parser.add_argument("--dialect", action="append", help="a dialect name or spec path (default: all in specs/)")
    parser.add_argument("--runs", type=int, default=7, help="runs per codec and operation; the median is shown")
    parser.add_argument("--number", type=int, default=2000, help="messages per run")
    args = parser.parse_args()
    names = args.dialect or builtin_dialect_names()
    print(f"median of {args.runs} runs of {args.number} messages; ratio = pyiso8583 / compiled")
    header = f"{'dialect':<18} {'fields':>6}  {'decode pyiso':>12} {'compiled':>9} {'ratio':>6}"
    print(header + f"  {'encode pyiso':>12} {'compiled':>9} {'ratio':>6}")
    for name in names:
        sample = sample_of(load_dialect(name))
        result = measure(sample, args.runs, args.number)
        row = f"{sample.dialect.name:<18} {len(sample.response.fields):>6}"
        for operation in ("decode", "encode"):
            reference, compiled = result[(operation, "pyiso8583")], result[(operation, "compiled")]
            row += f"  {reference:>9.2f} µs {compiled:>6.2f} µs {reference / compiled:>5.2f}x"
        print(row)


if __name__ == "__main__":
    main()
