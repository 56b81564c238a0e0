"""The terminal as a library: its actions (sale, balance, void, reverse, refund, settle, sign-on, sign-off, echo) on one
session (``context.Session``: a connection, the state file with STAN, keys and batch), used by ``iso-host terminal``
and by scripted sessions (``script.py``).

CUP's pre-authorisation family too: pre-auth, pre-auth void, completion (by the pre-auth's approval code and date, as
CUP terminals key them in, or by its STAN in this batch) and completion void; ``reverse`` reverses each of them. CUP's
offline adjust and tip of a sale of this batch, which the batch then counts and uploads at its new amount."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from iso_host.clock import local_now
from iso_host.errors import ConfigError
from iso_host.money import parse_amount
from iso_host.styles import UploadStep, family_of
from iso_host.terminal import batch as book
from iso_host.terminal import network
from iso_host.terminal.chip import (
    ChipCard,
    ChipError,
    ChipRequest,
    arpc_verifies,
    chip_request,
    issuer_authentication,
    issuer_scripts,
)
from iso_host.terminal.client import ClientError, MacKeys, dukpt_keys, pin_block_field
from iso_host.terminal.context import Params, Session
from iso_host.wire import Dialect, Message


def _card_request(session: Session, params: Params, kind: str, **values: Any) -> tuple[Message, MacKeys | None]:
    """A request that carries the card (sale, balance), with a PIN block and DUKPT where asked for."""
    dialect, state = session.dialect, session.state
    fields: dict[str, str] = {}
    mac = session.mac_keys()
    pin_key: bytes | None = None
    if session.bdk:
        ksn = state.next_ksn()
        pin_key, mac = dukpt_keys(session.bdk, ksn)
        if dialect.security.ksn_field is None:
            raise ConfigError(f"--bdk: dialect {dialect.name} has no KSN field for DUKPT")
        fields[dialect.security.ksn_field] = ksn.hex().upper()
    elif params.pin and (keys := state.keys(session.tmk)) is not None:
        pin_key = keys[0]
    if params.pin:
        if pin_key is None:
            raise ConfigError("--pin: no PIN key; sign on first (iso-host terminal signon) or give --bdk")
        fields["52"] = pin_block_field(pin_key, params.pin, params.pan, dialect.security.pin_block_format)
    message = session.client.build(kind, local_now(), pan=params.pan, expiry=params.expiry or "", **values)
    message.fields.update(fields)
    return message, mac


def _chip_card(params: Params) -> ChipCard:
    """The card's chip for a chip sale: its ICC key from --imk, --pan, --psn and --emv-scheme.

    Raises:
        ConfigError: a bad --imk, --psn, --emv-scheme (the key never echoed).
    """
    assert params.imk is not None
    try:
        imk = bytes.fromhex(params.imk) if params.imk.isalnum() else b""
    except ValueError:
        imk = b""  # refused below for its length, without echoing it
    try:
        return ChipCard.derive(imk, pan=params.pan, pan_sequence=params.psn, scheme=params.emv_scheme)
    except ChipError as error:
        raise ConfigError(str(error)) from None


def _chip_sale(session: Session, message: Message, card: ChipCard) -> ChipRequest:
    """Add what a chip read adds to the sale (F22 051, F23, F55 with the ARQC); the ATC moves on in the state file."""
    chip = chip_request(card, amount_minor=int(message.fields["4"]), currency=message.fields.get("49", ""),
                        now=local_now(), atc=session.state.next_atc())  # fmt: skip
    message.fields.update(chip.fields)
    return chip


def _check_arpc(session: Session, card: ChipCard, chip: ChipRequest, stan: str, response: Message) -> None:
    """Print one line per issuer script (71, 72) the reply carries (reported, not run), then check the host's ARPC
    (F55 tag 91) as the card does at its second GENERATE AC and print "ARPC verified".

    Raises:
        ClientError: an approval without an ARPC, an ARPC that does not verify, an unreadable F55: the card would
            decline what the host approved (the terminal's batch keeps the sale, to be reversed).
    """
    approved = response.fields.get("39") == "00"
    try:
        issuer_data = issuer_authentication(response)
        for script in issuer_scripts(response):
            print(script.describe())
        if issuer_data is None and not approved:
            return  # a decline the card needs no ARPC for (a cryptogram that failed, for one)
        if issuer_data is not None and arpc_verifies(card, chip, issuer_data):
            print("ARPC verified")
            return
        if issuer_data is None:
            problem = "the approved response carries no ARPC (F55 tag 91)"
        else:
            problem = "the ARPC in the response's F55 tag 91 does not verify"
    except ChipError as error:
        problem = str(error)
    if approved:
        session.state.save(session.state_path)
        problem += f"; the card would decline what the host approved (reverse it: --stan {stan})"
    raise ClientError(problem)


async def _card_exchange(
    session: Session, params: Params, kind: str, **values: Any
) -> tuple[Message, Message, Callable[[], None]]:
    """Send a request that asks the card for money (a sale, a pre-auth), read from the chip with --chip --imk: the
    request, the response, and the card's check of the ARPC, to call once the terminal has kept what it approved."""
    card = _chip_card(params) if params.imk is not None else None
    message, mac = _card_request(session, params, kind, **values)
    chip = _chip_sale(session, message, card) if card is not None else None
    response = await session.send(message, mac)

    def check_arpc() -> None:
        if card is not None and chip is not None:
            _check_arpc(session, card, chip, message.fields["11"], response)

    return message, response, check_arpc


def _chip_item(message: Message) -> dict[str, str]:
    """What the terminal's batch keeps of a chip request: its field 55, which the chip upload sends."""
    return {"icc": message.fields["55"]} if "55" in message.fields else {}


async def _do_sale(session: Session, params: Params) -> Message:
    message, response, check_arpc = await _card_exchange(session, params, "sale",
                                                         amount=parse_amount(params.amount or ""))  # fmt: skip
    if response.fields.get("39") == "00":
        session.state.items.append({
            "kind": "sale", "stan": message.fields["11"], "rrn": response.fields.get("37", ""),
            "amount": int(message.fields["4"]), "pan": params.pan, "date": local_now().strftime("%m%d"),
            "status": book.APPROVED, **_chip_item(message),
        })  # fmt: skip
    check_arpc()
    return response


def _target(session: Session, params: Params, kind: str | None = None) -> book.Item:
    """The original an action names (--stan, --rrn or --last) in this terminal's batch; kept as ``session.named``,
    so that the command can say which one it acted on."""
    try:
        last = params.stan == book.LAST
        if last:
            item = book.newest_open(session.state.items, kind)
        else:
            item = book.find(session.state.items, stan=params.stan, rrn=params.rrn, kind=kind)
    except LookupError as error:
        raise ConfigError(f"{'--last' if last else '--stan/--rrn'}: {error}") from None
    session.named = dict(item)  # as named, before the action changes it (an adjust's new amount)
    return item


async def _do_void(session: Session, params: Params) -> Message:
    sale = _target(session, params, "sale")
    message = session.client.build(
        "void", local_now(), amount=sale["amount"], pan=sale["pan"], rrn=sale["rrn"], original_stan=int(sale["stan"]),
        original_batch=session.state.batch, operator=params.operator,
    )  # fmt: skip
    response = await session.send(message, session.mac_keys())
    if response.fields.get("39") == "00":
        sale["status"] = book.VOIDED
        session.state.items.append({"kind": "void", "stan": message.fields["11"], "rrn": response.fields.get("37", ""),
                                    "amount": sale["amount"], "pan": sale["pan"], "status": book.APPROVED,
                                    "original_stan": sale["stan"]})  # fmt: skip
    return response


async def _do_reverse(session: Session, params: Params) -> Message:
    target = _target(session, params)
    values: dict[str, Any] = {"amount": target["amount"], "pan": target["pan"], "original_stan": int(target["stan"])}
    values |= family_of(session.dialect).reversal_values(target["kind"])
    preauth_family = target["kind"] in book.PREAUTH_KINDS and "preauth_reversal" in session.dialect.templates
    template = "preauth_reversal" if preauth_family else "reversal"  # CUP: F25 06, not 00
    response = await session.send(_build(session, template, **values), session.mac_keys())
    # The host reverses only what is still approved (a voided sale's reversal changes nothing); so does the book.
    if response.fields.get("39") == "00" and target["status"] == book.APPROVED:
        book.apply_reversal(session.state.items, target)
    return response


async def _do_refund(session: Session, params: Params) -> Message:
    sale = _target(session, params, "sale")
    amount = parse_amount(params.amount or "")
    message = session.client.build("refund", local_now(), amount=amount, pan=sale["pan"], rrn=sale["rrn"],
                                   original_date=sale.get("date", ""))  # fmt: skip
    response = await session.send(message, session.mac_keys())
    if response.fields.get("39") == "00":
        session.state.items.append({
            "kind": "refund", "stan": message.fields["11"], "amount": amount, "rrn": response.fields.get("37", ""),
            "pan": sale["pan"], "status": book.APPROVED,
        })  # fmt: skip
    return response


def _balanced(response: Message, dialect: Dialect) -> bool:
    if response.fields.get("39") != "00":
        return False
    return family_of(dialect).balanced(response)


async def _settle_message(session: Session, processing_code: str) -> Message:
    totals = book.totals(session.state.items)
    fields = family_of(session.dialect).totals_fields(totals)
    overall = totals.overall
    message = session.client.build(
        "settlement", local_now(), processing_code=processing_code, totals=fields.get("48", ""),
        debit_count=overall.debit_count, debit_amount=overall.debit_minor, credit_count=overall.credit_count,
        credit_amount=overall.credit_minor, operator="001",
    )  # fmt: skip
    message.fields.update(fields)
    return await session.send(message, mac=None)


async def _upload(session: Session) -> Message:
    """Send the batch, then the end of the upload (cup 0320 60.3=202, iso87 0500 96xxxx)."""
    family = family_of(session.dialect)
    steps = family.upload_steps(session.client.build, book.upload_records(session.state.items), local_now())
    last = steps.pop() if family.settle_after_upload is None else None
    await _send_steps(session, steps)
    if last is not None:
        return await session.send(last.message, mac=None)
    return await _settle_message(session, family.settle_after_upload or "")


async def _send_steps(session: Session, steps: list[UploadStep]) -> None:
    """Send upload steps in order; ClientError naming the first the host refuses."""
    for step in steps:
        if (await session.send(step.message, mac=None)).fields.get("39") != "00":
            raise ClientError(f"the host refused {step.refused}")


async def _do_settle(session: Session, params: Params) -> Message:
    response = await _settle_message(session, "920000")
    if _balanced(response, session.dialect):
        family, records = family_of(session.dialect), book.upload_records(session.state.items)
        if steps := family.balanced_upload_steps(session.client.build, records, local_now()):
            await _send_steps(session, steps)
            chip_count = len(steps) - 1  # the last ends the upload
            print(f"{chip_count} chip transaction{'' if chip_count == 1 else 's'} uploaded")
    else:
        if response.fields.get("39") not in ("00", session.dialect.response_code("OUT_OF_BALANCE")):
            return response  # refused outright (a batch the host does not hold open)
        print("out of balance: uploading the batch")
        response = await _upload(session)
    if response.fields.get("39") == "00":
        session.state.batch += 1
        session.state.items = []
        session.state.save(session.state_path)
        print(f"batch settled; batch {session.state.batch} is open")
    return response


async def _do_signon(session: Session, params: Params) -> Message:
    message = session.client.build("signon", local_now(), operator=params.operator)
    response = await session.send(message, mac=None)
    if response.fields.get("39") == "00":
        session.client.accept_signon(response, message, session.tmk)
        session.state.save(session.state_path)
    return response


async def _do_signoff(session: Session, params: Params) -> Message:
    response = await session.send(session.client.build("signoff", local_now()), mac=None)
    if response.fields.get("39") == "00":
        session.state.tpk_under_tmk = session.state.tak_under_tmk = None
        session.state.save(session.state_path)
    return response


async def _do_balance(session: Session, params: Params) -> Message:
    message, mac = _card_request(session, params, "balance")
    return await session.send(message, mac)


async def _do_send(session: Session, params: Params) -> Message:
    values: dict[str, Any] = {"pan": params.pan, "expiry": params.expiry or ""}
    if params.amount is not None:
        values["amount"] = parse_amount(params.amount)
    response = await network.send_template(session.send, session.client, params.template or "", values,
                                           session.mac_keys())  # fmt: skip
    if response.fields.get("39") == "00" and "37" in response.fields and "amount" in values:
        # An approved request with an RRN and an amount (a QR sale, an offline sale) is a sale of this batch.
        session.state.items.append({
            "kind": "sale", "stan": response.fields.get("11", ""), "rrn": response.fields["37"],
            "amount": values["amount"], "pan": params.pan if "2" in response.fields else "",
            "date": local_now().strftime("%m%d"), "status": book.APPROVED,
        })  # fmt: skip
    return response


async def _do_ic_download(session: Session, _params: Params) -> Message:
    response, fetched = await network.ic_download(session.send, session.client)
    for done in fetched:
        print(f"{done.what}: {len(done.records)} downloaded ({', '.join(done.records)})")
    return response


async def _do_parameter_download(session: Session, _params: Params) -> Message:
    response, parameters = await network.parameter_download(session.send, session.client)
    for parameter, value in parameters:
        print(f"{parameter.tag} {parameter.name}: {value}")
    return response


async def _do_echo(session: Session, params: Params) -> Message:
    return await session.send(session.client.build("echo", local_now()), mac=None)


def _require(session: Session, template: str) -> None:
    """A dialect without this template cannot send the request (the pre-auth family is CUP's)."""
    if template not in session.dialect.templates:
        raise ConfigError(f"dialect {session.dialect.name} has no {template} request (no [templates.{template}])")


def _build(session: Session, template: str, **values: Any) -> Message:
    _require(session, template)
    return session.client.build(template, local_now(), **values)


def _named_preauth(session: Session, params: Params) -> book.Item:
    """The pre-auth a void or completion names: from this terminal's batch by --stan or --rrn, or by --auth-code
    (and --date, default today) when it is not in this batch (approved before the last settlement)."""
    if params.stan or params.rrn:
        return _target(session, params, "preauth")
    if not params.auth_code:
        raise ConfigError("--stan, --rrn or --auth-code: name the pre-auth")
    date = params.date or local_now().strftime("%m%d")
    if len(date) != len("MMDD") or not date.isdigit():
        raise ConfigError(f"--date: expected MMDD, got {date!r}")
    return {"kind": "preauth", "stan": "0", "batch": 0, "rrn": "", "auth_code": params.auth_code,
            "amount": parse_amount(params.amount) if params.amount else 0, "pan": params.pan, "date": date,
            "status": book.APPROVED}  # fmt: skip


def _keep(session: Session, kind: str, message: Message, response: Message, **item: Any) -> None:
    """Add an approved request of the pre-auth family to the terminal's batch."""
    session.state.items.append({
        "kind": kind, "stan": message.fields["11"], "rrn": response.fields.get("37", ""),
        "amount": int(message.fields["4"]), "status": book.APPROVED, **item,
    })  # fmt: skip


async def _do_preauth(session: Session, params: Params) -> Message:
    # iso87 calls its pre-auth an authorisation
    template = "authorisation" if "authorisation" in session.dialect.templates else "preauth"
    _require(session, template)
    message, response, check_arpc = await _card_exchange(session, params, template,
                                                         amount=parse_amount(params.amount or ""))  # fmt: skip
    if response.fields.get("39") == "00":
        _keep(session, "preauth", message, response, pan=params.pan, auth_code=response.fields.get("38", ""),
              date=response.fields.get("13") or local_now().strftime("%m%d"), batch=session.state.batch,
              transmitted=message.fields.get("7", ""))  # fmt: skip
    check_arpc()
    return response


async def _do_preauth_void(session: Session, params: Params) -> Message:
    held = _named_preauth(session, params)
    amount = parse_amount(params.amount) if params.amount else int(held["amount"])
    message = _build(
        session, "preauth_void", amount=amount, pan=held["pan"], auth_code=held.get("auth_code", ""),
        original_batch=int(held.get("batch", session.state.batch)), original_stan=int(held["stan"]),
        original_date=held.get("date", ""), operator=params.operator,
    )  # fmt: skip
    response = await session.send(message, session.mac_keys())
    if response.fields.get("39") == "00":
        held["status"] = book.VOIDED
        _keep(session, "preauth_void", message, response, pan=held["pan"], original_stan=held["stan"])
    return response


async def _do_complete(session: Session, params: Params) -> Message:
    held = _named_preauth(session, params)
    amount = parse_amount(params.amount or "")
    message = _build(session, "completion", amount=amount, pan=held["pan"], auth_code=held.get("auth_code", ""),
                     original_date=held.get("date", ""), original_stan=int(held["stan"]),
                     original_transmitted=held.get("transmitted") or "0" * 10)  # iso87 F90: the authorisation's F7
    response = await session.send(message, session.mac_keys())
    if response.fields.get("39") == "00":
        held["status"] = book.COMPLETED
        _keep(session, "completion", message, response, pan=held["pan"], original_stan=held["stan"])
    return response


async def _do_complete_void(session: Session, params: Params) -> Message:
    completed = _target(session, params, "completion")
    message = _build(
        session, "completion_void", amount=completed["amount"], pan=completed["pan"], rrn=completed["rrn"],
        original_stan=int(completed["stan"]), original_batch=session.state.batch, operator=params.operator,
    )  # fmt: skip
    response = await session.send(message, session.mac_keys())
    if response.fields.get("39") == "00":
        completed["status"] = book.VOIDED
        book.reopen(session.state.items, completed)
        _keep(session, "completion_void", message, response, pan=completed["pan"], original_stan=completed["stan"])
    return response


async def _amend(session: Session, params: Params, template: str) -> tuple[book.Item, int, Message]:
    """Send an adjust or a tip naming a sale of this batch (61.1 batch + 61.2 STAN, and F37 its RRN): the sale, the
    request's amount and the host's answer."""
    sale = _target(session, params, "sale")
    amount = parse_amount(params.amount or "")
    message = _build(session, template, amount=amount, pan=sale["pan"], rrn=sale["rrn"],
                     original_stan=int(sale["stan"]), original_batch=session.state.batch)  # fmt: skip
    return sale, amount, await session.send(message, session.mac_keys())


async def _do_adjust(session: Session, params: Params) -> Message:
    """Correct an offline sale to AMOUNT (CUP 0220 60.1=32): the batch then counts and uploads it at AMOUNT (plus
    its tip, if it has one), as the host does."""
    sale, amount, response = await _amend(session, params, "adjust")
    if response.fields.get("39") == "00":
        sale["amount"] = amount + int(sale.get("tip", 0))
    return response


async def _do_tip(session: Session, params: Params) -> Message:
    """Add a tip of AMOUNT to a sale (CUP 0220 60.1=34): the batch then counts and uploads the sale with its tip."""
    sale, amount, response = await _amend(session, params, "tip")
    if response.fields.get("39") == "00":
        sale["tip"] = amount
        sale["amount"] = int(sale["amount"]) + amount
    return response


Action = Callable[[Session, Params], Awaitable[Message]]
ACTIONS: Final[dict[str, Action]] = {
    "sale": _do_sale, "void": _do_void, "reverse": _do_reverse, "refund": _do_refund, "settle": _do_settle,
    "signon": _do_signon, "signoff": _do_signoff, "echo": _do_echo, "balance": _do_balance,
    "preauth": _do_preauth, "preauth-void": _do_preauth_void, "complete": _do_complete,
    "complete-void": _do_complete_void, "send": _do_send, "ic-download": _do_ic_download,
    "adjust": _do_adjust, "tip": _do_tip,
    "parameter-download": _do_parameter_download,
}  # fmt: skip


