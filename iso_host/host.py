"""The pipeline: frame → decode → terminal → classify → flow → ledger → response → frame.

No sockets here and no logging: ``Host.handle`` takes one frame body and returns an ``Outcome`` that
says what to write back, whether to close, and what the edge should log. The only await is the
ledger commit, which must finish before an approval is released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from iso_host.cards import is_valid_pan, mask_pan, pan_from_track2, pan_hash
from iso_host.errors import StoreError, WireError
from iso_host.flows import FINANCIAL_KINDS, FLOWS, Context, Decision, Request
from iso_host.ledger.model import Card, Kind, Reason
from iso_host.ledger.store import Store
from iso_host.wire import Dialect, Envelope, KindRule, Message, WireDecodeError, decode, encode, reply_mti

KINDS_BY_NAME = {kind.value: kind for kind in Kind}


@dataclass(slots=True)
class TerminalState:
    """A configured terminal and what the host remembers about it between messages."""

    tid: str
    mid: str
    batch_number: int = 1


@dataclass(slots=True)
class Outcome:
    """The result of handling one frame."""

    reply: bytes | None
    close: bool = False
    reason: Reason | None = None
    response_code: str | None = None
    mti: str | None = None
    kind: str | None = None
    log: dict[str, object] = field(default_factory=dict)  # safe to log: no card data, no keys
    error: WireError | None = None


class Rejected(Exception):
    """A request refused before any flow runs (missing field, unknown terminal). Never escapes ``handle``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Host:
    """Handles frames for one dialect against one ledger."""

    def __init__(
        self,
        dialect: Dialect,
        store: Store,
        terminals: dict[str, TerminalState],
        clock: Callable[[], datetime],
    ) -> None:
        self.dialect = dialect
        self.store = store
        self.terminals = terminals
        self.clock = clock

    async def handle(self, frame: bytes) -> Outcome:
        """Answer one frame body (TPDU and header included, length header excluded)."""
        try:
            envelope, message = decode(frame, self.dialect)
        except WireDecodeError as error:
            return self._format_error(error)
        if len(message.mti) != 4 or not message.mti.isdigit():
            bad_mti = WireError(f"MTI is not 4 digits: {message.mti!r}", field="t", offset=self.dialect.envelope_bytes)
            return Outcome(None, close=True, error=bad_mti)
        outcome = Outcome(None, mti=message.mti, log=self._log_fields(message))
        try:
            request = self._request(message)
        except Rejected as rejection:
            outcome.log["detail"] = rejection.detail
            return self._respond(outcome, envelope, message, Decision(rejection.reason))
        outcome.kind = request.kind.value
        context = Context(
            now=self.clock(),
            rrn=self.store.next_rrn() if request.kind in FINANCIAL_KINDS else None,
            response_codes=self.dialect.response_codes,
        )
        decision = FLOWS[request.kind](request, context)
        if decision.commands:
            try:
                await self.store.apply(decision.commands)
            except StoreError as error:
                outcome.log["detail"] = str(error)
                decision = Decision(Reason.SYSTEM_ERROR)
        if "37" in decision.fields:
            outcome.log["rrn"] = decision.fields["37"]
        return self._respond(outcome, envelope, message, decision)

    def _respond(self, outcome: Outcome, envelope: Envelope, request: Message, decision: Decision) -> Outcome:
        code = self.dialect.response_code(decision.reason)
        response = self.response_for(request, code, decision.fields)
        outcome.reply = encode(response, envelope.reply(), self.dialect)
        outcome.reason = decision.reason
        outcome.response_code = code
        return outcome

    def response_for(self, request: Message, response_code: str, fields: dict[str, str]) -> Message:
        """The response MTI, the echoed fields, the flow's fields and F39."""
        echoed = {k: request.fields[k] for k in self.dialect.echo_fields if k in request.fields}
        return Message(reply_mti(request.mti), {**echoed, **fields, "39": response_code})

    def _format_error(self, error: WireDecodeError) -> Outcome:
        partial = error.partial
        if partial is None:
            return Outcome(None, close=True, error=error)
        outcome = Outcome(None, mti=partial.mti, error=error, log=self._log_fields(partial))
        try:
            return self._respond(outcome, error.envelope, partial, Decision(Reason.FORMAT_ERROR))
        except ValueError:
            # The fields that did decode cannot be echoed back; a clean close is the only answer left.
            return Outcome(None, close=True, mti=partial.mti, error=error)

    @staticmethod
    def _log_fields(message: Message) -> dict[str, object]:
        pairs = (("tid", "41"), ("stan", "11"))
        return {key: message.fields[field_id] for key, field_id in pairs if field_id in message}

    def _request(self, message: Message) -> Request:
        """Route and validate a decoded message.

        Raises:
            Rejected: unknown terminal or merchant, a message the dialect does not know, a missing
                or malformed mandatory field.
        """
        terminal = self._terminal(message)
        rule = self.dialect.classify(message)
        if rule is None:
            raise Rejected(Reason.INVALID_TRANSACTION, f"no transaction kind matches MTI {message.mti}")
        kind = KINDS_BY_NAME.get(rule.kind)
        if kind is None or kind not in FLOWS:
            raise Rejected(Reason.INVALID_TRANSACTION, f"transaction kind {rule.kind} is not supported")
        for reference in rule.required:
            if self.dialect.value_of(message, reference) is None:
                raise Rejected(Reason.FORMAT_ERROR, f"mandatory field {reference} is missing")
        stan = message.fields.get("11", "")
        if stan and not stan.isdigit():
            raise Rejected(Reason.FORMAT_ERROR, "field 11 (STAN) is not numeric")
        amount = message.fields.get("4")
        if amount is not None and not amount.isdigit():
            raise Rejected(Reason.FORMAT_ERROR, "field 4 (amount) is not numeric")
        return Request(
            kind=kind,
            message=message,
            tid=terminal.tid,
            mid=terminal.mid,
            batch_number=self._batch_number(message, terminal),
            stan=stan,
            amount_minor=int(amount, 10) if amount is not None else None,
            currency=message.fields.get("49") or self.dialect.default_currency,
            card=self._card(message, rule),
        )

    def _terminal(self, message: Message) -> TerminalState:
        tid, mid = message.fields.get("41"), message.fields.get("42")
        terminal = self.terminals.get(tid) if tid is not None else None
        if terminal is None:
            raise Rejected(Reason.UNKNOWN_TERMINAL, "terminal (field 41) is not configured")
        if mid is not None and mid != terminal.mid:
            raise Rejected(Reason.UNKNOWN_MERCHANT, "merchant (field 42) does not match the terminal's")
        return terminal

    def _batch_number(self, message: Message, terminal: TerminalState) -> int:
        if self.dialect.batch_field is None:
            return terminal.batch_number
        value = self.dialect.value_of(message, self.dialect.batch_field)
        if value is None:
            return terminal.batch_number
        if not value.isdigit():
            raise Rejected(Reason.FORMAT_ERROR, f"field {self.dialect.batch_field} (batch) is not numeric")
        return int(value, 10)

    def _card(self, message: Message, rule: KindRule) -> Card | None:
        """Mask and hash the PAN here, so that nothing past the pipeline sees it in clear."""
        if not rule.card_fields:
            return None
        for field_id in rule.card_fields:
            raw = message.fields.get(field_id)
            if raw is None:
                continue
            pan = raw if field_id == "2" else pan_from_track2(raw)
            if pan is None or not is_valid_pan(pan):
                raise Rejected(Reason.FORMAT_ERROR, f"field {field_id} holds no valid PAN")
            return Card(mask_pan(pan), pan_hash(pan, self.store.pan_hash_key))
        raise Rejected(Reason.FORMAT_ERROR, f"no card: none of fields {', '.join(rule.card_fields)} is present")
