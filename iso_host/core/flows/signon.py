"""Sign-on and sign-off: issue working keys under the TMK, or forget them. Pure: keys come in via Context."""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, SessionUpdate
from iso_host.core.terminals import NO_KEYS, WorkingKeys
from iso_host.ledger.model import LedgerView, SaveSession
from iso_host.security import build_cup_key_block, build_iso87_key_block, wrap_key
from iso_host.vocab import Kind, Reason

SINGLE_DES_BYTES = 8
# CUP 60.3 layouts: which keys are single-length. TAK is single-length in all three (CUP.md).
CUP_KEY_LENGTHS = {"001": (8, 8, None), "003": (16, 8, None), "004": (16, 8, 16)}


def _issued_keys(context: Context, request: Request) -> tuple[WorkingKeys, bytes] | None:
    """The keys to issue and the key block that carries them, or None for an unknown CUP layout."""
    assert context.tmk is not None
    assert context.fresh_keys is not None
    fresh = context.fresh_keys
    assert fresh.tpk is not None
    assert fresh.tak is not None
    assert fresh.tdk is not None
    if context.dialect.security.key_block == "cup":
        layout = context.dialect.value_of(request.message, "60.3") or ""
        if layout not in CUP_KEY_LENGTHS:
            return None
        tpk_bytes, tak_bytes, tdk_bytes = CUP_KEY_LENGTHS[layout]
        keys = WorkingKeys(fresh.tpk[:tpk_bytes], fresh.tak[:tak_bytes], fresh.tdk[:tdk_bytes] if tdk_bytes else None)
        assert keys.tpk is not None
        assert keys.tak is not None
        return keys, build_cup_key_block(context.tmk, layout, keys.tpk, keys.tak, keys.tdk)
    keys = WorkingKeys(fresh.tpk, fresh.tak)
    return keys, build_iso87_key_block(context.tmk, fresh.tpk, fresh.tak)


def _wrapped(tmk: bytes, key: bytes | None) -> bytes | None:
    return wrap_key(tmk, key) if key is not None else None


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
    )  # fmt: skip
    fields = {
        "12": context.now.strftime("%H%M%S"),
        "13": context.now.strftime("%m%d"),
        key_field: key_block.hex().upper(),
    }
    update = SessionUpdate(True, keys, request.batch_number, request.operator)
    return Decision(Reason.APPROVED, fields, (session,), update)


def signoff(request: Request, _view: LedgerView, context: Context) -> Decision:
    """Forget the session: later financial requests need a new sign-on (where the dialect asks for one)."""
    assert request.kind is Kind.SIGNOFF
    session = SaveSession(
        tid=request.tid, mid=request.mid, signed_on=False, batch_number=request.batch_number, operator=None,
        tpk_under_tmk=None, tak_under_tmk=None, tdk_under_tmk=None, at=context.now,
    )  # fmt: skip
    update = SessionUpdate(False, NO_KEYS, request.batch_number, None)
    return Decision(Reason.APPROVED, {}, (session,), update)
