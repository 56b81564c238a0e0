"""The model the ledger property test holds the host to: what each answer must be, and what it changes.

Pure: no sockets, no clock, no database. The test (``test_ledger_model.py``) sends a request, asks
``outcomes(model, request, now)`` which answers are allowed, checks the host's response code against them and
applies the matching effect. For a concurrent burst it asks ``explain`` for the serial orders of the burst
that give exactly the answers received.

The rules written down here are DESIGN.md's "The ledger" with the decisions taken since (numbered as in the
task that introduced this test):

 2. a sale of amount 0 is refused (INVALID_AMOUNT) and never approved;
 3. a repeated (TID, MID, batch, STAN) of a recorded request is DUPLICATE and changes nothing;
 4. void rules in DESIGN order; once ``max_refused_void_attempts`` refusals of one original are recorded, a
    further void of it is VOID_LIMIT_EXCEEDED (where the DESIGN order would refuse it for an earlier rule
    anyway, that earlier reason is accepted too);
 5. a void or reversal of a sale whose batch settled is BATCH_CLOSED; a refused void is recorded in the
    terminal's open batch (CUP: in the batch it names);
 6. a void racing its batch's settlement: one of them wins in the serial sense (``explain``);
 7. a request naming a settled batch (CUP 60.2; iso87 carries no batch in a request) writes nothing: a sale,
    and a void or refund that would be approved, is BATCH_OUT_OF_SYNC; a refused void or refund keeps its
    reason, unrecorded (so it does not count towards the refused-attempt limit), and is never DUPLICATE;
 8. a settlement repeated for the batch that just closed, with the same totals, is answered 00 again and
    changes nothing (CUP: so is the end of an upload repeated for a batch that closed); any other batch the
    host does not hold open is BATCH_OUT_OF_SYNC;
 9. reversals are idempotent: unknown original, repeat, declined original, already voided → 00 without
    effect; other amount → AMOUNT_MISMATCH; settled batch → BATCH_CLOSED; reversing a void restores its sale;
10. refunds up to what remains, from settled batches too, within 30 days.

Where DESIGN.md leaves the order of two refusals open (both change nothing), either reason is accepted.

Dialects: a request whose ``batch`` is None (iso87) goes into the host's open batch; otherwise (CUP) into the
batch it names, which is also the batch a duplicate is looked for in. With ``Model.domestic_bin`` set (CUP)
settlement totals come in two sections, domestic cards (PAN starting with that BIN) and foreign ones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

SALE, VOID, REFUND = "sale", "void", "refund"
APPROVED, DECLINED, VOIDED, REVERSED = "APPROVED", "DECLINED", "VOIDED", "REVERSED"
REFUNDED, PARTIALLY_REFUNDED = "REFUNDED", "PARTIALLY_REFUNDED"
DEBIT_STATUSES: Final = frozenset({APPROVED, VOIDED, REFUNDED, PARTIALLY_REFUNDED})  # gross: a voided sale stays
OPEN, UPLOADING, SETTLED = "open", "uploading", "settled"
MAX_BURST_REQUESTS: Final = 8  # explain() tries serial orders; 8! is the most it ever has to consider


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """The host's `[rules]` as the model needs them (the test passes the same values to the host)."""

    cutoff_hour: int = 23  # business day: from this UTC hour on, a moment belongs to the next day
    max_void_age: timedelta = timedelta(hours=24)
    max_refused_void_attempts: int = 3
    refund_max_age: timedelta = timedelta(days=30)

    def business_day(self, moment: datetime) -> object:
        return (moment + timedelta(hours=24 - self.cutoff_hour)).date()


@dataclass
class Row:
    """A ledger row the model expects: a sale, a void or a refund (reversals are counted on their target)."""

    kind: str
    stan: int
    batch: int
    amount: int
    pan: str
    at: datetime
    status: str
    rrn: str | None = None
    target: str | None = None  # the original's RRN, for a void or a refund that found it
    refunded: int = 0  # of a sale
    reversals: int = 0  # approved (effective) reversals naming this row
    certain_batch: bool = True  # False: a burst's serial orders disagree on the batch it was recorded in


