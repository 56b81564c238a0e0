"""Admission: everything a request must pass before a flow sees it. Raises ``Rejected``; never does I/O.

Terminal and merchant, classification, sign-on and MAC, mandatory fields, card and PIN, chip data (field 55, and its
cross-checks against the PAN and the amount: ``chip_checks.py``), and how the request names its original. The clear
PAN is read here, checked against the PIN block and tag 5A, used to derive a chip card's ICC key, masked and hashed,
and goes no further; nor do tags 5A and 57 of field 55.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from iso_host.cards import is_valid_pan, mask_pan, pan_from_track2, pan_hash
from iso_host.core.chip_checks import Problem, amount_mismatch, pan_mismatch
from iso_host.core.flows import KINDS, Request
from iso_host.core.flows.base import ChipData
from iso_host.core.flows.chip import asks_online
from iso_host.core.guards import KsnCounters
from iso_host.core.message_auth import has_mac, mac_field_of, verify_message_mac
from iso_host.core.terminals import TerminalState
from iso_host.core.test_cards import CardBook, TestCard
from iso_host.ledger.model import BatchItem, Card, OriginalQuery
from iso_host.security import (
    ARQC_TAGS,
    EMV_SCHEMES,
    EmvDataError,
    IccKey,
    KeyLengthError,
    SecurityError,
    TlvError,
    TlvItem,
    arqc_input,
    decode_pin_block,
    decrypt_pin_block,
    derive_icc_key,
    mac_request_key,
    mac_response_key,
    parse_tlv,
    tag_values,
)
from iso_host.security import pin_key as dukpt_pin_key
from iso_host.styles import BatchFieldError, family_of, one_transaction
from iso_host.vocab import DEFAULT_MAC_ALGORITHM, Kind, Reason
from iso_host.wire import Dialect, KindRule, Message

KINDS_BY_NAME: Final = {kind.value: kind for kind in Kind}
KSN_BYTES: Final = 10
NETWORK_MANAGEMENT_CLASS: Final = "8"  # the MTI's message class: 0800, 0820 (sign-on, sign-off, echo, key change)
F90_STAN: Final = slice(4, 10)  # ISO 8583:1987 F90: original MTI n4, then original STAN n6, ...
# ISO 8583:1987 n fields whatever the kind: a request with letters or control bytes in one is a format error,
# even where the kind would change nothing (a reversal of an unknown original is otherwise approved).
NUMERIC_FIELDS: Final = {"3": "processing code", "4": "amount", "11": "STAN", "23": "card sequence number",
                         "25": "POS condition code", "49": "currency code"}  # fmt: skip
MAX_NUMBER_DIGITS: Final = 9  # batch numbers are n6 (CUP 60.2, 61.1); 9 digits still fit every database integer
VOID_KINDS: Final = frozenset({Kind.VOID, Kind.PREAUTH_VOID, Kind.COMPLETION_VOID})  # the operator must be allowed
# Kinds a wrong PIN declines (recorded, as the issuer would); for the others it is refused before any flow runs.
PIN_DECLINED_KINDS: Final = frozenset({Kind.SALE, Kind.PREAUTH})
CHIP_AMOUNT_KINDS: Final = frozenset({Kind.SALE, Kind.PREAUTH})  # 9F02 must equal F4: the card authorised that amount
CHIP_FIELD: Final = "55"
CARD_SEQUENCE_FIELD: Final = "23"  # n3: the PAN sequence number (tag 5F34) is its last two digits
# What a Request keeps of field 55: what an application cryptogram is computed over, 9F10, the cryptogram and its
# type. Nothing else: not 5A (PAN) nor 57 (track 2 equivalent), nor any other tag a card or terminal adds.
CHIP_TAGS: Final = frozenset({tag for tag, _ in ARQC_TAGS} | {"9F10", "9F26", "9F27"})
ARQC_BYTES: Final = 8
HEX_DIGITS: Final = frozenset("0123456789ABCDEFabcdef")


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

    def __init__(
        self, dialect: Dialect, terminals: Mapping[str, TerminalState], cards: CardBook, *, pin_tries: int | None = None
    ) -> None:
        self.dialect = dialect
        self.family = family_of(dialect)
        self.terminals = terminals
        self.cards = cards
        self.pin_tries = pin_tries  # wrong PINs in a row a test card takes ([rules] pin_tries); None: no limit
        self.ksn_counters = KsnCounters()  # in memory: a restart trusts the next counter whose MAC verifies

    def terminal(self, message: Message, peer_subject: str | None = None) -> TerminalState:
        tid, mid = message.fields.get("41"), message.fields.get("42")
        terminal = self.terminals.get(tid) if tid is not None else None
        if terminal is None:
            raise Rejected(Reason.UNKNOWN_TERMINAL, "terminal (field 41) is not configured")
        if mid is not None and mid != terminal.mid:
            raise Rejected(Reason.UNKNOWN_MERCHANT, "merchant (field 42) does not match the terminal's")
        if mid is None and message.mti[1:2] == NETWORK_MANAGEMENT_CLASS:
            raise Rejected(Reason.FORMAT_ERROR, "field 42 is mandatory in network management (08xx) messages")
        if terminal.tls_subject is not None and peer_subject != terminal.tls_subject:
            raise Rejected(Reason.UNKNOWN_TERMINAL, "the client certificate's subject is not the terminal's")
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
        if terminal.bdk is not None:  # the MAC verified under the KSN's key: its counter must have gone up
            highest = self.ksn_counters.advance(terminal.tid, self._ksn(message))
            if highest is not None:
                detail = f"DUKPT KSN counter (field {self.dialect.security.ksn_field}) is not above {highest}"
                raise Rejected(Reason.KSN_REPLAYED, detail)
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
        if rule.kind not in policy.mac_kinds and rule.kind not in terminal.mac_kinds:
            return verified
        require_signon = policy.require_signon if terminal.require_signon is None else terminal.require_signon
        if require_signon and not terminal.signed_on:
            raise Rejected(Reason.NOT_SIGNED_ON, "the terminal has not signed on")
        if policy.mac_algorithm is None or verified is not None:
            return verified
        if not terminal.has_mac_key:
            # A terminal once keyed stays MAC'd: a sign-off (unauthenticated) must not switch its MACs off.
            if terminal.mac_mandatory(policy.mac_policy) or has_mac(message):
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
        chip = self._chip_tags(message)
        card, pin, test_card, icc_key = self._card(message, rule, terminal, pan_key, chip)
        if pin is Reason.PIN_TRIES_EXCEEDED and kind not in PIN_DECLINED_KINDS:
            raise Rejected(pin, "the card's PIN is blocked ([rules] pin_tries wrong PINs; reload-cards unblocks)")
        if pin is Reason.PIN_INCORRECT and kind not in PIN_DECLINED_KINDS:
            raise Rejected(Reason.PIN_INCORRECT, "the PIN does not match the test card table")
        if chip is not None and amount is not None and kind in CHIP_AMOUNT_KINDS:
            _refuse(amount_mismatch(int(amount, 10), chip))
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
            merchant_name=terminal.merchant_name,
            stan=stan,
            amount_minor=int(amount, 10) if amount is not None else None,
            currency=message.fields.get("49") or self.dialect.default_currency,
            card=card,
            test_card=test_card,
            pin_incorrect=pin is Reason.PIN_INCORRECT,
            pin_blocked=pin is Reason.PIN_TRIES_EXCEEDED,
            operator=operator,
            operator_permitted=terminal.may_void(operator) if kind in VOID_KINDS else True,
            original_date_mmdd=self._lookup_value(message, rule, "date"),
            original_auth_code=self._lookup_value(message, rule, "auth_code"),
            open_batch=terminal.batch_number,
            original_queries=tuple(self.original_queries(message, rule, terminal)) if spec.original else (),
            chip=self._chip_data(message, chip, icc_key, card) if chip is not None else None,
            **self.batch_fields(message, rule, kind, pan_key),
        )

    def _chip_tags(self, message: Message) -> dict[str, tuple[int, bytes]] | None:
        """Field 55 parsed as EMV BER-TLV: tag -> (offset, value) of its primitive data objects; None without it.

        Raises:
            Rejected: FORMAT_ERROR naming field 55, the tag and the byte offset (counted from the field's first byte).
        """
        raw = message.fields.get(CHIP_FIELD)
        if raw is None:
            return None
        if self.dialect.spec[CHIP_FIELD]["data_enc"] != "b":  # a character field 55 (iso87ascii) carries hex text
            bad = next((index for index, char in enumerate(raw) if char not in HEX_DIGITS), None)
            if bad is not None:
                raise Rejected(Reason.FORMAT_ERROR, f"field {CHIP_FIELD}: character {bad} is not a hex digit")
            if len(raw) % 2:
                raise Rejected(Reason.FORMAT_ERROR, f"field {CHIP_FIELD}: {len(raw)} hex digits are not whole bytes")
        try:
            items = parse_tlv(bytes.fromhex(raw))
            tag_values(items)  # refuses a tag given twice
        except TlvError as error:
            raise Rejected(Reason.FORMAT_ERROR, f"field {CHIP_FIELD}: {error}") from None
        tags: dict[str, tuple[int, bytes]] = {}
        pending: list[TlvItem] = items[::-1]
        while pending:
            item = pending.pop()
            if item.constructed:
                pending.extend(reversed(item.children))
            else:
                tags[item.tag] = (item.offset, item.value)
        return tags

    def _icc_key(self, pan: str, message: Message, card: TestCard, chip: dict[str, tuple[int, bytes]]) -> IccKey:
        """The card's ICC master key, from its issuer master key, the clear PAN and the PAN sequence number (the last
        two digits of F23, else tag 5F34, else 00).

        Raises:
            Rejected: FORMAT_ERROR for a sequence number that is not two digits.
        """
        assert card.imk is not None
        psn = _pan_sequence(message, chip)
        try:
            return derive_icc_key(card.imk, pan=pan, pan_sequence=psn, scheme=EMV_SCHEMES[card.emv_scheme])
        except EmvDataError as error:
            raise Rejected(Reason.FORMAT_ERROR, f"field {CHIP_FIELD}: {_where(error, chip)}") from None

    def _chip_data(
        self, message: Message, chip: dict[str, tuple[int, bytes]], icc_key: IccKey | None, card: Card | None
    ) -> ChipData:
        """What the flow gets of field 55: the tags it needs, and when there is an ARQC to verify (9F27, when sent,
        saying ARQC: a TC or an AAC is not verified) the card's key, its counter key (the keyed PAN hash and the PAN
        sequence number) and the highest ATC the card book has seen verified under it.

        Raises:
            Rejected: FORMAT_ERROR when the ARQC cannot be verified for want of data: 9F27 not one byte, or a tag the
                card's scheme computes over missing or of the wrong size, naming field 55, the tag and its offset.
        """
        kept = {tag: value for tag, (_, value) in chip.items() if tag in CHIP_TAGS}
        if icc_key is not None:
            try:
                icc_key = icc_key if _verifiable(kept, icc_key) else None
            except EmvDataError as error:
                raise Rejected(Reason.FORMAT_ERROR, f"field {CHIP_FIELD}: {_where(error, chip)}") from None
        if icc_key is None or card is None:
            return ChipData(tuple(kept.items()))
        counter_key = f"{card.pan_hash}:{_pan_sequence(message, chip)}"
        return ChipData(tuple(kept.items()), icc_key, counter_key, self.cards.highest_atc(counter_key))

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
        self, message: Message, rule: KindRule, terminal: TerminalState, pan_key: bytes,
        chip: dict[str, tuple[int, bytes]] | None,
    ) -> tuple[Card | None, Reason | None, TestCard | None, IccKey | None]:  # fmt: skip
        """Check the PIN, derive a chip card's ICC key, then mask and hash the PAN so that nothing past here sees it
        in clear.

        Returns:
            The card (None when the request carries none), what is wrong with the PIN, if one came (PIN_INCORRECT,
            PIN_TRIES_EXCEEDED; None: right, or not checked), the test card with
            this PAN, if one is configured, and its ICC key when field 55 carries an ARQC and the test card has an
            issuer master key.
        """
        pan = self._clear_pan(message, rule)
        if pan is None:
            if rule.card_fields and rule.card_required:
                fields = ", ".join(rule.card_fields)
                raise Rejected(Reason.FORMAT_ERROR, f"no card: none of fields {fields} is present")
            return None, None, None, None
        if chip is not None:
            _refuse(pan_mismatch(pan, next(f for f in rule.card_fields if f in message.fields), chip))
        pin = self._pin_check(message, pan, terminal) if "52" in message.fields else None
        test_card = self.cards.card(pan)
        icc_key = None
        if chip is not None and "9F26" in chip and test_card is not None and test_card.imk is not None:
            icc_key = self._icc_key(pan, message, test_card, chip)
        return Card(mask_pan(pan), pan_hash(pan, pan_key)), pin, test_card, icc_key

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
                pan = self._clear_pan(message, rule)
                in_fields = rule.upload == "transaction"
                records = one_transaction(message, pan) if in_fields else self.family.read_upload(message, pan)
                upload = tuple(
                    (BatchItem(r.stan, r.amount_minor, mask_pan(r.pan)), pan_hash(r.pan, pan_key), r.foreign_card)
                    for r in records
                )
                return {"upload": upload}
        except BatchFieldError as error:
            raise Rejected(Reason.FORMAT_ERROR, str(error)) from None
        return {}

    def _pin_check(self, message: Message, pan: str, terminal: TerminalState) -> Reason | None:
        """Decrypt F52 and compare it, in constant time, with the test card table (a card not in the table passes),
        counting the card's wrong PINs in a row: after ``pin_tries`` of them every PIN is PIN_TRIES_EXCEEDED."""
        if terminal.bdk is not None:
            key: bytes | None = dukpt_pin_key(terminal.bdk, self._ksn(message))
        else:
            key = terminal.keys.tpk
        if key is None:
            raise Rejected(Reason.NOT_SIGNED_ON, "a PIN block arrived but the terminal has no PIN key")
        try:
            clear = decrypt_pin_block(key, bytes.fromhex(message.fields["52"]))
            pin = decode_pin_block(clear, pan, self.dialect.security.pin_block_format)
        except KeyLengthError:
            raise  # the host's key, not the terminal's block: SYSTEM_ERROR
        except (ValueError, SecurityError):
            raise Rejected(Reason.FORMAT_ERROR, "field 52 is not a valid PIN block") from None
        card = self.cards.card(pan)
        if card is None or card.pin is None:
            return None
        if self.cards.pin_blocked(pan, self.pin_tries):
            return Reason.PIN_TRIES_EXCEEDED
        right = hmac.compare_digest(pin.encode(), card.pin.encode())
        self.cards.note_pin(pan, right=right)
        return None if right else Reason.PIN_INCORRECT


