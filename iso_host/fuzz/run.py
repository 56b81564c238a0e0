"""The fuzzer's asyncio edge (``iso-host fuzz``): send mutated frames of every kind to a host and record what it
did wrong.

Workers (one connection each) take frames from one scheduler in index order;
every ``--health-every`` frames the scheduler lets the frames in flight finish and sends a valid sale on a
connection of its own. Frames that may change the terminal's session (sign-on, sign-off) are sent alone,
and when the host may have acted on one the session is put back (signed on again, or off) before the next
frame goes out, so that every other frame meets a known MAC key and an approval can be judged against it.
Findings: a timeout, a close without an answer for a frame whose MTI reads, an approval of a frame that does
not decode or whose MAC does not verify, a failed health check, a host that stops accepting connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import ssl
import sys
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, Final

from iso_host.clock import local_now
from iso_host.config import DEMO_TMK
from iso_host.errors import WireError
from iso_host.fuzz import report
from iso_host.fuzz.mutations import FuzzFrame, Mutator, SeedFrame, Tak, read_frame, seed_frame
from iso_host.terminal.client import ClientError, ClientState, MacKeys, TerminalClient
from iso_host.terminal.context import TEST_PAN
from iso_host.wire import NEED_DATA, Dialect, FrameDecoder, encode_frame
from iso_host.wire.dialect import TEMPLATE_SAMPLE

SESSION_FLOWS: Final = frozenset({"signon", "signoff"})


def session_kinds(dialect: Dialect) -> frozenset[str]:
    """The dialect's kinds that change the terminal's session: sign-on, sign-off, and any kind that takes their
    flow (an iso87 key change, 0800 F70 = 161)."""
    return frozenset(rule.kind for rule in dialect.kinds if (rule.flow or rule.kind) in SESSION_FLOWS)
SEED_TIME: Final = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # seed frames do not depend on the day they are made
# Health-check STANs are drawn from 700000-999999: one bit flip cannot turn a seed's STAN (digits 0-2) into one,
# and drawing them at random keeps runs against the same host (and batch) apart.
HEALTH_STANS: Final = range(700_000, 999_999)
SESSION_WEIGHT, OTHER_WEIGHT = 1, 4  # sign-on and sign-off frames are sent alone: drawn less often
HEALTH_AMOUNT_MINOR: Final = 100
DUPLICATE_RETRIES: Final = 3  # an earlier run may have used the health check's STAN in this batch
MAX_SAVED_FINDINGS: Final = 1_000  # reproducers written; a host that approves everything would fill a disk
RECENT_FRAMES: Final = 16  # kept for a failed health check's reproducer: what the host saw just before
READ_BYTES: Final = 65_536
PROGRESS_EVERY: Final = 50_000  # frames between progress lines on stderr


def build_seeds(dialect: Dialect, tid: str, mid: str, tak: Tak | None) -> list[SeedFrame]:
    """One valid frame body per template of the dialect; MAC'd kinds carry a MAC under a key of zeros.

    The zero key keeps seeds (and so every frame) independent of the session keys; frames re-MAC'd before
    sending get the real MAC.
    """
    client = TerminalClient(dialect, tid, mid)
    if tak is not None:
        dummy = bytes(len(tak.key))
        client.mac = MacKeys(tak.algorithm, dummy, dummy)
    values = {k: v for k, v in TEMPLATE_SAMPLE.items() if k not in ("stan", "tid", "mid", "now")}
    seeds = []
    sessions = session_kinds(dialect)
    for kind in dialect.templates:
        frame = client.frame(client.build(kind, SEED_TIME, **values))
        weight = SESSION_WEIGHT if kind in sessions else OTHER_WEIGHT
        seeds.append(seed_frame(dialect, kind, frame[dialect.length_header.size_bytes :], weight))
    return seeds


class Link:
    """One connection that sends a frame and waits for its answer, a close, or the timeout."""

    def __init__(self, dialect: Dialect, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder(dialect.length_header, max_frame_bytes=dialect.length_header.max_length)

    @classmethod
    async def open(cls, options: report.FuzzOptions) -> Link:
        try:
            async with asyncio.timeout(options.timeout_s):
                reader, writer = await asyncio.open_connection(
                    options.host, options.port, ssl=options.ssl_context,
                    server_hostname=options.host if options.ssl_context else None,
                )  # fmt: skip
        except (OSError, TimeoutError) as error:
            raise ClientError(f"cannot connect to {options.host}:{options.port}: {error}") from None
        return cls(options.dialect, reader, writer)

    async def exchange(self, data: bytes, timeout_s: float) -> tuple[str, bytes | None]:
        """(ANSWERED, frame) — frame None when unreadable —, (CLOSED, None) or (TIMEOUT, None)."""
        try:
            async with asyncio.timeout(timeout_s):
                self.writer.write(data)
                await self.writer.drain()
                while (frame := self.decoder.next_frame()) is NEED_DATA:
                    chunk = await self.reader.read(READ_BYTES)
                    self.decoder.receive_data(chunk)
                    if not chunk:
                        return report.CLOSED, None
        except TimeoutError:
            return report.TIMEOUT, None
        except (ConnectionError, ssl.SSLError):
            return report.CLOSED, None
        except WireError:
            return report.ANSWERED, None  # an answer whose framing we cannot read
        assert isinstance(frame, bytes)
        return report.ANSWERED, frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()


class Terminal:
    """The fuzzed terminal's session as this run knows it: the MAC key in force, sign-on and health checks."""

    def __init__(self, options: report.FuzzOptions) -> None:
        self.options = options
        self.state = ClientState()  # shared by every control request
        self.tak = options.static_tak
        self.restores = 0

    async def _client(self) -> TerminalClient:
        client = TerminalClient(self.options.dialect, self.options.tid, self.options.mid, self.state)
        await client.connect(self.options.host, self.options.port, ssl_context=self.options.ssl_context,
                             timeout_s=self.options.timeout_s)  # fmt: skip
        return client

    async def signon(self) -> None:
        """Sign on with the TMK and take the TAK it issues. Raises ClientError when that fails."""
        assert self.options.tmk is not None
        async with await self._client() as client:
            request = client.build("signon", local_now())
            response = await client.request(request, timeout_s=self.options.timeout_s, mac=None)
            if response.fields.get("39") != "00":
                raise ClientError(f"sign-on as {self.options.tid} refused with response code {response.get('39')}")
            client.accept_signon(response, request, self.options.tmk)
            assert client.mac is not None, "a dialect that signs on has a MAC algorithm"
            self.tak = Tak(client.mac.algorithm, client.mac.request_key)

    async def restore(self) -> None:
        """Undo what a fuzzed sign-on or sign-off may have done: sign on again, or sign off (static or no key)."""
        self.restores += 1
        if self.options.tmk is not None:
            await self.signon()
            return
        async with await self._client() as client:
            await client.request(client.build("signoff", local_now()), timeout_s=self.options.timeout_s, mac=None)
            # A fuzzed sign-on the host approved keyed the terminal for good (its MACs stay mandatory after a sign-off
            # until an operator resets it): take keys under the demo TMK when the host issues them.
            request = client.build("signon", local_now())
            response = await client.request(request, timeout_s=self.options.timeout_s, mac=None)
            if response.fields.get("39") == "00":
                with contextlib.suppress(ClientError):
                    client.accept_signon(response, request, bytes.fromhex(DEMO_TMK))
                    self.tak = Tak(client.mac.algorithm, client.mac.request_key) if client.mac else self.tak

    async def health(self) -> tuple[str | None, bytes]:
        """One valid sale: (None, its frame) when approved, else (what went wrong, its frame)."""
        frame = b""
        for _ in range(DUPLICATE_RETRIES):
            try:
                async with await self._client() as client:
                    if self.tak is not None:
                        client.mac = MacKeys(self.tak.algorithm, self.tak.key, self.tak.key)
                    self.state.stan = secrets.choice(HEALTH_STANS) - 1  # build() takes the next one
                    sale = client.build("sale", local_now(), amount=HEALTH_AMOUNT_MINOR, pan=TEST_PAN, expiry="")
                    frame = client.frame(sale)
                    await client.send_raw(frame)
                    response = await client.receive(self.options.timeout_s, client.mac)
            except ClientError as error:
                return f"health check: {error}", frame
            code = response.fields.get("39")
            if code == "00":
                return None, frame
            if code != self.options.dialect.response_codes["DUPLICATE"]:
                return f"health check: a valid sale was answered with response code {code}", frame
        return f"health check: {DUPLICATE_RETRIES} valid sales in a row were answered as duplicates", frame