@dataclass(frozen=True, slots=True)
class Sale:
    stan: int
    amount: int
    pan: str
    batch: int | None = None  # CUP names its batch (60.2); iso87 sales go to the host's open batch


@dataclass(frozen=True, slots=True)
class Void:
    stan: int
    rrn: str  # the original the request names (CUP names it by its batch and STAN, 61.1 + 61.2)
    amount: int
    pan: str
    batch: int | None = None  # CUP: the batch the void names as its own (60.2)


@dataclass(frozen=True, slots=True)
class Refund:
    stan: int
    rrn: str
    amount: int
    pan: str
    batch: int | None = None  # CUP: the batch the refund names as its own (60.2)
    date: str | None = None  # CUP: the original's date as the terminal names it (61.3, MMDD)


@dataclass(frozen=True, slots=True)
class Reversal:
    target_stan: int  # the reversal repeats its original's STAN (F11)
    amount: int
    batch: int | None = None  # CUP: the original's batch (60.2), which the host looks it up in with the STAN


# Debit count, debit amount, credit count, credit amount; with a domestic BIN (CUP) the domestic section's four,
# then the foreign section's four; () for the end of a CUP upload, which carries no totals.
Totals = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Settle:
    batch: int
    totals: Totals
    after_upload: bool = False


@dataclass(frozen=True, slots=True)
class Upload:
    batch: int
    stan: int  # the first record's
    amount: int  # of all its records
    records: int = 1  # CUP carries up to 8 records in one message


Request = Sale | Void | Refund | Reversal | Settle | Upload
Effect = Callable[["Model", "str | None"], None]  # (model, RRN of the response) → applies the answer


def _nothing(_model: Model, _rrn: str | None) -> None:
    return None


