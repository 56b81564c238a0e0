"""Generic flows: what a dialect gives kinds of its own without code (``flow = "..."`` in ``[[kinds]]``). Pure.

- ``answer``: approve with the fields the kind's ``reply`` lists (a terminal's status upload, a script result
  notification, a private network-management message), recording nothing.
- ``download_status``, ``download``, ``download_end``: serve a ``[downloads]`` set the way CUP terminals fetch
  IC public keys and IC parameters (../shared/CUP.md): the status answer lists every record's identity TLVs,
  a download answers the record whose identity the request's TLV names, the end approves. The data field
  (the family's ``download_field``, F62 in cup) starts with one ASCII flag: ``1`` the answer is whole, ``2``
  a status list holds only what fits in the field, ``0`` nothing matched; then the TLV data objects.
- ``parameters``: serve a parameter file whole in that field (CUP's POS parameter transfer, 0800 60.3 = 360 or
  364: 2-digit tags, each with a value of fixed length; ``wire/parameters.py``), with the terminal's own merchant
  name where it has one. No flag: the file's size is checked against the field when the dialect loads.
"""

from __future__ import annotations

from iso_host.core.flows.base import Context, Decision, Request, reply_fields
from iso_host.ledger.model import LedgerView
from iso_host.security import TlvItem, build_tlv
from iso_host.styles import family_of
from iso_host.vocab import Reason
from iso_host.wire.downloads import MAX_FIELD_BYTES, DownloadSet, Record
from iso_host.wire.parameters import ParameterSet

WHOLE, NOTHING = b"1", b"0"


def answer(request: Request, _view: LedgerView, context: Context) -> Decision:
    """Approve with the kind's reply fields; nothing is recorded."""
    assert request.rule is not None, "admission passes the kind's rule to a generic flow"
    return Decision(Reason.APPROVED, reply_fields(context) | dict(request.rule.reply))


def _served(request: Request, context: Context) -> DownloadSet | ParameterSet:
    assert request.rule is not None
    assert request.rule.download is not None, "the dialect checks that a data kind names a set"
    return context.dialect.downloads[request.rule.download]


def _download_set(request: Request, context: Context) -> DownloadSet:
    served = _served(request, context)
    assert isinstance(served, DownloadSet), "the dialect checks that a download kind names a record file"
    return served


def _field(context: Context, payload: bytes) -> dict[str, str]:
    return {family_of(context.dialect).download_field: payload.hex().upper()}


def _tlv(record: Record) -> bytes:
    return build_tlv(TlvItem(tag, value) for tag, value in record)


def download_status(request: Request, _view: LedgerView, context: Context) -> Decision:
    """The identity of every record in the set, as many as the field holds (the flag says whether all did)."""
    listed = b""
    whole = True
    served = _download_set(request, context)
    for record in served.records:
        entry = _tlv(served.identity_of(record))
        if len(listed) + len(entry) + 1 > MAX_FIELD_BYTES:
            whole = False
            break
        listed += entry
    flag = WHOLE if whole else b"2"  # 2: more records than one answer holds
    return Decision(Reason.APPROVED, reply_fields(context) | _field(context, flag + listed))


def download(request: Request, _view: LedgerView, context: Context) -> Decision:
    """The record the request's identity TLV names (the first when it names none); flag 0 when none matches."""
    record = _download_set(request, context).find(dict(request.download_ask))
    payload = WHOLE + _tlv(record) if record is not None else NOTHING
    return Decision(Reason.APPROVED, reply_fields(context) | _field(context, payload))


def download_end(request: Request, _view: LedgerView, context: Context) -> Decision:
    """The terminal has what it needs: approve."""
    _download_set(request, context)
    return Decision(Reason.APPROVED, reply_fields(context))


def parameters(request: Request, _view: LedgerView, context: Context) -> Decision:
    """The parameter file in the data field, with the terminal's merchant name in its entry when it has one."""
    served = _served(request, context)
    assert isinstance(served, ParameterSet), "the dialect checks that a parameters kind names a parameter file"
    return Decision(Reason.APPROVED, reply_fields(context) | _field(context, served.encode(request.merchant_name)))