def _verifiable(tags: dict[str, bytes], icc_key: IccKey) -> bool:
    """Whether the tags carry an ARQC (not a TC or an AAC) with everything the scheme computes over.

    Raises:
        EmvDataError: 9F27 is not one byte, or a tag of the ARQC's input, or 9F26, is missing or of the wrong size.
    """
    if "9F27" in tags and len(tags["9F27"]) != 1:
        raise EmvDataError(f"must be 1 byte, got {len(tags['9F27'])}", tag="9F27")
    if not asks_online(tags):
        return False
    arqc_input(tags, icc_key.scheme)
    if len(tags["9F26"]) != ARQC_BYTES:
        raise EmvDataError(f"must be {ARQC_BYTES} bytes, got {len(tags['9F26'])}", tag="9F26")
    return True


def _pan_sequence(message: Message, chip: dict[str, tuple[int, bytes]]) -> str:
    """The PAN sequence number: the last two digits of F23, else tag 5F34, else 00."""
    sequence = message.fields.get(CARD_SEQUENCE_FIELD)
    if sequence is not None:
        return sequence[-2:].rjust(2, "0")
    return chip["5F34"][1].hex().upper() if "5F34" in chip else "00"


def _refuse(problem: Problem | None) -> None:
    """Raise a chip cross-check's problem as a rejection (unrecorded, like every admission refusal)."""
    if problem is not None:
        raise Rejected(*problem)


def _where(error: EmvDataError, chip: dict[str, tuple[int, bytes]]) -> str:
    """An EMV data error with the offset of its tag in field 55, when the tag is there."""
    if error.tag in chip:
        return f"tag {error.tag} at byte {chip[error.tag][0]}: {error.reason}"
    return str(error)