@dataclass
class Model:
    """What the ledger must hold, as far as the answers received tell."""

    rules: RuleSettings = field(default_factory=RuleSettings)
    rows: dict[int, Row] = field(default_factory=dict)  # by STAN: the test never reuses one outside duplicates
    zero_sales: dict[int, int] = field(default_factory=dict)  # STAN → batch of sales refused for amount 0
    refused_voids: dict[str, int] = field(default_factory=dict)  # original RRN → refused void attempts
    open_batch: int = 1
    batches: dict[int, str] = field(default_factory=dict)  # batch → UPLOADING | SETTLED (absent: open)
    last_settled: tuple[int, Totals] | None = None  # the balanced settlement a lost reply would repeat
    settled_with: dict[int, Totals] = field(default_factory=dict)  # batch → the terminal totals that closed it
    domestic_bin: str | None = None  # CUP: totals in a domestic and a foreign section

    # -- queries -------------------------------------------------------------------------------------------

    def by_rrn(self, rrn: str) -> Row | None:
        return next((row for row in self.rows.values() if row.rrn == rrn), None)

    def settled(self, batch: int) -> bool:
        return self.batches.get(batch) == SETTLED

    def batch_of(self, request: Sale | Void | Refund) -> int:
        """The batch a request goes into: the one it names (CUP), else the host's open one."""
        return self.open_batch if request.batch is None else request.batch

    def names_settled_batch(self, request: Sale | Void | Refund) -> bool:
        return request.batch is not None and self.settled(request.batch)

    def recorded_in(self, stan: int, batch: int) -> bool:
        row = self.rows.get(stan)
        return row is not None and row.batch == batch

    def domestic(self, pan: str) -> bool:
        return self.domestic_bin is not None and pan.startswith(self.domestic_bin)

    def totals(self, batch: int) -> Totals:
        """Gross totals of a batch (DESIGN.md): debits = approved sales, voided ones too; credits = approved
        voids and refunds; reversed rows count nowhere. With a domestic BIN: the domestic section, then the
        foreign one."""
        if self.domestic_bin is None:
            return self._section(batch, lambda _pan: True)
        return self._section(batch, self.domestic) + self._section(batch, lambda pan: not self.domestic(pan))

    def _section(self, batch: int, cards: Callable[[str], bool]) -> Totals:
        rows = [r for r in self.rows.values() if r.batch == batch and cards(r.pan)]
        debits = [r.amount for r in rows if r.kind == SALE and r.status in DEBIT_STATUSES]
        credits = [r.amount for r in rows if r.kind in (VOID, REFUND) and r.status == APPROVED]
        return len(debits), sum(debits), len(credits), sum(credits)

    def plus(self, totals: Totals, pan: str, extra: Totals) -> Totals:
        """``totals`` with ``extra`` (four numbers) added to the section of the card ``pan``."""
        at = 4 if self.domestic_bin is not None and not self.domestic(pan) else 0
        return tuple(value + (extra[i - at] if at <= i < at + 4 else 0) for i, value in enumerate(totals))

    def debits(self, batch: int) -> list[Row]:
        return [r for r in self.rows.values() if r.batch == batch and r.kind == SALE and r.status in DEBIT_STATUSES]

    def summary(self, *, with_refused_batches: bool = True) -> tuple[object, ...]:
        """Everything an answer can depend on, to compare the outcomes of different serial orders."""
        rows = tuple(
            (r.kind, stan, r.batch if with_refused_batches or r.status != DECLINED else None, r.status, r.rrn,
             r.refunded, r.reversals)
            for stan, r in sorted(self.rows.items())
        )  # fmt: skip
        return (rows, tuple(sorted(self.zero_sales.items())), tuple(sorted(self.refused_voids.items())),
                self.open_batch, tuple(sorted(self.batches.items())), self.last_settled,
                tuple(sorted(self.settled_with.items())))  # fmt: skip

    # -- effects -------------------------------------------------------------------------------------------

    def record(self, kind: str, request: Sale | Void | Refund, now: datetime, status: str, rrn: str | None,
               target: str | None = None) -> Row:  # fmt: skip
        assert request.stan not in self.rows, f"the test reused STAN {request.stan}"
        row = Row(kind, request.stan, self.batch_of(request), request.amount, request.pan, now, status, rrn, target)
        self.rows[request.stan] = row
        return row

    def close(self, batch: int, totals: Totals, last: tuple[int, Totals] | None) -> None:
        assert batch == self.open_batch
        self.batches[batch] = SETTLED
        self.settled_with[batch] = totals
        self.open_batch = batch + 1
        self.last_settled = last


Outcome = tuple[str, Effect]  # (reason, effect)


def outcomes(model: Model, request: Request, now: datetime) -> list[Outcome]:
    """Every answer the host may give ``request`` in ``model``'s state, each with what it changes."""
    if isinstance(request, Sale):
        return _sale(model, request, now)
    if isinstance(request, Void):
        return _void(model, request, now)
    if isinstance(request, Refund):
        return _refund(model, request, now)
    if isinstance(request, Reversal):
        return _reversal(model, request)
    if isinstance(request, Settle):
        return _settle(model, request)
    return _upload(model, request)


def _duplicate(model: Model, request: Sale | Void | Refund) -> list[Outcome] | None:
    """DESIGN.md "Duplicates": a recorded (TID, MID, batch, STAN) again is refused and changes nothing."""
    if model.recorded_in(request.stan, model.batch_of(request)):
        return [("DUPLICATE", _nothing)]
    return None


def _in_a_settled_batch(answers: list[Outcome]) -> list[Outcome]:
    """7: a void or refund naming a settled batch writes nothing; what would be approved is BATCH_OUT_OF_SYNC."""
    return [("BATCH_OUT_OF_SYNC" if reason == "APPROVED" else reason, _nothing) for reason, _ in answers]


