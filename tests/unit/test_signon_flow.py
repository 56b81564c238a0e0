"""Sign-on and sign-off flows: working keys issued under the TMK in the dialect's key block, or forgotten. Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from log_audit import remember_secret

from iso_host.core.flows import FLOWS, Context, Decision, Request, SessionUpdate
from iso_host.core.flows.base import NO_VIEW
from iso_host.core.flows.signon import signoff, signon
from iso_host.core.terminals import NO_KEYS, WorkingKeys
from iso_host.ledger.model import SaveSession
from iso_host.security import (
    CupWorkingKeys,
    SecurityError,
    key_check_value,
    unwrap_key,
    wrap_key,
)
from iso_host.security.keys import adjust_odd_parity, has_odd_parity
from iso_host.styles import family_of
from iso_host.styles.cup import KEY_LENGTHS as CUP_KEY_LENGTHS
from iso_host.vocab import Kind, Reason
from iso_host.wire import Dialect, load_dialect

NOW = datetime(2025, 1, 1, 12, 30, 5, tzinfo=UTC)
TID, MID = "TERM0001", "MERCHANT0000001"
CUP = load_dialect("cup")
ISO87 = load_dialect("iso87binary")
TMK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
OTHER_TMK = bytes.fromhex("FFEEDDCCBBAA99887766554433221100")
# Fixed double-length working keys with odd parity, as random_working_keys() would hand them in.
FRESH = WorkingKeys(
    tpk=adjust_odd_parity(bytes.fromhex("1111111111111111A2A2A2A2A2A2A2A2")),
    tak=adjust_odd_parity(bytes.fromhex("3C3C3C3C3C3C3C3C4D4D4D4D4D4D4D4D")),
    tdk=adjust_odd_parity(bytes.fromhex("5E5E5E5E5E5E5E5E6F6F6F6F6F6F6F6F")),
)
assert FRESH.tpk is not None
assert FRESH.tak is not None
assert FRESH.tdk is not None
assert has_odd_parity(FRESH.tpk + FRESH.tak + FRESH.tdk)
remember_secret(TMK, OTHER_TMK, FRESH.tpk, FRESH.tak, FRESH.tdk)


def _cup_request(layout: str = "003", kind: Kind = Kind.SIGNON, mti: str = "0800") -> Request:
    """A CUP sign-on (or sign-off) whose 60.3 names the key block layout."""
    return Request(kind=kind, mti=mti, processing_code="", key_layout=layout, tid=TID, mid=MID, batch_number=1,
                   stan="000007", amount_minor=None,
                   currency="156", card=None, operator="001")  # fmt: skip


def _iso87_request(code: str = "001", kind: Kind = Kind.SIGNON) -> Request:
    """An iso87binary network management request: F70 001 signs on, 002 signs off."""
    return Request(kind=kind, mti="0800", processing_code="", tid=TID, mid=MID, batch_number=4, stan="000008",
                   amount_minor=None,
                   currency="840", card=None)  # fmt: skip


def _context(dialect: Dialect, tmk: bytes | None = TMK, fresh: WorkingKeys | None = FRESH) -> Context:
    return Context(now=NOW, rrn=None, dialect=dialect, tmk=tmk, fresh_keys=fresh)


def _session_command(decision: Decision) -> SaveSession:
    [command] = decision.commands
    assert isinstance(command, SaveSession)
    return command


def _parsed_block(decision: Decision, dialect: Dialect, request: Request, tmk: bytes = TMK) -> CupWorkingKeys:
    """The keys in the response's key block, unwrapped with the TMK the way a terminal does."""
    key_field = dialect.security.signon_key_field
    assert key_field is not None
    block = bytes.fromhex(decision.fields[key_field])
    return family_of(dialect).accept_keys(tmk, request.key_layout, block)


# (dialect, request, key lengths issued (TPK, TAK, TDK) in bytes, 0 = none)
SIGNONS = [
    pytest.param(CUP, _cup_request("001"), (8, 8, 0), id="cup-001"),
    pytest.param(CUP, _cup_request("003"), (16, 8, 0), id="cup-003"),
    pytest.param(CUP, _cup_request("004"), (16, 8, 16), id="cup-004"),
    pytest.param(ISO87, _iso87_request(), (16, 16, 0), id="iso87binary"),
]


class TestFlowTable:
    """FLOWS routes sign-on and sign-off to their flows."""

    def test_routes(self) -> None:
        """Kind.SIGNON goes to signon and Kind.SIGNOFF to signoff."""
        assert (FLOWS[Kind.SIGNON], FLOWS[Kind.SIGNOFF]) == (signon, signoff)


