"""A stateful property test of the ledger over TCP, in both dialect families on both ledgers: random business
days against a model.

Each example starts a real host (iso87binary or cup) on a fresh ledger (a SQLite file, or a fresh PostgreSQL
database), connects a few terminals' worth of connections for one TID, and runs a random sequence of sales
(amount 0 now and then), duplicates, voids (right or wrong amount and card), reversals (of sales, of voids,
of nothing, repeated), refunds (partial, full, over), settlements (balanced; out of balance, then the
upload and its end; repeated as if the reply was lost; naming another batch), clock moves past the void
window and the business day, and concurrent bursts on several connections aimed at one original or one
batch (voids of one sale, a void or sale or refund racing the batch's settlement, a void racing a
reversal, refunds of one sale, one sale sent on several connections). ``ledger_model.py`` says what every
answer must be; a burst must be explained by SOME serial order of its requests. Every example ends with
``iso-host ledger verify`` (in-process) passing and the ledger's rows agreeing with the model.

In CUP the terminal signs on and MACs its financial requests (the connections share its state and keys),
names its batch in 60.2 and moves to the next one after a 00 to its settlement (or to the end of its upload);
a void names its original by 61.1 batch + 61.2 STAN, a refund by F37 + 61.3 date (now and then another day's),
a reversal repeats F11, F3 and 60.1 and names the original's batch. Totals travel in F48 in a domestic
(BIN 62) and a foreign section; out of balance is 00 with result 2 in F48; uploads carry up to 8 records.
One more rule there: a sale, void or refund naming the batch that settled (a terminal that missed the reply
to its settlement), item 7 of the model.

When an answer is wrong, hypothesis prints the shrunk sequence of steps; the error names the step, the
answers allowed, and the requests and answers of the example so far.

CI runs a bounded number of examples (under a minute for the whole file on two cores). The longer run:

    ISO_HOST_MODEL_EXAMPLES=1000 ISO_HOST_MODEL_STEPS=80 \\
        python -m pytest tests/integration/test_ledger_model.py -x -p no:cacheprovider

(``ISO_HOST_MODEL_EXAMPLES`` examples per dialect and ledger, each of up to ``ISO_HOST_MODEL_STEPS`` steps.) A failing
run shrinks and shows the first defect it met; ``ISO_HOST_MODEL_ALL_DEFECTS=1`` shrinks and shows every
distinct one (each kind of wrong answer is its own exception class, ``Wrong...``), which takes minutes.
"""

from __future__ import annotations

import asyncio
import copy
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from zoneinfo import ZoneInfo

import pytest
from databases import BACKENDS, fresh_postgres_database
from hosting import MID, TEST_PAN, TID, RunningHost, running_host
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from ledger_model import (
    MAX_BURST_REQUESTS,
    SALE,
    SETTLED,
    UPLOADING,
    VOID,
    Answer,
    Model,
    Refund,
    Request,
    Reversal,
    Row,
    RuleSettings,
    Sale,
    Settle,
    Totals,
    Upload,
    Void,
    answered_as_recorded,
    explain,
    outcomes,
    settle_on,
)
from log_audit import remember_secret

from iso_host.core import rules as host_rules
from iso_host.ledger import TransactionRecord
from iso_host.ledger.reports import verify_ledger
from iso_host.terminal.client import ClientState, TerminalClient
from iso_host.wire import Message

UTC = ZoneInfo("UTC")
DIALECTS = ("iso87binary", "cup")
OTHER_PAN = "6225880012345678"  # a UnionPay card: domestic in CUP's settlement totals (TEST_PAN is foreign)
DOMESTIC_BIN = "62"
UNKNOWN_RRN = "999999999999"
UNKNOWN_STAN = 999_999  # CUP: a void naming (open batch, this STAN) names nothing; the test's STANs stay far below
CUP_RECORDS_PER_UPLOAD = 8  # F48 holds up to 8 upload records
OUT_OF_BALANCE_00 = "00+F48 result 2"  # CUP answers out of balance 00, with result digit 2 in a section of F48
START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
MODEL_RULES = RuleSettings(cutoff_hour=23)
HOST_RULES = host_rules.RuleSettings(timezone=UTC, business_day_cutoff=time(MODEL_RULES.cutoff_hour, 0))
CONNECTIONS = MAX_BURST_REQUESTS  # one connection per request of the largest burst
EXAMPLES = int(os.environ.get("ISO_HOST_MODEL_EXAMPLES", "8"))  # per dialect and ledger: 4 combinations
STEPS = int(os.environ.get("ISO_HOST_MODEL_STEPS", "40"))
REQUEST_TIMEOUT_S = 60.0  # a whole burst; far beyond any answer, so a hung host fails instead of hanging CI
FALLBACK_CODES = {"INVALID_AMOUNT": "13"}  # decided (item 2) before every dialect's [reasons] carries it
# One defect is shrunk and shown by default; shrinking every distinct one can take minutes per defect.
ALL_DEFECTS = os.environ.get("ISO_HOST_MODEL_ALL_DEFECTS") == "1"
TRANSCRIPT_LINES = 60  # the end of the example's transcript that a failure shows

