"""Sign-on and sign-off: issue working keys under the TMK, or forget them. Pure: keys come in via Context."""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, SessionUpdate, hhmmss, mmdd
from iso_host.core.terminals import NO_KEYS, WorkingKeys
from iso_host.ledger.model import LedgerView, SaveSession
from iso_host.security import CupWorkingKeys, key_check_value, wrap_key
from iso_host.styles import family_of
from iso_host.vocab import Kind, Reason


def _issued_keys(context: Context, request: Request) -> tuple[WorkingKeys, bytes] | None:
    """The keys to issue and the key block that carries them, or None for a layout the family does not know."""
    assert context.tmk is not None
    fresh = context.fresh_keys
    assert fresh is not None
    assert fresh.tpk is not None
    assert fresh.tak is not None
    issued = family_of(context.dialect).issue_keys(context.tmk, CupWorkingKeys(fresh.tpk, fresh.tak, fresh.tdk),
                                                  request.key_layout)  # fmt: skip
    if issued is None:
        return None
    keys, key_block = issued
    return WorkingKeys(keys.tpk, keys.tak, keys.tdk), key_block


def _wrapped(tmk: bytes, key: bytes | None) -> bytes | None:
    return wrap_key(tmk, key) if key is not None else None


def _check(key: bytes | None) -> bytes | None:
    """The check value stored with a wrapped key: at start the host unwraps the key and compares (a changed TMK)."""
    return key_check_value(key) if key is not None else None


def signon(request: Request, _view: LedgerView, context: Context) -> Decision:
    """Issue fresh working keys wrapped under the TMK, with check values, and record the session."""
    assert request.kind is Kind.SIGNON
    if context.tmk is None:
        return Decision(Reason.INVALID_TRANSACTION)  # a terminal without a TMK cannot receive keys
    issued = _issued_keys(context, request)
    if issued is None:
        return Decision(Reason.FORMAT_ERROR)
    keys, key_block = issued
    key_field = context.dialect.security.signon_key_field
    assert key_field is not None, "a dialect with a signon kind names its key block field"
    session = SaveSession(
        tid=request.tid, mid=request.mid, signed_on=True, batch_number=request.batch_number,
        operator=request.operator, tpk_under_tmk=_wrapped(context.tmk, keys.tpk),
        tak_under_tmk=_wrapped(context.tmk, keys.tak), tdk_under_tmk=_wrapped(context.tmk, keys.tdk), at=context.now,
        keyed=True,  # from now on its MACs are mandatory, after a sign-off too, until an operator resets it
        tpk_kcv=_check(keys.tpk), tak_kcv=_check(keys.tak), tdk_kcv=_check(keys.tdk),
    )  # fmt: skip
    fields = {
        "12": hhmmss(context.now),
        "13": mmdd(context.now),
        key_field: key_block.hex().upper(),
    }
    update = SessionUpdate(True, keys, request.batch_number, request.operator)
    return Decision(Reason.APPROVED, fields, (session,), update)


def signoff(request: Request, _view: LedgerView, context: Context) -> Decision:
    """Forget the session: later financial requests need a new sign-on (where the dialect asks for one). A terminal
    that has been keyed stays keyed (``keyed`` left alone): an unauthenticated sign-off cannot switch its MACs off."""
    assert request.kind is Kind.SIGNOFF
    session = SaveSession(
        tid=request.tid, mid=request.mid, signed_on=False, batch_number=request.batch_number, operator=None,
        tpk_under_tmk=None, tak_under_tmk=None, tdk_under_tmk=None, at=context.now,
    )  # fmt: skip
    update = SessionUpdate(False, NO_KEYS, request.batch_number, None)
    return Decision(Reason.APPROVED, {}, (session,), update)