class TestSignon:
    """signon issues fresh working keys wrapped under the TMK and records the session."""

    @pytest.mark.parametrize(("dialect", "request_", "lengths"), SIGNONS)
    def test_approved_with_time_date_and_key_block(
        self, dialect: Dialect, request_: Request, lengths: tuple[int, int, int]
    ) -> None:
        """The reply is approved and carries F12, F13 and the key block in the dialect's signon_key_field."""
        decision = signon(request_, NO_VIEW, _context(dialect))
        assert decision.reason is Reason.APPROVED
        key_field = dialect.security.signon_key_field
        assert key_field is not None
        assert set(decision.fields) == {"12", "13", key_field}
        assert (decision.fields["12"], decision.fields["13"]) == ("123005", "0101")
        assert decision.fields[key_field] == decision.fields[key_field].upper()

    @pytest.mark.parametrize(("dialect", "request_", "lengths"), SIGNONS)
    def test_key_block_carries_the_session_keys(
        self, dialect: Dialect, request_: Request, lengths: tuple[int, int, int]
    ) -> None:
        """The key block parses back with the TMK (check values included) to exactly the session's keys."""
        decision = signon(request_, NO_VIEW, _context(dialect))
        assert decision.session is not None
        keys = decision.session.keys
        assert _parsed_block(decision, dialect, request_) == CupWorkingKeys(keys.tpk or b"", keys.tak or b"", keys.tdk)

    @pytest.mark.parametrize(("dialect", "request_", "lengths"), SIGNONS)
    def test_key_lengths_follow_the_layout(
        self, dialect: Dialect, request_: Request, lengths: tuple[int, int, int]
    ) -> None:
        """The issued keys are the fresh keys cut to the lengths the layout carries."""
        decision = signon(request_, NO_VIEW, _context(dialect))
        assert decision.session is not None
        keys = decision.session.keys
        tpk_bytes, tak_bytes, tdk_bytes = lengths
        assert FRESH.tpk is not None
        assert FRESH.tak is not None
        assert FRESH.tdk is not None
        assert (keys.tpk, keys.tak) == (FRESH.tpk[:tpk_bytes], FRESH.tak[:tak_bytes])
        assert keys.tdk == (FRESH.tdk[:tdk_bytes] if tdk_bytes else None)

    def test_cup_layout_table(self) -> None:
        """The flow knows exactly the three CUP layouts, with a single-length TAK in each."""
        assert sorted(CUP_KEY_LENGTHS) == ["001", "003", "004"]
        assert {tak for _, tak, _ in CUP_KEY_LENGTHS.values()} == {8}

    @pytest.mark.parametrize(("dialect", "request_", "lengths"), SIGNONS)
    def test_session_command_holds_wrapped_keys(
        self, dialect: Dialect, request_: Request, lengths: tuple[int, int, int]
    ) -> None:
        """SaveSession records the keys wrapped under the TMK, never in the clear, each with its check value (a changed
        TMK is noticed at start)."""
        decision = signon(request_, NO_VIEW, _context(dialect))
        assert decision.session is not None
        keys = decision.session.keys
        command = _session_command(decision)
        assert command == SaveSession(
            tid=TID, mid=MID, signed_on=True, batch_number=request_.batch_number, operator=request_.operator,
            tpk_under_tmk=wrap_key(TMK, keys.tpk or b""), tak_under_tmk=wrap_key(TMK, keys.tak or b""),
            tdk_under_tmk=wrap_key(TMK, keys.tdk) if keys.tdk else None, at=NOW, keyed=True,
            tpk_kcv=key_check_value(keys.tpk or b""), tak_kcv=key_check_value(keys.tak or b""),
            tdk_kcv=key_check_value(keys.tdk) if keys.tdk else None,
        )  # fmt: skip
        for clear, wrapped in ((keys.tpk, command.tpk_under_tmk), (keys.tak, command.tak_under_tmk),
                               (keys.tdk, command.tdk_under_tmk)):  # fmt: skip
            if clear is None:
                assert wrapped is None
                continue
            assert wrapped is not None
            assert clear not in wrapped
            assert unwrap_key(TMK, wrapped) == clear
        assert FRESH.tak is not None
        assert FRESH.tak.hex().upper() not in repr(command).upper()

    @pytest.mark.parametrize(("dialect", "request_", "lengths"), SIGNONS)
    def test_session_update(self, dialect: Dialect, request_: Request, lengths: tuple[int, int, int]) -> None:
        """The terminal is signed on with the issued keys, its batch and its operator."""
        decision = signon(request_, NO_VIEW, _context(dialect))
        assert decision.session is not None
        assert decision.session == SessionUpdate(True, decision.session.keys, request_.batch_number, request_.operator)
        assert decision.session.keys.tak is not None

    @pytest.mark.parametrize(("dialect", "request_", "lengths"), SIGNONS)
    def test_deterministic(self, dialect: Dialect, request_: Request, lengths: tuple[int, int, int]) -> None:
        """The same request and context give an equal Decision."""
        assert signon(request_, NO_VIEW, _context(dialect)) == signon(request_, NO_VIEW, _context(dialect))

    @pytest.mark.parametrize(("dialect", "request_", "lengths"), SIGNONS)
    def test_another_tmk_cannot_read_the_block(
        self, dialect: Dialect, request_: Request, lengths: tuple[int, int, int]
    ) -> None:
        """A key block issued under one TMK does not parse under another: the check values do not match."""
        decision = signon(request_, NO_VIEW, _context(dialect))
        with pytest.raises(SecurityError, match="check value mismatch"):
            _parsed_block(decision, dialect, request_, tmk=OTHER_TMK)

    @pytest.mark.parametrize(
        ("dialect", "request_"),
        [pytest.param(CUP, _cup_request(), id="cup"), pytest.param(ISO87, _iso87_request(), id="iso87binary")],
    )
    def test_terminal_without_tmk(self, dialect: Dialect, request_: Request) -> None:
        """A terminal with no TMK cannot receive keys: INVALID_TRANSACTION, nothing recorded, no session change."""
        decision = signon(request_, NO_VIEW, _context(dialect, tmk=None))
        assert decision == Decision(Reason.INVALID_TRANSACTION)
        assert decision.commands == ()
        assert decision.session is None

    @pytest.mark.parametrize("layout", ["009", "002", "000"], ids=["009", "002", "000"])
    def test_unknown_cup_layout(self, layout: str) -> None:
        """A CUP 60.3 that names no key block layout is a FORMAT_ERROR, with nothing recorded."""
        decision = signon(_cup_request(layout), NO_VIEW, _context(CUP))
        assert decision == Decision(Reason.FORMAT_ERROR)

    def test_cup_without_field_60(self) -> None:
        """A CUP sign-on whose F60 is missing names no layout: FORMAT_ERROR."""
        request = _cup_request()
        request = replace(request, key_layout="")  # admission reads no 60.3: no layout
        assert signon(request, NO_VIEW, _context(CUP)) == Decision(Reason.FORMAT_ERROR)

    def test_fresh_keys_are_required(self) -> None:
        """A sign-on context without fresh keys is a pipeline bug, caught by an assertion."""
        with pytest.raises(AssertionError):
            signon(_cup_request(), NO_VIEW, _context(CUP, fresh=None))


