"""``iii_engine.limits.Slots``: first come, first served, and a cancelled wait takes nothing (nor loses a slot)."""

from __future__ import annotations

import asyncio

from iii_engine.limits import Slots


async def test_waiters_are_served_in_order_and_a_free_slot_never_passes_one() -> None:
    slots = Slots(1)
    assert slots.try_take()
    order: list[int] = []

    async def taker(n: int) -> None:
        await slots.take()
        order.append(n)

    tasks = [asyncio.ensure_future(taker(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert slots.locked() and not slots.try_take()
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and slots.free == 0
    slots.release()
    assert slots.free == 1 and not slots.locked()


async def test_a_cancelled_wait_takes_nothing_even_when_handed_a_slot_as_it_is_cancelled() -> None:
    slots = Slots(1)
    assert slots.try_take()
    waiting = asyncio.ensure_future(slots.take())
    gone = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    gone.cancel()  # cancelled while queued: leaves the queue
    await asyncio.gather(gone, return_exceptions=True)
    slots.release()  # handed to `waiting` ...
    waiting.cancel()  # ... which is cancelled in the same turn: passed on, not lost
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled() and slots.free == 1 and not slots.locked()
