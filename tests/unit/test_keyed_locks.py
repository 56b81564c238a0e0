"""KeyedLocks: one holder per key at a time, keys apart never wait for each other, and no lock outlives its use."""

from __future__ import annotations

import asyncio

from iso_host.keyed_locks import KeyedLocks


async def test_one_key_is_held_by_one_at_a_time() -> None:
    """Three holders of one key run one after another, in the order they asked."""
    locks, order = KeyedLocks(), []
    gate, first_in = asyncio.Event(), asyncio.Event()

    async def hold(name: str) -> None:
        async with locks.hold(("TERM0001", "MERCHANT0000001")):
            order.append(f"{name} in")
            first_in.set()
            await gate.wait()
            order.append(f"{name} out")

    holders = [asyncio.create_task(hold(name)) for name in "abc"]
    await first_in.wait()  # the first holder is in; the others queue behind it
    assert order == ["a in"]
    gate.set()
    await asyncio.gather(*holders)
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]


async def test_other_keys_do_not_wait() -> None:
    """A second terminal's holder gets in while the first terminal's key is held."""
    locks = KeyedLocks()
    async with locks.hold("TERM0001"):
        async with asyncio.timeout(1):
            async with locks.hold("TERM0002"):
                pass


async def test_locks_are_dropped_when_nobody_holds_or_waits() -> None:
    """A key's lock exists only while someone holds it or waits for it: terminals that come and go leave nothing."""
    locks = KeyedLocks()
    async with locks.hold("TERM0001"):
        assert "TERM0001" in locks._locks
    assert locks._locks == {}
