"""`iso-host terminal`: one terminal, talking to a host, keeping its state (STAN, keys, batch) in a file.

The actions themselves are ``iso_host.terminal.session``; scripted sessions (``terminal run``)
``iso_host.terminal.script``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from iso_host.cards import displayed
from iso_host.cli.exit_codes import EXIT_NEGATIVE, EXIT_OK
from iso_host.config import DEMO_MID, DEMO_TID, DEMO_TMK
from iso_host.core.test_cards import DEFAULT_EMV_SCHEME
from iso_host.errors import ConfigError
from iso_host.log import configure
from iso_host.security import EMV_SCHEMES
from iso_host.terminal.context import TEST_PAN, Params, open_session
from iso_host.terminal.script import run_session
from iso_host.terminal.session import ACTIONS
from iso_host.wire import Dialect, Message, load_dialect


def print_response(message: Message, dialect: Dialect) -> None:
    print(f"{'MTI':<5} {'':<32} {message.mti}")
    for field_id in sorted(message.fields, key=int):
        value = displayed(field_id, message.fields[field_id])
        description = str(dialect.spec.get(field_id, {}).get("desc", ""))[:32]
        print(f"F{field_id:<4} {description:<32} {value}")



def _params(args: argparse.Namespace) -> Params:
    """The action's parameters; a chip sale or pre-auth takes --chip and --imk together.

    Raises:
        ConfigError: --chip without --imk, or --imk without --chip.
    """
    chip, imk = getattr(args, "chip", False), getattr(args, "imk", None)
    if chip and not imk:
        raise ConfigError("--chip: give the card's issuer master key with --imk (32 hex digits)")
    if imk and not chip:
        raise ConfigError("--imk: only for a chip request (--chip)")
    return Params.from_args(args)


async def _run(args: argparse.Namespace) -> int:
    dialect = load_dialect(args.dialect)
    params = _params(args)
    session = open_session(args, dialect, args.tid, args.mid)
    await session.connect()
    try:
        response = await ACTIONS[args.action](session, params)
    finally:
        await session.client.close()
    session.state.save(session.state_path)  # the batch as the action left it
    if args.action == "signon" and response.fields.get("39") == "00":
        print("working keys received; check values match")
    print_response(response, dialect)
    if session.mac_keys() is not None and response.fields.get("39") == "00" and "64" in response.fields:
        print("response MAC verified")
    return EXIT_OK if response.fields.get("39") == "00" else EXIT_NEGATIVE


def command_terminal(args: argparse.Namespace) -> int:
    configure("console" if sys.stderr.isatty() else "json", "warning", sys.stderr)
    if args.action == "run":
        return EXIT_OK if asyncio.run(run_session(args)) else EXIT_NEGATIVE
    return asyncio.run(_run(args))


def _original_options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stan", help="the original's STAN, from this terminal's batch")
    which.add_argument("--rrn", help="the original's RRN, from this terminal's batch")


def _preauth_options(parser: argparse.ArgumentParser) -> None:
    """How a pre-auth void or a completion names its pre-auth: from this terminal's batch, or as CUP terminals key
    it in (approval code and date) when it was approved before the batch's last settlement."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stan", help="the pre-auth's STAN, from this terminal's batch")
    which.add_argument("--rrn", help="the pre-auth's RRN, from this terminal's batch")
    which.add_argument("--auth-code", help="the pre-auth's approval code (F38), as the host gave it")
    parser.add_argument("--date", help="with --auth-code: the pre-auth's date, MMDD (default today)")
    parser.add_argument("--pan", default=TEST_PAN, help="with --auth-code: the card (default: a test card)")


def _chip_options(parser: argparse.ArgumentParser) -> None:
    """A request read from the chip (a sale, a pre-auth): the card's key and cryptogram version."""
    parser.add_argument("--chip", action="store_true", help="read from the chip: F55 with an ARQC computed under"
                        " --imk, F23; the ARPC in the reply (F55 tag 91) must verify")  # fmt: skip
    parser.add_argument("--imk", help="with --chip: the card's issuer master key for application cryptograms, hex")
    parser.add_argument("--emv-scheme", default=DEFAULT_EMV_SCHEME, choices=list(EMV_SCHEMES),
                        help=f"with --chip: the card's cryptogram version (default {DEFAULT_EMV_SCHEME})")  # fmt: skip
    parser.add_argument("--psn", default="00", help="with --chip: the PAN sequence number, two digits (default 00)")