def _sale(model: Model, request: Sale, now: datetime) -> list[Outcome]:
    if model.names_settled_batch(request):
        return [("BATCH_OUT_OF_SYNC", _nothing)]  # 7
    duplicate = _duplicate(model, request)
    if duplicate is not None:
        return duplicate
    batch = model.batch_of(request)
    if model.zero_sales.get(request.stan) == batch:
        # The refused sale of 0 may have been recorded (as declined) or not: a duplicate, or refused again.
        return [("DUPLICATE", _nothing), ("INVALID_AMOUNT", _nothing)]
    if request.amount == 0:

        def refused(m: Model, _rrn: str | None) -> None:
            m.zero_sales[request.stan] = batch

        return [("INVALID_AMOUNT", refused)]  # 2

    def approved(m: Model, rrn: str | None) -> None:
        assert rrn, "an approved sale carries its RRN (F37)"
        m.record(SALE, request, now, APPROVED, rrn)

    return [("APPROVED", approved)]


def _void_reason(model: Model, request: Void, original: Row, now: datetime) -> str:
    """The first failing rule of DESIGN.md "Void eligibility", limits left out; APPROVED if none fails."""
    if original.kind != SALE or original.status == DECLINED:
        return "NOT_VOIDABLE"
    if original.status != APPROVED:
        return "ALREADY_CANCELLED"
    if model.settled(original.batch):
        return "BATCH_CLOSED"
    rules = model.rules
    same_day = rules.business_day(original.at) == rules.business_day(now)
    if not same_day or now - original.at > rules.max_void_age:
        return "VOID_WINDOW_EXPIRED"
    if request.amount != original.amount:
        return "AMOUNT_MISMATCH"
    if request.pan != original.pan:
        return "CARD_MISMATCH"
    return "APPROVED"


def _void(model: Model, request: Void, now: datetime) -> list[Outcome]:
    if model.names_settled_batch(request):
        return _in_a_settled_batch(_void_answers(model, request, now))
    duplicate = _duplicate(model, request)
    if duplicate is not None:
        return duplicate
    return _void_answers(model, request, now)


def _void_answers(model: Model, request: Void, now: datetime) -> list[Outcome]:
    original = model.by_rrn(request.rrn)

    def refused(m: Model, rrn: str | None) -> None:
        m.record(VOID, request, now, DECLINED, rrn, original.rrn if original else None)
        if original is not None:
            m.refused_voids[request.rrn] = m.refused_voids.get(request.rrn, 0) + 1

    if original is None:
        return [("ORIGINAL_NOT_FOUND", refused)]
    reason = _void_reason(model, request, original, now)
    if model.refused_voids.get(request.rrn, 0) >= model.rules.max_refused_void_attempts:  # 4
        if reason in ("NOT_VOIDABLE", "ALREADY_CANCELLED", "BATCH_CLOSED", "VOID_WINDOW_EXPIRED"):
            return [(reason, refused), ("VOID_LIMIT_EXCEEDED", refused)]
        return [("VOID_LIMIT_EXCEEDED", refused)]
    if reason != "APPROVED":
        return [(reason, refused)]

    def approved(m: Model, rrn: str | None) -> None:
        assert rrn, "an approved void carries its RRN (F37)"
        m.record(VOID, request, now, APPROVED, rrn, original.rrn)
        m.rows[original.stan].status = VOIDED

    return [("APPROVED", approved)]


def _refund_reasons(model: Model, request: Refund, original: Row, now: datetime) -> list[str]:
    if original.kind != SALE or original.status == DECLINED:
        return ["NOT_VOIDABLE"]
    if original.status not in (APPROVED, PARTIALLY_REFUNDED):
        return ["ALREADY_CANCELLED"]
    age, limit = now - original.at, model.rules.refund_max_age
    if abs(age - limit) < timedelta(seconds=1):
        # The host's clock ticks a little with every read: exactly at the limit either answer is right.
        rest = _refund_reasons(model, request, original, original.at)
        return sorted({"VOID_WINDOW_EXPIRED", *rest})
    if age > limit:
        return ["VOID_WINDOW_EXPIRED"]
    if not 0 < request.amount <= original.amount - original.refunded:
        return ["AMOUNT_MISMATCH"]
    if request.pan != original.pan:
        return ["CARD_MISMATCH"]
    return ["APPROVED"]


