"""The pipeline: frame → decode → admission → ledger view → flow → ledger commit → reply.

No sockets here and no logging: ``Host.handle`` takes one frame body and returns an ``Outcome`` that
says what to write back, whether to close, and what the edge should log. The awaits are the ledger's:
reading what a void or reversal refers to, and committing, which must finish before a reply is released.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import Final, Protocol

from iso_host.core.admission import Admission, Rejected, ResponseMac
from iso_host.core.flows import KINDS, NO_VIEW, Context, Decision, Request
from iso_host.core.flows.sale import forced_decline
from iso_host.core.guards import ReplayGuard, SecuritySettings, SignonLimiter, replay_key
from iso_host.core.issuer_scripts import with_issuer_scripts
from iso_host.core.message_auth import MAC_PLACEHOLDER, mac_field_of, seal
from iso_host.core.originals import find_named
from iso_host.core.outcome import Exchange, Observer, Outcome
from iso_host.core.rules import RuleSettings, business_day_start
from iso_host.core.scenarios import Scenario, ScenarioBook
from iso_host.core.terminals import TerminalState, WorkingKeys
from iso_host.core.test_cards import CardBook
from iso_host.errors import BatchSettledError, ConflictError, DuplicateError, StoreError
from iso_host.events.record import EventSink, decision_event
from iso_host.ledger.model import AdvanceBatch, BatchTotals, LedgerCommand, LedgerView, RecordEvent
from iso_host.ledger.store import DEFAULT_LEDGER_DEADLINE_S, Store
from iso_host.security import SecurityError
from iso_host.vocab import Kind, Reason
from iso_host.wire import Dialect, Envelope, Message, WireDecodeError, decode, encode, reply_mti

# A request that lost a race decides again with a fresh view; each round commits at least one of the racers,
# so this bounds how many requests may race for one original or batch (the deadline bounds the time).
MAX_DECISION_ATTEMPTS: Final = 64
EVENTLESS_KINDS: Final = frozenset({Kind.ECHO.value})  # keep-alives would drown the event stream
# Financial kinds a terminal may send again byte for byte, and whose repeat changes nothing: no replay window.
IDEMPOTENT_KINDS: Final = frozenset({Kind.REVERSAL})


class Serialiser(Protocol):
    """Holds one key at a time (``keyed_locks.KeyedLocks``); the edge provides it, the pipeline only uses it."""

    def hold(self, key: Hashable) -> AbstractAsyncContextManager[None]: ...


class _NoSerialiser:
    def hold(self, _key: Hashable) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


class Host:
    """Handles frames for one dialect against one ledger."""

    def __init__(
        self,
        dialect: Dialect,
        store: Store,
        terminals: dict[str, TerminalState],
        clock: Callable[[], datetime],
        *,
        monotonic: Callable[[], float],
        cards: CardBook | None = None,
        key_source: Callable[[], WorkingKeys] | None = None,
        rules: RuleSettings | None = None,
        scenarios: ScenarioBook | None = None,
        events: EventSink | None = None,
        ledger_deadline_s: float = DEFAULT_LEDGER_DEADLINE_S,
        serialiser: Serialiser | None = None,
        security: SecuritySettings | None = None,
    ) -> None:
        self.dialect = dialect
        self.store = store
        self.terminals = terminals
        self.clock = clock
        self.monotonic = monotonic  # seconds, for deadlines and latency; the edge passes time.monotonic
        self.key_source = key_source
        self.rules = rules or RuleSettings()
        self.cards = cards if cards is not None else CardBook((), str)  # an empty book is still the one to share
        self.scenarios = scenarios or ScenarioBook()
        self.events = events  # None: events are off, and nothing is written to the outbox
        self.ledger_deadline_s = ledger_deadline_s  # every ledger wait of one request ends by then: 96, never late
        self.serialiser: Serialiser = serialiser if serialiser is not None else _NoSerialiser()
        self.admission = Admission(dialect, terminals, self.cards, pin_tries=self.rules.pin_tries)
        self.security = security or SecuritySettings()
        self.observer: Observer | None = None  # the console's monitor, when it runs
        self.replays = ReplayGuard(self.security.replay_window_s, self.security.replay_max_entries)
        self.signons = SignonLimiter(self.security.signons_per_minute)

    async def handle(self, frame: bytes, *, peer_subject: str | None = None) -> Outcome:
        """Answer one frame body (TPDU and header included, length header excluded); ``peer_subject``: the client
        certificate's subject on a mutual TLS connection."""
        started = self.monotonic()
        deadline = started + self.ledger_deadline_s
        try:
            envelope, message = decode(frame, self.dialect)
        except WireDecodeError as error:
            if self.events is not None:  # counted, never an event of its own: anyone can send bytes
                self._counted_instead(error.partial, Reason.FORMAT_ERROR, attributed=False)
            return self._format_error(error, frame)
        outcome = Outcome(None, mti=message.mti, log=self._log_fields(message), started=started, frame=frame)
        response_mac: ResponseMac | None = None
        classified = False
        replay: bytes | None = None
        try:
            terminal = self.admission.terminal(message, peer_subject)
            response_mac = self.admission.verify_mac(message, frame[self.dialect.envelope_bytes :], terminal)
            classified = True
            rule, kind = self.admission.classify(message)
            outcome.kind = rule.kind
            response_mac = self.admission.authenticate(message, rule, terminal, response_mac)
            request = self.admission.request(message, rule, kind, terminal, self.store.pan_hash_key)
            outcome.batch = request.batch_number
            replay = self._guard(frame, kind, terminal, response_mac is not None, outcome)
        except (Rejected, SecurityError) as error:
            rejection = error if isinstance(error, Rejected) else _security_failure(error, outcome.kind)
            outcome.log["detail"] = rejection.detail
            refused = Decision(rejection.reason)
            if self.events is not None:
                # Refused before classification: the event still says what the message was, where it can.
                kind_name = (outcome.kind or rejection.kind_name) if classified else self._kind_name(message)
                attributed = kind_name is not None  # unclassified: counted, as an unknown terminal is
                if self._wants_event(kind_name) and not self._counted_instead(message, refused.reason,
                                                                                attributed=attributed):  # fmt: skip
                    event = self._event(message, kind_name, refused, now=self.clock(), started=started)
                    await self._record_alone(event, outcome, deadline)
            return self._respond(outcome, envelope, message, refused, response_mac)
        scenario = self.scenarios.fire(
            tid=terminal.tid, mti=message.mti, kind=request.name, amount_minor=request.amount_minor,
            pan_hash=request.card.pan_hash if request.card else None, chip=request.chip is not None,
        )  # fmt: skip
        if scenario is not None:
            outcome.log["scenario"] = scenario.name or "unnamed"
        key = (terminal.tid, terminal.mid) if KINDS[kind].stateful else None
        async with self.serialiser.hold(key) if key else contextlib.nullcontext():
            decision, now, event_committed = await self._decide_and_commit(
                message, request, terminal, outcome, scenario=scenario, started=started, deadline=deadline
            )
        if replay is not None and decision.reason is Reason.SYSTEM_ERROR:
            self.replays.forget(replay)  # nothing was recorded: the terminal may send it again
        if (not event_committed and self._wants_event(request.name)
                and not self._counted_instead(message, decision.reason, attributed=True)):  # fmt: skip
            # The decision's own commit failed (a duplicate, a database error): its answer is still an event.
            event = self._event(message, request.name, decision, now=now, started=started, request=request,
                                scenario=scenario)  # fmt: skip
            await self._record_alone(event, outcome, deadline)
        self.cards.apply(decision.balance_changes)
        self.cards.apply_holds(decision.holds, now)
        self.cards.note_counters(decision.chip_counters)
        _committed_session(terminal, decision)
        if "37" in decision.fields:
            outcome.log["rrn"] = decision.fields["37"]
        outcome = self._respond(outcome, envelope, message, decision, response_mac)
        return _acted_out(outcome, scenario, response_mac is not None) if scenario else outcome

    def _guard(self, frame: bytes, kind: Kind, terminal: TerminalState, maced: bool, outcome: Outcome) -> bytes | None:
        """Sign-on floods and replays, for a request admission let through (``maced``: its MAC verified). Returns
        the replay key it took, to give back should the ledger fail.

        Raises:
            Rejected: SIGNON_LIMITED; DUPLICATE for the same MAC'd financial request within the replay window.
        """
        now = self.monotonic()
        spec = KINDS[kind]
        if spec.issues_keys:
            allowed, first = self.signons.admit(terminal.tid, now)
            if not allowed:
                limit = self.signons.per_minute
                if first:  # one line per flood, not one per refused sign-on
                    outcome.log["alert"] = f"sign-on limit of {limit} a minute reached; refusing until it passes"
                raise Rejected(Reason.SIGNON_LIMITED, f"more than {limit} sign-ons in 60 s ([security])")
            return None
        if not (maced and spec.financial) or kind in IDEMPOTENT_KINDS:
            return None
        key = replay_key(terminal.tid, frame[self.dialect.envelope_bytes :])
        if not self.replays.admit(key, now):
            raise Rejected(Reason.DUPLICATE, "the same MAC'd request within [security] replay_window_s")
        return key

    async def _decide_and_commit(
        self, message: Message, request: Request, terminal: TerminalState, outcome: Outcome, *,
        scenario: Scenario | None, started: float, deadline: float,
    ) -> tuple[Decision, datetime, bool]:  # fmt: skip
        """Load the view, let the flow (or a scenario) decide, commit; decide again if the view changed meanwhile.

        The decision's event, when events are on, commits in the same transaction as its ledger change.
        Returns the decision, the time it was made at and whether its event was committed. Every ledger wait
        ends by ``deadline``.
        """
        wants_event = self._wants_event(request.name)
        now = self.clock()  # the decision's time: its rules, its rows and its event all read this one
        # The batch's state is read when the request names another batch than the one the host holds open,
        # and after the ledger refused a write into a batch that has settled.
        batch_state = request.batch_number != request.open_batch
        try:
            context = await self._context(request, terminal, now, deadline)
            adoption = await self._adoption(request, deadline)
        except StoreError as error:
            outcome.log["detail"] = str(error)
            return Decision(Reason.SYSTEM_ERROR), now, False
        if adoption is not None:
            outcome.log["batch_adopted"] = adoption.batch_number
            request, batch_state = replace(request, open_batch=adoption.batch_number), False
        for attempt in range(1, MAX_DECISION_ATTEMPTS + 1):
            try:
                decision = await self._decide(request, terminal, context, scenario, deadline, batch_state=batch_state)
                event = self._event(message, request.name, decision, now=now, started=started,
                                    request=request, scenario=scenario) if wants_event else None  # fmt: skip
                commands = _commands(decision, adoption, event)
                if commands:
                    committing = self.monotonic()
                    await self.store.apply(commands, deadline=deadline)
                    if self.observer is not None:
                        self.observer.committed(self.monotonic() - committing)
            except DuplicateError:
                outcome.log["detail"] = "terminal, batch and STAN already in the ledger"
                return Decision(Reason.DUPLICATE), now, False
            except BatchSettledError as error:
                outcome.log["detail"] = f"attempt {attempt}: {error}"
                batch_state = True
                try:
                    request = await self._rebatched(request, terminal)
                except StoreError as reread_error:
                    outcome.log["detail"] = str(reread_error)
                    return Decision(Reason.SYSTEM_ERROR), now, False
                continue
            except ConflictError as error:
                outcome.log["detail"] = f"attempt {attempt}: {error}"
                continue
            except StoreError as error:
                outcome.log["detail"] = str(error)
                return Decision(Reason.SYSTEM_ERROR), now, False
            if adoption is not None and decision.commands:
                terminal.batch_number = adoption.batch_number
            if wants_event:
                self._notify()
            return decision, now, wants_event
        return Decision(Reason.SYSTEM_ERROR), now, False

    async def _decide(
        self, request: Request, terminal: TerminalState, context: Context, scenario: Scenario | None,
        deadline: float, *, batch_state: bool,
    ) -> Decision:  # fmt: skip
        """The flow's decision on the view its KINDS row asks for, or a scenario's forced decline; with the
        scenario's issuer scripts in the reply's field 55 (it fires with scripts only on a request carrying one)."""
        if scenario is not None and scenario.respond is not None:
            decision = forced_decline(request, context, scenario.respond)
        else:
            view = await self._view(request, terminal, context.now, deadline, batch_state=batch_state)
            decision = KINDS[request.kind].flow(request, view, context)
        return with_issuer_scripts(decision, scenario.issuer_scripts) if scenario is not None else decision

    async def _adoption(self, request: Request, deadline: float) -> AdvanceBatch | None:
        """The batch the terminal names becomes the one the host holds open, when the host's holds nothing yet.

        A static-key terminal that never signs on, or one restored from a backup, keeps its own batch number
        (say 000024) while the host holds batch 1 for it. At the terminal's first financial request of a fresh
        batch the host takes the terminal's number, as an acquirer does; a named batch that has settled is not
        taken (that request gets BATCH_OUT_OF_SYNC), nor is one while the host's batch holds approvals.
        """
        named, held = request.batch_number, request.open_batch
        if not (KINDS[request.kind].financial and request.batch_named and named != held):
            return None
        tid, mid = request.tid, request.mid
        open_batch = await self.store.batch_view(tid, mid, held, with_totals=True, deadline=deadline)
        if open_batch.status != "open" or open_batch.host_totals != BatchTotals():
            return None
        target = await self.store.batch_view(tid, mid, named, with_totals=False, deadline=deadline)
        return AdvanceBatch(tid, mid, named) if target.status == "open" else None

    async def _rebatched(self, request: Request, terminal: TerminalState) -> Request:
        """After a write into a settled batch was refused: where the host, not the terminal, named the batch (the
        dialect has no batch field, or the request left it out), the request moves to the batch the ledger now
        holds open."""
        if request.batch_named:
            return request  # the terminal named that batch: it is told it is out of step
        record = await self.store.register_terminal(terminal.tid, terminal.mid)
        terminal.batch_number = max(terminal.batch_number, record.batch_number)
        return replace(request, batch_number=terminal.batch_number, open_batch=terminal.batch_number)

    def _wants_event(self, kind_name: str | None) -> bool:
        return self.events is not None and kind_name not in EVENTLESS_KINDS

    def _notify(self) -> None:
        if self.events is not None:
            self.events.notify()

    def _event(
        self, message: Message, kind_name: str | None, decision: Decision, *, now: datetime, started: float,
        request: Request | None = None, scenario: Scenario | None = None,
    ) -> RecordEvent:  # fmt: skip
        """The event of this answer, at the time of its decision; its latency runs from the frame's arrival."""
        return decision_event(
            now=now, kind=kind_name, mti=message.mti, fields=message.fields, reason=decision.reason,
            response_code=decision.code(self.dialect),
            latency_s=self.monotonic() - started,
            card=request.card if request else None, amount_minor=request.amount_minor if request else None,
            batch_number=request.batch_number if request else None, rrn=decision.fields.get("37"),
            scenario=(scenario.name or "unnamed") if scenario else None,
        )  # fmt: skip

    def _counted_instead(self, message: Message | None, reason: Reason, *, attributed: bool) -> bool:
        """Whether this answer, which writes no ledger row, is only counted for the next aggregate event instead of
        getting an event of its own (``events/refusals.py``: the outbox's bound against unauthenticated traffic)."""
        assert self.events is not None
        fields = message.fields if message is not None else {}
        return self.events.refusals.counted_instead(
            reason, fields.get("41"), message.mti if message is not None else None, attributed=attributed,
            now=self.clock(), monotonic=self.monotonic(),
        )  # fmt: skip

    async def _record_alone(self, event: RecordEvent, outcome: Outcome, deadline: float) -> None:
        """Commit an event that has no ledger change to ride with (a refused request, a failed commit)."""
        try:
            await self.store.apply((event,), deadline=deadline)
        except StoreError as error:
            outcome.log["event_error"] = str(error)
            return
        self._notify()

    def _kind_name(self, message: Message) -> str | None:
        """What the dialect calls this message, for the event of a request refused before classification."""
        rule = self.dialect.classify(message)
        return rule.kind if rule is not None else None

    async def _view(
        self, request: Request, terminal: TerminalState, now: datetime, deadline: float, *, batch_state: bool
    ) -> LedgerView:
        """What the kind's row in KINDS says its flow decides from."""
        spec = KINDS[request.kind]
        if spec.batch is not None:
            batch = await self.store.batch_view(
                terminal.tid, terminal.mid, request.batch_number, with_totals=spec.batch.totals,
                with_items=spec.batch.items or request.after_upload, deadline=deadline,
            )  # fmt: skip
            return LedgerView(batch=batch)
        settled = False
        if batch_state and spec.financial:
            state = await self.store.batch_view(
                terminal.tid, terminal.mid, request.batch_number, with_totals=False, deadline=deadline
            )
            settled = state.status == "settled"
        if not spec.original:
            return LedgerView(request_batch_settled=True) if settled else NO_VIEW
        original, lineage = await find_named(self.store, request, now, self.rules, deadline=deadline)
        voids_today = 0
        if spec.counts_voids and self.rules.max_voids_per_day is not None:
            since = business_day_start(now, self.rules)
            voids_today = await self.store.count_voids(terminal.tid, terminal.mid, since, deadline=deadline)
        return LedgerView(original, voids_today, request_batch_settled=settled, lineage=lineage)

    async def _context(self, request: Request, terminal: TerminalState, now: datetime, deadline: float) -> Context:
        spec = KINDS[request.kind]
        return Context(
            now=now,
            rrn=await self.store.next_rrn(deadline=deadline) if spec.financial else None,
            dialect=self.dialect,
            rules=self.rules,
            tmk=terminal.tmk if spec.issues_keys else None,
            fresh_keys=self.key_source() if spec.issues_keys and self.key_source is not None else None,
        )

    def _respond(
        self, outcome: Outcome, envelope: Envelope, request: Message, decision: Decision, mac: ResponseMac | None
    ) -> Outcome:
        code = decision.code(self.dialect)
        response = self.response_for(request, code, decision.fields)
        maced = mac is not None and decision.reason is not Reason.MAC_FAILED
        if maced:
            response.fields[mac_field_of(response)] = MAC_PLACEHOLDER
        body = encode(response, Envelope(), self.dialect)
        if maced:
            assert mac is not None
            body = seal(body, response, self.dialect, mac.algorithm, mac.key)
        outcome.reply = bytes(envelope.reply()) + body
        outcome.reason = decision.reason
        outcome.response_code = code
        if decision.detail is not None:
            outcome.log.setdefault("detail", decision.detail)
        if self.observer is not None:
            mac_state = "failed" if decision.reason is Reason.MAC_FAILED else "absent" if mac is None else "verified"
            log = outcome.log
            self.observer.exchange(
                Exchange(self.dialect, outcome.frame, outcome.reply, mti=request.mti, reason=decision.reason,
                         response_code=code, kind=outcome.kind, mac=mac_state, detail=_text(log.get("detail")),
                         scenario=_text(log.get("scenario")), batch=outcome.batch, tid=_text(log.get("tid")),
                         stan=_text(log.get("stan")), partial=request if outcome.error is not None else None),
                self.monotonic() - outcome.started if outcome.started else 0.0,
            )  # fmt: skip
        return outcome

    def response_for(self, request: Message, response_code: str, fields: dict[str, str]) -> Message:
        """The response MTI, the echoed fields, the flow's fields and F39."""
        echoed = {k: request.fields[k] for k in self.dialect.echo_fields if k in request.fields}
        return Message(reply_mti(request.mti), {**echoed, **fields, "39": response_code}, request.pads)

    def _format_error(self, error: WireDecodeError, frame: bytes) -> Outcome:
        if self.observer is not None:
            self.observer.rejected(error)
        partial = error.partial
        if partial is None:
            return Outcome(None, close=True, error=error)
        outcome = Outcome(None, mti=partial.mti, error=error, log=self._log_fields(partial), frame=frame)
        try:
            return self._respond(outcome, error.envelope, partial, Decision(Reason.FORMAT_ERROR), None)
        except ValueError:
            # The fields that did decode cannot be echoed back; a clean close is the only answer left.
            return Outcome(None, close=True, mti=partial.mti, error=error)

    @staticmethod
    def _log_fields(message: Message) -> dict[str, object]:
        pairs = (("tid", "41"), ("stan", "11"))
        return {key: message.fields[field_id] for key, field_id in pairs if field_id in message}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _commands(
    decision: Decision, adoption: AdvanceBatch | None, event: RecordEvent | None
) -> tuple[LedgerCommand, ...]:
    """What one commit writes: the decision's commands, after the batch adoption (which rides with the terminal's
    first row in the batch, never alone) and before the answer's event."""
    commands = decision.commands
    if adoption is not None and commands:
        commands = (adoption, *commands)
    return (*commands, event) if event is not None else commands