def _preauth_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The pre-authorisation family's actions (CUP); returns the pre-auth's, which takes the card options too."""
    preauth = actions.add_parser("preauth", help="CUP pre-authorisation: approve AMOUNT and hold it on the card")
    preauth.add_argument("amount", help="amount in major units, e.g. 12.34")
    preauth_void = actions.add_parser("preauth-void", help="cancel an open pre-auth (CUP), releasing its hold")
    _preauth_options(preauth_void)
    preauth_void.add_argument("--amount", help="the pre-auth's amount, with --auth-code (else from the batch)")
    preauth_void.add_argument("--operator", default="001", help="operator code (CUP F63)")
    complete = actions.add_parser("complete", help="complete a pre-auth (CUP): take AMOUNT, at most the tolerance"
                                  " above the pre-auth")  # fmt: skip
    complete.add_argument("amount", help="amount in major units")
    _preauth_options(complete)
    complete_void = actions.add_parser("complete-void", help="void a completion (CUP) of this terminal's open batch")
    _original_options(complete_void)
    complete_void.add_argument("--operator", default="001", help="operator code (CUP F63)")
    return preauth


def _amend_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """CUP's offline adjust and tip: each names a sale of this terminal's open batch."""
    adjust = actions.add_parser("adjust", help="CUP: correct an offline sale of this terminal's open batch to AMOUNT")
    adjust.add_argument("amount", help="the sale's corrected amount, in major units")
    _original_options(adjust)
    tip = actions.add_parser("tip", help="CUP: add a tip of AMOUNT to a sale of this terminal's open batch (once)")
    tip.add_argument("amount", help="the tip alone, in major units")
    _original_options(tip)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    terminal = commands.add_parser("terminal", help="act as a terminal: send a request, print the response")
    terminal.add_argument("--to", default="127.0.0.1:8583", help="HOST:PORT of the host")
    terminal.add_argument("--dialect", default="iso87binary")
    terminal.add_argument("--tid", default=DEMO_TID)
    terminal.add_argument("--mid", default=DEMO_MID)
    terminal.add_argument("--state", help="terminal state file (default ~/.iso-host/terminal-TID.json)")
    terminal.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the host")
    terminal.add_argument("--tmk", default=DEMO_TMK, help="terminal master key, hex (unwraps sign-on keys)")
    terminal.add_argument("--tls", action="store_true", help="connect with TLS")
    terminal.add_argument("--tls-ca", help="PEM CA that signed the host's certificate")
    terminal.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    terminal.add_argument("--tls-key", help="PEM key of --tls-cert")
    actions = terminal.add_subparsers(dest="action", required=True)
    sale = actions.add_parser("sale", help="purchase")
    sale.add_argument("amount", help="amount in major units, e.g. 12.34")
    balance = actions.add_parser("balance", help="balance inquiry: the card's available balance comes back in F54")
    preauth = _preauth_parsers(actions)
    for chip_action in (sale, preauth):
        _chip_options(chip_action)
    for card_action in (sale, balance, preauth):
        card_action.add_argument("--pan", default=TEST_PAN, help="card number (default: a test card)")
        card_action.add_argument("--expiry", help="YYMM")
        card_action.add_argument("--pin", help="PIN: sends an encrypted PIN block (F52) under the PIN key in force")
        card_action.add_argument("--mac", help="MAC algorithm, overriding the dialect's")
        card_action.add_argument("--tak", help="static MAC key, hex (instead of the keys from sign-on)")
        card_action.add_argument(
            "--bdk", help="DUKPT base derivation key, hex (test labs): sends a KSN, DUKPT PIN and MAC"
        )
    void = actions.add_parser("void", help="void a sale of this terminal's open batch")
    _original_options(void)
    void.add_argument("--operator", default="001", help="operator code (CUP F63)")
    reverse = actions.add_parser("reverse", help="reverse a sale or a void (as after a lost response)")
    _original_options(reverse)
    refund = actions.add_parser("refund", help="refund part or all of a sale")
    refund.add_argument("amount", help="amount in major units")
    _original_options(refund)
    _amend_parsers(actions)
    actions.add_parser("settle", help="settle the open batch; uploads it when the host's totals differ")
    actions.add_parser("echo", help="network test")
    send = actions.add_parser("send", help="any request the dialect has a template for (qr_sale, status_upload, ...)")
    send.add_argument("template", help="the template's name (iso-host dialects shows the dialects)")
    send.add_argument("--amount", help="amount in major units, for templates that carry one")
    send.add_argument("--pan", default=TEST_PAN, help="card number, for templates that carry one")
    send.add_argument("--expiry", help="YYMM")
    actions.add_parser("ic-download", help="EMV: download and check every IC public key and IC parameter set")
    actions.add_parser("parameter-download", help="CUP: download the terminal parameters (0800 60.3=360), printed")
    signon = actions.add_parser("signon", help="sign on: receive working keys and keep them (wrapped) in --state")
    signon.add_argument("--operator", default="001", help="operator code (CUP F63)")
    actions.add_parser("signoff", help="sign off: the host forgets the session")
    run = actions.add_parser("run", help="run a scripted session (TOML): steps with expectations, in order")
    run.add_argument("session", help="session file, e.g. examples/business-day-iso87.toml")
    run.add_argument("--junit", metavar="OUT.xml", help="also write a JUnit XML report, one testcase per step")
    terminal.set_defaults(handler=command_terminal)
