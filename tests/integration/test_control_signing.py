"""Issue 14, item 6: live control over a real Mosquitto is refused unless signed, and set-clock cannot reopen a window.

Each attack is performed and shown to fail: an unsigned, a wrongly signed, a replayed (same nonce) and a stale command
is answered with a ``signature:`` error and changes nothing (the terminal stays as it was, no control event is
committed); a signed one works. Over TCP, a sale too old to void does not become voidable by setting the host's clock
back to before it. ``iso-host control --secret-file`` signs against ``iso-host serve`` with ``[control] secret_file``.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from brokers import shared_broker_url
from controlling import Controlled, controlled, ok
from hosting import TEST_PAN, TID, local_now
from processes import ISO_HOST, serving, terminal
from structlog.testing import capture_logs

from iso_host.clock import HostClock
from iso_host.config import parse_config
from iso_host.control.listener import Signing
from iso_host.control.signing import Verifier, sign
from iso_host.mqtt.tasks import start_mqtt_tasks
from iso_host.mqtt.topics import control_topic
from iso_host.vocab import Reason

SECRET = b"0123456789abcdef" * 4
WRONG_SECRET = b"fedcba9876543210" * 4


def signing() -> Signing:
    """The host's verifier on the machine's time; the refusal log's clock stands still (one line, however slow)."""
    return Signing(Verifier(SECRET), time.time, lambda: 0.0)


async def send_signed(c: Controlled, command: str, arguments: dict[str, Any], *, secret: bytes = SECRET,
                      ts: int | None = None, nonce: str | None = None, raw: bytes | None = None,
                      ) -> tuple[dict[str, Any], bytes]:  # fmt: skip
    """Send ``arguments`` signed (or ``raw`` bytes as they are); the reply, and the bytes sent (to replay them)."""
    request_id = arguments["request_id"]
    when = int(time.time()) if ts is None else ts
    message = raw or sign(secret, control_topic(c.prefix, command), arguments, ts=when,
                          nonce=nonce or f"nonce-{request_id}-0000000")  # fmt: skip
    return await c.commander.send(command, raw=message, reply_to=request_id), message


async def pending_control_events(c: Controlled) -> int:
    return sum(1 for event in await c.host.store.pending_events(1_000) if event.kind == "control")


def refused(reply: dict[str, Any], problem: str) -> None:
    assert reply["ok"] is False, reply
    assert reply["error"].startswith("signature: "), reply
    assert problem in reply["error"], reply


