"""A bare ISO 8583 responder, the floor that ``tools/bench.py`` measures iso-host against.

It speaks iso87binary (2-byte big-endian length header, pyiso8583's ``default`` spec) and answers
every 0200 with an approving 0210: no ledger, no logging, no validation. Run it as
``python tools/baseline_server.py --port 0``; it prints ``listening on HOST:PORT`` once bound and
exits 0 on SIGTERM or SIGINT. It binds loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
from collections.abc import Iterator
from typing import Any, Final

import iso8583
import iso8583.specs

BIND_HOST: Final = "127.0.0.1"
HEADER_BYTES: Final = 2  # binary2 length header, as in specs/iso87binary.toml
MAX_FRAME_BYTES: Final = 8_192  # the same bound iso-host applies by default
ECHO_FIELDS: Final = ("2", "3", "4", "11", "41", "42", "49")
AUTH_CODE: Final = "123456"
RRN_DIGITS: Final = 12
STOP_GRACE_S: Final = 5.0  # how long shutdown waits for connections still open
assert MAX_FRAME_BYTES < 256**HEADER_BYTES


def reply_body(request_body: bytes, rrns: Iterator[int]) -> bytes:
    """The encoded 0210 for one encoded 0200: echoed fields plus F37 (RRN), F38 and F39 = "00"."""
    request, _ = iso8583.decode(request_body, iso8583.specs.default)
    response: dict[str, Any] = {"t": "0210", **{k: request[k] for k in ECHO_FIELDS if k in request}}
    response["37"] = f"{next(rrns):0{RRN_DIGITS}d}"
    response["38"] = AUTH_CODE
    response["39"] = "00"
    encoded, _ = iso8583.encode(response, iso8583.specs.default)
    return bytes(encoded)


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rrns: Iterator[int]) -> None:
    """Answer frames in order until the peer closes or sends something unreadable."""
    try:
        # The connection's read loop: it ends when the peer closes (IncompleteReadError).
        while True:
            length = int.from_bytes(await reader.readexactly(HEADER_BYTES), "big")
            if length > MAX_FRAME_BYTES:
                return
            body = reply_body(await reader.readexactly(length), rrns)
            writer.write(len(body).to_bytes(HEADER_BYTES, "big") + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, iso8583.DecodeError, iso8583.EncodeError):
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(port: int) -> int:
    """Listen until SIGTERM or SIGINT; returns the exit status."""
    rrns = itertools.count(1)
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, rrns), BIND_HOST, port)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(f"listening on {bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    with contextlib.suppress(TimeoutError):  # from 3.12 on, wait_closed also waits for open connections
        async with asyncio.timeout(STOP_GRACE_S):
            await server.wait_closed()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="bare iso87binary 0200 -> 0210 responder (benchmark baseline)")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 picks a free one)")
    return asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    raise SystemExit(main())