class Scheduler:
    """Hands out frames in index order: paced, with health checks and session frames run on a quiet host."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.next_index = 0
        self.stopped = False
        self._lock = asyncio.Lock()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._alone_done = asyncio.Event()  # cleared while a session frame is out: nothing else goes
        self._alone_done.set()
        self._started = time.monotonic()

    def stop(self) -> None:
        self.stopped = True

    async def _drain(self) -> None:
        await self._idle.wait()
        assert self._in_flight == 0

    async def take(self) -> FuzzFrame | None:
        options = self.run.options
        async with self._lock:
            await self._alone_done.wait()
            if self.stopped or self.next_index >= options.count:
                return None
            index = self.next_index
            self.next_index += 1
            if options.health_every and index and index % options.health_every == 0:
                await self._drain()
                await self.run.health_check(index)
            frame = self.run.mutator.frame(options.seed, index, self.run.terminal.tak)
            if self.run.touches_session(frame):
                await self._drain()
                self._alone_done.clear()
            if index and index % PROGRESS_EVERY == 0:
                rate = index / (time.monotonic() - self._started)
                print(f"iso-host fuzz: {index} frames, {rate:.0f}/s, {sum(self.run.stats.found.values())} findings",
                      file=sys.stderr)  # fmt: skip
            if options.rate:
                await asyncio.sleep(max(0.0, self._started + index / options.rate - time.monotonic()))
            self._in_flight += 1
            self._idle.clear()
            return frame

    def done(self, frame: FuzzFrame) -> None:
        self._in_flight -= 1
        assert self._in_flight >= 0
        if self._in_flight == 0:
            self._idle.set()
        if self.run.touches_session(frame):
            self._alone_done.set()


class Run:
    """One fuzzing run: the frames, the tallies, the findings and their reproducers."""

    def __init__(self, options: report.FuzzOptions, mutator: Mutator, terminal: Terminal) -> None:
        self.options, self.mutator, self.terminal = options, mutator, terminal
        self.scheduler = Scheduler(self)
        self.stats = report.Stats({name: report.Tally() for name in mutator.mutation_names})
        self.recent: deque[FuzzFrame] = deque(maxlen=RECENT_FRAMES)
        self.session_kinds = session_kinds(options.dialect)

    def touches_session(self, frame: FuzzFrame) -> bool:
        """A frame the host may take as a sign-on or sign-off (by its seed, or by what it decodes as)."""
        return frame.kind in self.session_kinds or frame.decoded_kind in self.session_kinds

    def framed(self, body: bytes) -> bytes:
        return encode_frame(self.options.dialect.length_header, body)

    async def worker(self) -> None:
        link: Link | None = None
        try:
            while (frame := await self.scheduler.take()) is not None:
                try:
                    link = await self._send(frame, link)
                finally:
                    self.scheduler.done(frame)
        finally:
            if link is not None:
                await link.close()

    async def _send(self, frame: FuzzFrame, link: Link | None) -> Link | None:
        """Send one frame and judge the host's handling of it; returns the link, None once it is closed."""
        if link is None:
            try:
                link = await Link.open(self.options)
            except ClientError as error:
                self.save(
                    "host_unreachable", {"index": frame.index, "what": str(error), "frames_before": self._recent()}
                )
                self.scheduler.stopped = True  # nothing more can be learnt from a host that is gone
                return None
        self.recent.append(frame)
        outcome, answer = await link.exchange(self.framed(frame.body), self.options.timeout_s)
        invalid = report.invalid_because(self.options.dialect, frame)
        session = self.touches_session(frame)
        response = read_frame(self.options.dialect, answer).message if answer is not None else None
        approved = response is not None and response.fields.get("39") == "00"
        verdict = report.judge(frame, outcome, approved=approved, invalid=invalid,
                        max_frame_bytes=self.options.max_frame_bytes)  # fmt: skip
        tally = self.stats.tallies[frame.mutation]
        tally.count(outcome, found=verdict is not None, approved=approved, remaced=frame.remaced)
        if verdict is not None:
            self.finding(frame, *verdict)
        if outcome != report.ANSWERED or answer is None:
            await link.close()
            link = None
        if session and (outcome != report.ANSWERED or approved or answer is None):
            await self._restore()
        return link

    async def _restore(self) -> None:
        try:
            await self.terminal.restore()
        except ClientError as error:
            # The next health check will tell whether the host is still usable.
            print(f"iso-host fuzz: could not restore the session: {error}", file=sys.stderr)

    async def health_check(self, index: int) -> None:
        self.stats.health_runs += 1
        problem, frame = await self.terminal.health()
        if problem is None:
            return
        self.stats.health_failures += 1
        self.save("health_check_failed", {"index": index, "what": problem, "frame_hex": frame.hex().upper(),
                                          "frames_before": self._recent()})  # fmt: skip

    def _recent(self) -> list[dict[str, Any]]:
        """The frames sent last, for a reproducer of what the host saw before it failed."""
        return [{"index": f.index, "mutation": f.mutation, "hex": f.body.hex().upper()} for f in self.recent]

    def finding(self, frame: FuzzFrame, what: str, detail: str) -> None:
        self.save(what, {
            "index": frame.index, "mutation": frame.mutation, "kind": frame.kind, "what": detail,
            "hex": frame.body.hex().upper(), "frame_hex": self.framed(frame.body).hex().upper(),
            "remaced": frame.remaced,
        })  # fmt: skip

    def save(self, what: str, reproducer: dict[str, Any]) -> None:
        self.stats.found[what] += 1
        if self.stats.saved >= MAX_SAVED_FINDINGS:
            return
        self.stats.saved += 1
        options = self.options
        document = {"finding": what, "seed": options.seed, "dialect": options.dialect.name,
                    "to": f"{options.host}:{options.port}", "tid": options.tid, **reproducer}  # fmt: skip
        options.out.mkdir(parents=True, exist_ok=True)
        path = options.out / f"{options.seed}-{reproducer['index']:08d}-{what}.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


async def fuzz(options: report.FuzzOptions) -> report.Stats:
    """Run the fuzzer and print the summary; the tallies, ``found`` among them."""
    dialect = options.dialect
    terminal = Terminal(options)
    # An unreachable host, or a refused sign-on, is a usage error (ClientError: exit 2), not a finding.
    await (await Link.open(options)).close()
    if options.tmk is not None:
        await terminal.signon()
    mutator = Mutator(dialect, build_seeds(dialect, options.tid, options.mid, terminal.tak),
                      max_frame_bytes=options.max_frame_bytes)  # fmt: skip
    run = Run(options, mutator, terminal)
    started = time.monotonic()
    await run.health_check(0)
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop sending: the frames in flight finish, the summary prints
        asyncio.get_running_loop().add_signal_handler(signum, run.scheduler.stop)
    await asyncio.gather(*(run.worker() for _ in range(options.connections)))
    await run.health_check(run.scheduler.next_index)
    run.stats.restores = terminal.restores
    where = f"{dialect.name} at {options.host}:{options.port}, seed {options.seed}, {options.connections} connections"
    print(f"iso-host fuzz: {where}")
    print("\n".join(report.summary_lines(run.stats, time.monotonic() - started, options.out)))
    return run.stats
