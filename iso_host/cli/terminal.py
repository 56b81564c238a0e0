"""`iso-host terminal`: one terminal, talking to a host, keeping its state (STAN, keys, batch) in a file.

The actions themselves are ``iso_host.terminal.session``; scripted sessions (``terminal run``)
``iso_host.terminal.script``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Final, TypeAlias

from iso_host.cli.exit_codes import EXIT_NEGATIVE, EXIT_OK
from iso_host.cli.terminal_output import field_lines, hint, named_line, result_json, slip_of, use_colour, verdict_line
from iso_host.clock import local_now
from iso_host.config import DEMO_MID, DEMO_TID, DEMO_TMK, hex_key
from iso_host.core.test_cards import DEFAULT_EMV_SCHEME
from iso_host.errors import ConfigError
from iso_host.ledger.model import BatchTotals
from iso_host.log import configure
from iso_host.security import EMV_SCHEMES
from iso_host.terminal import batch as book
from iso_host.terminal.arguments import (
    check_amount,
    check_date,
    check_expiry,
    check_mid,
    check_pan,
    check_pin,
    check_psn,
    check_rrn,
    check_stan,
    check_tid,
)
from iso_host.terminal.client import ClientState
from iso_host.terminal.context import DEFAULT_TIMEOUT_S, TEST_PAN, Params, Session, open_session, state_path_of
from iso_host.terminal.receipt import render
from iso_host.terminal.script import run_session
from iso_host.terminal.session import ACTIONS
from iso_host.terminal.status import status_json, status_lines
from iso_host.wire import Message, load_dialect

EPILOG: Final = """exit codes:
  0  approved (F39 00)
  1  declined (any other F39; its meaning is printed)
  2  error: a bad argument or state file, no connection, no answer (a financial request is then reversed), a
     response MAC that does not verify"""
RECEIPT_ACTIONS: Final = ("sale", "void", "refund", "settle")
OFFLINE_ACTIONS: Final = ("status", "reset")


def _params(args: argparse.Namespace) -> Params:
    """The action's parameters, each checked against its rule (``terminal/arguments.py``); a chip sale or pre-auth
    takes --chip and --imk together.

    Raises:
        ConfigError: one line naming the option and its rule.
    """
    chip, imk = getattr(args, "chip", False), getattr(args, "imk", None)
    if chip and not imk:
        raise ConfigError("--chip: give the card's issuer master key with --imk (32 hex digits)")
    if imk and not chip:
        raise ConfigError("--imk: only for a chip request (--chip)")
    if (amount := getattr(args, "amount", None)) is not None:
        check_amount(amount, "--amount" if args.action in ("send", "preauth-void") else "AMOUNT")
    checks: dict[str, Callable[[str], str]] = {"pan": check_pan, "expiry": check_expiry, "pin": check_pin,
                                               "date": check_date, "psn": check_psn, "rrn": check_rrn}  # fmt: skip
    for name, check in checks.items():
        if (value := getattr(args, name, None)) is not None:
            check(value)
    if (stan := getattr(args, "stan", None)) is not None:
        args.stan = check_stan(stan)
    if getattr(args, "last", False):
        args.stan = book.LAST
    return Params.from_args(args)


def _print_result(args: argparse.Namespace, session: Session, response: Message, before: tuple[int, BatchTotals],
                  notes: list[str]) -> None:  # fmt: skip
    """The response as text (or the one JSON object of --json), then the slip with --receipt."""
    dialect = session.dialect
    if args.json:
        document = result_json(args.action, session.last_request, response, dialect,
                               state_file=str(session.state_path), notes=notes, named=session.named,
                               mac_verified=session.mac_verified)  # fmt: skip
        print(json.dumps(document))
        return
    if args.action == "signon" and response.fields.get("39") == "00":
        print("working keys received; check values match")
    for line in field_lines(response, dialect):
        print(line)
    if (verdict := verdict_line(response, dialect, use_colour(sys.stdout, os.environ))) is not None:
        print(verdict)
    signed_on = session.state.tak_under_tmk is not None or session.tak is not None or session.bdk is not None
    if (advice := hint(response.fields.get("39"), dialect, signed_on=signed_on, tid=args.tid, batch=before[0])):
        print(advice)
    if session.mac_verified:
        print("response MAC verified")
    if getattr(args, "receipt", False):
        batch, totals = before
        slip = slip_of(args.action, session.last_request, response, dialect, tid=args.tid, mid=args.mid,
                       merchant=args.merchant_name, when=local_now(), batch=batch, named=session.named,
                       totals=totals)  # fmt: skip
        print()
        for line in render(slip):
            print(line)


async def _run(args: argparse.Namespace) -> int:
    dialect = load_dialect(args.dialect)
    params = _params(args)
    session = open_session(args, dialect, args.tid, args.mid)
    before = (session.state.batch, book.totals(session.state.items))
    captured = io.StringIO()
    # --json: what an action says on the way (a reversal sent, a batch uploaded) goes into "notes", not stdout
    with contextlib.redirect_stdout(captured) if args.json else contextlib.nullcontext():
        await session.connect()
        try:
            response = await ACTIONS[args.action](session, params)
        finally:
            await session.client.close()
            session.state.save(session.state_path)  # the batch as the action left it
        if session.named is not None and not args.json:
            print(named_line(args.action, session.named))
    _print_result(args, session, response, before, captured.getvalue().splitlines())
    return EXIT_OK if response.fields.get("39") == "00" else EXIT_NEGATIVE


def _offline(args: argparse.Namespace) -> int:
    """``status`` and ``reset``: the state file alone, no host."""
    dialect = load_dialect(args.dialect)
    path = state_path_of(args, dialect, args.tid)
    tmk = hex_key("--tmk", args.tmk)
    state = ClientState.load(path) if path.exists() else None
    if args.action == "status":
        if args.json:
            print(json.dumps(status_json(path, state, tmk)))
        else:
            for line in status_lines(path, state, tmk):
                print(line)
        return EXIT_OK
    if state is None:
        message = f"nothing to remove: {path} does not exist"
    else:
        path.unlink()
        message = f"removed {path} (STAN, batch {state.batch:06d} of {len(state.items)} transactions, keys"
        message += f", {len(state.pending_reversals)} pending reversals)" if state.pending_reversals else ")"
        if state.items:
            message += "; the host still holds that batch open: settle it from a fresh ledger, or expect 94/77"
    print(json.dumps({"removed": str(path) if state else None, "state_file": str(path)}) if args.json else message)
    return EXIT_OK


def command_terminal(args: argparse.Namespace) -> int:
    configure("console" if sys.stderr.isatty() else "json", "warning", sys.stderr)
    check_tid(args.tid)
    check_mid(args.mid)
    if args.action in OFFLINE_ACTIONS:
        return _offline(args)
    if args.action == "run":
        return _run_script(args)
    return asyncio.run(_run(args))


def _run_script(args: argparse.Namespace) -> int:
    """``run SESSION.toml``: a line per step (or, with --json, one object with them and whether all passed)."""
    if not args.json:
        return EXIT_OK if asyncio.run(run_session(args)) else EXIT_NEGATIVE
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        passed = asyncio.run(run_session(args))
    print(json.dumps({"action": "run", "session": args.session, "passed": passed,
                      "steps": captured.getvalue().splitlines()}))  # fmt: skip
    return EXIT_OK if passed else EXIT_NEGATIVE


def _original_options(parser: argparse.ArgumentParser, kind: str = "sale") -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stan", help="the original's STAN (F11 of its output), from this terminal's batch")
    which.add_argument("--rrn", help="the original's RRN (F37), from this terminal's batch")
    which.add_argument("--last", action="store_true",
                       help=f"the newest {kind} of this terminal's batch that is still approved")  # fmt: skip


def _preauth_options(parser: argparse.ArgumentParser) -> None:
    """How a pre-auth void or a completion names its pre-auth: from this terminal's batch, or as CUP terminals key
    it in (approval code and date) when it was approved before the batch's last settlement."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stan", help="the pre-auth's STAN, from this terminal's batch")
    which.add_argument("--rrn", help="the pre-auth's RRN, from this terminal's batch")
    which.add_argument("--last", action="store_true", help="the newest open pre-auth of this terminal's batch")
    which.add_argument("--auth-code", help="the pre-auth's approval code (F38), as the host gave it")
    parser.add_argument("--date", help="with --auth-code: the pre-auth's date, MMDD (default today)")
    parser.add_argument("--pan", default=TEST_PAN, help="with --auth-code: the card (default: a test card)")