class TestSignoff:
    """signoff forgets the session and its keys."""

    @pytest.mark.parametrize(
        ("dialect", "request_"),
        [
            pytest.param(CUP, _cup_request("002", Kind.SIGNOFF, "0820"), id="cup"),
            pytest.param(ISO87, _iso87_request("002", Kind.SIGNOFF), id="iso87binary"),
        ],
    )
    def test_approved_and_keys_forgotten(self, dialect: Dialect, request_: Request) -> None:
        """Sign-off is approved, records a session without keys and clears the terminal's keys."""
        decision = signoff(request_, NO_VIEW, Context(now=NOW, rrn=None, dialect=dialect))
        assert decision.reason is Reason.APPROVED
        assert decision.fields == {}
        assert _session_command(decision) == SaveSession(
            tid=TID, mid=MID, signed_on=False, batch_number=request_.batch_number, operator=None,
            tpk_under_tmk=None, tak_under_tmk=None, tdk_under_tmk=None, at=NOW,
        )  # fmt: skip
        assert decision.session == SessionUpdate(False, NO_KEYS, request_.batch_number, None)

    def test_deterministic(self) -> None:
        """The same sign-off gives an equal Decision, whatever TMK or fresh keys the context holds."""
        request = _iso87_request("002", Kind.SIGNOFF)
        plain = Context(now=NOW, rrn=None, dialect=ISO87)
        assert signoff(request, NO_VIEW, _context(ISO87)) == signoff(request, NO_VIEW, plain)
