"""The pipeline: frame → decode → terminal → classify → sign-on/MAC → fields, card, PIN → flow → ledger → reply.

No sockets here and no logging: ``Host.handle`` takes one frame body and returns an ``Outcome`` that
says what to write back, whether to close, and what the edge should log. The only await is the
ledger commit, which must finish before an approval is released.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from iso_host.cards import is_valid_pan, mask_pan, pan_from_track2, pan_hash
from iso_host.errors import StoreError, WireError
from iso_host.flows import FINANCIAL_KINDS, FLOWS, Context, Decision, Request
from iso_host.ledger.model import Card, Kind, Reason
from iso_host.ledger.store import Store
from iso_host.message_auth import MAC_PLACEHOLDER, has_mac, mac_field_of, seal, verify_message_mac
from iso_host.security import SecurityError, decode_pin_block, decrypt_pin_block, mac_request_key, mac_response_key
from iso_host.security import pin_key as dukpt_pin_key
from iso_host.terminals import TerminalState, WorkingKeys
from iso_host.wire import Dialect, Envelope, KindRule, Message, WireDecodeError, decode, encode, reply_mti

KINDS_BY_NAME = {kind.value: kind for kind in Kind}
DUKPT_MAC_ALGORITHM = "x9.19"  # DUKPT MAC keys are double-length TDES keys
KSN_BYTES = 10


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


@dataclass(frozen=True, slots=True)
class ResponseMac:
    """How to MAC the response to a request whose MAC checked."""

    algorithm: str
    key: bytes = field(repr=False)


class Rejected(Exception):
    """A request refused before any flow runs (missing field, unknown terminal, bad MAC). Never escapes."""

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
        *,
        cards: Mapping[str, str] | None = None,
        key_source: Callable[[], WorkingKeys] | None = None,
    ) -> None:
        self.dialect = dialect
        self.store = store
        self.terminals = terminals
        self.clock = clock
        self.cards = dict(cards or {})  # test card table: PAN → PIN
        self.key_source = key_source

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
        response_mac: ResponseMac | None = None
        try:
            terminal = self._terminal(message)
            rule, kind = self._classify(message)
            outcome.kind = kind.value
            response_mac = self._authenticate(message, frame[self.dialect.envelope_bytes :], rule, terminal)
            request = self._request(message, rule, kind, terminal)
        except Rejected as rejection:
            outcome.log["detail"] = rejection.detail
            return self._respond(outcome, envelope, message, Decision(rejection.reason), response_mac)
        decision = FLOWS[request.kind](request, self._context(request, terminal))
        if decision.commands:
            try:
                await self.store.apply(decision.commands)
            except StoreError as error:
                outcome.log["detail"] = str(error)
                decision = Decision(Reason.SYSTEM_ERROR)
        if decision.session is not None and decision.reason is Reason.APPROVED:
            session = decision.session
            terminal.signed_on, terminal.session_keys = session.signed_on, session.keys
            terminal.batch_number, terminal.operator = session.batch_number, session.operator
        if "37" in decision.fields:
            outcome.log["rrn"] = decision.fields["37"]
        return self._respond(outcome, envelope, message, decision, response_mac)

    def _context(self, request: Request, terminal: TerminalState) -> Context:
        signing_on = request.kind is Kind.SIGNON
        return Context(
            now=self.clock(),
            rrn=self.store.next_rrn() if request.kind in FINANCIAL_KINDS else None,
            dialect=self.dialect,
            tmk=terminal.tmk if signing_on else None,
            fresh_keys=self.key_source() if signing_on and self.key_source is not None else None,
        )

    def _respond(
        self, outcome: Outcome, envelope: Envelope, request: Message, decision: Decision, mac: ResponseMac | None
    ) -> Outcome:
        code = self.dialect.response_code(decision.reason)
        response = self.response_for(request, code, decision.fields)
        if mac is not None and decision.reason is not Reason.MAC_FAILED:
            response.fields[mac_field_of(response)] = MAC_PLACEHOLDER
            body = encode(response, Envelope(), self.dialect)
            outcome.reply = bytes(envelope.reply()) + seal(body, response, self.dialect, mac.algorithm, mac.key)
        else:
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
            return self._respond(outcome, error.envelope, partial, Decision(Reason.FORMAT_ERROR), None)
        except ValueError:
            # The fields that did decode cannot be echoed back; a clean close is the only answer left.
            return Outcome(None, close=True, mti=partial.mti, error=error)

    @staticmethod
    def _log_fields(message: Message) -> dict[str, object]:
        pairs = (("tid", "41"), ("stan", "11"))
        return {key: message.fields[field_id] for key, field_id in pairs if field_id in message}

    def _terminal(self, message: Message) -> TerminalState:
        tid, mid = message.fields.get("41"), message.fields.get("42")
        terminal = self.terminals.get(tid) if tid is not None else None
        if terminal is None:
            raise Rejected(Reason.UNKNOWN_TERMINAL, "terminal (field 41) is not configured")
        if mid is not None and mid != terminal.mid:
            raise Rejected(Reason.UNKNOWN_MERCHANT, "merchant (field 42) does not match the terminal's")
        return terminal

    def _classify(self, message: Message) -> tuple[KindRule, Kind]:
        rule = self.dialect.classify(message)
        if rule is None:
            raise Rejected(Reason.INVALID_TRANSACTION, f"no transaction kind matches MTI {message.mti}")
        kind = KINDS_BY_NAME.get(rule.kind)
        if kind is None or kind not in FLOWS:
            raise Rejected(Reason.INVALID_TRANSACTION, f"transaction kind {rule.kind} is not supported")
        return rule, kind

    def _authenticate(
        self, message: Message, body: bytes, rule: KindRule, terminal: TerminalState
    ) -> ResponseMac | None:
        """Sign-on and MAC checks for the kinds the dialect protects; returns how to MAC the response.

        Raises:
            Rejected: NOT_SIGNED_ON, MAC_FAILED, or FORMAT_ERROR for an unreadable KSN.
        """
        policy = self.dialect.security
        if rule.kind not in policy.mac_kinds:
            return None
        require_signon = policy.require_signon if terminal.require_signon is None else terminal.require_signon
        if require_signon and not terminal.signed_on:
            raise Rejected(Reason.NOT_SIGNED_ON, "the terminal has not signed on")
        if policy.mac_algorithm is None:
            return None
        if not terminal.has_mac_key:
            if policy.mac_policy == "always" or has_mac(message):
                raise Rejected(Reason.MAC_FAILED, "the terminal has no MAC key (sign on first)")
            return None
        if not has_mac(message):
            raise Rejected(Reason.MAC_FAILED, f"MAC (field {mac_field_of(message)}) is missing")
        algorithm, request_key, response_key = self._mac_keys(message, terminal, policy.mac_algorithm)
        if not verify_message_mac(body, message, self.dialect, algorithm, request_key):
            raise Rejected(Reason.MAC_FAILED, f"MAC (field {mac_field_of(message)}) does not verify")
        return ResponseMac(algorithm, response_key)

    def _ksn(self, message: Message) -> bytes:
        ksn_field = self.dialect.security.ksn_field
        raw = message.fields.get(ksn_field) if ksn_field else None
        try:
            ksn = bytes.fromhex(raw) if raw is not None else b""
        except ValueError:
            ksn = b""
        if len(ksn) != KSN_BYTES:
            raise Rejected(Reason.FORMAT_ERROR, f"field {ksn_field} must hold a {KSN_BYTES}-byte DUKPT KSN")
        return ksn

    def _mac_keys(self, message: Message, terminal: TerminalState, dialect_algorithm: str) -> tuple[str, bytes, bytes]:
        """The algorithm, the key that checks the request and the key that MACs the response."""
        if terminal.bdk is not None:
            ksn = self._ksn(message)
            algorithm = terminal.mac_algorithm or DUKPT_MAC_ALGORITHM
            return algorithm, mac_request_key(terminal.bdk, ksn), mac_response_key(terminal.bdk, ksn)
        tak = terminal.keys.tak
        assert tak is not None, "has_mac_key said so"
        return terminal.mac_algorithm or dialect_algorithm, tak, tak

    def _request(self, message: Message, rule: KindRule, kind: Kind, terminal: TerminalState) -> Request:
        """Validate a routed message into a Request.

        Raises:
            Rejected: a missing or malformed mandatory field, no valid PAN, a wrong PIN.
        """
        for reference in rule.required:
            if self.dialect.value_of(message, reference) is None:
                raise Rejected(Reason.FORMAT_ERROR, f"mandatory field {reference} is missing")
        stan = message.fields.get("11", "")
        if stan and not stan.isdigit():
            raise Rejected(Reason.FORMAT_ERROR, "field 11 (STAN) is not numeric")
        amount = message.fields.get("4")
        if amount is not None and not amount.isdigit():
            raise Rejected(Reason.FORMAT_ERROR, "field 4 (amount) is not numeric")
        operator = message.fields.get("63") if self.dialect.security.key_block == "cup" else None
        return Request(
            kind=kind,
            message=message,
            tid=terminal.tid,
            mid=terminal.mid,
            batch_number=self._batch_number(message, terminal),
            stan=stan,
            amount_minor=int(amount, 10) if amount is not None else None,
            currency=message.fields.get("49") or self.dialect.default_currency,
            card=self._card(message, rule, terminal),
            operator=operator.strip()[:3] if operator else None,
        )

    def _batch_number(self, message: Message, terminal: TerminalState) -> int:
        if self.dialect.batch_field is None:
            return terminal.batch_number
        value = self.dialect.value_of(message, self.dialect.batch_field)
        if value is None:
            return terminal.batch_number
        if not value.isdigit():
            raise Rejected(Reason.FORMAT_ERROR, f"field {self.dialect.batch_field} (batch) is not numeric")
        return int(value, 10)

    def _card(self, message: Message, rule: KindRule, terminal: TerminalState) -> Card | None:
        """Check the PIN and then mask and hash the PAN, so that nothing past here sees it in clear."""
        if not rule.card_fields:
            return None
        for field_id in rule.card_fields:
            raw = message.fields.get(field_id)
            if raw is None:
                continue
            pan = raw if field_id == "2" else pan_from_track2(raw)
            if pan is None or not is_valid_pan(pan):
                raise Rejected(Reason.FORMAT_ERROR, f"field {field_id} holds no valid PAN")
            if "52" in message.fields:
                self._check_pin(message, pan, terminal)
            return Card(mask_pan(pan), pan_hash(pan, self.store.pan_hash_key))
        raise Rejected(Reason.FORMAT_ERROR, f"no card: none of fields {', '.join(rule.card_fields)} is present")

    def _check_pin(self, message: Message, pan: str, terminal: TerminalState) -> None:
        """Decrypt F52 and compare it with the test card table; a card not in the table passes."""
        if terminal.bdk is not None:
            key: bytes | None = dukpt_pin_key(terminal.bdk, self._ksn(message))
        else:
            key = terminal.keys.tpk
        if key is None:
            raise Rejected(Reason.NOT_SIGNED_ON, "a PIN block arrived but the terminal has no PIN key")
        try:
            clear = decrypt_pin_block(key, bytes.fromhex(message.fields["52"]))
            pin = decode_pin_block(clear, pan, self.dialect.security.pin_block_format)
        except (ValueError, SecurityError):
            raise Rejected(Reason.FORMAT_ERROR, "field 52 is not a valid PIN block") from None
        expected = self.cards.get(pan)
        if expected is not None and pin != expected:
            raise Rejected(Reason.PIN_INCORRECT, "the PIN does not match the test card table")