def _refund(model: Model, request: Refund, now: datetime) -> list[Outcome]:
    if model.names_settled_batch(request):
        return _in_a_settled_batch(_refund_answers(model, request, now))
    duplicate = _duplicate(model, request)
    if duplicate is not None:
        return duplicate
    return _refund_answers(model, request, now)


def _refund_answers(model: Model, request: Refund, now: datetime) -> list[Outcome]:
    original = model.by_rrn(request.rrn)
    if original is not None and request.date is not None and request.date != original.at.strftime("%m%d"):
        original = None  # CUP: the terminal named another day's transaction (the model's times are UTC)

    def refused(m: Model, rrn: str | None) -> None:
        m.record(REFUND, request, now, DECLINED, rrn, original.rrn if original else None)

    if original is None:
        return [("ORIGINAL_NOT_FOUND", refused)]

    def approved(m: Model, rrn: str | None) -> None:
        assert rrn, "an approved refund carries its RRN (F37)"
        m.record(REFUND, request, now, APPROVED, rrn, original.rrn)
        sale = m.rows[original.stan]
        sale.refunded += request.amount
        sale.status = REFUNDED if sale.refunded == sale.amount else PARTIALLY_REFUNDED

    return [(reason, approved if reason == "APPROVED" else refused)
            for reason in _refund_reasons(model, request, original, now)]  # fmt: skip


def _reversal(model: Model, request: Reversal) -> list[Outcome]:
    """DESIGN.md "Reversal": idempotent; only an approved sale or void of an unsettled batch is undone."""
    target = model.rows.get(request.target_stan)
    if target is not None and request.batch is not None and target.batch != request.batch:
        target = None  # CUP: the original is looked up by its batch and STAN
    if target is None or target.status in (DECLINED, REVERSED):
        return [("APPROVED", _nothing)]  # unknown, declined, or a repeat: 00 and no (second) effect
    assert target.kind in (SALE, VOID), "the test reverses sales and voids only"
    refusals = []
    if request.amount != target.amount:
        refusals.append("AMOUNT_MISMATCH")
    if model.settled(target.batch):
        refusals.append("BATCH_CLOSED")
    if target.status == VOIDED:
        # The sale's void took effect: the reversal of the sale is a no-op (or its batch is closed).
        return [(reason, _nothing) for reason in ("APPROVED", *refusals)]
    if target.status in (REFUNDED, PARTIALLY_REFUNDED):
        return [(reason, _nothing) for reason in (*refusals, "NOT_VOIDABLE", "ALREADY_CANCELLED")]
    if refusals:
        return [(reason, _nothing) for reason in refusals]
    assert target.status == APPROVED

    def undone(m: Model, _rrn: str | None) -> None:
        row = m.rows[target.stan]
        row.status, row.reversals = REVERSED, row.reversals + 1
        if row.kind == VOID:
            assert row.target is not None
            sale = m.by_rrn(row.target)
            assert sale is not None
            assert sale.status == VOIDED
            sale.status = APPROVED  # reversing a void restores its sale

    return [("APPROVED", undone)]


