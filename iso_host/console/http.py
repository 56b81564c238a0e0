"""The console over HTTP: the page, its JSON API, the live stream (SSE), ``/metrics``, ``/healthz`` and ``/readyz``.

aiohttp, in the host's own event loop: no second loop or thread to hand requests across, no ASGI layer, and a
browser's requests are a few a second, so they cost the ISO 8583 path nothing it would notice (measured in
``docs/api.md``). Changes (scenarios, terminals, the clock, cards) go through live control's own commands
(``control.commands.execute``) and their ledger changes through ``control.apply.apply_reply``: one implementation
of each command, MQTT and HTTP its two transports. The console is read-only unless ``[http] control = true``; with
control on and the console bound beyond loopback every change needs the bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

from aiohttp import web

from iso_host import __version__
from iso_host.config_http import HttpConfig
from iso_host.console.fields import described
from iso_host.console.metrics import CONTENT_TYPE, Metrics
from iso_host.console.monitor import Monitor
from iso_host.control.apply import apply_reply
from iso_host.control.commands import execute
from iso_host.control.controls import Controls
from iso_host.core.pipeline import Host
from iso_host.errors import ConfigError, StoreError
from iso_host.ledger.model import BatchTotals
from iso_host.ledger.reports import batch_reports
from iso_host.log import get_logger
from iso_host.money import format_amount
from iso_host.security.keys import key_check_value

MAX_BODY_BYTES: Final = 65_536  # a scenario is a few hundred bytes; live control's own payload limit
READY_READ_S: Final = 1.0  # /readyz: a ledger that takes longer to answer one read is not ready
KEEP_ALIVE_S: Final = 15.0  # a comment line on an idle stream, so proxies and browsers keep it open
MAX_LIMIT: Final = 2_000
KEY_NAMES: Final = ("tpk", "tak", "tdk")  # a session's keys, shown by their check values only
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Console:
    """What the handlers read: the host, its monitor and metrics, live control's view of it, and the settings."""

    host: Host
    monitor: Monitor
    metrics: Metrics
    controls: Controls
    settings: HttpConfig
    ledger_url: str
    token: str | None  # required for changes, or None
    listening: Callable[[], bool]
    connected: Callable[[], set[str] | None]  # TIDs with an open connection now; None: not known (workers)
    wake_relay: Callable[[], None] | None
    events_on: bool