def _security_failure(error: SecurityError, kind_name: str | None) -> Rejected:
    """A key the MAC or PIN code could not use (a TAK of a length its algorithm does not take): the host's fault, not
    the terminal's. SYSTEM_ERROR, and one log line (the outcome's, which names the terminal); the security package's
    errors name the key and its length, never its bytes."""
    return Rejected(Reason.SYSTEM_ERROR, f"security error: {error}", kind_name)


def _committed_session(terminal: TerminalState, decision: Decision) -> None:
    """What a committed decision changes of the terminal in memory: its session (a sign-on also makes it keyed, as
    its ledger row says: SaveSession), its open batch."""
    if decision.session is not None and decision.reason is Reason.APPROVED:
        session = decision.session
        terminal.signed_on, terminal.session_keys = session.signed_on, session.keys
        terminal.keyed = terminal.keyed or session.signed_on
        terminal.batch_number, terminal.operator = session.batch_number, session.operator
    if decision.next_batch is not None:
        terminal.batch_number = decision.next_batch


def _acted_out(outcome: Outcome, scenario: Scenario, maced: bool) -> Outcome:
    """Apply a scenario's effect on the reply: stall it, withhold it, hang up, or spoil its MAC."""
    outcome.delay_s = scenario.delay_ms / 1000
    if scenario.no_reply or scenario.close:
        outcome.reply, outcome.close = None, scenario.close
    elif scenario.bad_mac and maced and outcome.reply:
        # The MAC is the reply's last field: flipping its last bit leaves a MAC that cannot verify.
        outcome.reply = outcome.reply[:-1] + bytes([outcome.reply[-1] ^ 0x01])
    return outcome
