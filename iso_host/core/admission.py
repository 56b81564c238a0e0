"""Admission: everything a request must pass before a flow sees it. Raises ``Rejected``; never does I/O.

Terminal and merchant, classification, sign-on and MAC, mandatory fields, card and PIN, and how the
request names its original. The clear PAN is read here, checked against the PIN block, masked and hashed,
and goes no further.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from iso_host.cards import is_valid_pan, mask_pan, pan_from_track2, pan_hash
from iso_host.core.flows import KINDS, Request
from iso_host.core.message_auth import has_mac, mac_field_of, verify_message_mac
from iso_host.core.terminals import TerminalState
from iso_host.core.test_cards import CardBook, TestCard
from iso_host.ledger.model import BatchItem, Card, OriginalQuery
from iso_host.security import (
    SecurityError,
    TlvError,
    decode_pin_block,
    decrypt_pin_block,
    mac_request_key,
    mac_response_key,
    parse_tlv,
    tag_values,
)
from iso_host.security import pin_key as dukpt_pin_key
from iso_host.styles import BatchFieldError, family_of
from iso_host.vocab import DEFAULT_MAC_ALGORITHM, Kind, Reason
from iso_host.wire import Dialect, KindRule, Message

KINDS_BY_NAME: Final = {kind.value: kind for kind in Kind}
KSN_BYTES: Final = 10
F90_STAN: Final = slice(4, 10)  # ISO 8583:1987 F90: original MTI n4, then original STAN n6, ...
# ISO 8583:1987 n fields whatever the kind: a request with letters or control bytes in one is a format error,
# even where the kind would change nothing (a reversal of an unknown original is otherwise approved).
NUMERIC_FIELDS: Final = {"3": "processing code", "4": "amount", "11": "STAN", "25": "POS condition code",
                         "49": "currency code"}  # fmt: skip
MAX_NUMBER_DIGITS: Final = 9  # batch numbers are n6 (CUP 60.2, 61.1); 9 digits still fit every database integer
VOID_KINDS: Final = frozenset({Kind.VOID, Kind.PREAUTH_VOID, Kind.COMPLETION_VOID})  # the operator must be allowed
# Kinds a wrong PIN declines (recorded, as the issuer would); for the others it is refused before any flow runs.
PIN_DECLINED_KINDS: Final = frozenset({Kind.SALE, Kind.PREAUTH})


class Rejected(Exception):
    """A request refused before any flow runs (missing field, unknown terminal, bad MAC)."""

    def __init__(self, reason: Reason, detail: str, kind_name: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.kind_name = kind_name  # what the dialect calls the message, once it has been classified


@dataclass(frozen=True, slots=True)
class ResponseMac:
    """How to MAC the response to a request whose MAC checked."""

    algorithm: str
    key: bytes = field(repr=False)


class Admission:
    """The checks of one dialect, with the host's test card table."""

    def __init__(self, dialect: Dialect, terminals: Mapping[str, TerminalState], cards: CardBook) -> None:
        self.dialect = dialect
        self.family = family_of(dialect)
        self.terminals = terminals
        self.cards = cards

    def terminal(self, message: Message) -> TerminalState:
        tid, mid = message.fields.get("41"), message.fields.get("42")
        terminal = self.terminals.get(tid) if tid is not None else None
        if terminal is None:
            raise Rejected(Reason.UNKNOWN_TERMINAL, "terminal (field 41) is not configured")
        if mid is not None and mid != terminal.mid:
            raise Rejected(Reason.UNKNOWN_MERCHANT, "merchant (field 42) does not match the terminal's")
        if not terminal.enabled:
            raise Rejected(Reason.TERMINAL_DISABLED, "terminal is disabled (live control: enable-terminal)")
        return terminal

    def classify(self, message: Message) -> tuple[KindRule, Kind]:
        rule = self.dialect.classify(message)
        if rule is None:
            raise Rejected(Reason.INVALID_TRANSACTION, f"no transaction kind matches MTI {message.mti}")
        kind = KINDS_BY_NAME.get(rule.flow or rule.kind)
        if kind is None or kind not in KINDS:
            raise Rejected(Reason.INVALID_TRANSACTION, f"transaction kind {rule.kind} is not supported", rule.kind)
        return rule, kind

    def verify_mac(self, message: Message, body: bytes, terminal: TerminalState) -> ResponseMac | None:
        """Check a MAC the message carries, before anything else of it is read: whatever its kind, a message
        with F64/F128 from a terminal that has a MAC key must verify. Returns how to MAC the response.

        Raises:
            Rejected: MAC_FAILED, or FORMAT_ERROR for an unreadable KSN.
        """
        algorithm = self.dialect.security.mac_algorithm
        if algorithm is None or not terminal.has_mac_key or not has_mac(message):
            return None
        algorithm, request_key, response_key = self._mac_keys(message, terminal, algorithm)
        if not verify_message_mac(body, message, self.dialect, algorithm, request_key):
            raise Rejected(Reason.MAC_FAILED, f"MAC (field {mac_field_of(message)}) does not verify")
        return ResponseMac(algorithm, response_key)

    def authenticate(
        self, message: Message, rule: KindRule, terminal: TerminalState, verified: ResponseMac | None
    ) -> ResponseMac | None:
        """Sign-on and mandatory-MAC checks for the kinds the dialect protects (``verified``: the MAC the message
        carried has checked). Returns how to MAC the response.

        Raises:
            Rejected: NOT_SIGNED_ON, MAC_FAILED.
        """
        policy = self.dialect.security
        if rule.kind not in policy.mac_kinds:
            return verified
        require_signon = policy.require_signon if terminal.require_signon is None else terminal.require_signon
        if require_signon and not terminal.signed_on:
            raise Rejected(Reason.NOT_SIGNED_ON, "the terminal has not signed on")
        if policy.mac_algorithm is None or verified is not None:
            return verified
        if not terminal.has_mac_key:
            if policy.mac_policy == "always" or has_mac(message):
                raise Rejected(Reason.MAC_FAILED, "the terminal has no MAC key (sign on first)")
            return None
        raise Rejected(Reason.MAC_FAILED, f"MAC (field {mac_field_of(message)}) is missing")

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
            algorithm = terminal.mac_algorithm or DEFAULT_MAC_ALGORITHM
            return algorithm, mac_request_key(terminal.bdk, ksn), mac_response_key(terminal.bdk, ksn)
        tak = terminal.keys.tak
        assert tak is not None, "has_mac_key said so"
        return terminal.mac_algorithm or dialect_algorithm, tak, tak

    def request(self, message: Message, rule: KindRule, kind: Kind, terminal: TerminalState, pan_key: bytes) -> Request:
        """Validate a routed message into a Request.

        Raises:
            Rejected: a missing or malformed mandatory field, no valid PAN, a wrong PIN.
        """
        for reference in rule.required:
            if self.dialect.value_of(message, reference) is None:
                raise Rejected(Reason.FORMAT_ERROR, f"mandatory field {reference} is missing")
        for field_id, name in NUMERIC_FIELDS.items():
            value = message.fields.get(field_id)
            if value is not None and not (value.isascii() and value.isdigit()):
                raise Rejected(Reason.FORMAT_ERROR, f"field {field_id} ({name}) is not numeric")
        stan = message.fields.get("11", "")
        amount = message.fields.get("4")
        operator = self.family.operator(message)
        spec = KINDS[kind]
        card, pin_ok, test_card = self._card(message, rule, terminal, pan_key)
        if not pin_ok and kind not in PIN_DECLINED_KINDS:
            raise Rejected(Reason.PIN_INCORRECT, "the PIN does not match the test card table")
        batch_field = self.dialect.batch_field
        batch_named = batch_field is not None and self.dialect.value_of(message, batch_field) is not None
        return Request(
            kind=kind,
            mti=message.mti,
            processing_code=message.fields.get("3", ""),
            tid=terminal.tid,
            mid=terminal.mid,
            batch_number=self._batch_number(message, terminal),
            batch_named=batch_named,
            key_layout=self.family.key_layout(message, self.dialect) if spec.issues_keys else None,
            name=rule.kind,
            rule=rule,
            download_ask=self._download_ask(message) if rule.download is not None else (),
            stan=stan,
            amount_minor=int(amount, 10) if amount is not None else None,
            currency=message.fields.get("49") or self.dialect.default_currency,
            card=card,
            test_card=test_card,
            pin_incorrect=not pin_ok,
            operator=operator,
            operator_permitted=terminal.may_void(operator) if kind in VOID_KINDS else True,
            original_date_mmdd=self._lookup_value(message, rule, "date"),
            original_auth_code=self._lookup_value(message, rule, "auth_code"),
            open_batch=terminal.batch_number,
            original_queries=tuple(self.original_queries(message, rule, terminal)) if spec.original else (),
            **self.batch_fields(message, rule, kind, pan_key),
        )

    def _download_ask(self, message: Message) -> tuple[tuple[str, bytes], ...]:
        """The data objects a download request names its record with (none: the set's first record)."""
        field_id = self.family.download_field
        try:
            return tuple(tag_values(parse_tlv(bytes.fromhex(message.fields.get(field_id, "")))).items())
        except (TlvError, ValueError) as error:
            raise Rejected(Reason.FORMAT_ERROR, f"field {field_id}: {error}") from None

    def _batch_number(self, message: Message, terminal: TerminalState) -> int:
        if self.dialect.batch_field is None:
            return terminal.batch_number
        return self._number(message, self.dialect.batch_field, "batch") or terminal.batch_number

    def _number(self, message: Message, reference: str, what: str) -> int | None:
        value = self.dialect.value_of(message, reference)
        if value is None:
            return None
        if not value.isdigit():
            raise Rejected(Reason.FORMAT_ERROR, f"field {reference} ({what}) is not numeric")
        if len(value) > MAX_NUMBER_DIGITS:
            msg = f"field {reference} ({what}) has {len(value)} digits, at most {MAX_NUMBER_DIGITS}"
            raise Rejected(Reason.FORMAT_ERROR, msg)
        return int(value, 10)

    def _lookup_value(self, message: Message, rule: KindRule, key: str) -> str | None:
        for lookup in rule.original_by:
            for name, reference in lookup:
                if name == key:
                    return self.dialect.value_of(message, reference)
        return None

    def original_queries(self, message: Message, rule: KindRule, terminal: TerminalState) -> list[OriginalQuery]:
        """The lookups the dialect names for this request's original, those whose fields are present."""
        queries = []
        for lookup in rule.original_by:
            names = dict(lookup)
            values = {name: self.dialect.value_of(message, reference) for name, reference in lookup}
            if any(value is None for value in values.values()):
                continue
            stan = values.get("stan")
            if "data_elements" in names:
                stan = (values["data_elements"] or "")[F90_STAN]
                if not stan.isdigit():
                    continue
            batch = self._number(message, names["batch"], "original batch") if "batch" in names else None
            auth_code = values["auth_code"].strip() if "auth_code" in names and values["auth_code"] else None
            if "auth_code" in names and not auth_code:
                continue  # F38 of spaces names nothing
            query = OriginalQuery(terminal.tid, terminal.mid, rrn=values.get("rrn"), stan=stan, batch_number=batch,
                                  auth_code=auth_code, date_mmdd=values.get("date"))  # fmt: skip
            queries.append(query)
        return queries

    def _card(
        self, message: Message, rule: KindRule, terminal: TerminalState, pan_key: bytes
    ) -> tuple[Card | None, bool, TestCard | None]:
        """Check the PIN, then mask and hash the PAN so that nothing past here sees it in clear.

        Returns:
            The card (None when the request carries none), whether the PIN, if any, was right, and the
            test card with this PAN, if one is configured.
        """
        pan = self._clear_pan(message, rule)
        if pan is None:
            if rule.card_fields and rule.card_required:
                fields = ", ".join(rule.card_fields)
                raise Rejected(Reason.FORMAT_ERROR, f"no card: none of fields {fields} is present")
            return None, True, None
        pin_ok = self._pin_matches(message, pan, terminal) if "52" in message.fields else True
        return Card(mask_pan(pan), pan_hash(pan, pan_key)), pin_ok, self.cards.card(pan)

    @staticmethod
    def _clear_pan(message: Message, rule: KindRule) -> str | None:
        """The PAN from the first of the kind's card fields that is present (F2, or track 2)."""
        for field_id in rule.card_fields:
            raw = message.fields.get(field_id)
            if raw is None:
                continue
            pan = raw if field_id == "2" else pan_from_track2(raw)
            if pan is None or not is_valid_pan(pan):
                raise Rejected(Reason.FORMAT_ERROR, f"field {field_id} holds no valid PAN")
            return pan
        return None

    def batch_fields(self, message: Message, rule: KindRule, kind: Kind, pan_key: bytes) -> dict[str, Any]:
        """Settlement totals and upload records, with every uploaded PAN masked and hashed here."""
        try:
            if kind is Kind.SETTLEMENT:
                return {"terminal_totals": self.family.read_totals(message),
                        "after_upload": self.family.is_after_upload(message)}  # fmt: skip
            if kind is Kind.BATCH_UPLOAD:
                records = self.family.read_upload(message, self._clear_pan(message, rule))
                upload = tuple(
                    (BatchItem(r.stan, r.amount_minor, mask_pan(r.pan)), pan_hash(r.pan, pan_key), r.foreign_card)
                    for r in records
                )
                return {"upload": upload}
        except BatchFieldError as error:
            raise Rejected(Reason.FORMAT_ERROR, str(error)) from None
        return {}

    def _pin_matches(self, message: Message, pan: str, terminal: TerminalState) -> bool:
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
        card = self.cards.card(pan)
        return card is None or card.pin is None or pin == card.pin
