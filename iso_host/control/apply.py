"""Recording a live-control change: what the MQTT listener and the web console both do with a command's reply.

A command's change is in force in memory as soon as ``commands.execute`` returns; its ledger changes (a reset or
signed-off terminal's session) and its event are committed here, in one ``Store.apply``, before the reply goes out,
so that a client that saw ``ok: true`` can count on the event. If that commit fails the reply becomes ``ok: false``
with a ``ledger:`` error saying the change is in force but unrecorded (memory cannot be rolled back with the ledger).
"""

from __future__ import annotations

from collections.abc import Callable

from iso_host.control.commands import ControlReply, failed
from iso_host.errors import StoreError
from iso_host.ledger.store import Store
from iso_host.mqtt.client import error_line


async def apply_reply(store: Store, reply: ControlReply, wake: Callable[[], None] | None) -> ControlReply:
    """Commit the reply's ledger changes and events, then ``wake`` the outbox relay; the reply itself, or on a
    ledger failure the ``ok: false`` reply that says so. A reply without events (a failure, a listing) is
    returned as it is, and nothing is committed."""
    if not reply.events:
        assert not reply.ledger, "a ledger change always comes with its event"
        return reply
    assert reply.payload["ok"], "only a change that happened has events"
    try:
        await store.apply((*reply.ledger, *reply.events))  # a terminal's session rides with its event
    except StoreError as error:
        return failed(reply, f"ledger: {error_line(error)} (the change is in force, but its event was not recorded)")
    if wake is not None:
        wake()
    return reply