def _settle(model: Model, request: Settle) -> list[Outcome]:
    batch = request.batch
    if batch == model.open_batch and not model.settled(batch):
        if request.after_upload:

            def closed(m: Model, _rrn: str | None) -> None:
                m.close(batch, request.totals, None)

            return [("APPROVED", closed)]
        if request.totals == model.totals(batch):

            def balanced(m: Model, _rrn: str | None) -> None:
                m.close(batch, request.totals, (batch, request.totals))

            return [("APPROVED", balanced)]

        def uploading(m: Model, _rrn: str | None) -> None:
            m.batches[batch] = UPLOADING

        return [("OUT_OF_BALANCE", uploading)]
    if not request.after_upload and model.last_settled == (batch, request.totals):
        return [("APPROVED", _nothing)]  # 8: the reply was lost; the same answer again
    if request.after_upload and request.totals == () and model.settled(batch):
        return [("APPROVED", _nothing)]  # 8, CUP: the end of an upload again (its reply was lost); it closed then
    if not request.after_upload and model.settled_with.get(batch) == request.totals:
        # 8 asks 77 for any batch but the one that just closed; answering an older batch's repeat (same totals)
        # as the first time changes nothing either, and is how the host implements it: both are accepted.
        return [("BATCH_OUT_OF_SYNC", _nothing), ("APPROVED", _nothing)]
    return [("BATCH_OUT_OF_SYNC", _nothing)]


def _upload(model: Model, request: Upload) -> list[Outcome]:
    if request.batch == model.open_batch and model.batches.get(request.batch) == UPLOADING:
        return [("APPROVED", _nothing)]
    return [("BATCH_OUT_OF_SYNC", _nothing)]


@dataclass(frozen=True, slots=True)
class Answer:
    code: str  # F39
    rrn: str | None  # F37, when the response carries one
    totals: str | None = None  # CUP settlement: F48 of the reply (the host's totals and its result digits)


def answered_as_recorded(request: Request, before: Model, after: Model, answer: Answer) -> bool:
    """A void's or refund's reply carries an RRN (F37) exactly when the host recorded it, approved or refused.

    This tells apart the orders of a burst that differ only in whether a refusal was recorded: a void refused
    before its batch settled is recorded; refused after, when it names the settled batch (CUP), it is not.
    """
    if not isinstance(request, Void | Refund):
        return True
    return (len(after.rows) > len(before.rows)) == (answer.rrn is not None)


def explain(model: Model, requests: list[Request], answers: list[Answer], now: datetime,
            code_of: Callable[[str], str]) -> list[Model]:  # fmt: skip
    """The models after every serial order of ``requests`` that gives exactly ``answers``, one per outcome.

    A concurrent burst is correct when SOME serial order of its requests explains all its answers. The
    result holds one model per distinct ledger state those orders lead to ([] when none explains them).
    """
    assert len(requests) == len(answers)
    assert len(requests) <= MAX_BURST_REQUESTS
    finals: dict[tuple[object, ...], Model] = {}
    seen: set[tuple[object, ...]] = set()

    def walk(state: Model, remaining: tuple[int, ...]) -> None:
        if not remaining:
            finals.setdefault(state.summary(), state)
            return
        key = (state.summary(), remaining)
        if key in seen:
            return
        seen.add(key)
        for index in remaining:
            rest = tuple(i for i in remaining if i != index)
            applied: set[int] = set()
            for reason, effect in outcomes(state, requests[index], now):
                if code_of(reason) != answers[index].code or id(effect) in applied:
                    continue
                applied.add(id(effect))
                following = copy.deepcopy(state)
                effect(following, answers[index].rrn)
                if answered_as_recorded(requests[index], state, following, answers[index]):
                    walk(following, rest)

    walk(model, tuple(range(len(requests))))
    return list(finals.values())


def settle_on(finals: list[Model]) -> Model | None:
    """The one state a burst left, when its explanations differ at most in where refused rows were filed."""
    if not finals:
        return None
    loose = {final.summary(with_refused_batches=False) for final in finals}
    assert len(loose) == 1, f"the test sent a burst whose answers leave the ledger ambiguous: {len(loose)} states"
    chosen = finals[0]
    for stan, row in chosen.rows.items():
        if len({final.rows[stan].batch for final in finals}) > 1:
            row.certain_batch = False
    return chosen