def _operator(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", default="001", help="operator code (CUP F63; default %(default)s)")


def _receipt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--receipt", action="store_true", help="also print the slip a POS would print (40 columns)")
    parser.add_argument("--merchant-name", help="with --receipt: the name at the top of the slip")


def _chip_options(parser: argparse.ArgumentParser) -> None:
    """A request read from the chip (a sale, a pre-auth): the card's key and cryptogram version."""
    parser.add_argument("--chip", action="store_true", help="read from the chip: F55 with an ARQC computed under"
                        " --imk, F23; the ARPC in the reply (F55 tag 91) must verify")  # fmt: skip
    parser.add_argument("--imk", help="with --chip: the card's issuer master key for application cryptograms, hex")
    parser.add_argument("--emv-scheme", default=DEFAULT_EMV_SCHEME, choices=list(EMV_SCHEMES),
                        help=f"with --chip: the card's cryptogram version (default {DEFAULT_EMV_SCHEME})")  # fmt: skip
    parser.add_argument("--psn", default="00", help="with --chip: the PAN sequence number, two digits (default 00)")


def _card_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pan", default=TEST_PAN, help="card number, 12 to 19 digits (default: a test card,"
                        " 476173******0010)")  # fmt: skip
    parser.add_argument("--expiry", help="the card's expiry, YYMM (default: none sent)")
    parser.add_argument("--pin", help="PIN, 4 to 12 digits: sends an encrypted PIN block (F52) under the PIN key in"
                        " force")  # fmt: skip
    parser.add_argument("--mac", help="MAC algorithm, overriding the dialect's: aes-cmac, cup-ecb, x9.19 or x9.9")
    parser.add_argument("--tak", help="static MAC key, hex (instead of the keys from sign-on)")
    parser.add_argument("--bdk", help="DUKPT base derivation key, 32 hex digits (test labs): sends a KSN, DUKPT PIN"
                        " and MAC")  # fmt: skip


Actions: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _action(actions: Actions, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    return parser


def _preauth_parsers(actions: Actions) -> argparse.ArgumentParser:
    """The pre-authorisation family's actions (CUP); returns the pre-auth's, which takes the card options too."""
    preauth = _action(actions, "preauth", "CUP pre-authorisation: approve AMOUNT and hold it on the card")
    preauth.add_argument("amount", help="amount in major units, e.g. 12.34")
    preauth_void = _action(actions, "preauth-void", "cancel an open pre-auth (CUP), releasing its hold")
    _preauth_options(preauth_void)
    preauth_void.add_argument("--amount", help="the pre-auth's amount, with --auth-code (else from the batch)")
    _operator(preauth_void)
    complete = _action(actions, "complete", "complete a pre-auth (CUP): take AMOUNT, at most the tolerance above"
                       " the pre-auth")  # fmt: skip
    complete.add_argument("amount", help="amount in major units")
    _preauth_options(complete)
    complete_void = _action(actions, "complete-void", "void a completion (CUP) of this terminal's open batch")
    _original_options(complete_void, "completion")
    _operator(complete_void)
    return preauth


def _amend_parsers(actions: Actions) -> None:
    """CUP's offline adjust and tip: each names a sale of this batch."""
    adjust = _action(actions, "adjust", "CUP: correct an offline sale of this terminal's open batch to AMOUNT")
    adjust.add_argument("amount", help="the sale's corrected amount, in major units")
    _original_options(adjust)
    tip = _action(actions, "tip", "CUP: add a tip of AMOUNT to a sale of this terminal's open batch (once)")
    tip.add_argument("amount", help="the tip alone, in major units")
    _original_options(tip)


def _terminal_options(terminal: argparse.ArgumentParser) -> None:
    add = terminal.add_argument
    add("--to", default="127.0.0.1:8583", metavar="HOST:PORT", help="the host's address (default %(default)s)")
    add("--dialect", default="iso87binary", metavar="NAME",
        help="the host's dialect, a name or a dialect file (default %(default)s; iso-host dialects lists them)")
    add("--tid", default=DEMO_TID, help="terminal ID, F41: exactly 8 characters (default %(default)s, the demo"
        " terminal)")
    add("--mid", default=DEMO_MID, help="merchant ID, F42: exactly 15 characters (default %(default)s)")
    add("--state", metavar="FILE", help="terminal state file (default ~/.iso-host/terminal-TID-DIALECT-HOST_PORT.json:"
        " one per terminal, host and dialect)")
    add("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help="seconds to wait for the host's answer (default %(default)g); a financial request left unanswered is"
        " reversed")
    add("--no-auto-reversal", action="store_true", help="do not reverse a financial request the host left unanswered"
        " (default: reverse it at once, and keep trying)")
    add("--tmk", default=DEMO_TMK, metavar="HEX", help="terminal master key, 32 hex digits: unwraps sign-on keys,"
        " seals the state file's card numbers (default: the demo terminal's)")
    add("--json", action="store_true", help="print one JSON object (request, response, code, meaning, approved, rrn,"
        " state_file) instead of text")
    add("--tls", action="store_true", help="connect with TLS")
    add("--tls-ca", metavar="PEM", help="PEM CA that signed the host's certificate (default: the system's)")
    add("--tls-cert", metavar="PEM", help="PEM client certificate (mutual TLS)")
    add("--tls-key", metavar="PEM", help="PEM key of --tls-cert")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    terminal = commands.add_parser(
        "terminal", help="act as a terminal: send a request, print the response", epilog=EPILOG,
        description="Act as a terminal: send one request to the host and print its response field by field.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _terminal_options(terminal)
    actions = terminal.add_subparsers(dest="action", required=True, metavar="ACTION")
    sale = _action(actions, "sale", "purchase")
    sale.add_argument("amount", help="amount in major units, more than 0, e.g. 12.34")
    balance = _action(actions, "balance", "balance inquiry: the card's available balance comes back in F54")
    preauth = _preauth_parsers(actions)
    for chip_action in (sale, preauth):
        _chip_options(chip_action)
    for card_action in (sale, balance, preauth):
        _card_options(card_action)
    void = _action(actions, "void", "void a sale of this terminal's open batch")
    _original_options(void)
    _operator(void)
    reverse = _action(actions, "reverse", "reverse a sale or a void (as after a lost response)")
    _original_options(reverse, "transaction")
    refund = _action(actions, "refund", "refund part or all of a sale")
    refund.add_argument("amount", help="amount in major units")
    _original_options(refund)
    _amend_parsers(actions)
    settle = _action(actions, "settle", "settle the open batch; uploads it when the host's totals differ")
    for slip_action in (sale, void, refund, settle):
        _receipt(slip_action)
    _action(actions, "echo", "network test")
    _action(actions, "status", "show this terminal's state: host, dialect, next STAN, batch, keys' check values,"
            " pending reversals; sends nothing")  # fmt: skip
    _action(actions, "reset", "forget this terminal's state file (STAN, batch, keys); sends nothing")
    send = _action(actions, "send", "any request the dialect has a template for (qr_sale, status_upload, ...)")
    send.add_argument("template", help="the template's name (iso-host dialects shows the dialects)")
    send.add_argument("--amount", help="amount in major units, for templates that carry one")
    send.add_argument("--pan", default=TEST_PAN, help="card number, for templates that carry one")
    send.add_argument("--expiry", help="YYMM")
    _action(actions, "ic-download", "EMV: download and check every IC public key and IC parameter set")
    _action(actions, "parameter-download", "CUP: download the terminal parameters (0800 60.3=360), printed")
    signon = _action(actions, "signon", "sign on: receive working keys and keep them (wrapped) in --state")
    _operator(signon)
    _action(actions, "signoff", "sign off: the host forgets the session")
    run = _action(actions, "run", "run a scripted session (TOML): steps with expectations, in order")
    run.add_argument("session", help="session file, e.g. examples/business-day-iso87.toml")
    run.add_argument("--junit", metavar="OUT.xml", help="also write a JUnit XML report, one testcase per step")
    terminal.set_defaults(handler=command_terminal)