def _error(status: int, text: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": text, "field": field if field is not None else text.split(":", 1)[0]},
                             status=status)  # fmt: skip


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every API error as JSON naming the problem (aiohttp's own are plain text)."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if not request.path.startswith("/api/") or error.status < 400:
            raise
        field = "body" if error.status == 413 else None
        return _error(error.status, error.reason if error.status != 413 else
                      f"body: over the limit of {MAX_BODY_BYTES} bytes", field or error.reason)  # fmt: skip


def _guard(console: Console) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Changes need ``[http] control = true`` and, when the console is bound beyond loopback, the token."""
        if request.method in ("POST", "PUT", "DELETE") and request.path.startswith("/api/"):
            if not console.settings.control:
                return _error(403, "control: the console is read-only; set [http] control = true", "control")
            if console.token is not None:
                sent = request.headers.get("Authorization", "")
                expected = f"Bearer {console.token}"
                if not hmac.compare_digest(sent.encode(), expected.encode()):
                    return _error(401, "Authorization: a bearer token is required (printed at start)", "Authorization")
        return await handler(request)

    return guard


class Api:
    """The handlers."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.ids = itertools.count(1)
        self.log = get_logger(component="console")

    # --- reading ------------------------------------------------------------------------------------------------

    async def info(self, _request: web.Request) -> web.Response:
        console = self.console
        return web.json_response({"control": console.settings.control, "token_required": console.token is not None,
                                  "dialect": console.host.dialect.name, "version": __version__})  # fmt: skip

    async def transactions(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = min(int(query.get("limit", "200")), MAX_LIMIT)
        except ValueError:
            return _error(400, f"limit: must be a whole number, got {query.get('limit')!r}", "limit")
        rows = self.console.monitor.rows(tid=query.get("tid") or None, kind=query.get("kind") or None,
                                         code=query.get("code") or None, batch=query.get("batch") or None,
                                         limit=max(limit, 1))  # fmt: skip
        return web.json_response({"transactions": rows})

    async def transaction(self, request: web.Request) -> web.Response:
        try:
            wanted = int(request.match_info["id"])
        except ValueError:
            return _error(400, f"id: must be a whole number, got {request.match_info['id']!r}", "id")
        monitor = self.console.monitor
        seen = monitor.find(wanted)
        if seen is None:
            return _error(404, f"id: no transaction {wanted} among the last ones kept", "id")
        exchange = seen.exchange
        dialect = self.console.host.dialect
        response = exchange.response
        return web.json_response({
            "transaction": monitor.row(seen),
            "request": {"mti": exchange.request.mti, "fields": described(exchange.request, dialect)},
            "response": None if response is None else {"mti": response.mti, "fields": described(response, dialect)},
            "mac": exchange.mac, "decision": exchange.detail, "scenario": exchange.scenario,
        })  # fmt: skip

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})  # fmt: skip
        await response.prepare(request)
        monitor = self.console.monitor
        queue = monitor.subscribe()
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    event, data = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            monitor.unsubscribe(queue)
        return response

    async def terminals(self, _request: web.Request) -> web.Response:
        console = self.console
        connected = console.connected()
        days = console.monitor.terminals
        listed = []
        for tid, terminal in console.host.terminals.items():
            day = days.get(tid)
            keys = terminal.session_keys if terminal.signed_on else None
            listed.append({
                "tid": tid, "mid": terminal.mid, "connected": None if connected is None else tid in connected,
                "signed_on": terminal.signed_on, "enabled": terminal.enabled, "batch": terminal.batch_number,
                "last_stan": day.last_stan if day else None,
                "last_seen": _iso_time(day.last_seen) if day and day.last_seen else None,
                "kcv": None if keys is None else {name: _kcv(getattr(keys, name, None)) for name in KEY_NAMES},
                "today": {"requests": day.requests if day else 0, "approved": day.approved if day else 0,
                          "declined": day.declined if day else 0},
            })  # fmt: skip
        return web.json_response({"terminals": listed})

    async def batches(self, request: web.Request) -> web.Response:
        tid = request.query.get("tid") or None
        reports = await asyncio.to_thread(batch_reports, self.console.ledger_url, tid)
        listed = [{
            "tid": r.tid, "mid": r.mid, "batch": r.batch_number, "status": r.status, "result": r.result,
            "settled_at": r.settled_at, "host_totals": _totals(r.host_totals),
            "terminal_totals": _totals(r.terminal_totals) if r.terminal_totals else None,
            "transactions": r.transaction_count,
            "differences": [{"stan": d.stan, "difference": d.difference.value, "rrn": d.rrn, "pan": d.masked_pan,
                             "host_amount": _amount(d.host_amount_minor),
                             "terminal_amount": _amount(d.terminal_amount_minor)} for d in r.differences],
        } for r in reversed(reports)]  # fmt: skip
        return web.json_response({"batches": listed})

    async def anomalies(self, _request: web.Request) -> web.Response:
        found = [a.as_json() for a in reversed(self.console.monitor.anomalies)]
        return web.json_response({"anomalies": found})

    async def metrics(self, _request: web.Request) -> web.Response:
        console = self.console
        depth = await console.host.store.count_pending_events() if console.events_on else None
        return web.Response(body=console.metrics.render(depth), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "up"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """Ready: the ledger answers a read within ``READY_READ_S`` and the host accepts connections."""
        console = self.console
        try:
            async with asyncio.timeout(READY_READ_S):
                await console.host.store.count_pending_events()
            ledger = "open"
        except TimeoutError:
            ledger = f"not answering within {READY_READ_S:g} s"
        except StoreError as error:
            ledger = f"failing: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        listening = console.listening()
        ready = listening and ledger == "open"
        return web.json_response({"ready": ready, "ledger": ledger, "listening": listening},
                                 status=200 if ready else 503)  # fmt: skip

    # --- changing, through live control's commands ----------------------------------------------------------------

    async def _command(self, command: str, arguments: dict[str, Any]) -> web.Response:
        console = self.console
        payload = json.dumps({**arguments, "request_id": f"http-{next(self.ids)}"}).encode()
        reply = execute(console.controls, command, payload)
        changed = bool(reply.events)
        if reply.payload["ok"]:
            if not console.events_on:
                reply = replace(reply, events=())  # no relay to publish them: the outbox would only grow
            if reply.ledger or reply.events:
                reply = await apply_reply(console.host.store, reply, console.wake_relay)
        body = reply.payload
        if not body["ok"]:
            text = str(body["error"])
            return _error(400, text)
        if changed:
            self.log.info("console_change", command=command, result=body.get("result"))
        return web.json_response({"ok": True, "result": body.get("result")})

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            document = await request.json()
        except json.JSONDecodeError as error:
            return _error(400, f"body: not JSON: {error.msg} at character {error.pos}", "body")
        if not isinstance(document, dict):
            return _error(400, f"body: must be a JSON object, got {type(document).__name__}", "body")
        return document

    def terminal_action(self, command: str) -> Handler:
        async def act(request: web.Request) -> web.Response:
            tid = request.match_info["tid"]
            if tid not in self.console.host.terminals:
                return _error(404, f"tid: terminal {tid!r} is not configured", "tid")
            return await self._command(command, {"tid": tid})

        return act

    async def scenarios(self, _request: web.Request) -> web.Response:
        return await self._command("list-scenarios", {})

    async def add_scenario(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        return body if isinstance(body, web.Response) else await self._command("add-scenario", {"scenario": body})

    async def replace_scenario(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        return await self._command("replace-scenario", {"index": _index(request), "scenario": body})

    async def remove_scenario(self, request: web.Request) -> web.Response:
        return await self._command("remove-scenario", {"index": _index(request)})

    async def clear_scenarios(self, _request: web.Request) -> web.Response:
        return await self._command("clear-scenarios", {})

    async def cards(self, _request: web.Request) -> web.Response:
        return await self._command("list-cards", {})

    async def add_card(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        return body if isinstance(body, web.Response) else await self._command("add-card", {"card": body})

    async def remove_card(self, request: web.Request) -> web.Response:
        return await self._command("remove-card", {"index": _index(request)})

    async def reload_cards(self, _request: web.Request) -> web.Response:
        return await self._command("reload-cards", {})

    async def clock(self, _request: web.Request) -> web.Response:
        clock = self.console.controls.clock
        return web.json_response({"now": clock().isoformat(), "offset_s": clock.offset.total_seconds()})

    async def set_clock(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if "advance_s" in body:
            return await self._command("advance-clock", {"seconds": body["advance_s"]})
        if "time" in body:
            return await self._command("set-clock", {"time": body["time"]})
        return _error(400, "body: give time (ISO 8601, or now) or advance_s (seconds)", "body")


def _index(request: web.Request) -> object:
    text = request.match_info["index"]
    return int(text) if text.isdigit() else text


def _iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _kcv(key: bytes | None) -> str | None:
    return key_check_value(key).hex().upper() if key else None


def _amount(minor: int | None) -> str | None:
    return None if minor is None else format_amount(minor)


def _totals(totals: BatchTotals) -> dict[str, Any]:
    overall = totals.overall
    return {"debits": overall.debit_count, "debit_amount": format_amount(overall.debit_minor),
            "credits": overall.credit_count, "credit_amount": format_amount(overall.credit_minor)}  # fmt: skip


async def _page(_request: web.Request) -> web.Response:
    page = resources.files("iso_host.console").joinpath("static", "index.html").read_bytes()
    return web.Response(body=page, content_type="text/html", charset="utf-8")


def application(console: Console) -> web.Application:
    """The aiohttp application: the page, ``/static``, ``/api``, ``/metrics``, ``/healthz``, ``/readyz``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors, _guard(console)])
    api = Api(console)
    static = resources.files("iso_host.console").joinpath("static")
    app.router.add_get("/", _page)
    app.router.add_static("/static/", str(static))
    app.router.add_get("/api/info", api.info)
    app.router.add_get("/api/transactions", api.transactions)
    app.router.add_get("/api/transactions/{id}", api.transaction)
    app.router.add_get("/api/stream", api.stream)
    app.router.add_get("/api/terminals", api.terminals)
    app.router.add_post("/api/terminals/{tid}/disable", api.terminal_action("disable-terminal"))
    app.router.add_post("/api/terminals/{tid}/enable", api.terminal_action("enable-terminal"))
    app.router.add_post("/api/terminals/{tid}/signoff", api.terminal_action("sign-off-terminal"))
    app.router.add_get("/api/batches", api.batches)
    app.router.add_get("/api/anomalies", api.anomalies)
    app.router.add_get("/api/scenarios", api.scenarios)
    app.router.add_post("/api/scenarios", api.add_scenario)
    app.router.add_delete("/api/scenarios", api.clear_scenarios)
    app.router.add_put("/api/scenarios/{index}", api.replace_scenario)
    app.router.add_delete("/api/scenarios/{index}", api.remove_scenario)
    app.router.add_get("/api/cards", api.cards)
    app.router.add_post("/api/cards", api.add_card)
    app.router.add_delete("/api/cards/{index}", api.remove_card)
    app.router.add_post("/api/cards/reload", api.reload_cards)
    app.router.add_get("/api/clock", api.clock)
    app.router.add_post("/api/clock", api.set_clock)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    return app


SHUTDOWN_S: Final = 1.0  # at stop: open streams are cut after this, not the 60 s aiohttp waits by default


@dataclass(slots=True)
class RunningConsole:
    runner: web.AppRunner
    address: tuple[str, int]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_console(console: Console) -> RunningConsole:
    """Listen on ``[http]``'s address and serve the console.

    Raises:
        ConfigError: the address cannot be listened on (one line naming it).
    """
    settings = console.settings
    runner = web.AppRunner(application(console), access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=SHUTDOWN_S, reuse_address=True)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(f"http: cannot listen on {settings.host}:{settings.port}: {reason} "
                          "(--http HOST:PORT elsewhere, or --no-http)") from None  # fmt: skip
    bound = runner.addresses[0]
    return RunningConsole(runner, (str(bound[0]), int(bound[1])))