remember_secret(OTHER_PAN)
assert HOST_RULES.max_refused_void_attempts == MODEL_RULES.max_refused_void_attempts
assert HOST_RULES.refund_max_age_days == MODEL_RULES.refund_max_age.days
assert timedelta(hours=HOST_RULES.max_void_age_h) == MODEL_RULES.max_void_age

T = TypeVar("T")


class TickingClock:
    """The host's clock: a base the test moves in whole minutes, plus a microsecond more at every read.

    The ticks keep the ledger's times strictly increasing (so ``ledger verify`` sees a row changed after its
    batch settled) and stay far below a minute, so the model can reason with the base alone.
    """

    def __init__(self, base: datetime) -> None:
        self.base = base
        self.ticks = 0

    def __call__(self) -> datetime:
        self.ticks += 1
        assert self.ticks < 1_000_000, "ticks must stay under a second"
        return self.base + timedelta(microseconds=self.ticks)

    def advance(self, minutes: int) -> None:
        assert minutes > 0
        self.base += timedelta(minutes=minutes)


class LoopThread:
    """An asyncio loop in a thread of its own: hypothesis's stateful rules are plain functions."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ledger-model-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(REQUEST_TIMEOUT_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


_MISMATCHES: dict[str, type[AssertionError]] = {}


def mismatch(name: str) -> type[AssertionError]:
    """An AssertionError subclass per kind of wrong answer, so that hypothesis reports (and shrinks) each
    distinct defect apart instead of stopping at the first one it met."""
    key = "".join(part.title() for part in name.replace("-", "_").split("_"))
    if key not in _MISMATCHES:
        _MISMATCHES[key] = type(f"Wrong{key}", (AssertionError,), {})
    return _MISMATCHES[key]


def record_text(request: Request) -> str:
    return f"{type(request).__name__.lower()}({', '.join(f'{k}={v!r}' for k, v in vars_of(request).items())})"


def vars_of(request: Request) -> dict[str, object]:
    return {name: getattr(request, name) for name in request.__slots__}  # type: ignore[union-attr]


class LedgerMachine(RuleBasedStateMachine):
    """One example: one host, one ledger, one terminal on several connections, one model."""

    backend: ClassVar[str]
    dialect: ClassVar[str]
    workdir: ClassVar[Path]
    loop: ClassVar[LoopThread]

    def __init__(self) -> None:
        super().__init__()
        self.resources = ExitStack()
        self.clock = TickingClock(START)
        self.cup = self.dialect == "cup"
        self.model = Model(rules=MODEL_RULES, domestic_bin=DOMESTIC_BIN if self.cup else None)
        self.transcript: list[str] = []
        self.sent: dict[int, tuple[Request, Message]] = {}  # by STAN: the requests a duplicate may repeat
        self.last_settlement: tuple[Settle, Message] | None = None
        self.step_failed = False
        directory = Path(tempfile.mkdtemp(dir=self.workdir))
        if self.backend == "postgresql":
            self.url = self.resources.enter_context(fresh_postgres_database())
        else:
            self.url = f"sqlite:///{directory}/ledger.db"
        self.running: AsyncExitStack = AsyncExitStack()
        self.host, self.clients = self.loop.run(self._start(directory))

    async def _start(self, directory: Path) -> tuple[RunningHost, list[TerminalClient]]:
        host = await self.running.enter_async_context(
            running_host(directory, self.dialect, clock=self.clock, ledger_url=self.url, rules=HOST_RULES)
        )
        # One terminal on several connections: they share its state (STAN counter, batch) and, once the first
        # has signed on where the dialect requires it (CUP), its MAC keys.
        first = await host.connected_client(TID, MID)
        self.running.push_async_callback(first.close)
        clients = [first]
        for _ in range(CONNECTIONS - 1):
            client = TerminalClient(host.dialect, TID, MID, first.state)
            client.mac = first.mac
            await client.connect(*host.address)
            self.running.push_async_callback(client.close)
            clients.append(client)
        return host, clients

    # -- plumbing ------------------------------------------------------------------------------------------

    def code_of(self, reason: str) -> str:
        codes = self.host.dialect.response_codes
        code = codes[reason] if reason in codes else FALLBACK_CODES[reason]
        return OUT_OF_BALANCE_00 if self.cup and reason == "OUT_OF_BALANCE" else code

    def build(self, template: str, **values: Any) -> Message:
        # After a 00 to its settlement (or to the end of its upload) a terminal moves to the next batch: the
        # one the model holds open. A request that names another batch says so in ``values``.
        self.clients[0].state.batch = self.model.open_batch
        return self.clients[0].build(template, self.clock.base, **values)

    @staticmethod
    def in_batch(batch: int | None) -> dict[str, int]:
        return {} if batch is None else {"batch": batch}

    def answer_of(self, response: Message) -> Answer:
        """F39 and F37; a CUP settlement's 00 also says what F48's result digits (30, 61) are: 11 balanced."""
        code = response.fields["39"]
        totals = response.fields.get("48")
        if self.cup and response.mti == "0510" and code == "00" and totals is not None:
            results = totals[30:31] + totals[61:62]
            if results != "11":
                code = OUT_OF_BALANCE_00 if set(results) <= {"1", "2"} and len(results) == 2 else f"00+F48 {totals}"
        return Answer(code, response.fields.get("37"), totals if self.cup and response.mti == "0510" else None)

    def exchange(self, messages: list[Message]) -> list[Answer]:
        """Send each message on a connection of its own, all at once; their answers in the same order."""
        assert len(messages) <= len(self.clients)

        async def one(client: TerminalClient, message: Message) -> Answer:
            return self.answer_of(await client.request(message))

        async def all_of() -> list[Answer]:
            return list(await asyncio.gather(*(one(c, m) for c, m in zip(self.clients, messages, strict=False))))

        return self.loop.run(all_of())

    def fail(self, name: str, text: str) -> None:
        self.step_failed = True
        tail = "\n  ".join(self.transcript[-TRANSCRIPT_LINES:])
        raise mismatch(name)(f"{text}\n  (the example's requests and answers, latest last)\n  {tail}")

    def send(self, name: str, request: Request, message: Message) -> Answer:
        """One request on one connection; its answer must be one the model allows, whose effect is applied."""
        allowed = outcomes(self.model, request, self.clock.base)
        [answer] = self.exchange([message])
        codes = sorted({self.code_of(reason) for reason, _ in allowed})
        self.transcript.append(f"{record_text(request)} -> {answer.code} rrn={answer.rrn} (allowed {codes})")
        matching = [effect for reason, effect in allowed if self.code_of(reason) == answer.code]
        if not matching:
            expected = " or ".join(f"{reason} ({self.code_of(reason)})" for reason, _ in allowed)
            self.fail(f"{name}_expected_{'_or_'.join(r for r, _ in allowed)}",
                      f"{name}: {record_text(request)} answered {answer.code}, expected {expected}")  # fmt: skip
        following = copy.deepcopy(self.model)
        matching[0](following, answer.rrn)
        if not answered_as_recorded(request, self.model, following, answer):
            recorded = "a recorded answer with" if answer.rrn is None else "an unrecorded answer without"
            self.fail(f"{name}_rrn", f"{name}: {record_text(request)} answered {answer.code} rrn={answer.rrn}, "
                      f"expected {recorded} an RRN (F37)")  # fmt: skip
        self.model = following
        return answer

    def remember(self, request: Request, message: Message) -> None:
        stan = int(message.fields["11"])
        self.sent[stan] = (request, message)

    def rows(self, *kinds: str) -> list[Row]:
        return [row for _, row in sorted(self.model.rows.items()) if row.kind in kinds and row.rrn]

    @staticmethod
    def pick(items: list[T], index: int) -> T:
        assert items
        return items[index % len(items)]

    # -- requests ------------------------------------------------------------------------------------------

    def batch_named(self, batch: int | None) -> int | None:
        """The batch a CUP request names in 60.2 (``batch``, or the terminal's own); iso87 names none."""
        return (self.model.open_batch if batch is None else batch) if self.cup else None

    def sale_request(self, amount: int, pan: str, batch: int | None = None) -> tuple[Sale, Message]:
        named = self.batch_named(batch)
        message = self.build("sale", amount=amount, pan=pan, **self.in_batch(named))
        return Sale(int(message.fields["11"]), amount, pan, named), message

    def void_request(self, original: Row | None, amount: int, pan: str, batch: int | None = None
                     ) -> tuple[Void, Message]:  # fmt: skip
        """A void of ``original`` (None: of nothing the host knows). CUP names the original by 61.1 batch +
        61.2 STAN, iso87 by its RRN."""
        rrn = original.rrn if original is not None and original.rrn else UNKNOWN_RRN
        named = self.batch_named(batch)
        if self.cup:
            batch_and_stan = (original.batch, original.stan) if original is not None else (named, UNKNOWN_STAN)
            values: dict[str, Any] = {"original_batch": batch_and_stan[0], "original_stan": batch_and_stan[1]}
        else:
            values = {"rrn": rrn}
        message = self.build("void", amount=amount, pan=pan, **values, **self.in_batch(named))
        return Void(int(message.fields["11"]), rrn, amount, pan, named), message

    def refund_request(self, original: Row | None, amount: int, pan: str, batch: int | None = None,
                       other_day: bool = False) -> tuple[Refund, Message]:  # fmt: skip
        """A refund of ``original`` (None: of an RRN the host never gave); CUP also names the original's date
        (61.3), ``other_day`` the day before it."""
        rrn = original.rrn if original is not None and original.rrn else UNKNOWN_RRN
        named = self.batch_named(batch)
        date = None
        if self.cup:
            at = original.at if original is not None else self.clock.base
            date = (at - timedelta(days=1 if other_day else 0)).strftime("%m%d")
        values = {"original_date": date} if date is not None else {}
        message = self.build("refund", amount=amount, pan=pan, rrn=rrn, **values, **self.in_batch(named))
        return Refund(int(message.fields["11"]), rrn, amount, pan, named, date), message

    def reversal_request(self, target: Row | None, amount: int) -> tuple[Reversal, Message]:
        """The reversal of ``target`` (None: of a request the host never saw): its STAN in F11; CUP also repeats
        its F3 and 60.1 and names its batch in 60.2."""
        stan = target.stan if target is not None else self.clients[0].state.next_stan()
        values: dict[str, Any] = {}
        batch = None
        if self.cup:
            voiding = target is not None and target.kind == VOID
            batch = target.batch if target is not None else self.model.open_batch
            values = {"original_processing_code": "200000" if voiding else "000000",
                      "original_type": "23" if voiding else "22", "batch": batch}  # fmt: skip
        message = self.build("reversal", amount=amount, pan=TEST_PAN, original_stan=stan, **values)
        return Reversal(stan, amount, batch), message

    def settle_request(self, batch: int, totals: Totals, *, uploaded: int | None = None) -> tuple[Settle, Message]:
        """A settlement; with ``uploaded`` (the number of records uploaded) the one that ends the upload."""
        after_upload = uploaded is not None
        if self.cup:
            if uploaded is not None:  # the end of the upload (0320 60.3 = 202) carries the record count, no totals
                message = self.build("upload_end", count=uploaded, processing_code="202", batch=batch)
                return Settle(batch, (), after_upload), message
            sections = [totals[at : at + 4] for at in (0, 4)]  # domestic, foreign: n12 n3 n12 n3 + result n1
            f48 = "".join(f"{da:012d}{dc % 1000:03d}{ca:012d}{cc % 1000:03d}0" for dc, da, cc, ca in sections)
            return Settle(batch, totals), self.build("settlement", totals=f48, batch=batch)
        debit_count, debit_amount, credit_count, credit_amount = totals
        message = self.build(
            "settlement", processing_code="960000" if after_upload else "920000", batch=batch,
            debit_count=debit_count, debit_amount=debit_amount, credit_count=credit_count, credit_amount=credit_amount,
        )  # fmt: skip
        return Settle(batch, totals, after_upload), message

    def upload_requests(self, batch: int, debits: list[Row]) -> list[tuple[Upload, Message]]:
        """The batch upload: iso87 one 0320 per transaction; CUP up to 8 records in F48 of each 0320."""
        if not self.cup:
            return [(Upload(batch, row.stan, row.amount),
                     self.build("batch_upload", original_stan=row.stan, pan=row.pan, amount=row.amount, batch=batch))
                    for row in debits]  # fmt: skip
        uploads = []
        for start in range(0, len(debits), CUP_RECORDS_PER_UPLOAD):
            rows = debits[start : start + CUP_RECORDS_PER_UPLOAD]
            records = "".join(f"{'00' if self.model.domestic(r.pan) else '01'}{r.stan:06d}{r.pan:0>20}{r.amount:012d}"
                              for r in rows)  # fmt: skip
            message = self.build("batch_upload", records=f"{len(rows):02d}{records}", batch=batch)
            uploads.append((Upload(batch, rows[0].stan, sum(r.amount for r in rows), len(rows)), message))
        return uploads

    def void_of(self, sale: Row, variant: int, batch: int | None = None) -> tuple[Void, Message]:
        """Variants 0-3 the right void; 4-5 another amount; 6 another card; 7 both."""
        amount = sale.amount if variant < 4 or variant == 6 else max(1, sale.amount + (1 if variant % 2 else -1))
        pan = sale.pan if variant < 6 else (OTHER_PAN if sale.pan == TEST_PAN else TEST_PAN)
        return self.void_request(sale, amount, pan, batch)

    def refund_of(self, sale: Row, portion: str, other_card: bool, batch: int | None = None
                  ) -> tuple[Refund, Message]:  # fmt: skip
        remaining = sale.amount - sale.refunded
        amount = {"partial": max(1, remaining // 2), "full": max(1, remaining), "over": remaining + 1}[portion]
        pan = (OTHER_PAN if sale.pan == TEST_PAN else TEST_PAN) if other_card else sale.pan
        return self.refund_request(sale, amount, pan, batch)

    # -- rules: one request at a time ----------------------------------------------------------------------

    @rule(amount=st.one_of(st.just(0), st.integers(1, 99_999)), other_card=st.booleans())
    def sale(self, amount: int, other_card: bool) -> None:
        request, message = self.sale_request(amount, OTHER_PAN if other_card else TEST_PAN)
        self.send("sale", request, message)
        self.remember(request, message)

    def duplicable(self) -> list[int]:
        """STANs of requests recorded (or maybe recorded) in the open batch, whose batch the model knows."""
        open_batch = self.model.open_batch
        rows = [s for s, row in self.model.rows.items() if row.batch == open_batch and row.certain_batch]
        zeros = [s for s, batch in self.model.zero_sales.items() if batch == open_batch]
        return sorted(s for s in rows + zeros if s in self.sent)

    @rule(pick=st.integers(0, 1_000))
    def duplicate(self, pick: int) -> None:
        if not self.duplicable():
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        request, message = self.sent[self.pick(self.duplicable(), pick)]
        self.send("duplicate", request, Message(message.mti, dict(message.fields)))

    @rule(aim=st.sampled_from(["sale", "sale", "sale", "void-or-refund", "unknown"]), pick=st.integers(0, 1_000),
          variant=st.integers(0, 7))  # fmt: skip
    def void(self, aim: str, pick: int, variant: int) -> None:
        sales, others = self.rows(SALE), self.rows(VOID, "refund")
        if aim == "sale" and sales:
            request, message = self.void_of(self.pick(sales, pick), variant)
        elif aim == "void-or-refund" and others:
            other = self.pick(others, pick)
            request, message = self.void_request(other, other.amount, other.pan)
        else:
            request, message = self.void_request(None, 100, TEST_PAN)
        self.send("void", request, message)
        self.remember(request, message)

    @rule(aim=st.sampled_from(["sale", "sale", "void", "unknown"]), pick=st.integers(0, 1_000),
          wrong_amount=st.sampled_from([False, False, False, True]))  # fmt: skip
    def reversal(self, aim: str, pick: int, wrong_amount: bool) -> None:
        candidates = self.rows(SALE) if aim == "sale" else self.rows(VOID)
        if aim != "unknown" and candidates:
            row = self.pick(candidates, pick)
            request, message = self.reversal_request(row, row.amount + 1 if wrong_amount else row.amount)
        else:
            request, message = self.reversal_request(None, 500)
        self.send("reversal", request, message)

    @rule(pick=st.integers(0, 1_000), portion=st.sampled_from(["partial", "full", "over"]),
          other_card=st.sampled_from([False, False, False, True]),
          unknown=st.sampled_from([False] * 7 + [True]))  # fmt: skip
    def refund(self, pick: int, portion: str, other_card: bool, unknown: bool) -> None:
        if not self.rows(SALE):
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        if unknown and self.cup and pick % 2:  # CUP: the right RRN, but another day's (61.3)
            sale = self.pick(self.rows(SALE), pick)
            request, message = self.refund_request(sale, max(1, sale.amount // 2), sale.pan, other_day=True)
        elif unknown:
            request, message = self.refund_request(None, 100, TEST_PAN)
        else:
            request, message = self.refund_of(self.pick(self.rows(SALE), pick), portion, other_card)
        self.send("refund", request, message)
        self.remember(request, message)

    @rule(minutes=st.one_of(st.integers(1, 240), st.sampled_from([12 * 60, 24 * 60, 3 * 1440, 30 * 1440, 31 * 1440])))
    def advance_clock(self, minutes: int) -> None:
        self.clock.advance(minutes)
        self.transcript.append(f"clock +{minutes} min -> {self.clock.base:%Y-%m-%d %H:%M}")

    @rule(balanced=st.sampled_from([True, True, False]), drop_one=st.booleans())
    def settle(self, balanced: bool, drop_one: bool) -> None:
        batch = self.model.open_batch
        totals = self.model.totals(batch)
        if not balanced:
            totals = self.model.plus(totals, TEST_PAN, (1, 1_234, 0, 0))
        host_totals = self.model.totals(batch)
        request, message = self.settle_request(batch, totals)
        answer = self.send("settlement", request, message)
        if self.model.settled(batch):
            self.last_settlement = (request, message)
        if self.cup and answer.code in ("00", OUT_OF_BALANCE_00):
            self.check_reply_totals(answer, host_totals)
        self.finish_upload(batch, drop_one=drop_one)

    def check_reply_totals(self, answer: Answer, host_totals: Totals) -> None:
        """CUP: the 0510's F48 carries the host's own totals (the model's), section by section."""
        assert answer.totals is not None
        sections = [answer.totals[at : at + 31] for at in (0, 31)]  # debit n12 n3, credit n12 n3, result n1
        found = tuple(n for d in sections for n in (int(d[12:15]), int(d[0:12]), int(d[27:30]), int(d[15:27])))
        if found != tuple(n % 1_000 if i % 2 == 0 else n for i, n in enumerate(host_totals)):
            self.fail("settlement_reply_totals", f"the 0510 carries totals {found} in F48, the model has {host_totals}")

    def finish_upload(self, batch: int, *, drop_one: bool = False) -> None:
        """An out-of-balance batch: the terminal uploads its debits (maybe one short), then ends the upload."""
        if self.model.batches.get(batch) != UPLOADING:
            return
        debits = self.model.debits(batch)[1 if drop_one else 0 :]
        for upload, message in self.upload_requests(batch, debits):
            self.send("batch-upload", upload, message)
        request, message = self.settle_request(batch, self.model.totals(batch), uploaded=len(debits))
        self.send("upload-end", request, message)
        assert self.model.settled(batch)
        self.last_settlement = (request, message) if self.cup else None  # CUP: its reply may be lost too

    @rule()
    def settle_again(self) -> None:
        """The reply to a balanced settlement (CUP: or to the end of an upload) was lost: the terminal sends the
        very same message again."""
        if self.last_settlement is None:
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        assert self.last_settlement is not None
        request, message = self.last_settlement
        self.send("settlement-repeated", request, Message(message.mti, dict(message.fields)))

    @rule(ahead=st.integers(1, 3), older=st.booleans(), pick=st.integers(0, 1_000))
    def settle_other_batch(self, ahead: int, older: bool, pick: int) -> None:
        """A settlement naming a batch the host does not hold open: a later one, or an older settled one."""
        last = self.model.last_settled[0] if self.model.last_settled else None
        settled = [b for b, state in sorted(self.model.batches.items()) if state == SETTLED and b != last]
        batch = self.pick(settled, pick) if older and settled else self.model.open_batch + ahead
        request, message = self.settle_request(batch, self.model.totals(batch))
        self.send("settlement-other-batch", request, message)

    @rule(kind=st.sampled_from(["sale", "sale", "void", "refund"]), pick=st.integers(0, 1_000),
          variant=st.integers(0, 7))  # fmt: skip
    def stale_batch(self, kind: str, pick: int, variant: int) -> None:
        """A terminal that missed the reply to its settlement still names the batch that settled (CUP 60.2): a
        sale (amount 0 now and then), a void or a refund into it writes nothing (item 7). iso87 names no batch."""
        settled = [batch for batch, state in self.model.batches.items() if state == SETTLED]
        if not self.cup or not settled:
            return  # nothing to aim at: a guard, not a precondition, so replays draw the same steps
        batch = max(settled)
        sales = self.rows(SALE)
        request: Request
        if kind == "void" and sales:
            # Half the time a sale of the open batch, which the void would cancel if it named that batch.
            open_sales = [sale for sale in sales if sale.batch == self.model.open_batch]
            target = self.pick(open_sales if open_sales and pick % 2 else sales, pick // 2)
            request, message = self.void_of(target, variant, batch=batch)
        elif kind == "refund" and sales:
            portion = ("partial", "full", "over")[variant % 3]
            request, message = self.refund_of(self.pick(sales, pick), portion, variant == 7, batch=batch)
        else:
            amount = 0 if variant == 7 else 500 + pick
            request, message = self.sale_request(amount, OTHER_PAN if variant % 2 else TEST_PAN, batch=batch)
        self.send(f"{kind}-naming-settled-batch", request, message)

    # -- rules: concurrent bursts --------------------------------------------------------------------------

    def burst(self, name: str, requests: list[tuple[Request, Message]]) -> None:
        """Send all at once; SOME serial order of the requests must give exactly the answers received."""
        answers = self.exchange([message for _, message in requests])
        now = self.clock.base
        lines = [f"  {record_text(r)} -> {a.code} rrn={a.rrn}" for (r, _), a in zip(requests, answers, strict=True)]
        self.transcript.append(f"burst {name}:\n  " + "\n  ".join(lines))
        finals = explain(self.model, [r for r, _ in requests], answers, now, self.code_of)
        chosen = settle_on(finals)
        if chosen is None:
            self.fail(f"burst_{name}", f"burst {name}: no serial order of its requests gives these answers:\n"
                      + "\n".join(lines))  # fmt: skip
        assert chosen is not None
        self.model = chosen
        for request, message in requests:
            if isinstance(request, Sale | Void | Refund):
                self.remember(request, message)

    @rule(pick=st.integers(0, 1_000), variants=st.lists(st.integers(0, 7), min_size=2, max_size=6))
    def burst_voids(self, pick: int, variants: list[int]) -> None:
        """Several voids of one sale at once, some with another amount or card."""
        if not self.rows(SALE):
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        sale = self.pick(self.rows(SALE), pick)
        self.burst("voids-of-one-sale", [self.void_of(sale, variant) for variant in variants])

    @rule(pick=st.integers(0, 1_000), racer=st.sampled_from(["void", "void", "sale", "refund"]),
          variant=st.integers(0, 7), counted=st.booleans())  # fmt: skip
    def burst_settlement_race(self, pick: int, racer: str, variant: int, counted: bool) -> None:
        """A void (or sale, or refund) racing the settlement of the open batch. The terminal's totals leave
        the racer out, or count it in (``counted``)."""
        batch = self.model.open_batch
        in_batch = [row for row in self.rows(SALE) if row.batch == batch]
        totals = self.model.totals(batch)
        racing: tuple[Void | Refund | Sale, Message]
        if racer == "void" and in_batch:
            racing = self.void_of(self.pick(in_batch, pick), variant)
            extra = (0, 0, 1, racing[0].amount)
        elif racer == "refund" and self.rows(SALE):
            racing = self.refund_of(self.pick(self.rows(SALE), pick), "partial", other_card=False)
            extra = (0, 0, 1, racing[0].amount)
        else:
            racing = self.sale_request(1_000 + variant, OTHER_PAN if variant % 2 else TEST_PAN)
            extra = (1, racing[0].amount, 0, 0)
        if counted:
            totals = self.model.plus(totals, racing[0].pan, extra)
        settlement = self.settle_request(batch, totals)
        self.burst(f"{racer}-racing-settlement", [settlement, racing])
        if self.model.settled(batch):
            self.last_settlement = settlement
        self.finish_upload(batch)

    @rule(pick=st.integers(0, 1_000))
    def burst_void_and_reversal(self, pick: int) -> None:
        """A void and a reversal of the same sale at once: one of them takes effect."""
        if not self.rows(SALE):
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        sale = self.pick(self.rows(SALE), pick)
        self.burst("void-racing-reversal", [self.void_of(sale, 0), self.reversal_request(sale, sale.amount)])

    @rule(pick=st.integers(0, 1_000), count=st.integers(2, 4))
    def burst_reversals(self, pick: int, count: int) -> None:
        """The same reversal on several connections: one effect, the same 00 to all."""
        if not self.rows(SALE, VOID):
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        target = self.pick(self.rows(SALE, VOID), pick)
        request, message = self.reversal_request(target, target.amount)
        self.burst("repeated-reversals", [(request, Message(message.mti, dict(message.fields))) for _ in range(count)])

    @rule(pick=st.integers(0, 1_000), portions=st.lists(st.sampled_from(["partial", "full", "over"]), min_size=2,
          max_size=5))  # fmt: skip
    def burst_refunds(self, pick: int, portions: list[str]) -> None:
        """Several refunds of one sale at once: never more than it is worth in total."""
        if not self.rows(SALE):
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        sale = self.pick(self.rows(SALE), pick)
        self.burst("refunds-of-one-sale", [self.refund_of(sale, portion, other_card=False) for portion in portions])

    @rule(amount=st.integers(1, 99_999), count=st.integers(2, 4))
    def burst_same_sale(self, amount: int, count: int) -> None:
        """One sale sent on several connections at once (same STAN): one approval, the rest duplicates."""
        request, message = self.sale_request(amount, TEST_PAN)
        self.burst("one-sale-on-several-connections",
                   [(request, Message(message.mti, dict(message.fields))) for _ in range(count)])  # fmt: skip

    @rule(pick=st.integers(0, 1_000), variant=st.integers(0, 7), portion=st.sampled_from(["partial", "full"]))
    def burst_void_refund_reversal(self, pick: int, variant: int, portion: str) -> None:
        """A void, a refund and a reversal of one sale at once: at most one of void and reversal takes effect,
        and a refund only of a sale neither cancelled."""
        if not self.rows(SALE):
            return  # nothing to aim at yet: a guard, not a precondition, so replays draw the same steps
        sale = self.pick(self.rows(SALE), pick)
        racers: list[tuple[Request, Message]] = [
            self.void_of(sale, variant), self.refund_of(sale, portion, other_card=False),
            self.reversal_request(sale, sale.amount),
        ]  # fmt: skip
        self.burst("void-refund-reversal-of-one-sale", racers)

    # -- the end of every example --------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            records = self.loop.run(self.host.records()) if not self.step_failed else []
            self.loop.run(self.running.aclose())
            if not self.step_failed:
                violations = verify_ledger(self.url).violations
                if violations:
                    self.fail("ledger_verify", "iso-host ledger verify: " + "; ".join(map(str, violations)))
                self.compare(records)
        finally:
            self.resources.close()

    def compare(self, records: list[TransactionRecord]) -> None:
        """Every row the model expects is in the ledger as the model has it, and nothing else is."""
        by_rrn = {record.rrn: record for record in records if record.kind.value != "reversal"}
        problems = []
        for row in self.model.rows.values():
            record = by_rrn.pop(row.rrn or "", None)
            if record is None:
                problems.append(f"{row.kind} STAN {row.stan} RRN {row.rrn}: missing from the ledger")
                continue
            found = (record.kind.value, record.status.value, record.refunded_minor, record.amount_minor)
            if found != (row.kind, row.status, row.refunded, row.amount):
                problems.append(f"{row.kind} STAN {row.stan} RRN {row.rrn}: ledger has {found}, model "
                                f"{(row.kind, row.status, row.refunded, row.amount)}")  # fmt: skip
            if row.certain_batch and record.batch_number != row.batch:
                problems.append(f"{row.kind} STAN {row.stan}: in batch {record.batch_number}, model {row.batch}")
        for record in by_rrn.values():
            refused_zero = record.kind.value == SALE and int(record.stan) in self.model.zero_sales
            if not (refused_zero and record.status.value == "DECLINED"):
                problems.append(f"unexpected {record.kind.value} STAN {record.stan} {record.status.value}")
        reversals = Counter(
            r.original_rrn for r in records if r.kind.value == "reversal" and r.status.value == "APPROVED"
        )
        expected = Counter({row.rrn: row.reversals for row in self.model.rows.values() if row.reversals})
        if reversals != expected:
            problems.append(f"effective reversals per original: ledger {dict(reversals)}, model {dict(expected)}")
        if problems:
            self.fail("ledger_rows", "the ledger disagrees with the model:\n  " + "\n  ".join(problems))


@contextmanager
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.close()


SETTINGS = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, report_multiple_bugs=ALL_DEFECTS,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_ledger_model(dialect: str, backend: str, tmp_path: Path) -> None:
    """Random business days over TCP end with every answer as the model says and ``ledger verify`` clean."""
    with loop_thread() as runner:
        machine = type(f"LedgerMachine_{dialect}_{backend}", (LedgerMachine,),
                       {"backend": backend, "dialect": dialect, "workdir": tmp_path, "loop": runner})  # fmt: skip
        run_state_machine_as_test(machine, settings=SETTINGS)


PARALLEL_VOIDS = 50


@pytest.mark.parametrize("backend", BACKENDS)
async def test_parallel_wrong_voids_respect_the_refusal_limit(backend: str, tmp_path: Path) -> None:
    """Of 50 voids of one sale at once, all for another amount, exactly 3 are AMOUNT_MISMATCH and the other 47
    VOID_LIMIT_EXCEEDED: the limit on refused attempts holds however the attempts interleave (item 4)."""
    clock = TickingClock(START)
    with ExitStack() as resources:
        url = (resources.enter_context(fresh_postgres_database()) if backend == "postgresql"
               else f"sqlite:///{tmp_path}/ledger.db")  # fmt: skip
        async with running_host(tmp_path, "iso87binary", clock=clock, ledger_url=url, rules=HOST_RULES) as host:
            state = ClientState()
            clients = [TerminalClient(host.dialect, TID, MID, state) for _ in range(PARALLEL_VOIDS)]
            try:
                for client in clients:
                    await client.connect(*host.address)
                sold = await clients[0].request(clients[0].build("sale", clock.base, amount=1_000, pan=TEST_PAN))
                assert sold.fields["39"] == "00"
                voids = [c.build("void", clock.base, amount=999, pan=TEST_PAN, rrn=sold.fields["37"]) for c in clients]
                answers = await asyncio.gather(*(c.request(v) for c, v in zip(clients, voids, strict=True)))
            finally:
                for client in clients:
                    await client.close()
        codes = Counter(answer.fields["39"] for answer in answers)
        limit = MODEL_RULES.max_refused_void_attempts
        mismatch_code = host.dialect.response_code("AMOUNT_MISMATCH")
        limit_code = host.dialect.response_code("VOID_LIMIT_EXCEEDED")
        assert codes == {mismatch_code: limit, limit_code: PARALLEL_VOIDS - limit}, codes
        assert not verify_ledger(url).violations