async def test_unsigned_forged_replayed_and_stale_commands_change_nothing(tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with controlled(tmp_path, signing=signing()) as c, await c.host.connected_client() as client:
            disable = {"tid": TID}
            unsigned = await c.commander.send("disable-terminal", disable, reply_to="qa-unsigned")
            forged, _ = await send_signed(c, "disable-terminal", {"request_id": "qa-forged", **disable},
                                          secret=WRONG_SECRET)  # fmt: skip
            stale, _ = await send_signed(c, "disable-terminal", {"request_id": "qa-stale", **disable},
                                         ts=int(time.time()) - 3_600)  # fmt: skip
            redirected, _ = await send_signed(c, "enable-terminal", {"request_id": "qa-redirect", **disable},
                                              raw=sign(SECRET, control_topic(c.prefix, "disable-terminal"),
                                                       {"request_id": "qa-redirect", **disable}, ts=int(time.time()),
                                                       nonce="nonce-redirect-000000"))  # fmt: skip
            assert c.host.host.terminals[TID].enabled, "four refused commands changed nothing"
            assert (await c.sale(client, 100))["39"] == "00"
            assert await pending_control_events(c) == 0, "and committed no event"

            signed, disable_bytes = await send_signed(c, "disable-terminal", {"request_id": "qa-signed", **disable})
            assert ok(signed, "disable-terminal") == {"tid": TID, "enabled": False}
            assert (await c.sale(client, 100))["39"] == "58", "the signed command works"
            enabled, _ = await send_signed(c, "enable-terminal", {"request_id": "qa-enable", **disable})
            assert ok(enabled, "enable-terminal")["enabled"] is True
            replayed, _ = await send_signed(c, "disable-terminal", {"request_id": "qa-signed"}, raw=disable_bytes)
            assert c.host.host.terminals[TID].enabled, "the replayed disable changed nothing"
            assert (await c.sale(client, 100))["39"] == "00"
            assert c.notified == [1, 1], "two events: the signed disable and enable, none for the refusals"
            assert (c.listener.handled, c.listener.refused) == (7, 5)
    refused(unsigned, "required")
    refused(forged, "does not verify")
    refused(stale, "s from the host's time (allowed: ±60 s)")
    refused(redirected, "does not verify")
    refused(replayed, "nonce already used")
    assert (unsigned["request_id"], forged["request_id"]) == ("qa-unsigned", "qa-forged"), "replies find the sender"
    lines = [entry for entry in logs if entry["event"] == "control_refused"]
    assert len(lines) == 1, "one log line for five refusals within the interval"
    assert str(SECRET) not in json.dumps(logs, default=str)


async def test_set_clock_into_the_past_does_not_make_an_old_sale_voidable(tmp_path: Path) -> None:
    """A sale two days old is refused 12; setting the host's clock to a day before it must not approve its void
    (before the fix a negative age passed the window: the void was approved)."""
    async with controlled(tmp_path) as c, await c.host.connected_client() as client:
        noon = local_now().replace(hour=12, minute=0, second=0, microsecond=0)
        ok(await c.commander.send("set-clock", {"time": noon.isoformat()}), "set-clock")
        sale = await c.sale(client, 4_200)
        ok(await c.commander.send("advance-clock", {"seconds": 2 * 86_400}), "advance-clock")
        late = client.build("void", c.clock(), amount=4_200, pan=TEST_PAN, rrn=sale["37"])
        assert (await client.request(late)).fields["39"] == "12", "two days on: too old"
        back = (noon - timedelta(days=1)).isoformat()
        ok(await c.commander.send("set-clock", {"time": back}), "set-clock")
        void = client.build("void", c.clock(), amount=4_200, pan=TEST_PAN, rrn=sale["37"])
        answer = (await client.request(void)).fields["39"]
        rows = await c.host.records()
        ok(await c.commander.send("set-clock", {"time": "now"}), "set-clock")
    assert answer == c.host.dialect.response_code(Reason.VOID_WINDOW_EXPIRED.value) == "12"
    assert [(r.kind.value, r.reason) for r in rows] == [
        ("sale", Reason.APPROVED), ("void", Reason.VOID_WINDOW_EXPIRED), ("void", Reason.VOID_WINDOW_EXPIRED),
    ]  # fmt: skip
    assert rows[0].status.value == "APPROVED", "the sale was never voided"


async def test_control_without_a_secret_or_credentials_warns_once_at_start(tmp_path: Path) -> None:
    url = shared_broker_url()
    config = parse_config({"events": {"mqtt_url": url, "topic_prefix": "iso-host-test-warn"},
                           "control": {"enabled": True}}, "test.toml")  # fmt: skip
    async with controlled(tmp_path) as c:
        c.host.host.clock = HostClock(local_now)
        for secret, expected in ((None, 1), (SECRET, 0)):
            with capture_logs() as logs:
                tasks = start_mqtt_tasks(config, c.host.host, control_secret=secret)
                await tasks.cancel()
            assert [e["event"] for e in logs].count("control_unauthenticated") == expected


def control(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISO_HOST, "control", "--config", str(config), "--timeout", "10", *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_the_cli_signs_with_the_secret_and_the_host_refuses_it_unsigned(tmp_path: Path) -> None:
    secret_file = tmp_path / "control.secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    prefix = f"iso-host-test-cli-{int(time.time() * 1000)}"
    events = f'[events]\nmqtt_url = "{shared_broker_url()}"\ntopic_prefix = "{prefix}"\n'
    host_config, plain_config = tmp_path / "host.toml", tmp_path / "plain.toml"
    host_config.write_text(events + f'[control]\nenabled = true\nsecret_file = "{secret_file}"\n', encoding="utf-8")
    plain_config.write_text(events, encoding="utf-8")
    with serving(tmp_path, "--config", str(host_config)) as (address, _):
        unsigned = control(plain_config, "disable-terminal", f"tid={TID}")
        wrong = tmp_path / "wrong.secret"
        wrong.write_bytes(WRONG_SECRET)
        wrong.chmod(0o600)
        forged = control(plain_config, "disable-terminal", f"tid={TID}", "--secret-file", str(wrong))
        assert terminal(tmp_path, address, "sale", "1.00").returncode == 0, "nothing changed"
        signed = control(host_config, "disable-terminal", f"tid={TID}")
        declined = terminal(tmp_path, address, "sale", "1.00")
        flagged = control(plain_config, "enable-terminal", f"tid={TID}", "--secret-file", str(secret_file))
        served = terminal(tmp_path, address, "sale", "1.00")
    assert unsigned.returncode == 1
    assert "error: signature: required" in unsigned.stderr
    assert forged.returncode == 1
    assert "signature: does not verify" in forged.stderr
    assert signed.returncode == 0, signed.stderr
    assert declined.returncode == 1
    assert "58" in declined.stdout
    assert flagged.returncode == 0, flagged.stderr
    assert served.returncode == 0, served.stdout
