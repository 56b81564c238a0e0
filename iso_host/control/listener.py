"""The live-control edge: subscribe to ``<prefix>/control/+``, carry each command out, commit, reply.

Commands run one at a time, in the order the broker delivers them, on the host's event loop: a change is
in force from the next request the host decides. A command's event is committed to the outbox before its
reply goes out, so a client that saw ``ok: true`` can count on the event. If that commit fails the change is
already in force in memory (the host's scenarios, terminals and clock are not in the ledger and cannot be
rolled back with it); the reply then says ``ok: false`` with a ``ledger:`` error that says so.

The session is clean: a command sent while the listener is disconnected is not queued for later (a clock
advance replayed an hour late would surprise everyone); its sender sees no reply and may send it again.

With a control secret (``[control] secret_file`` or ``ISO_HOST_CONTROL_SECRET``) only signed commands are carried
out (``signing.py``): an unsigned, wrongly signed, stale or replayed one changes nothing and is answered with a
``signature:`` error; such refusals are logged one line per ``REFUSAL_LOG_EVERY_S`` with how many there were.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiomqtt

from iso_host.control.apply import apply_reply
from iso_host.control.commands import execute, failure_reply
from iso_host.control.controls import Controls
from iso_host.control.signing import SignatureRefused, Verifier, unsigned
from iso_host.ledger.store import Store
from iso_host.log import get_logger
from iso_host.mqtt.client import client, describe_broker, error_line
from iso_host.mqtt.reconnect import keep_connected
from iso_host.mqtt.topics import BrokerSettings, control_topic, reply_topic

QOS: Final = 1
PUBLISH_TIMEOUT_S: Final = 10.0  # no PUBACK for a reply by then: the connection is treated as lost
INTERNAL_ERROR: Final = "internal error (a bug in the host; the change may be partly in force: list and check)"
REFUSAL_LOG_EVERY_S: Final = 10.0  # refused commands (unsigned, forged, stale, replayed): one log line per 10 s
NO_SECRET: Final = "this host has no control secret ([control] secret_file); send the command unsigned"  # noqa: S105


@dataclass(slots=True)
class Signing:
    """A host's control secret at work: the verifier, and the clocks it reads (the machine's, never the host clock
    that ``set-clock`` moves). Absent: the host carries out unsigned commands only."""

    verifier: Verifier
    machine_time: Callable[[], float]  # Unix seconds: time.time
    monotonic: Callable[[], float]  # for the refusal log's rate: time.monotonic


class ControlListener:
    """One per host process with control enabled; ``run`` until cancelled. ``ready`` is set while subscribed."""

    def __init__(
        self, controls: Controls, store: Store, settings: BrokerSettings, notify: Callable[[], None],
        signing: Signing | None = None,
    ) -> None:  # fmt: skip
        self.controls = controls
        self.signing = signing
        self.store = store
        self.settings = settings
        self.notify = notify  # wakes the outbox relay after a command's event is committed
        self.ready = asyncio.Event()
        self.handled = 0  # commands answered since start (for tests and status)
        self.refused = 0  # of them, refused for their signature
        self._refusals_unlogged = 0
        self._refusal_logged_at: float | None = None
        self._log = get_logger(component="control", broker=describe_broker(settings))

    @property
    def subscription(self) -> str:
        return control_topic(self.settings.topic_prefix, "+")

    async def run(self) -> None:
        """Connect, subscribe and answer; on broker trouble reconnect with backoff; never returns until cancelled."""
        await keep_connected(
            lambda: client(self.settings, "control"), self._session, ready=self.ready,
            outages=(aiomqtt.MqttError, OSError), on_outage=self._outage,
        )  # fmt: skip

    async def _session(self, mqtt: aiomqtt.Client, connected: Callable[[], None]) -> None:
        await mqtt.subscribe(self.subscription, qos=QOS)
        connected()
        self._log.info("control_listening", topic=self.subscription)
        async for message in mqtt.messages:
            await self._answer(mqtt, message)

    async def _outage(self, error: Exception, retry_s: float) -> None:
        self._log.warning(
            "control_unavailable", error=error_line(error), retry_s=retry_s,
            hint="commands sent meanwhile get no reply; send them again once the broker is back",
        )  # fmt: skip

    async def _answer(self, mqtt: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Carry one command out and publish its reply; a bug here costs this one command, not the listener."""
        topic = message.topic.value
        command = topic.rsplit("/", 1)[-1]
        try:
            payload = self._verified(topic, _payload_bytes(message.payload))
        except SignatureRefused as refused:
            await self._refuse(mqtt, command, refused)
            return
        try:
            reply = await apply_reply(self.store, execute(self.controls, command, payload), self.notify)
            text = json.dumps(reply.payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except Exception as error:  # any bug in one command is answered and logged, then the listener goes on
            self._log.error("control_failed", command=command[:64], error=error_line(error))
            reply = failure_reply(command, payload, INTERNAL_ERROR)
            text = json.dumps(reply.payload, separators=(",", ":"), ensure_ascii=False)
        await mqtt.publish(
            reply_topic(self.settings.topic_prefix, reply.request_id), text, qos=QOS, timeout=PUBLISH_TIMEOUT_S
        )
        self.handled += 1
        self._log.info(
            "control_answered", command=reply.payload["command"], request_id=reply.request_id,
            ok=reply.payload["ok"], error=reply.payload.get("error"),
        )  # fmt: skip

    def _verified(self, topic: str, message: bytes) -> bytes:
        """The command's payload: ``message`` itself without a secret, or what its verified signature covers.

        Raises:
            SignatureRefused: see ``signing.Verifier.verify``; without a secret, a signed message.
        """
        if self.signing is None:
            if not unsigned(message):
                raise SignatureRefused(NO_SECRET, message)
            return message
        return self.signing.verifier.verify(topic, message, self.signing.machine_time())

    async def _refuse(self, mqtt: aiomqtt.Client, command: str, refused: SignatureRefused) -> None:
        """Answer a refused command on its reply topic (nothing else happens), and log it, rate-limited."""
        reply = failure_reply(command, refused.payload, str(refused))
        text = json.dumps(reply.payload, separators=(",", ":"), ensure_ascii=False)
        await mqtt.publish(
            reply_topic(self.settings.topic_prefix, reply.request_id), text, qos=QOS, timeout=PUBLISH_TIMEOUT_S
        )
        self.handled += 1
        self.refused += 1
        self._refusals_unlogged += 1
        now = self.signing.monotonic() if self.signing is not None else asyncio.get_running_loop().time()
        if self._refusal_logged_at is None or now - self._refusal_logged_at >= REFUSAL_LOG_EVERY_S:
            self._log.warning(
                "control_refused", command=reply.payload["command"], request_id=reply.request_id,
                error=reply.payload["error"], refused=self._refusals_unlogged, total_refused=self.refused,
            )  # fmt: skip
            self._refusal_logged_at, self._refusals_unlogged = now, 0


def _payload_bytes(payload: bytes | bytearray | str | float | None) -> bytes:
    """aiomqtt hands payloads as bytes; the other types are for publishing, but the type allows them."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode("utf-8")
